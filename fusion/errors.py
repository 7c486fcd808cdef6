"""Errors raised while reading images and fusing them.

Every message names the file and what is wrong with it; the CLI prints it on one line
and maps :class:`InputError` (bad input, exit 2) and :class:`FusionError` (processing
failure, exit 1) to exit codes.
"""

from __future__ import annotations

__all__ = [
    "FusionError",
    "InputError",
    "NotAnImageError",
    "UnsupportedSOPClassError",
    "MissingCalibrationError",
    "DecoderMissingError",
    "CorruptFileError",
]


class FusionError(Exception):
    """Root of every error the fusion package raises."""


class InputError(FusionError, ValueError):
    """An input file or argument cannot be used as given."""


class NotAnImageError(InputError):
    """The file is not DICOM nor an image format we read, or holds no pixel data."""


class UnsupportedSOPClassError(InputError):
    """The DICOM SOP class is not one the pipeline can use as an image."""


class MissingCalibrationError(InputError):
    """The image has no physical pixel spacing and none was given by hand."""


class DecoderMissingError(InputError):
    """The pixel data is compressed with a codec whose decoder is not installed."""


class CorruptFileError(InputError):
    """The file is truncated or its contents contradict themselves."""

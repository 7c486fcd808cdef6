"""Reading images and producing what clinicians see.

The image type :class:`Image` (pixels with spacing, times, masks and X-ray geometry)
lives here because reading files is this package's job; :mod:`registration` sees only
the arrays and geometry taken from it.
"""

from ._image import (
    CollimatorShape,
    Image,
    Modality,
    SpacingPlane,
    UltrasoundRegion,
    XRayGeometry,
)
from .errors import (
    CorruptFileError,
    DecoderMissingError,
    FusionError,
    InputError,
    MissingCalibrationError,
    NotAnImageError,
    UnsupportedSOPClassError,
)
from .io import IMAGE_SOP_CLASSES, is_dicom_file, read_header, read_image

__all__ = [
    "IMAGE_SOP_CLASSES",
    "CollimatorShape",
    "CorruptFileError",
    "DecoderMissingError",
    "FusionError",
    "Image",
    "InputError",
    "MissingCalibrationError",
    "Modality",
    "NotAnImageError",
    "SpacingPlane",
    "UltrasoundRegion",
    "UnsupportedSOPClassError",
    "XRayGeometry",
    "is_dicom_file",
    "read_header",
    "read_image",
]

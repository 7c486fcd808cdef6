"""Bounded DICOM reading: the reading policy of :mod:`hybridfuse.dicom`.

pydicom inflates a deflated data set whole, in memory, before it reads a single
element, so even a header read of a 2 MB file can allocate gigabytes; and it logs its
decoder failures (with tracebacks) through the ``pydicom`` logger. This module sizes a
deflated data set in chunks before pydicom sees it, and keeps pydicom's logging and
warnings quiet while it works. It imports nothing of the subpackages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
import zlib

__all__ = [
    "MAX_DECODED_BYTES",
    "MAX_DECODED_ENV",
    "env_bytes",
    "max_decoded_bytes",
    "quiet_pydicom",
    "is_deflated",
    "is_dicom_file",
    "is_dicom_stream",
    "deflated_size_exceeds",
]

#: Most bytes a file may need to be decoded (its pixels as the reader returns them plus
#: one float32 working frame; for a deflated data set, its inflated size). Larger files
#: are refused before anything is decoded. Overridden by :data:`MAX_DECODED_ENV`.
#: 1 GiB: the fusion pipeline holds several copies of an image (frames, grey, resampled),
#: so a 2 GiB image exhausted a 3 GiB memory cap.
MAX_DECODED_BYTES = 1 * 1024**3
#: Environment variable that overrides :data:`MAX_DECODED_BYTES` (a number of bytes).
MAX_DECODED_ENV = "HYBRIDFUSE_MAX_DECODED_BYTES"


def max_decoded_bytes() -> int:
    """The decode limit in bytes: ``$HYBRIDFUSE_MAX_DECODED_BYTES`` or the constant.

    Raises
    ------
    ValueError
        The environment variable is set but is not a positive number.
    """
    return env_bytes(MAX_DECODED_ENV, MAX_DECODED_BYTES)


def env_bytes(name: str, default: int) -> int:
    """A number of bytes from environment variable ``name``, else ``default``.

    Raises
    ------
    ValueError
        The variable is set but is not a positive number.
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return int(default)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value >= 1 and value != float("inf")):
        raise ValueError(f"{name}={text!r}: expected a positive number of bytes")
    return int(value)


@contextlib.contextmanager
def quiet_pydicom():
    """Keep pydicom's log records and warnings off the terminal while it reads or decodes.

    What they say reaches the user once, in the error the caller raises. pydicom resets
    its logger to WARNING when imported, so a CLI-level setting alone does not hold.
    """
    logger = logging.getLogger("pydicom")
    # Threads may nest and overlap: the first to enter saves the level, the last restores.
    with _QUIET["lock"]:
        if _QUIET["depth"] == 0:
            _QUIET["level"] = logger.level
            logger.setLevel(logging.CRITICAL + 1)
        _QUIET["depth"] += 1
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
            yield
    finally:
        with _QUIET["lock"]:
            _QUIET["depth"] -= 1
            if _QUIET["depth"] == 0:
                logger.setLevel(_QUIET["level"])


_QUIET: dict = {"lock": threading.Lock(), "depth": 0, "level": logging.NOTSET}


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when the file carries the DICOM Part 10 preamble (``DICM`` at byte 128).

    Only regular files are opened: a FIFO or device named ``*.dcm`` would block or never end.
    """
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_stream(path: str | os.PathLike) -> bool:
    """True for a DICOM stream without the Part 10 preamble (written by some archives).

    Its first element must be File Meta Information, (0002,0000) or (0002,0001), in
    explicit VR little endian, as PS3.10 7.1 writes the meta group: then pydicom reads it
    with ``force``. Anything else (a data set with no meta group, text) is not taken.
    """
    if not os.path.isfile(path) or is_dicom_file(path):
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return head[:4] in (b"\x02\x00\x00\x00", b"\x02\x00\x01\x00") and head[4:6] in (b"UL", b"OB")


def is_deflated(path: str | os.PathLike) -> bool:
    """True for a Part 10 file in Deflated Explicit VR Little Endian."""
    from pydicom.filereader import read_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    if not is_dicom_file(path):
        return False
    try:
        with quiet_pydicom():
            return read_file_meta_info(path).get("TransferSyntaxUID") == (
                DeflatedExplicitVRLittleEndian
            )
    except Exception:  # a broken header (values convert lazily): the full read reports it
        return False


def deflated_size_exceeds(path: str | os.PathLike, limit: int) -> bool:
    """True when ``path`` is deflated and its data set inflates to more than ``limit``.

    Inflates in chunks and keeps none of it, so the check itself needs a few MiB.

    Raises
    ------
    zlib.error
        The deflated stream is corrupt.
    """
    if not is_deflated(path):
        return False
    from pydicom.filereader import _read_file_meta_info, read_preamble

    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    with open(path, "rb") as fh:
        try:
            with quiet_pydicom():
                read_preamble(fh, force=False)
                _read_file_meta_info(fh)
        except Exception:  # is_deflated read it a moment ago; the full read reports it
            return False
        while not inflater.eof and (chunk := fh.read(1 << 20)):
            while chunk:
                total += len(inflater.decompress(chunk, 1 << 24))
                if total > limit:
                    return True
                chunk = inflater.unconsumed_tail
    return False

"""Read DICOM and plain image files into :class:`fusion.Image`.

DICOM is read with pydicom (JPEG pixel data through Pillow / pylibjpeg), plain images
(PNG, TIFF, JPEG, MHA, NRRD, NIfTI) with SimpleITK. Ultrasound frames become the
scanner's display (:mod:`fusion.display`) and their mask the imaged area
(:mod:`fusion.imaged_area`). Every error names the file and says what is wrong on one
line.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hybridfuse import dicom
from hybridfuse.dicom import MAX_DECODED_ENV, as_list, is_dicom_file, parse_code, parse_number
from hybridfuse.dicom import quiet_pydicom as _quiet_pydicom

from . import display, imaged_area
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
    NotAnImageError,
    UnsupportedSOPClassError,
)

__all__ = [
    "read_image",
    "read_header",
    "is_dicom_file",
    "max_decoded_bytes",
    "IMAGE_SOP_CLASSES",
    "MAX_DECODED_ENV",
]

log = logging.getLogger(__name__)

#: SOP classes the pipeline reads as images, with the modality each implies.
IMAGE_SOP_CLASSES: dict[str, Modality] = {
    "1.2.840.10008.5.1.4.1.1.6.1": Modality.US,  # Ultrasound Image Storage
    "1.2.840.10008.5.1.4.1.1.6": Modality.US,  # (retired) Ultrasound Image Storage
    "1.2.840.10008.5.1.4.1.1.3.1": Modality.US,  # Ultrasound Multi-frame Image Storage
    "1.2.840.10008.5.1.4.1.1.3": Modality.US,  # (retired) Ultrasound Multi-frame
    "1.2.840.10008.5.1.4.1.1.12.1": Modality.XA,  # X-Ray Angiographic Image Storage
    "1.2.840.10008.5.1.4.1.1.12.1.1": Modality.XA,  # Enhanced XA Image Storage
    "1.2.840.10008.5.1.4.1.1.12.2": Modality.RF,  # X-Ray Radiofluoroscopic Image Storage
    "1.2.840.10008.5.1.4.1.1.12.2.1": Modality.RF,  # Enhanced XRF Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1": Modality.DX,  # Digital X-Ray, for presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1": Modality.DX,  # Digital X-Ray, for processing
    "1.2.840.10008.5.1.4.1.1.1": Modality.CR,  # Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.7": Modality.OT,  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.2": Modality.OT,  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3": Modality.OT,  # Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4": Modality.OT,  # Multi-frame True Color SC
}

_SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

_PLAIN_SUFFIXES = {
    ".png",
    ".tif",
    ".tiff",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".mha",
    ".mhd",
    ".nrrd",
    ".nhdr",
    ".nii",
    ".nii.gz",
}
_HEADER_SPACING_SUFFIXES = {".mha", ".mhd", ".nrrd", ".nhdr", ".nii", ".nii.gz"}

# Physical Units X/Y Direction (0018,6024)/(0018,6026): 3 = cm.
_US_UNIT_CM = 3

#: Values longer than this stay on disk until used (pixel data above all): decoding
#: reads frames from the file one at a time, and a header-only read never loads them.
_DEFER_BYTES = 1 << 20
#: DICOM stores Rows and Columns as 16-bit unsigned integers.
_MAX_DIM = 65535

#: Plausible pixel spacing (mm) in the plane each kind of image is calibrated in. X-ray
#: detectors have 0.07-0.2 mm pixels (0.8 mm binned image intensifiers); ultrasound
#: screens 0.02-1 mm per pixel. Anything outside is a wrong unit or a corrupt value.
XRAY_SPACING_RANGE_MM = (0.01, 5.0)
US_SPACING_RANGE_MM = (0.005, 5.0)
#: Other images (secondary capture, plain images): only the absurd is refused.
OTHER_SPACING_RANGE_MM = (1e-3, 1e3)
#: Geometric magnification SID/SOD of a C-arm: the isocentre lies between source and
#: detector (> 1); clinical C-arms stay below about 2.
MAGNIFICATION_RANGE = (1.0, 3.0)


def max_decoded_bytes() -> int:
    """The decode limit in bytes, from the environment or the module constant.

    ``$HYBRIDFUSE_MAX_DECODED_BYTES`` when set, else
    ``hybridfuse._dicomread.MAX_DECODED_BYTES`` (1 GiB); a bad environment value is an
    :class:`InputError`.
    """
    try:
        return dicom.max_decoded_bytes()
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def _gib(nbytes: float) -> str:
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3)):
        if nbytes >= size / 10:
            return f"{nbytes / size:.3g} {unit}"
    return f"{nbytes / 1024**2:.3g} MiB"


def _require_file(path: Path) -> None:
    if not path.is_file():
        what = "not a regular file" if path.exists() else "no such file"
        raise InputError(f"{path}: {what}")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _dcmread(path: Path, stop_before_pixels: bool = False, defer_size: int | None = None):
    import pydicom
    from pydicom.errors import InvalidDicomError

    _check_deflated_size(path)
    try:
        with _quiet_pydicom():
            return pydicom.dcmread(
                path,
                stop_before_pixels=stop_before_pixels,
                defer_size=defer_size,
                force=dicom.is_dicom_stream(path),
            )
    except InvalidDicomError as exc:
        raise NotAnImageError(
            f"{path}: not a DICOM file (no 'DICM' preamble and no recognisable DICOM "
            "elements) and not an image format we read"
        ) from exc
    except RecursionError as exc:
        raise CorruptFileError(f"{path}: DICOM sequences nested too deeply to read") from exc
    except MemoryError as exc:
        raise CorruptFileError(
            f"{path}: an element declares more data than fits in memory"
        ) from exc
    except (OSError, *_conversion_errors()) as exc:
        raise CorruptFileError(f"{path}: truncated or corrupt DICOM ({_short(exc)})") from exc


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_deflated_size(path: Path) -> None:
    """Refuse a deflated data set that inflates beyond the decode limit.

    pydicom inflates the whole data set in memory before reading any element, even for
    a header; this learns its size first, in chunks, keeping nothing.
    """
    limit = max_decoded_bytes()
    try:
        too_big = dicom.deflated_size_exceeds(path, limit)
    except zlib.error as exc:
        raise CorruptFileError(f"{path}: deflated data set corrupt ({exc})") from exc
    if too_big:
        raise InputError(
            f"{path}: deflated data set inflates to more than {_gib(limit)}, the decode "
            f"limit ({MAX_DECODED_ENV})"
        )


def read_header(path: str | os.PathLike) -> dict:
    """Identify a DICOM file without decoding pixels (case discovery calls it on every file).

    Returns
    -------
    dict
        ``sop_class_uid``, ``sop_class_name``, ``modality``, ``manufacturer``,
        ``model``, ``transfer_syntax``, ``is_image``, ``is_sr``, ``template``.

    Raises
    ------
    InputError
        Only this family: a missing or non-regular file, not DICOM, corrupt or truncated,
        or a deflated data set that inflates beyond :func:`max_decoded_bytes`. Values
        longer than 1 MiB are not loaded.
    """
    path = Path(path)
    _require_file(path)
    ds = _dcmread(path, stop_before_pixels=True, defer_size=_DEFER_BYTES)
    try:
        with _quiet_pydicom():
            _convert_elements(ds, path)
            return _header_dict(ds)
    except FusionError:
        raise
    except RecursionError as exc:
        raise CorruptFileError(f"{path}: DICOM sequences nested too deeply") from exc
    except _conversion_errors() as exc:
        raise CorruptFileError(f"{path}: inconsistent DICOM attributes ({_short(exc)})") from exc


def _header_dict(ds) -> dict:
    sop = str(ds.get("SOPClassUID", ""))
    template = None
    if "ContentTemplateSequence" in ds and len(ds.ContentTemplateSequence):
        template = str(ds.ContentTemplateSequence[0].get("TemplateIdentifier", "")) or None
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return {
        "sop_class_uid": sop,
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")) or None,
        "sop_class_name": _uid_name(sop),
        "modality": str(ds.get("Modality", "")) or None,
        "manufacturer": str(ds.get("Manufacturer", "")) or None,
        "model": str(ds.get("ManufacturerModelName", "")) or None,
        "transfer_syntax": _uid_name(str(tsyntax)) if tsyntax else None,
        "is_image": sop in IMAGE_SOP_CLASSES,
        "is_sr": sop.startswith(_SR_PREFIX),
        "template": template,
    }


def _uid_name(uid: str) -> str:
    from pydicom.uid import UID

    try:
        name = UID(uid).name
    except Exception:  # pragma: no cover - pydicom accepts any string
        name = uid
    return name or uid


def read_image(
    path: str | os.PathLike,
    *,
    spacing_mm: tuple[float, float] | None = None,
    us_region: int | None = None,
    require_spacing: bool = False,
    modality: Modality | str | None = None,
    decode: bool = True,
) -> Image:
    """Read an image file (DICOM or plain) with its geometry.

    Parameters
    ----------
    path : path-like
        DICOM (US, XA, RF, DX, CR, secondary capture) or a plain image that SimpleITK
        reads (PNG, TIFF, JPEG, BMP, MHA/MHD, NRRD, NIfTI).
    spacing_mm : tuple of float, optional
        Pixel spacing (row, column) in mm that overrides whatever the file says, for
        uncalibrated ultrasound screens and plain images.
    us_region : int, optional
        Index into *Sequence of Ultrasound Regions* of the region to use for
        calibration and mask. Default: the first calibrated 2D tissue region.
    require_spacing : bool
        Raise :class:`MissingCalibrationError` when no spacing is known.
    modality : Modality or str, optional
        Modality for a plain image (default OT); ignored for DICOM.
    decode : bool
        False reads a DICOM file's header only: the image has the declared shape and
        dtype but its pixels are a zero-filled view that takes no memory (for ``info``).
        The declaration is checked against the decode limit either way.

    Returns
    -------
    Image

    Raises
    ------
    NotAnImageError, UnsupportedSOPClassError, CorruptFileError, DecoderMissingError,
    MissingCalibrationError
        All are :class:`InputError`. A file is refused when it declares more than
        :func:`max_decoded_bytes` to decode, has Rows/Columns outside 1..65535 or no
        frame, holds less pixel data than it declares, has a corrupt compressed frame,
        or geometry outside the plausible ranges (``*_RANGE*`` constants).
    """
    path = Path(path)
    _require_file(path)
    if spacing_mm is not None:
        spacing_mm = _check_spacing_arg(spacing_mm, path)
    if is_dicom_file(path) or _suffix(path) not in _PLAIN_SUFFIXES:
        # pydicom converts values lazily, warning about odd ones as it goes.
        try:
            with _quiet_pydicom():
                image = _read_dicom(path, spacing_mm, us_region, decode=decode)
        except FusionError:
            raise
        except RecursionError as exc:  # sequences are parsed lazily, when first used
            raise CorruptFileError(f"{path}: DICOM sequences nested too deeply") from exc
        except _conversion_errors() as exc:
            raise CorruptFileError(
                f"{path}: inconsistent DICOM attributes ({_short(exc)})"
            ) from exc
    else:
        image = _read_plain(path, spacing_mm=spacing_mm, modality=modality, decode=decode)
    if require_spacing:
        flag = "--moving-spacing-mm" if image.modality is Modality.US else "--fixed-spacing-mm"
        image.require_spacing(flag)
    return image


def _check_spacing_arg(spacing_mm, path: Path) -> tuple[float, float]:
    try:
        dy, dx = (float(s) for s in spacing_mm)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"{path}: spacing must be two numbers (row_mm, col_mm), got {spacing_mm!r}"
        ) from exc
    if not (np.isfinite(dy) and np.isfinite(dx) and dy > 0 and dx > 0):
        raise InputError(f"{path}: spacing must be finite and > 0 mm, got {(dy, dx)}")
    lo, hi = OTHER_SPACING_RANGE_MM
    if not (lo <= dy <= hi and lo <= dx <= hi):
        raise InputError(
            f"{path}: spacing {dy:g},{dx:g} mm is outside the plausible {lo:g}..{hi:g} mm"
        )
    return (dy, dx)


# ---------------------------------------------------------------------------------------
# Plain images
# ---------------------------------------------------------------------------------------


def _check_plain_size(path: Path):
    """Refuse a plain image whose header declares more than the decode limit.

    Returns the SimpleITK reader holding the header; a file whose header SimpleITK
    cannot read is refused here, never read unsized.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        # No size known, so no read: ReadImage would allocate whatever the file holds.
        raise NotAnImageError(
            f"{path}: not a DICOM file and SimpleITK cannot read it as an image "
            f"({_sitk_reason(exc)})"
        ) from exc
    size = [int(n) for n in reader.GetSize()]
    comps = int(reader.GetNumberOfComponents())
    itemsize = _sitk_itemsize(reader.GetPixelID())
    voxels = int(np.prod(size, dtype=object))
    frame = size[0] * (size[1] if len(size) > 1 else 1)
    footprint = voxels * comps * itemsize + frame * comps * 4
    limit = max_decoded_bytes()
    if footprint > limit:
        dims = " x ".join(str(n) for n in size)
        raise InputError(
            f"{path}: declares {dims} pixels of {comps} x {itemsize} byte(s): "
            f"{_gib(footprint)} to decode with one working frame, above the {_gib(limit)} "
            f"limit ({MAX_DECODED_ENV})"
        )
    return reader


def _sitk_reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return lines[-1][:160]


def _sitk_itemsize(pixel_id: int) -> int:
    import SimpleITK as sitk

    name = sitk.GetPixelIDValueAsString(pixel_id).lower()
    for bits, size in (("64", 8), ("32", 4), ("16", 2), ("8", 1)):
        if bits in name:
            return size * (2 if "complex" in name else 1)
    return 8


#: Bytes of a plain image's start searched for an MHA/MHD or NRRD header.
_TEXT_HEADER_PROBE = 1 << 20


def _check_data_file(path: Path) -> None:
    """Refuse an MHA/MHD or NRRD header whose data file lies elsewhere or is no file.

    Such a header names the file that holds its pixels, and SimpleITK opens whatever it
    names: ``ElementDataFile = /etc/passwd`` was read as pixels, a FIFO hung the read.
    The data must be inline or a plain name in the header's folder, and a regular file.
    """
    with open(path, "rb") as fh:
        head = fh.read(_TEXT_HEADER_PROBE)
    if head[:4] == b"NRRD":
        try:
            key, name = "data file", _nrrd_data_file(head)
        except ValueError:
            raise NotAnImageError(
                f"{path}: NRRD header longer than {_TEXT_HEADER_PROBE >> 20} MiB"
            ) from None
        if name is None:
            return  # data attached to the header
    elif _suffix(path) in (".mha", ".mhd") or b"ElementDataFile" in head:
        key, name = "ElementDataFile", _metaimage_data_file(head)
        if name is None:
            raise NotAnImageError(
                f"{path}: MetaImage header without ElementDataFile in its first "
                f"{_TEXT_HEADER_PROBE >> 20} MiB"
            )
        if name.upper() == "LOCAL":
            return
    else:
        return
    shown = name if len(name) <= 80 else name[:77] + "..."
    if (
        not name
        or name in (".", "..")
        or any(c in name for c in "/\\:")
        or any(c.isspace() or ord(c) < 32 for c in name)
        or name.upper().startswith("LIST")
    ):
        raise InputError(
            f"{path}: {key} {shown!r} is not a plain file name in the header's folder "
            "(no folders, absolute paths, lists or patterns)"
        )
    data = path.parent / name
    if data.is_symlink() or not data.is_file():
        what = "not a regular file" if data.is_symlink() or data.exists() else "missing"
        raise InputError(f"{path}: {key} {shown!r} is {what}")


def _header_lines(head: bytes) -> list[bytes]:
    """Lines ended by LF, CR or CR LF: teem (NRRD) accepts all three."""
    return re.split(rb"\r\n|\r|\n", head)


def _metaimage_data_file(head: bytes) -> str | None:
    """The value of ElementDataFile (the last field of a MetaImage header), or None."""
    for raw in _header_lines(head):
        key, sep, value = raw.partition(b"=")
        if sep and key.strip().lower() == b"elementdatafile":
            return value.strip().decode("latin-1")
    return None


def _nrrd_data_file(head: bytes) -> str | None:
    """The value of ``data file`` (or ``datafile``) in a NRRD header, or None."""
    for line in _header_lines(head)[1:]:
        if not line.strip():
            return None  # end of the header: attached data
        if line.startswith(b"#") or b":=" in line:
            continue
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() in (b"data file", b"datafile"):
            return value.strip().decode("latin-1")
    if len(head) >= _TEXT_HEADER_PROBE:
        raise ValueError("header")  # no end of header within the probe
    return None


def _read_plain(path: Path, spacing_mm, modality, decode: bool = True) -> Image:
    import SimpleITK as sitk

    _check_data_file(path)
    reader = _check_plain_size(path)
    if decode:
        try:
            img = reader.Execute()  # the reader whose header was sized
        except RuntimeError as exc:
            raise NotAnImageError(
                f"{path}: not a DICOM file and SimpleITK cannot read it as an image "
                f"({_sitk_reason(exc)})"
            ) from exc
        arr, ncomp = sitk.GetArrayFromImage(img), img.GetNumberOfComponentsPerPixel()
        dim, spacing = img.GetDimension(), img.GetSpacing()
        decode = True
    else:
        arr, ncomp = _plain_header_array(reader), reader.GetNumberOfComponents()
        dim, spacing = reader.GetDimension(), reader.GetSpacing()
    notes: list[str] = []
    if dim == 3:
        # (slices, rows, cols[, comp]) - read slices as frames.
        frames = arr
    elif dim == 2:
        frames = arr[None, ...]
    else:
        raise NotAnImageError(f"{path}: {dim}D image; expected 2D or a 2D stack")
    if ncomp > 1:
        if ncomp in (3, 4):
            frames = frames[..., :3]
            if ncomp == 4:
                notes.append("alpha channel dropped")
        else:
            notes.append(f"{ncomp} components per pixel; using the first")
            frames = frames[..., 0]
    source = "none: plain image without physical spacing"
    if spacing_mm is not None:
        source = "given by hand"
    elif _suffix(path) in _HEADER_SPACING_SUFFIXES:
        sx, sy = spacing[:2]
        spacing_mm = _check_spacing_arg((sy, sx), path)
        source = f"{_suffix(path)} header spacing (SimpleITK)"
    return Image(
        array=frames,
        modality=Modality(modality) if modality else Modality.OT,
        pixel_spacing_mm=spacing_mm,
        spacing_source=source,
        spacing_plane=SpacingPlane.UNSPECIFIED,
        source_path=str(path),
        photometric="RGB" if frames.ndim == 4 else "MONOCHROME2",
        notes=tuple(notes),
        pixels_decoded=decode,
    )


def _plain_header_array(reader) -> np.ndarray:
    """A zero-filled view with the shape and dtype SimpleITK would return; no memory."""
    import SimpleITK as sitk

    size = [int(n) for n in reader.GetSize()]
    ncomp = int(reader.GetNumberOfComponents())
    probe = sitk.Image([1] * len(size), reader.GetPixelID(), ncomp)
    dtype = sitk.GetArrayViewFromImage(probe).dtype
    shape = tuple(reversed(size)) + ((ncomp,) if ncomp > 1 else ())
    return np.broadcast_to(np.zeros((), dtype), shape)


# ---------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------


_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


def _conversion_errors() -> tuple[type[BaseException], ...]:
    """Failures of pydicom's lazy value conversion, or of our reading of those values.

    On a hostile file the file is at fault, never the program. (A function: pydicom is
    imported only when a DICOM file is read.)
    """
    from pydicom.errors import BytesLengthException

    return (
        BytesLengthException,
        NotImplementedError,
        TypeError,
        ValueError,
        KeyError,
        IndexError,
        AttributeError,
        OverflowError,
        struct.error,
        zlib.error,
        EOFError,
    )


def _convert_elements(ds, path: Path) -> None:
    """Convert the top-level elements read (not deferred ones) now, naming one that fails.

    pydicom converts raw bytes to values when first used; a corrupt value would otherwise
    fail somewhere deep in the reader with a message that names nothing. Sequence items
    are left to convert when used (a dose SR holds tens of thousands of them); a failure
    there is still reported as a corrupt file by the callers.
    """
    for tag in list(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        if tag in _PIXEL_TAGS or (raw is not None and getattr(raw, "value", 0) is None):
            continue  # pixel data and deferred values stay on disk
        try:
            ds[tag]
        except _conversion_errors() as exc:
            raise CorruptFileError(f"{path}: element {tag} unreadable ({_short(exc)})") from exc


def _read_dicom(path: Path, spacing_mm, us_region, decode: bool = True) -> Image:
    ds = _dcmread(path, defer_size=_DEFER_BYTES)
    _convert_elements(ds, path)
    sop = str(ds.get("SOPClassUID", ""))
    _refuse_non_image(ds, path, sop)
    notes: list[str] = []
    if sop in _ENHANCED_XRAY_SOP_CLASSES:
        _lift_functional_groups(ds, notes)
    _refuse_nonfinite_geometry(ds, path)
    modality = _modality(ds, sop, notes)
    shown = modality is Modality.US
    layout = _pixel_layout(ds, path, display=shown)
    photometric, inverted = _photometric_notes(layout.photometric, notes, shown)
    if not shown:
        _rescale_note(ds, notes)
    if decode:
        pixels = _decode_pixels(ds, path, layout, display=shown, notes=notes)
    else:
        pixels = np.broadcast_to(np.zeros((), layout.dtype), layout.shape)

    timing = dicom.frame_times(ds, pixels.shape[0])
    notes.extend(timing.notes)
    frame_times, times_source = timing.seconds, timing.source
    start, start_source = dicom.acquisition_start(ds)
    if start is None:
        notes.append("no acquisition date/time (AcquisitionDateTime, AcquisitionDate/Time)")
    else:
        times_source += f"; start from {start_source}"

    regions = _us_regions(ds, notes)
    geo = _geometry(ds, path, modality, (pixels, decode), layout, (regions, us_region), notes)
    spacing, spacing_source = geo.spacing, geo.spacing_source
    if spacing_mm is not None:
        if spacing is not None:
            notes.append(f"file spacing {spacing} mm ({spacing_source}) overridden by hand")
        spacing, spacing_source = spacing_mm, "given by hand"
    return Image(
        array=pixels,
        modality=modality,
        pixel_spacing_mm=spacing,
        spacing_source=spacing_source,
        spacing_plane=geo.plane,
        pixel_aspect_ratio=_pixel_aspect_ratio(ds, notes),
        frame_times_s=frame_times,
        frame_times_source=times_source,
        acquisition_datetime=start,
        mask=geo.mask,
        mask_source=geo.mask_source,
        us_regions=tuple(regions),
        us_region_index=geo.region_index,
        imaged_area=geo.area,
        xray=geo.xray,
        photometric=photometric,
        inverted=inverted,
        source_path=str(path),
        uids=_uids(ds),
        notes=tuple(notes),
        pixels_decoded=decode,
    )


def _refuse_non_image(ds, path: Path, sop: str) -> None:
    """Raise for a structured report, a DICOMDIR, no pixels, or an unsupported SOP class."""
    if sop.startswith(_SR_PREFIX):
        raise NotAnImageError(
            f"{path}: {_uid_name(sop)} is a structured report, not an image "
            "(for dose reports use 'hybridfuse dose report')"
        )
    if str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")) == (
        _DICOMDIR_SOP_CLASS
    ):
        raise NotAnImageError(
            f"{path}: a DICOMDIR (Media Storage Directory), the index of a file set, not an "
            "image: name the files it lists (PT*/ST*/SE*/...), or give 'run' its folder"
        )
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise NotAnImageError(
            f"{path}: no Pixel Data (7FE0,0010) in this {_uid_name(sop) or 'DICOM'} object"
        )
    if sop and sop not in IMAGE_SOP_CLASSES:
        raise UnsupportedSOPClassError(
            f"{path}: SOP class {_uid_name(sop)} ({sop}) is not supported; expected "
            "ultrasound, X-ray angiography/fluoroscopy, DX/CR or secondary capture"
        )


class _Geometry(NamedTuple):
    """What a file says of its pixels' size and of the part of them that is image."""

    spacing: tuple[float, float] | None = None
    spacing_source: str = "none"
    plane: SpacingPlane = SpacingPlane.UNSPECIFIED
    mask: np.ndarray | None = None
    mask_source: str = "none"
    area: imaged_area.ImagedArea | None = None
    region_index: int | None = None
    xray: XRayGeometry | None = None


def _geometry(ds, path, modality, decoded, layout, chosen, notes) -> _Geometry:
    """Spacing and mask: the ultrasound region's (or the screen's), or the X-ray unit's.

    ``decoded`` = (pixels, whether they were decoded); ``chosen`` = (regions, us_region).
    """
    pixels, decode = decoded
    regions, _ = chosen
    geo = _Geometry()
    if modality is Modality.US or regions:
        geo = _region_geometry(ds, path, modality, decoded, layout, chosen, notes)
    if modality is Modality.US and geo.area is None and decode:
        area = _screen_area(pixels, geo.spacing, notes)
        if area is not None:
            geo = geo._replace(area=area, mask=area.mask, mask_source=area.source)
    if modality.is_xray:
        xray = _xray_geometry(ds, path, notes)
        spacing, source, plane = _xray_spacing(ds, path, xray, notes)
        mask, mask_source = _collimator_mask(
            ds, pixels.shape[1:3], notes, _rows_per_column(spacing, ds)
        )
        geo = geo._replace(spacing=spacing, spacing_source=source, plane=plane, xray=xray)
        geo = geo._replace(mask=mask, mask_source=mask_source)
    elif modality is Modality.OT and geo.spacing is None:
        spacing, source, plane = _pixel_spacing_tags(ds, path, modality)
        geo = geo._replace(spacing=spacing, spacing_source=source, plane=plane)
    return geo


def _region_geometry(ds, path, modality, decoded, layout, chosen, notes) -> _Geometry:
    """The chosen ultrasound region's imaged area and calibration, else PixelSpacing."""
    (pixels, decode), (regions, us_region) = decoded, chosen
    geo = _Geometry(region_index=_choose_region(regions, us_region, path, notes, layout))
    if geo.region_index is not None:
        reg = regions[geo.region_index]
        area = _imaged_area(pixels, reg, geo.region_index, decode)
        geo = geo._replace(area=area, mask=area.mask, mask_source=area.source)
        if reg.is_calibrated_2d:
            source = (
                f"SequenceOfUltrasoundRegions[{geo.region_index}] PhysicalDeltaY/X "
                "(0018,602E)/(0018,602C), cm converted to mm"
            )
            geo = geo._replace(
                spacing=(reg.delta_y_mm, reg.delta_x_mm),
                spacing_source=source,
                plane=SpacingPlane.ULTRASOUND,
            )
    if geo.spacing is None:
        spacing, source, plane = _pixel_spacing_tags(ds, path, modality)
        if spacing is None:
            source = (
                "none: no ultrasound region calibrated in cm "
                "(PhysicalUnitsX/YDirection = 3) and no PixelSpacing"
            )
        geo = geo._replace(spacing=spacing, spacing_source=source, plane=plane)
    return geo


def _uids(ds) -> dict[str, str]:
    """The object's study, series, instance, class and frame-of-reference UIDs present."""
    return {
        key: str(ds.get(attr))
        for key, attr in (
            ("study", "StudyInstanceUID"),
            ("series", "SeriesInstanceUID"),
            ("sop_instance", "SOPInstanceUID"),
            ("sop_class", "SOPClassUID"),
            ("frame_of_reference", "FrameOfReferenceUID"),
        )
        if ds.get(attr)
    }


_ENHANCED_XRAY_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.12.1.1",  # Enhanced XA Image Storage
    "1.2.840.10008.5.1.4.1.1.12.2.1",  # Enhanced XRF Image Storage
}
#: Where Enhanced XA/XRF (PS3.3 A.53) keep, in a functional group, what XA/RF keep at the
#: top level: (functional group sequence, attribute in it, top-level attribute).
_FUNCTIONAL_GROUP_ATTRS = (
    ("FramePixelDataPropertiesSequence", "ImagerPixelSpacing", "ImagerPixelSpacing"),
    ("XRayGeometrySequence", "DistanceSourceToDetector", "DistanceSourceToDetector"),
    ("XRayGeometrySequence", "DistanceSourceToIsocenter", "DistanceSourceToPatient"),
    ("PositionerPositionSequence", "PositionerPrimaryAngle", "PositionerPrimaryAngle"),
    ("PositionerPositionSequence", "PositionerSecondaryAngle", "PositionerSecondaryAngle"),
    ("PixelMeasuresSequence", "PixelSpacing", "PixelSpacing"),
    *(
        ("FrameDisplayShutterSequence", name, name)
        for name in (
            "ShutterShape",
            "CenterOfCircularShutter",
            "RadiusOfCircularShutter",
            "ShutterLeftVerticalEdge",
            "ShutterRightVerticalEdge",
            "ShutterUpperHorizontalEdge",
            "ShutterLowerHorizontalEdge",
            "VerticesOfThePolygonalShutter",
        )
    ),
)


def _lift_functional_groups(ds, notes: list[str]) -> None:
    """Copy an Enhanced XA/XRF's geometry from its functional groups to the top level.

    The shared group's value is taken, else the per-frame one when every frame gives the
    same (a value that changes over the run is left out, with a note); a top-level value
    the file also carries is kept. Without this, spacing, distances, angles and shutters
    written only where the IOD puts them were read as absent.
    """

    def value(group, seq_kw: str, attr: str):
        items = group.get(seq_kw) if group is not None else None
        return items[0].get(attr) if items else None

    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    for seq_kw, attr, top in _FUNCTIONAL_GROUP_ATTRS:
        if top in ds:
            continue
        found = value(shared, seq_kw, attr)
        if found is None and per_frame:
            values = [value(item, seq_kw, attr) for item in per_frame]
            if values[0] is not None and all(v == values[0] for v in values):
                found = values[0]
            elif any(v is not None for v in values):
                notes.append(f"{attr} varies over the frames' functional groups; not used")
        if found is not None:
            setattr(ds, top, found)


def _imaged_area(pixels: np.ndarray, reg: UltrasoundRegion, index: int, decoded: bool):
    """The tissue shown inside the chosen region (its bounds alone when not decoded)."""
    box = (reg.x0, reg.y0, reg.x1, reg.y1)
    where = f"SequenceOfUltrasoundRegions[{index}] bounds (0018,6018..601E)"
    if not decoded:
        return imaged_area.region_area(pixels.shape[1:3], box, where)
    spacing = (reg.delta_y_mm, reg.delta_x_mm) if reg.is_calibrated_2d else None
    area = imaged_area.find_imaged_area(pixels, box, spacing)
    return dataclasses.replace(area, source=f"{area.source}: {where}")


def _screen_area(pixels: np.ndarray, spacing, notes: list[str]) -> imaged_area.ImagedArea | None:
    """The tissue on an ultrasound screen with no regions (a screen capture).

    Without regions nothing says where the image lies among the screen's rulers, text and
    menus; the imaged area is found in the whole frame, as inside a region, so that they
    are not fused as tissue. None where no area is found (the whole frame is used).
    """
    rows, cols = pixels.shape[1:3]
    area = imaged_area.find_imaged_area(pixels, (0, 0, cols - 1, rows - 1), spacing, screen=True)
    if area.shape == "region" or not area.mask.any():  # nothing found: all of it, as before
        notes.append(f"no ultrasound regions, and no one imaged area in the pixels ({area.source})")
        return None
    notes.append(f"no ultrasound regions: the imaged area ({area.shape}) found in the pixels")
    where = area.source.replace(" within the region", "")
    return dataclasses.replace(area, source=f"{where}: whole frame, no ultrasound regions")


#: Geometry attributes whose values scale millimetres, angles or frame positions. A
#: non-finite value in any is refused: treated as absent, it left the pipeline to divide
#: by None (``run``) or to fuse an ultrasound with no calibration and exit 0.
_GEOMETRY_TAGS = (
    ("PixelSpacing", "(0028,0030)"),
    ("ImagerPixelSpacing", "(0018,1164)"),
    ("DistanceSourceToDetector", "(0018,1110)"),
    ("DistanceSourceToPatient", "(0018,1111)"),
    ("EstimatedRadiographicMagnificationFactor", "(0018,1114)"),
    ("PositionerPrimaryAngle", "(0018,1510)"),
    ("PositionerSecondaryAngle", "(0018,1511)"),
)
_US_REGION_GEOMETRY_TAGS = (
    ("PhysicalDeltaX", "(0018,602C)"),
    ("PhysicalDeltaY", "(0018,602E)"),
    ("ReferencePixelX0", "(0018,6020)"),
    ("ReferencePixelY0", "(0018,6022)"),
)


def _nonfinite_text(value) -> str | None:
    """The first value of an element that parses as a number but is not finite (inf, nan)."""
    if value is None:
        return None
    if hasattr(value, "value"):
        value = value.value
    for item in as_list(value):
        if item is None or isinstance(item, (bytes, bytearray)):
            continue
        try:
            number = float(str(item).strip().replace(",", "."))
        except ValueError:
            continue
        if not np.isfinite(number):
            return str(item).strip()[:20]
    return None


def _refuse_nonfinite_geometry(ds, path: Path) -> None:
    """Refuse inf/nan in pixel spacing, C-arm distances and ultrasound calibration."""
    for keyword, tag in _GEOMETRY_TAGS:
        bad = _nonfinite_text(ds.get(keyword))
        if bad is not None:
            raise InputError(f"{path}: {keyword} {tag} = {bad}; expected a finite number")
    for i, item in enumerate(ds.get("SequenceOfUltrasoundRegions", []) or []):
        for keyword, tag in _US_REGION_GEOMETRY_TAGS:
            bad = _nonfinite_text(item.get(keyword))
            if bad is not None:
                raise InputError(
                    f"{path}: SequenceOfUltrasoundRegions[{i}] {keyword} {tag} = {bad}; "
                    "expected a finite number"
                )


def _modality(ds, sop: str, notes: list[str]) -> Modality:
    declared = str(ds.get("Modality", "")).upper()
    implied = IMAGE_SOP_CLASSES.get(sop, Modality.OT)
    try:
        mod = Modality(declared)
    except ValueError:
        if declared:
            notes.append(f"Modality '{declared}' not one we know; using {implied.value}")
        return implied
    if implied is not Modality.OT and mod is not implied:
        notes.append(
            f"Modality '{declared}' disagrees with SOP class ({implied.value}); "
            f"using {implied.value}"
        )
        return implied
    return mod


@dataclass(frozen=True)
class _Layout:
    """What a DICOM header declares its pixels decode to, as this reader returns them."""

    rows: int
    cols: int
    frames: int
    samples: int
    photometric: str
    dtype: np.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        colour = (3,) if self.samples == 3 else ()
        return (self.frames, self.rows, self.cols, *colour)

    @property
    def nbytes(self) -> int:
        return self.frames * self.rows * self.cols * self.samples * self.dtype.itemsize

    @property
    def footprint(self) -> int:
        """Decoded pixels plus one float32 working frame (what ``Image.gray`` makes)."""
        return self.nbytes + self.rows * self.cols * self.samples * 4


def _int_attr(ds, keyword: str, tag: str, path: Path, default: int | None) -> int:
    try:
        value = ds.get(keyword)
        if value is None or (isinstance(value, str) and not value.strip()):
            if default is None:
                raise CorruptFileError(f"{path}: {keyword} {tag} is missing")
            return default
        number = float(value)
    except (TypeError, ValueError, struct.error, OverflowError) as exc:
        raise CorruptFileError(f"{path}: {keyword} {tag} is not a number") from exc
    if not (np.isfinite(number) and number == int(number)):
        raise CorruptFileError(f"{path}: {keyword} {tag} = {value!s:.40} is not an integer")
    return int(number)


def _pixel_layout(ds, path: Path, display: bool = False) -> _Layout:
    """Check the Image Pixel module's declaration and the decode limit; nothing is decoded.

    ``display``: the frames are kept as 0-255 display pixels (:mod:`fusion.display`).
    """
    rows = _int_attr(ds, "Rows", "(0028,0010)", path, None)
    cols = _int_attr(ds, "Columns", "(0028,0011)", path, None)
    for name, value in (("Rows (0028,0010)", rows), ("Columns (0028,0011)", cols)):
        if not 1 <= value <= _MAX_DIM:
            raise CorruptFileError(f"{path}: {name} = {value}; expected 1..{_MAX_DIM}")
    frames = _int_attr(ds, "NumberOfFrames", "(0028,0008)", path, 1)
    if frames < 1:
        raise CorruptFileError(f"{path}: NumberOfFrames (0028,0008) = {frames}; expected >= 1")
    samples = _int_attr(ds, "SamplesPerPixel", "(0028,0002)", path, 1)
    if samples not in (1, 3):
        raise CorruptFileError(f"{path}: SamplesPerPixel (0028,0002) = {samples} not supported")
    bits = _int_attr(ds, "BitsAllocated", "(0028,0100)", path, None)
    if bits not in (1, 8, 16, 32, 64):
        raise CorruptFileError(
            f"{path}: BitsAllocated (0028,0100) = {bits}; expected 1, 8, 16, 32 or 64"
        )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2")
    photometric = photometric.strip().upper()
    if photometric == "PALETTE COLOR":
        samples = 3
    layout = _Layout(
        rows,
        cols,
        frames,
        samples,
        photometric,
        np.dtype(np.uint8) if display else _decoded_dtype(ds, photometric, bits),
    )
    limit = max_decoded_bytes()
    need = layout.footprint
    extra = "one working frame"
    if dicom.is_deflated(path):
        # pydicom holds the inflated data set while the frames are copied out of it.
        need += layout.nbytes
        extra += " and the inflated data set"
    if need > limit:
        raise InputError(
            f"{path}: declares {frames} frame(s) of {rows} x {cols} x {samples} sample(s) of "
            f"{layout.dtype.itemsize} byte(s): {_gib(need)} to decode with {extra}, above "
            f"the {_gib(limit)} limit ({MAX_DECODED_ENV})"
        )
    _check_native_length(ds, path)
    return layout


def _decoded_dtype(ds, photometric: str, bits: int) -> np.dtype:
    """The dtype pydicom decodes to, after the palette and MONOCHROME1 steps below."""
    if photometric == "PALETTE COLOR":
        desc = as_list(ds.get("RedPaletteColorLookupTableDescriptor", []) or [])
        lut_bits = int(parse_number(desc[2]) or 16) if len(desc) == 3 else 16
        return np.dtype(np.uint8 if lut_bits <= 8 else np.uint16)
    if "PixelData" not in ds:
        return np.dtype(np.float32 if "FloatPixelData" in ds else np.float64)
    signed = str(ds.get("PixelRepresentation", 0)).strip() == "1"
    if photometric == "MONOCHROME1" and signed:
        return np.dtype(np.float32)
    size = 1 if bits <= 8 else bits // 8
    return np.dtype(f"{'i' if signed else 'u'}{size}")


def _transfer_syntax(ds, path: Path):
    from pydicom.uid import UID

    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if not tsyntax:
        return None
    tsyntax = UID(str(tsyntax))
    if not tsyntax.is_transfer_syntax:
        raise DecoderMissingError(
            f"{path}: Transfer Syntax UID (0002,0010) {str(tsyntax)[:64]} is not one we know; "
            "its pixel data cannot be decoded"
        )
    return tsyntax


def _check_native_length(ds, path: Path) -> None:
    """Uncompressed pixel data must hold what Rows x Columns x frames declare.

    Less is a truncated file. More, by as much as one size declared one short leaves (a
    column short shears every row, a frame short drops one), is refused too; a shorter
    trailing pad is tolerated, as pydicom does.
    """
    from pydicom.pixels.utils import get_expected_length

    tsyntax = _transfer_syntax(ds, path)
    if tsyntax is None or tsyntax.is_encapsulated or "PixelData" not in ds:
        return
    elem = ds.get_item(0x7FE00010, keep_deferred=True)
    length = elem.length if getattr(elem, "value", None) is None else len(elem.value)
    expected = get_expected_length(ds)
    if length == 0xFFFFFFFF or length < expected:
        held = "undefined length" if length == 0xFFFFFFFF else f"{length} bytes"
        raise CorruptFileError(
            f"{path}: truncated pixel data: Pixel Data (7FE0,0010) holds {held}, less than "
            f"the {expected} bytes its Rows, Columns, NumberOfFrames and BitsAllocated declare"
        )
    # A size declared one short leaves at least min(Rows, Columns) bytes over.
    if length - expected >= max(2, min(int(ds.get("Rows") or 0), int(ds.get("Columns") or 0))):
        raise CorruptFileError(
            f"{path}: Pixel Data (7FE0,0010) holds {length} bytes, {length - expected} more "
            f"than the {expected} its Rows, Columns, NumberOfFrames, SamplesPerPixel and "
            "BitsAllocated declare: one of them is wrong, and the image would be read "
            "sheared or short of frames"
        )


def _decoder_check(tsyntax, path: Path) -> None:
    from pydicom.pixels import get_decoder

    if tsyntax is None:
        raise CorruptFileError(f"{path}: no Transfer Syntax UID (0002,0010); pixels unreadable")
    if not tsyntax.is_compressed:
        return
    name = _uid_name(str(tsyntax))
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as exc:
        raise DecoderMissingError(f"{path}: no decoder for {name} ({tsyntax}) pixel data") from exc
    if not decoder.is_available:
        need = "; ".join(decoder.missing_dependencies[:2]) or "a pydicom decoding plugin"
        raise DecoderMissingError(
            f"{path}: cannot decode {name} pixel data: no decoder installed (needs {need})"
        )


def _decode_pixels(
    ds, path: Path, layout: _Layout, display: bool = False, notes: list[str] | None = None
) -> np.ndarray:
    """Decode frame by frame into one array: no second full copy is ever held.

    Frames come straight from the file where pydicom can read it (not deflated), so the
    encoded pixel data is not held in memory as a whole either. With ``display`` each
    frame becomes 0-255 display pixels (:mod:`fusion.display`) as it is decoded.
    """
    tsyntax = _transfer_syntax(ds, path)
    _decoder_check(tsyntax, path)
    if tsyntax is not None and tsyntax.is_encapsulated:
        _check_codestream_sizes(ds, path, layout)
    plan = _display_plan(ds, path, layout, tsyntax) if display else None
    if plan is not None and notes is not None:
        notes.append(f"shown as the scanner displays it: {plan.description}")
    out = None
    frames = _iter_frames(ds, path)
    try:
        for index in range(layout.frames):
            frame = _next_frame(frames, path, tsyntax, index, layout.frames)
            if plan is None:
                frame = _normalise_frame(frame, ds, layout, path)
            else:
                frame = _display_frame(frame, ds, plan, path)
            if out is None:
                out = np.empty(layout.shape, dtype=frame.dtype)
            if frame.shape != out.shape[1:]:
                raise CorruptFileError(
                    f"{path}: frame {index + 1} of {layout.frames} decodes to shape "
                    f"{frame.shape}; the header declares {out.shape[1:]}"
                )
            out[index] = frame
    finally:
        frames.close()
    return out


def _iter_frames(ds, path: Path):
    """Frames as pydicom decodes them, from the file itself where it can read it (not deflated)."""
    from pydicom.pixels import iter_pixels, pixel_array
    from pydicom.uid import UID

    from_file = is_dicom_file(path) and "PixelData" in ds and not dicom.is_deflated(path)
    meta = getattr(ds, "file_meta", None)
    tsyntax = meta.get("TransferSyntaxUID") if meta is not None else None
    native = tsyntax is not None and not UID(str(tsyntax)).is_encapsulated
    if native and str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        # pydicom 3.0's frame iterator takes 3 bytes per pixel for native YBR_FULL_422
        # (it holds 2): frames read sheared, then "insufficient pixel data". Its whole-array
        # decoder sizes them right; the array is what the decode limit already allowed.
        return _frames_of(pixel_array(ds))
    return iter_pixels(path if from_file else ds)


def _frames_of(array: np.ndarray):
    yield from array if array.ndim == 4 else array[None]


def _display_plan(ds, path: Path, layout: _Layout, tsyntax):
    """The display steps; greyscale wider than 8 bits with no VOI needs one pass for its range."""
    plan = display.plan_display(ds, layout.photometric)
    if plan.kind != "grey" or plan.value_range in (None, (0.0, 255.0)):
        return plan
    frames = _iter_frames(ds, path)
    try:
        seen = (_next_frame(frames, path, tsyntax, i, layout.frames) for i in range(layout.frames))
        return display.plan_display(ds, layout.photometric, display.stored_range(seen, ds))
    finally:
        frames.close()


def _display_frame(frame: np.ndarray, ds, plan, path: Path) -> np.ndarray:
    try:
        with _quiet_pydicom():
            return display.to_display(frame, ds, plan)
    except CorruptFileError as exc:
        raise CorruptFileError(f"{path}: {exc}") from exc
    except (ValueError, TypeError, IndexError, AttributeError, KeyError) as exc:
        raise CorruptFileError(f"{path}: display lookup tables unusable ({_short(exc)})") from exc


#: Bytes of a fragment read first to find its codestream's size (the whole fragment is
#: read only when its header segments run past this).
_CODESTREAM_PROBE = 1 << 16
#: Most bytes of a codestream searched for its size, over at most this many fragments;
#: a size not found within them is refused (a decoder would read on).
_CODESTREAM_HEADER_MAX = 1 << 20
_CODESTREAM_MAX_FRAGMENTS = 16
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
#: JPEG start-of-frame markers that carry the image size (SOF0..SOF15 less DHT, JPG,
#: DAC), the hierarchical DHP (same layout, the whole image's size, before any SOF) and
#: JPEG-LS SOF55. A zero there is refused too: JPEG-LS then takes the size from an LSE
#: segment (up to 32 bits), a DNL marker gives a deferred height.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xDE, 0xF7}
#: Markers that stand alone (no length): TEM, RST0..7, SOI, EOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})


def _check_codestream_sizes(ds, path: Path, layout: _Layout) -> None:
    """Refuse a compressed frame whose codestream declares another size than the header.

    Decoders allocate what the codestream declares (JPEG SOF, JPEG-LS SOF55, JPEG 2000 /
    HTJ2K SIZ): a 16 x 16 JPEG patched to declare 65000 x 65000 took 16.7 GB to decode
    under a DICOM header of 480 x 640. Every fragment that begins a codestream is
    checked, reading only its header bytes, before any frame is decoded.
    """
    import io

    elem = ds.get_item(0x7FE00010, keep_deferred=True)
    if elem is None:
        return
    value = getattr(elem, "value", None)
    if value is None:
        handle = open(path, "rb")  # deferred: read the items from the file
        handle.seek(elem.value_tell)
    else:
        handle = io.BytesIO(bytes(value))
    frame = 0
    with handle:
        for start, length in _fragments(handle, path):
            handle.seek(start)
            head = handle.read(min(length, _CODESTREAM_PROBE))
            size = _codestream_size(head)
            if size is None:
                continue  # not the start of a codestream: a continuation fragment
            frame += 1
            if size == "more":  # header segments run on, maybe into the next fragments
                handle.seek(start)
                data = handle.read(min(length, _CODESTREAM_HEADER_MAX))
                data += _following_bytes(handle, start + length, _CODESTREAM_HEADER_MAX - len(data))
                size = _codestream_size(data, final=True)
                if size == "more" and len(data) >= _CODESTREAM_HEADER_MAX:
                    raise CorruptFileError(
                        f"{path}: frame {frame}: no image size in the first "
                        f"{_CODESTREAM_HEADER_MAX >> 20} MiB of its codestream"
                    )
            if size in ("more", "none"):
                continue  # no size at all: nothing to allocate, the decoder refuses it
            if size != (layout.rows, layout.cols):
                raise CorruptFileError(
                    f"{path}: frame {frame}: codestream declares {size[0]} x {size[1]}, "
                    f"header says Rows x Columns {layout.rows} x {layout.cols}"
                )


def _following_bytes(handle, offset: int, budget: int) -> bytes:
    """The data of the fragments after ``offset`` (an item header), for a split header.

    At most ``budget`` bytes and :data:`_CODESTREAM_MAX_FRAGMENTS` fragments; cut short
    by the fragment count, it is padded to ``budget`` so that the caller refuses it.
    """
    out = bytearray()
    handle.seek(offset)
    for _ in range(_CODESTREAM_MAX_FRAGMENTS):
        if len(out) >= budget:
            break
        header = handle.read(8)
        if len(header) < 8:
            break
        group, element, length = struct.unpack("<HHL", header)
        if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            break
        out += handle.read(min(length, budget - len(out)))
    else:
        out += b"\0" * max(budget - len(out), 0)
    return bytes(out)


def _fragments(handle, path: Path):
    """(offset, length) of each fragment of encapsulated pixel data; the offset table skipped.

    Only item headers are read: 8 bytes per fragment.
    """
    first = True
    while True:
        header = handle.read(8)
        if len(header) < 8:
            return  # truncated: the decoder says so
        group, element, length = struct.unpack("<HHL", header)
        if (group, element) == (0xFFFE, 0xE0DD):
            return
        if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            raise CorruptFileError(
                f"{path}: encapsulated Pixel Data (7FE0,0010) holds an item "
                f"({group:04X},{element:04X}) where a fragment was expected"
            )
        start = handle.tell()
        if not first:
            yield start, length
        first = False
        handle.seek(start + length)


def _codestream_size(data: bytes, final: bool = False):
    """(rows, columns) a codestream declares, read from its first bytes.

    None when ``data`` does not begin a codestream (a continuation fragment); ``"more"``
    when it begins one but its size lies beyond ``data``; ``"none"`` when it declares
    no image at all (scan before any frame header, an empty JPEG 2000 image). ``final``:
    ``data`` is all there is to search, so a JPEG size seen before the scan counts.
    """
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data, final)
    if data[:4] == _J2K_SOC_SIZ or data[:12] == _JP2_SIGNATURE:
        at = data.find(_J2K_SOC_SIZ)
        if at < 0 or len(data) < at + 24:
            return "more"
        # SIZ: Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz (the image is Xsiz-XOsiz wide).
        xsiz, ysiz, xo, yo = struct.unpack(">LLLL", data[at + 8 : at + 24])
        if xsiz <= xo or ysiz <= yo:
            return "none"  # an empty image: OpenJPEG refuses it
        return (ysiz - yo, xsiz - xo)
    return None


def _jpeg_size(data: bytes, final: bool = False):
    """Rows and columns from a JPEG or JPEG-LS header, read up to the first scan.

    The first DHP/SOF gives the size; a JPEG-LS LSE segment of ID 4 (oversize
    dimensions, up to 32 bits) replaces it, as CharLS does. "more" when the scan is not
    reached (unless ``final`` and a size was seen); "none" when the scan comes first.
    Bytes between segments are skipped up to the next 0xFF, as libjpeg does.
    """
    pos, end, size = 2, len(data), None
    while pos < end:
        if data[pos] != 0xFF:
            pos += 1
            continue
        while pos < end and data[pos] == 0xFF:
            pos += 1  # fill bytes
        if pos >= end:
            break
        marker = data[pos]
        pos += 1
        if marker == 0x00 or marker in _JPEG_STANDALONE:
            continue
        if marker == 0xDA:  # start of scan: the header is complete
            return size if size is not None else "none"
        if pos + 2 > end:
            break
        (seglen,) = struct.unpack(">H", data[pos : pos + 2])
        if marker in _JPEG_SOF and size is None:
            if pos + 7 > end:
                break
            size = struct.unpack(">HH", data[pos + 3 : pos + 7])
        elif marker == 0xF8 and pos + 4 <= end and data[pos + 2] == 4:
            width = data[pos + 3]
            if pos + 4 + 2 * width > end:
                break
            rows = int.from_bytes(data[pos + 4 : pos + 4 + width], "big")
            cols = int.from_bytes(data[pos + 4 + width : pos + 4 + 2 * width], "big")
            size = (rows, cols)
        pos += max(seglen, 2)
    return size if final and size is not None else "more"


def _next_frame(frames, path: Path, tsyntax, index: int, n: int) -> np.ndarray:
    try:
        with _quiet_pydicom():
            return next(frames)
    except StopIteration:
        raise CorruptFileError(
            f"{path}: pixel data holds {index} frame(s); NumberOfFrames declares {n}"
        ) from None
    except MemoryError as exc:
        raise CorruptFileError(f"{path}: frame {index + 1} of {n} does not fit in memory") from exc
    except Exception as exc:  # every decoder failure is this file's fault
        codec = "pixel" if tsyntax is None else _uid_name(str(tsyntax))
        # pydicom prefixes each plugin's complaint with a sentence about its plugins.
        reason = _short(exc, limit=1000).split("available plugins: ", 1)[-1]
        raise CorruptFileError(
            f"{path}: frame {index + 1} of {n}: {codec} data corrupt ({_short(reason, 120)})"
        ) from exc


def _normalise_frame(frame: np.ndarray, ds, layout: _Layout, path: Path) -> np.ndarray:
    """Palette to RGB, MONOCHROME1 to MONOCHROME2 sense, on one frame."""
    from pydicom.pixels import apply_color_lut

    if layout.photometric == "PALETTE COLOR":
        try:
            with _quiet_pydicom():
                return apply_color_lut(frame, ds)
        except Exception as exc:
            raise CorruptFileError(
                f"{path}: palette colour lookup table unusable ({_short(exc)})"
            ) from exc
    if layout.photometric != "MONOCHROME1":
        return frame
    if frame.dtype.kind != "u":
        return -frame.astype(np.float32)
    width = frame.dtype.itemsize * 8
    stored = parse_number(ds.get("BitsStored")) or width
    top = (1 << int(min(max(stored, 1), width))) - 1
    np.minimum(frame, top, out=frame)
    return np.subtract(top, frame, dtype=frame.dtype)


def _rescale_note(ds, notes: list[str]) -> None:
    slope = parse_number(ds.get("RescaleSlope"))
    intercept = parse_number(ds.get("RescaleIntercept"))
    slope = 1.0 if slope is None or slope == 0 else slope
    intercept = intercept or 0.0
    if slope != 1 or intercept != 0:
        notes.append(
            f"Modality LUT (RescaleSlope {slope}, RescaleIntercept {intercept}) not applied: "
            "stored values are used"
        )


def _photometric_notes(photometric: str, notes: list[str], shown: bool) -> tuple[str, bool]:
    if photometric == "PALETTE COLOR" and not shown:
        notes.append("PALETTE COLOR expanded to RGB through its lookup tables")
    elif photometric.startswith("YBR"):
        # pydicom converts YBR to RGB by default when it decodes pixel data.
        notes.append(f"{photometric} converted to RGB by the decoder")
    inverted = photometric == "MONOCHROME1"
    if inverted:
        notes.append("MONOCHROME1 inverted so that higher values are brighter")
    return photometric, inverted


def _pair(value) -> tuple[float, float] | None:
    pair = dicom.parse_number_pair(value)
    return pair if pair is not None and min(pair) > 0 else None


def _spacing_pair(ds, keyword: str, tag: str, path: Path, bounds, what: str):
    """A spacing attribute as (row, col) mm; None when absent or not two numbers.

    Two numbers outside ``bounds`` (mm) are refused: a wrong unit or a corrupt value
    would scale every millimetre the pipeline reports.
    """
    pair = dicom.parse_number_pair(ds.get(keyword))
    if pair is None:
        return None
    lo, hi = bounds
    if not all(lo <= v <= hi for v in pair):
        raise InputError(
            f"{path}: {keyword} {tag} = {pair[0]:g}\\{pair[1]:g} mm is outside the "
            f"plausible {lo:g}..{hi:g} mm for {what}"
        )
    return pair


def _pixel_aspect_ratio(ds, notes: list[str]) -> tuple[float, float] | None:
    """(0028,0034) Pixel Aspect Ratio as (vertical, horizontal); None, noted, when unusable."""
    if "PixelAspectRatio" not in ds:
        return None
    pair = _pair(ds.get("PixelAspectRatio"))
    if pair is None:
        notes.append("PixelAspectRatio (0028,0034) present but not two positive numbers; ignored")
    return pair


def _spacing_bounds(modality: Modality) -> tuple[tuple[float, float], str]:
    if modality.is_xray:
        return XRAY_SPACING_RANGE_MM, "an X-ray image"
    if modality is Modality.US:
        return US_SPACING_RANGE_MM, "an ultrasound image"
    return OTHER_SPACING_RANGE_MM, "an image"


def _us_regions(ds, notes: list[str]) -> list[UltrasoundRegion]:
    regions = []
    for i, item in enumerate(ds.get("SequenceOfUltrasoundRegions", []) or []):
        try:
            x0 = int(item.RegionLocationMinX0)
            y0 = int(item.RegionLocationMinY0)
            x1 = int(item.RegionLocationMaxX1)
            y1 = int(item.RegionLocationMaxY1)
        except (AttributeError, TypeError, ValueError):
            notes.append(f"ultrasound region {i} has no usable bounds; ignored")
            continue
        ux = parse_code(item.get("PhysicalUnitsXDirection"))
        uy = parse_code(item.get("PhysicalUnitsYDirection"))
        dx = parse_number(item.get("PhysicalDeltaX"))
        dy = parse_number(item.get("PhysicalDeltaY"))
        ref_x = parse_number(item.get("ReferencePixelX0")) or 0.0
        ref_y = parse_number(item.get("ReferencePixelY0")) or 0.0
        regions.append(
            UltrasoundRegion(
                x0=x0,
                y0=y0,
                x1=x1,
                y1=y1,
                delta_x_mm=abs(dx) * 10.0 if ux == _US_UNIT_CM and dx else None,
                delta_y_mm=abs(dy) * 10.0 if uy == _US_UNIT_CM and dy else None,
                # DICOM stores the reference pixel relative to the region's corner.
                reference_x=x0 + ref_x,
                reference_y=y0 + ref_y,
                spatial_format=parse_code(item.get("RegionSpatialFormat")),
                data_type=parse_code(item.get("RegionDataType")),
            )
        )
    return regions


def _choose_region(regions, requested, path, notes, layout) -> int | None:
    inside = [_region_inside(r, layout) for r in regions]
    if requested is not None:
        if not 0 <= requested < len(regions):
            raise InputError(
                f"{path}: ultrasound region {requested} requested but the file has "
                f"{len(regions)} region(s)"
            )
        if not inside[requested]:
            raise InputError(
                f"{path}: SequenceOfUltrasoundRegions[{requested}] bounds lie outside the "
                f"{layout.rows} x {layout.cols} image or are reversed"
            )
        if regions[requested].is_calibrated_2d:
            _check_region_deltas(regions[requested], requested, path)
        return requested
    outside = [i for i, r in enumerate(regions) if r.is_calibrated_2d and not inside[i]]
    if outside:
        notes.append(f"ultrasound region(s) {outside} outside the image or reversed; ignored")
    usable = [i for i, r in enumerate(regions) if r.is_calibrated_2d and inside[i]]
    tissue = [i for i in usable if regions[i].data_type in (1, 0)]
    calibrated = tissue or usable
    if not calibrated:
        return None
    _check_region_deltas(regions[calibrated[0]], calibrated[0], path)
    _check_no_rival(regions, calibrated, path)
    if len(calibrated) > 1:
        notes.append(
            f"{len(calibrated)} calibrated 2D ultrasound regions {calibrated}; using region "
            f"{calibrated[0]} (choose another with --us-region)"
        )
    reg = regions[calibrated[0]]
    if (
        reg.delta_x_mm
        and reg.delta_y_mm
        and not np.isclose(reg.delta_x_mm, reg.delta_y_mm, rtol=1e-3)
    ):
        notes.append(
            f"anisotropic ultrasound pixels: {reg.delta_x_mm:.4f} mm (x) x "
            f"{reg.delta_y_mm:.4f} mm (y)"
        )
    return calibrated[0]


def _check_no_rival(regions, calibrated: list[int], path) -> None:
    """Refuse a first region that overlaps another calibrated one of other pixel sizes.

    Which calibration holds for the pixels both cover is then unknown, and taking the
    first made every millimetre of the answer 2x off without a word (hostile-input sweep).
    Side-by-side views (dual mode) do not overlap; --us-region chooses explicitly.
    """
    first = regions[calibrated[0]]
    for i in calibrated[1:]:
        other = regions[i]
        overlap = (
            first.x0 <= other.x1
            and other.x0 <= first.x1
            and first.y0 <= other.y1
            and other.y0 <= first.y1
        )
        same = np.allclose(
            [first.delta_x_mm, first.delta_y_mm], [other.delta_x_mm, other.delta_y_mm], rtol=1e-3
        )
        if overlap and not same:
            raise InputError(
                f"{path}: ultrasound regions {calibrated[0]} and {i} overlap but give other "
                f"pixel sizes ({first.delta_x_mm:.4g} against {other.delta_x_mm:.4g} mm): "
                "which calibration holds is unknown; choose one with --us-region"
            )


def _region_inside(region: UltrasoundRegion, layout: _Layout) -> bool:
    """The region's bounds are ordered and overlap the image."""
    return (
        region.x0 <= region.x1
        and region.y0 <= region.y1
        and region.x1 >= 0
        and region.y1 >= 0
        and region.x0 < layout.cols
        and region.y0 < layout.rows
    )


def _check_region_deltas(region: UltrasoundRegion, index: int, path: Path) -> None:
    lo, hi = US_SPACING_RANGE_MM
    for axis, tag, delta in (
        ("X", "(0018,602C)", region.delta_x_mm),
        ("Y", "(0018,602E)", region.delta_y_mm),
    ):
        if delta is not None and not lo <= delta <= hi:
            raise InputError(
                f"{path}: SequenceOfUltrasoundRegions[{index}] PhysicalDelta{axis} {tag} = "
                f"{delta / 10:g} cm ({delta:g} mm) is outside the plausible {lo:g}..{hi:g} mm "
                "per pixel for ultrasound"
            )


def _pixel_spacing_tags(ds, path, modality):
    bounds, what = _spacing_bounds(modality)
    spacing = _spacing_pair(ds, "PixelSpacing", "(0028,0030)", path, bounds, what)
    if spacing is not None:
        return spacing, "PixelSpacing (0028,0030)", SpacingPlane.PATIENT
    spacing = _spacing_pair(ds, "ImagerPixelSpacing", "(0018,1164)", path, bounds, what)
    if spacing is not None:
        return spacing, "ImagerPixelSpacing (0018,1164)", SpacingPlane.DETECTOR
    return None, "none", SpacingPlane.UNSPECIFIED


def _xray_geometry(ds, path, notes) -> XRayGeometry:
    shapes = {str(s).upper() for s in as_list(ds.get("ShutterShape", "") or "") if s}
    shapes |= {str(s).upper() for s in as_list(ds.get("CollimatorShape", "") or "") if s}
    if "CIRCULAR" in shapes:
        collimator = CollimatorShape.CIRCULAR
    elif "RECTANGULAR" in shapes:
        collimator = CollimatorShape.RECTANGULAR
    else:
        collimator = CollimatorShape.NONE
    imager = _spacing_pair(
        ds, "ImagerPixelSpacing", "(0018,1164)", path, XRAY_SPACING_RANGE_MM, "an X-ray detector"
    )
    if imager is None and "ImagerPixelSpacing" in ds:
        notes.append("ImagerPixelSpacing present but not two numbers; ignored")
    sid, sod, factor = _checked_distances(ds, path)
    return XRayGeometry(
        calibrated_isocenter_spacing_mm=_geometry_calibrated_spacing(ds, imager),
        sid_mm=sid,
        sod_mm=sod,
        imager_pixel_spacing_mm=imager,
        magnification_factor=factor,
        primary_angle_deg=parse_number(ds.get("PositionerPrimaryAngle")),
        secondary_angle_deg=parse_number(ds.get("PositionerSecondaryAngle")),
        collimator=collimator,
    )


def _geometry_calibrated_spacing(ds, imager) -> tuple[float, float] | None:
    """PixelSpacing calibrated by geometry (PS3.3 C.7.6.3.1.7: at the isocentre), if sane.

    Within the X-ray spacing range and, next to ImagerPixelSpacing, smaller than it by a
    C-arm's magnification (1..3); otherwise None (the spacing itself is checked, and a
    disagreement noted, by :func:`_xray_spacing`).
    """
    cal = str(ds.get("PixelSpacingCalibrationType", "") or "").strip().upper()
    pixel = _pair(ds.get("PixelSpacing")) if cal == "GEOMETRY" else None
    if pixel is None:
        return None
    lo, hi = XRAY_SPACING_RANGE_MM
    if not all(lo <= v <= hi for v in pixel):
        return None
    if imager is not None and not all(
        1.0 / MAGNIFICATION_RANGE[1] <= p / i <= 1.0 for p, i in zip(pixel, imager, strict=True)
    ):
        return None
    return pixel


def _checked_distances(ds, path: Path) -> tuple[float | None, float | None, float | None]:
    """SID, SOD and the estimated magnification, refused when they mirror or blow up mm."""
    sid = parse_number(ds.get("DistanceSourceToDetector"))
    sod = parse_number(ds.get("DistanceSourceToPatient"))
    factor = parse_number(ds.get("EstimatedRadiographicMagnificationFactor"))
    for keyword, tag, value in (
        ("DistanceSourceToDetector", "(0018,1110)", sid),
        ("DistanceSourceToPatient", "(0018,1111)", sod),
    ):
        if value is not None and value <= 0:
            raise InputError(f"{path}: {keyword} {tag} = {value:g} mm; must be > 0")
    lo, hi = MAGNIFICATION_RANGE
    if sid is not None and sod is not None and not lo < sid / sod <= hi:
        raise InputError(
            f"{path}: DistanceSourceToDetector (0018,1110) = {sid:g} mm and "
            f"DistanceSourceToPatient (0018,1111) = {sod:g} mm give magnification "
            f"{sid / sod:.3g}; a C-arm has SOD < SID and SID/SOD within {lo:g}..{hi:g}"
        )
    if factor is not None and not lo <= factor <= hi:
        raise InputError(
            f"{path}: EstimatedRadiographicMagnificationFactor (0018,1114) = {factor:g} is "
            f"outside the plausible {lo:g}..{hi:g}"
        )
    return sid, sod, factor


def _xray_spacing(ds, path: Path, xray: XRayGeometry, notes):
    imager = xray.imager_pixel_spacing_mm
    pixel = _pair(ds.get("PixelSpacing"))
    if imager is not None:
        if pixel is not None:
            ratio = pixel[0] / imager[0]
            mag = xray.magnification
            if ratio > 2.0 or ratio < 0.25:
                notes.append(
                    f"PixelSpacing {pixel} mm is implausible next to ImagerPixelSpacing "
                    f"{imager} mm (ratio {ratio:.3g}); PixelSpacing ignored"
                )
            elif mag:
                notes.append(
                    f"PixelSpacing {pixel} mm also present ("
                    f"{str(ds.get('PixelSpacingCalibrationType', '') or 'calibration unstated')}"
                    f"); isocentre spacing from ImagerPixelSpacing/magnification is "
                    f"{tuple(round(s, 4) for s in xray.isocenter_spacing_mm)} mm"
                )
        return imager, "ImagerPixelSpacing (0018,1164), detector plane", SpacingPlane.DETECTOR
    pixel = _spacing_pair(
        ds, "PixelSpacing", "(0028,0030)", path, XRAY_SPACING_RANGE_MM, "an X-ray image"
    )
    if pixel is not None:
        cal = str(ds.get("PixelSpacingCalibrationType", "") or "")
        plane = SpacingPlane.ISOCENTER if cal.upper() == "GEOMETRY" else SpacingPlane.PATIENT
        return pixel, f"PixelSpacing (0028,0030) {cal or 'calibration unstated'}", plane
    notes.append("no ImagerPixelSpacing or PixelSpacing: X-ray pixel size unknown")
    return (
        None,
        "none: no ImagerPixelSpacing (0018,1164) or PixelSpacing (0028,0030)",
        (SpacingPlane.UNSPECIFIED),
    )


def _plausible_px(*values) -> bool:
    """All numbers, and within a million pixels: DICOM images are at most 65535 wide."""
    return all(v is not None and abs(v) <= 1e6 for v in values)


def _polygon_mask(vertices, shape) -> np.ndarray | None:
    """Pixels inside a polygon of 1-based (row, column) vertex pairs, edges included."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    values = [parse_number(v) for v in as_list(vertices or [])]
    if len(values) < 6 or len(values) % 2 or not _plausible_px(*values):
        return None
    rows, cols = shape
    points = [(values[i + 1] - 1.0, values[i] - 1.0) for i in range(0, len(values), 2)]
    canvas = PILImage.new("1", (cols, rows), 0)
    ImageDraw.Draw(canvas).polygon(points, fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def _rows_per_column(spacing, ds) -> float:
    """Column spacing over row spacing: how many rows a column's width spans.

    From the spacing, else Pixel Aspect Ratio (vertical, horizontal), else 1.
    """
    if spacing is not None:
        return float(spacing[1]) / float(spacing[0])
    pair = _pair(ds.get("PixelAspectRatio")) if "PixelAspectRatio" in ds else None
    return float(pair[1]) / float(pair[0]) if pair is not None else 1.0


def _collimator_mask(ds, shape, notes, rows_per_col: float = 1.0):
    """Exposed field from shutter/collimator attributes (DICOM pixel positions are 1-based).

    A circle's radius counts pixels along the row direction (PS3.3 C.7.6.11); on pixels
    that are not square it spans ``radius * rows_per_col`` rows, a circle in millimetres.
    Returns (mask or None, its source).
    """
    rows, cols = shape
    # Open grids broadcast to the mask: full index grids would be 16 bytes per pixel.
    yy, xx = np.ogrid[0:rows, 0:cols]
    mask = np.ones(shape, dtype=bool)
    sources = []
    for prefix, center_kw, radius_kw in (
        ("Shutter", "CenterOfCircularShutter", "RadiusOfCircularShutter"),
        ("Collimator", "CenterOfCircularCollimator", "RadiusOfCircularCollimator"),
    ):
        shapes = {str(s).upper() for s in as_list(ds.get(f"{prefix}Shape", "") or "") if s}
        if "CIRCULAR" in shapes:
            center = [parse_number(v) for v in as_list(ds.get(center_kw, []) or [])]
            radius = parse_number(ds.get(radius_kw))
            if len(center) == 2 and radius and _plausible_px(*center, radius) and radius > 0:
                row_c, col_c = (v - 1.0 for v in center)
                mask &= (xx - col_c) ** 2 + ((yy - row_c) / rows_per_col) ** 2 <= radius**2
                sources.append(f"{center_kw}/{radius_kw}")
            else:
                notes.append(f"{prefix}Shape CIRCULAR without usable centre/radius; ignored")
        if "RECTANGULAR" in shapes:
            edges = [
                parse_number(ds.get(f"{prefix}{name}"))
                for name in (
                    "LeftVerticalEdge",
                    "RightVerticalEdge",
                    "UpperHorizontalEdge",
                    "LowerHorizontalEdge",
                )
            ]
            if _plausible_px(*edges):
                left, right, upper, lower = (e - 1.0 for e in edges)
                mask &= (xx >= left) & (xx <= right) & (yy >= upper) & (yy <= lower)
                sources.append(f"{prefix} rectangular edges")
            else:
                notes.append(f"{prefix}Shape RECTANGULAR without four usable edges; ignored")
        if "POLYGONAL" in shapes:
            polygon = _polygon_mask(ds.get(f"VerticesOfThePolygonal{prefix}"), shape)
            if polygon is not None:
                mask &= polygon
                sources.append(f"VerticesOfThePolygonal{prefix}")
            else:
                notes.append(f"{prefix}Shape POLYGONAL without usable vertices; ignored")
    if not sources:
        return None, "none: no shutter or collimator attributes"
    return mask, " + ".join(sources) + " (1-based in DICOM)"

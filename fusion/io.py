"""Read DICOM and plain image files into :class:`fusion.Image`.

DICOM is read with pydicom (JPEG pixel data through Pillow / pylibjpeg), plain images
(PNG, TIFF, JPEG, MHA, NRRD, NIfTI) with SimpleITK. Every error names the file and says
what is wrong on one line.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from pathlib import Path

import numpy as np

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
    InputError,
    NotAnImageError,
    UnsupportedSOPClassError,
)

__all__ = ["read_image", "read_header", "is_dicom_file", "IMAGE_SOP_CLASSES"]

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


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when the file carries the DICOM Part 10 preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _dcmread(path: Path, stop_before_pixels: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise NotAnImageError(
            f"{path}: not a DICOM file (no 'DICM' preamble and no recognisable DICOM "
            "elements) and not an image format we read"
        ) from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(f"{path}: truncated or corrupt DICOM ({exc})") from exc


def read_header(path: str | os.PathLike) -> dict:
    """Identify a DICOM file without decoding pixels.

    Returns
    -------
    dict
        ``sop_class_uid``, ``sop_class_name``, ``modality``, ``manufacturer``,
        ``model``, ``transfer_syntax``, ``is_image``, ``is_sr``, ``template``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    ds = _dcmread(path, stop_before_pixels=True)
    sop = str(ds.get("SOPClassUID", ""))
    template = None
    if "ContentTemplateSequence" in ds and len(ds.ContentTemplateSequence):
        template = str(ds.ContentTemplateSequence[0].get("TemplateIdentifier", "")) or None
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return {
        "sop_class_uid": sop,
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

    Returns
    -------
    Image

    Raises
    ------
    NotAnImageError, UnsupportedSOPClassError, CorruptFileError, DecoderMissingError,
    MissingCalibrationError
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if spacing_mm is not None:
        spacing_mm = _check_spacing_arg(spacing_mm, path)
    if is_dicom_file(path) or _suffix(path) not in _PLAIN_SUFFIXES:
        image = _read_dicom(path, spacing_mm=spacing_mm, us_region=us_region)
    else:
        image = _read_plain(path, spacing_mm=spacing_mm, modality=modality)
    if require_spacing:
        flag = "--us-spacing-mm" if image.modality is Modality.US else "--spacing-mm"
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
    return (dy, dx)


# ---------------------------------------------------------------------------------------
# Plain images
# ---------------------------------------------------------------------------------------


def _read_plain(path: Path, spacing_mm, modality) -> Image:
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise NotAnImageError(
            f"{path}: not a DICOM file and SimpleITK cannot read it as an image "
            f"({str(exc).strip().splitlines()[-1][:160]})"
        ) from exc
    notes: list[str] = []
    arr = sitk.GetArrayFromImage(img)
    ncomp = img.GetNumberOfComponentsPerPixel()
    if img.GetDimension() == 3:
        # (slices, rows, cols[, comp]) - read slices as frames.
        frames = arr
    elif img.GetDimension() == 2:
        frames = arr[None, ...]
    else:
        raise NotAnImageError(f"{path}: {img.GetDimension()}D image; expected 2D or a 2D stack")
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
        sx, sy = img.GetSpacing()[:2]
        spacing_mm = (float(sy), float(sx))
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
    )


# ---------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------


def _read_dicom(path: Path, spacing_mm, us_region) -> Image:
    ds = _dcmread(path)
    sop = str(ds.get("SOPClassUID", ""))
    if sop.startswith(_SR_PREFIX):
        raise NotAnImageError(
            f"{path}: {_uid_name(sop)} is a structured report, not an image "
            "(for dose reports use 'hybridfuse dose report')"
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
    notes: list[str] = []
    modality = _modality(ds, sop, notes)
    pixels, photometric, inverted = _pixels(ds, path, notes)

    frame_times, times_source = _frame_times(ds, pixels.shape[0], notes)
    start, start_source = _acquisition_start(ds)
    if start is None:
        notes.append("no acquisition date/time (AcquisitionDateTime, AcquisitionDate/Time)")
    else:
        times_source += f"; start from {start_source}"

    regions = _us_regions(ds, notes)
    region_index = None
    mask = None
    mask_source = "none"
    xray = None
    spacing = None
    spacing_source = "none"
    plane = SpacingPlane.UNSPECIFIED
    if modality is Modality.US or regions:
        region_index = _choose_region(regions, us_region, path, notes)
        if region_index is not None:
            reg = regions[region_index]
            mask = reg.mask(pixels.shape[1:3])
            mask_source = f"SequenceOfUltrasoundRegions[{region_index}] bounds (0018,6018..601E)"
            if reg.is_calibrated_2d:
                spacing = (reg.delta_y_mm, reg.delta_x_mm)
                spacing_source = (
                    f"SequenceOfUltrasoundRegions[{region_index}] PhysicalDeltaY/X "
                    "(0018,602E)/(0018,602C), cm converted to mm"
                )
                plane = SpacingPlane.ULTRASOUND
        if spacing is None:
            spacing, spacing_source, plane = _pixel_spacing_tags(ds, notes)
            if spacing is None:
                spacing_source = (
                    "none: no ultrasound region calibrated in cm "
                    "(PhysicalUnitsX/YDirection = 3) and no PixelSpacing"
                )
    if modality.is_xray:
        xray = _xray_geometry(ds, notes)
        mask, mask_source = _collimator_mask(ds, pixels.shape[1:3], notes)
        spacing, spacing_source, plane = _xray_spacing(ds, xray, notes)
    elif modality is Modality.OT and spacing is None:
        spacing, spacing_source, plane = _pixel_spacing_tags(ds, notes)
    if spacing_mm is not None:
        if spacing is not None:
            notes.append(f"file spacing {spacing} mm ({spacing_source}) overridden by hand")
        spacing, spacing_source = spacing_mm, "given by hand"

    uids = {
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
    return Image(
        array=pixels,
        modality=modality,
        pixel_spacing_mm=spacing,
        spacing_source=spacing_source,
        spacing_plane=plane,
        frame_times_s=frame_times,
        frame_times_source=times_source,
        acquisition_datetime=start,
        mask=mask,
        mask_source=mask_source,
        us_regions=tuple(regions),
        us_region_index=region_index,
        xray=xray,
        photometric=photometric,
        inverted=inverted,
        source_path=str(path),
        uids=uids,
        notes=tuple(notes),
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


def _pixels(ds, path: Path, notes: list[str]) -> tuple[np.ndarray, str, bool]:
    from pydicom.pixels import apply_color_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    try:
        arr = ds.pixel_array
    except (RuntimeError, NotImplementedError) as exc:
        msg = str(exc)
        if "plugin" in msg.lower() or "decompress" in msg.lower() or "missing" in msg.lower():
            raise DecoderMissingError(
                f"{path}: cannot decode {_uid_name(str(ds.file_meta.TransferSyntaxUID))} "
                "pixel data: no decoder installed (pip install pillow pylibjpeg "
                "pylibjpeg-libjpeg)"
            ) from exc
        raise CorruptFileError(f"{path}: pixel data cannot be decoded ({msg[:200]})") from exc
    except (ValueError, EOFError, KeyError, AttributeError, TypeError) as exc:
        raise CorruptFileError(
            f"{path}: truncated or inconsistent pixel data ({str(exc)[:200]})"
        ) from exc

    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric == "PALETTE COLOR":
        try:
            arr = apply_color_lut(arr, ds)
        except Exception as exc:
            raise CorruptFileError(f"{path}: palette colour lookup table unusable ({exc})") from exc
        samples = 3
        notes.append("PALETTE COLOR expanded to RGB through its lookup tables")
    elif photometric.startswith("YBR"):
        # pydicom converts YBR to RGB by default when it decodes pixel data.
        notes.append(f"{photometric} converted to RGB by the decoder")
    if n_frames == 1 and arr.ndim == (3 if samples == 3 else 2):
        arr = arr[None, ...]
    if samples == 3 and arr.ndim != 4:
        raise CorruptFileError(f"{path}: colour pixel data has unexpected shape {arr.shape}")
    if samples not in (1, 3):
        raise CorruptFileError(f"{path}: SamplesPerPixel = {samples} not supported")
    inverted = False
    if photometric == "MONOCHROME1":
        bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8))
        if arr.dtype.kind == "u":
            arr = ((1 << bits) - 1) - arr.astype(np.int64)
            arr = arr.clip(0, (1 << bits) - 1).astype(ds.pixel_array.dtype)
        else:
            arr = -arr.astype(np.float32)
        inverted = True
        notes.append("MONOCHROME1 inverted so that higher values are brighter")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1 or intercept != 0:
        notes.append(
            f"Modality LUT (RescaleSlope {slope}, RescaleIntercept {intercept}) not applied: "
            "stored values are used"
        )
    return np.ascontiguousarray(arr), photometric, inverted


def _frame_times(ds, n: int, notes: list[str]) -> tuple[np.ndarray, str]:
    if "FrameTimeVector" in ds:
        vec = np.asarray([_num(v) for v in _as_list(ds.FrameTimeVector)], dtype=float)
        if len(vec) == n and np.all(np.isfinite(vec)):
            return np.cumsum(vec) / 1000.0, "FrameTimeVector (0018,1065) increments, ms"
        notes.append(f"FrameTimeVector has {len(vec)} entries for {n} frames; ignored")
    if "PerFrameFunctionalGroupsSequence" in ds:
        stamps = []
        for item in ds.PerFrameFunctionalGroupsSequence:
            fc = item.get("FrameContentSequence")
            when = _parse_dt(str(fc[0].get("FrameAcquisitionDateTime", ""))) if fc else None
            stamps.append(when)
        if len(stamps) == n and all(s is not None for s in stamps):
            t0 = stamps[0]
            return (
                np.array([(s - t0).total_seconds() for s in stamps]),
                "FrameAcquisitionDateTime (0018,9074) per frame",
            )
    frame_time = _num(ds.get("FrameTime"))
    if frame_time is not None and frame_time > 0:
        return np.arange(n) * frame_time / 1000.0, "FrameTime (0018,1063), ms"
    cine_rate = _num(ds.get("CineRate")) or _num(ds.get("RecommendedDisplayFrameRate"))
    if n > 1 and cine_rate:
        notes.append("no FrameTime/FrameTimeVector; frame times from the cine rate")
        return np.arange(n) / cine_rate, "CineRate (0018,0040), frames/s"
    if n > 1:
        notes.append("multi-frame without frame timing; frames given time 0")
        return np.zeros(n), "none"
    return np.zeros(1), "single frame"


def _acquisition_start(ds) -> tuple[_dt.datetime | None, str]:
    when = _parse_dt(str(ds.get("AcquisitionDateTime", "")))
    if when is not None:
        return when, "AcquisitionDateTime (0008,002A)"
    for date_attr, time_attr in (
        ("AcquisitionDate", "AcquisitionTime"),
        ("ContentDate", "ContentTime"),
        ("SeriesDate", "SeriesTime"),
        ("StudyDate", "StudyTime"),
    ):
        date = str(ds.get(date_attr, "") or "")
        time = str(ds.get(time_attr, "") or "")
        if time:
            when = _parse_dt(date + time) if date else None
            if when is None and date == "":
                # A time without a date: anchor it on the study date if there is one.
                study = str(ds.get("StudyDate", "") or "")
                when = _parse_dt(study + time) if study else None
            if when is not None:
                return when, f"{date_attr}/{time_attr}"
    return None, "none"


def _parse_dt(text: str) -> _dt.datetime | None:
    """Parse a DICOM DT (or DA+TM concatenated) leniently; None when unparseable."""
    text = text.strip().replace(":", "").replace("-", "", 2 if len(text) > 8 else 0)
    if not text or len(text) < 8:
        return None
    # Drop a UTC offset suffix (+HHMM / -HHMM).
    for sign in ("+", "-"):
        pos = text.find(sign, 8)
        if pos > 0:
            text = text[:pos]
    date, rest = text[:8], text[8:]
    frac = ""
    if "." in rest:
        rest, frac = rest.split(".", 1)
    rest = (rest + "000000")[:6]
    try:
        base = _dt.datetime.strptime(date + rest, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    if frac.isdigit():
        base += _dt.timedelta(microseconds=int((frac + "000000")[:6]))
    return base


def _num(value) -> float | None:
    """Lenient number: DS/IS strings with blanks or commas; None when not a number."""
    if value is None:
        return None
    if hasattr(value, "value"):
        value = value.value
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
        if value is None:
            return None
    try:
        out = float(str(value).strip().replace(",", "."))
    except ValueError:
        return None
    return out if np.isfinite(out) else None


def _as_list(value) -> list:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value]


def _pair(value) -> tuple[float, float] | None:
    if value is None:
        return None
    items = _as_list(value.value if hasattr(value, "value") else value)
    if len(items) != 2:
        return None
    nums = [_num(v) for v in items]
    if any(v is None or v <= 0 for v in nums):
        return None
    return (nums[0], nums[1])


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
        ux = int(item.get("PhysicalUnitsXDirection", 0) or 0)
        uy = int(item.get("PhysicalUnitsYDirection", 0) or 0)
        dx = _num(item.get("PhysicalDeltaX"))
        dy = _num(item.get("PhysicalDeltaY"))
        ref_x = _num(item.get("ReferencePixelX0")) or 0.0
        ref_y = _num(item.get("ReferencePixelY0")) or 0.0
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
                spatial_format=int(item.get("RegionSpatialFormat", 0) or 0),
                data_type=int(item.get("RegionDataType", 0) or 0),
            )
        )
    return regions


def _choose_region(regions, requested, path, notes) -> int | None:
    if requested is not None:
        if not 0 <= requested < len(regions):
            raise InputError(
                f"{path}: ultrasound region {requested} requested but the file has "
                f"{len(regions)} region(s)"
            )
        return requested
    tissue = [i for i, r in enumerate(regions) if r.is_calibrated_2d and r.data_type in (1, 0)]
    calibrated = tissue or [i for i, r in enumerate(regions) if r.is_calibrated_2d]
    if not calibrated:
        return None
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


def _pixel_spacing_tags(ds, notes) -> tuple[tuple[float, float] | None, str, SpacingPlane]:
    spacing = _pair(ds.get("PixelSpacing"))
    if spacing is not None:
        return spacing, "PixelSpacing (0028,0030)", SpacingPlane.PATIENT
    spacing = _pair(ds.get("ImagerPixelSpacing"))
    if spacing is not None:
        return spacing, "ImagerPixelSpacing (0018,1164)", SpacingPlane.DETECTOR
    return None, "none", SpacingPlane.UNSPECIFIED


def _xray_geometry(ds, notes) -> XRayGeometry:
    shapes = {str(s).upper() for s in _as_list(ds.get("ShutterShape", "") or "") if s}
    shapes |= {str(s).upper() for s in _as_list(ds.get("CollimatorShape", "") or "") if s}
    if "CIRCULAR" in shapes:
        collimator = CollimatorShape.CIRCULAR
    elif "RECTANGULAR" in shapes:
        collimator = CollimatorShape.RECTANGULAR
    else:
        collimator = CollimatorShape.NONE
    imager = _pair(ds.get("ImagerPixelSpacing"))
    if imager is None and "ImagerPixelSpacing" in ds:
        notes.append("ImagerPixelSpacing present but not two positive numbers; ignored")
    return XRayGeometry(
        sid_mm=_num(ds.get("DistanceSourceToDetector")),
        sod_mm=_num(ds.get("DistanceSourceToPatient")),
        imager_pixel_spacing_mm=imager,
        magnification_factor=_num(ds.get("EstimatedRadiographicMagnificationFactor")),
        primary_angle_deg=_num(ds.get("PositionerPrimaryAngle")),
        secondary_angle_deg=_num(ds.get("PositionerSecondaryAngle")),
        collimator=collimator,
    )


def _xray_spacing(ds, xray: XRayGeometry, notes):
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


def _collimator_mask(ds, shape, notes) -> tuple[np.ndarray | None, str]:
    """Exposed field from shutter/collimator attributes (DICOM pixel positions are 1-based)."""
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    mask = np.ones(shape, dtype=bool)
    sources = []
    for prefix, center_kw, radius_kw in (
        ("Shutter", "CenterOfCircularShutter", "RadiusOfCircularShutter"),
        ("Collimator", "CenterOfCircularCollimator", "RadiusOfCircularCollimator"),
    ):
        shapes = {str(s).upper() for s in _as_list(ds.get(f"{prefix}Shape", "") or "") if s}
        if "CIRCULAR" in shapes:
            center = _as_list(ds.get(center_kw, []) or [])
            radius = _num(ds.get(radius_kw))
            if len(center) == 2 and radius:
                row_c, col_c = (_num(v) - 1.0 for v in center)
                mask &= (xx - col_c) ** 2 + (yy - row_c) ** 2 <= radius**2
                sources.append(f"{center_kw}/{radius_kw}")
            else:
                notes.append(f"{prefix}Shape CIRCULAR without usable centre/radius; ignored")
        if "RECTANGULAR" in shapes:
            edges = [
                _num(ds.get(f"{prefix}{name}"))
                for name in (
                    "LeftVerticalEdge",
                    "RightVerticalEdge",
                    "UpperHorizontalEdge",
                    "LowerHorizontalEdge",
                )
            ]
            if all(e is not None for e in edges):
                left, right, upper, lower = (e - 1.0 for e in edges)
                mask &= (xx >= left) & (xx <= right) & (yy >= upper) & (yy <= lower)
                sources.append(f"{prefix} rectangular edges")
            else:
                notes.append(f"{prefix}Shape RECTANGULAR without all four edges; ignored")
        if "POLYGONAL" in shapes:
            notes.append(f"{prefix}Shape POLYGONAL not supported; ignored")
    if not sources:
        return None, "none: no shutter or collimator attributes"
    return mask, " + ".join(sources) + " (1-based in DICOM)"

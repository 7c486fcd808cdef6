"""Per-image dose attributes of projection X-ray images (XA, RF, DX, CR).

Numbers are parsed leniently (blank, comma decimals, junk -> unknown) and an unknown
value stays ``None``: it is never reported as zero.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from hybridfuse import dicom
from hybridfuse.dicom import as_list, parse_number

from .errors import DoseInputError
from .units import implausible

__all__ = ["ImageDoseTags", "read_image_dose_tags", "parse_number"]


@dataclass(frozen=True)
class ImageDoseTags:
    """Dose-related attributes of one image object; None means not recorded.

    Attributes
    ----------
    kvp_kv : (0018,0060) *KVP*.
    tube_current_ma : (0018,1151) *X-Ray Tube Current*, or (0018,8151) in µA / 1000.
    exposure_time_ms : (0018,1150) *Exposure Time*, or (0018,8150) in µs / 1000.
    exposure_mas : (0018,1152) *Exposure*, or (0018,1153) in µAs / 1000.
    dap_dgy_cm2 : (0018,115E) *Image and Fluoroscopy Area Dose Product*, dGy·cm².
    entrance_dose_mgy : (0040,8302) *Entrance Dose in mGy*.
    distance_source_to_entrance_mm : (0040,0306).
    number_of_frames : (0028,0008), 1 when absent.
    filter_material, filter_thickness_mm : (0018,7050), (0018,7052)/(0018,7054).
    sources : attribute names each value was read from.
    """

    kvp_kv: float | None = None
    tube_current_ma: float | None = None
    exposure_time_ms: float | None = None
    exposure_mas: float | None = None
    dap_dgy_cm2: float | None = None
    entrance_dose_mgy: float | None = None
    distance_source_to_entrance_mm: float | None = None
    number_of_frames: int = 1
    filter_material: str | None = None
    filter_thickness_mm: float | None = None
    sources: tuple[tuple[str, str], ...] = ()

    @property
    def dap_gy_cm2(self) -> float | None:
        """Image DAP converted to Gy·cm² (1 dGy·cm² = 0.1 Gy·cm²)."""
        return None if self.dap_dgy_cm2 is None else self.dap_dgy_cm2 / 10.0

    @property
    def has_dose(self) -> bool:
        """True when the image records a DAP or an entrance dose."""
        return self.dap_dgy_cm2 is not None or self.entrance_dose_mgy is not None

    def to_dict(self) -> dict:
        """JSON-ready values with units in their names."""
        out = asdict(self)
        out["dap_gy_cm2"] = self.dap_gy_cm2
        out["sources"] = dict(self.sources)
        return out


# (field, [(keyword, scale to the field's unit), ...]) in order of preference.
_FIELDS: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = (
    ("kvp_kv", (("KVP", 1.0),)),
    ("tube_current_ma", (("XRayTubeCurrent", 1.0), ("XRayTubeCurrentInuA", 1e-3))),
    ("exposure_time_ms", (("ExposureTime", 1.0), ("ExposureTimeInuS", 1e-3))),
    ("exposure_mas", (("Exposure", 1.0), ("ExposureInuAs", 1e-3))),
    ("dap_dgy_cm2", (("ImageAndFluoroscopyAreaDoseProduct", 1.0),)),
    ("entrance_dose_mgy", (("EntranceDoseInmGy", 1.0),)),
    ("distance_source_to_entrance_mm", (("DistanceSourceToEntrance", 1.0),)),
    ("filter_thickness_mm", (("FilterThicknessMaximum", 1.0), ("FilterThicknessMinimum", 1.0))),
)


#: field -> (kind in dose.units, factor from the field's unit to the canonical one).
_KINDS = {
    "dap_dgy_cm2": ("dap", 0.1),
    "entrance_dose_mgy": ("dose", 1.0),
    "exposure_time_ms": ("short_time", 1.0),
    "kvp_kv": ("voltage", 1.0),
    "tube_current_ma": ("current", 1.0),
    "exposure_mas": ("charge", 1.0),
}

#: Modalities that are certainly not projection X-ray images.
NOT_XRAY_MODALITIES = frozenset(
    {
        "US",
        "CT",
        "MR",
        "NM",
        "PT",
        "SR",
        "KO",
        "PR",
        "SEG",
        "ECG",
        "DOC",
        "RTDOSE",
        "RTSTRUCT",
        "RTPLAN",
        "RTIMAGE",
        "OP",
        "OPT",
        "SM",
        "ES",
        "GM",
        "XC",
    }
)

#: SOP classes of ultrasound images (single and multi-frame, current and retired).
US_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.6.1",
        "1.2.840.10008.5.1.4.1.1.6",
        "1.2.840.10008.5.1.4.1.1.3.1",
        "1.2.840.10008.5.1.4.1.1.3",
    }
)


def check_xray_image(ds, path) -> None:
    """Refuse an image that is certainly not an X-ray image (ultrasound, an SR, CT, ...).

    Images of unknown kind (Modality OT or missing, secondary captures) pass: ``run``
    takes such fluoroscopy captures, and their dose attributes are what they say.
    """
    modality = str(ds.get("Modality", "") or "").upper()
    sop = str(ds.get("SOPClassUID", "") or "")
    if modality in NOT_XRAY_MODALITIES or sop in US_SOP_CLASSES or ".1.1.88." in sop:
        raise DoseInputError(
            f"{path}: Modality {modality or 'missing'} (SOP class {sop or 'missing'}) is not "
            "a projection X-ray image; --images takes X-ray images (XA, RF, DX, CR, ...)"
        )


def read_header(path: str | os.PathLike):
    """The data set before its pixels; bounded for deflated files, pydicom kept quiet.

    Every DICOM file the dose package reads comes through here, so a deflate bomb, a FIFO
    or a corrupt file is one :class:`DoseInputError` naming the file.
    """
    import struct
    import zlib

    import pydicom
    from pydicom.errors import BytesLengthException, InvalidDicomError

    path = Path(path)
    if not path.exists():
        raise DoseInputError(f"{path}: no such file")
    if not path.is_file():
        raise DoseInputError(f"{path}: not a regular file")
    try:
        limit = dicom.max_decoded_bytes()
        if dicom.deflated_size_exceeds(path, limit):
            raise DoseInputError(
                f"{path}: deflated data set inflates to more than {limit} bytes, the decode "
                f"limit ({dicom.MAX_DECODED_ENV})"
            )
        with dicom.quiet_pydicom():
            return pydicom.dcmread(
                path,
                stop_before_pixels=True,
                defer_size=1 << 20,
                force=dicom.is_dicom_stream(path),
            )
    except DoseInputError:
        raise
    except RecursionError as exc:
        raise DoseInputError(f"{path}: DICOM sequences nested too deeply to read") from exc
    except (
        InvalidDicomError,
        BytesLengthException,
        NotImplementedError,
        OSError,
        EOFError,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        struct.error,
        zlib.error,
    ) as exc:
        detail = " ".join(str(exc).split())[:160]
        raise DoseInputError(f"{path}: not a readable DICOM file ({detail})") from exc


def read_image_dose_tags(source: str | os.PathLike | object) -> ImageDoseTags:
    """Read the dose attributes of an image.

    Parameters
    ----------
    source : path-like or pydicom Dataset
        A DICOM image file, or a dataset already read.

    Returns
    -------
    ImageDoseTags
    """
    ds = read_header(Path(source)) if isinstance(source, (str, os.PathLike)) else source
    try:
        with dicom.quiet_pydicom():  # values are converted, and warned about, lazily
            return _dose_tags(ds)
    except DoseInputError:
        raise
    except Exception as exc:  # a value pydicom cannot convert: the file is at fault
        name = source if isinstance(source, (str, os.PathLike)) else "image data set"
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise DoseInputError(f"{name}: unreadable dose attribute ({detail})") from exc


def _dose_tags(ds) -> ImageDoseTags:
    values: dict = {}
    sources: list[tuple[str, str]] = []
    for field_name, candidates in _FIELDS:
        for keyword, scale in candidates:
            number = parse_number(ds.get(keyword))
            if number is not None:
                kind, to_canonical = _KINDS.get(field_name, (None, 1.0))
                why = implausible(number * scale * to_canonical, kind) if kind else None
                if why:
                    # Unknown, and said so: a corrupt value is never summed as a dose.
                    sources.append(
                        (field_name, f"{keyword} = {number:g}: {why}; treated as unknown")
                    )
                    break
                values[field_name] = number * scale
                sources.append((field_name, keyword))
                break
    material = ds.get("FilterMaterial")
    if material:
        values["filter_material"] = "\\".join(str(m) for m in as_list(material))
    n_frames = parse_number(ds.get("NumberOfFrames"))
    values["number_of_frames"] = int(n_frames) if n_frames and n_frames >= 1 else 1
    return ImageDoseTags(**values, sources=tuple(sources))

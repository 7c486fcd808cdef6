"""DICOM writers for the synthetic procedure: XA cine, US cine and an X-ray dose SR.

Everything is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import datetime as _dt
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from hybridfuse._safeio import atomic_file

XA_STORAGE = UID("1.2.840.10008.5.1.4.1.1.12.1")
US_MULTIFRAME_STORAGE = UID("1.2.840.10008.5.1.4.1.1.3.1")
XRAY_DOSE_SR_STORAGE = UID("1.2.840.10008.5.1.4.1.1.88.67")

MANUFACTURER = "hybridfuse"
MODEL = "synthetic phantom"


@dataclass
class StudyContext:
    """Identifiers and times shared by every object of one synthetic procedure."""

    seed: int
    procedure: str
    start: _dt.datetime
    patient_name: str = "PHANTOM^SYNTHETIC"
    patient_id: str = ""
    accession: str = ""
    study_uid: str = ""
    frame_of_reference_uid: str = ""
    _counter: list = field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        self.patient_id = self.patient_id or f"SYN{self.seed:06d}"
        self.accession = self.accession or f"HF{self.seed:06d}"
        self.study_uid = self.study_uid or self.uid("study")
        self.frame_of_reference_uid = self.frame_of_reference_uid or self.uid("for")

    def uid(self, name: str) -> str:
        """A UID that is the same for the same seed, procedure and name."""
        return generate_uid(entropy_srcs=[f"hybridfuse-synth/{self.procedure}/{self.seed}/{name}"])


def _ds_num(value: float) -> str:
    return format_number_as_ds(float(value))


def _dt_str(when: _dt.datetime) -> str:
    return when.strftime("%Y%m%d%H%M%S.%f")


def _base_dataset(
    ctx: StudyContext,
    sop_class: UID,
    sop_uid: str,
    series_uid: str,
    modality: str,
    series_number: int,
    when: _dt.datetime,
    description: str,
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ctx.start.strftime("%Y%m%d")
    ds.StudyTime = ctx.start.strftime("%H%M%S")
    ds.SeriesDate = when.strftime("%Y%m%d")
    ds.SeriesTime = when.strftime("%H%M%S.%f")
    ds.ContentDate = when.strftime("%Y%m%d")
    ds.ContentTime = when.strftime("%H%M%S.%f")
    ds.AccessionNumber = ctx.accession
    ds.Modality = modality
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL
    ds.InstitutionName = "Synthetic"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = f"Synthetic hybrid US/fluoro {ctx.procedure}"
    ds.SeriesDescription = description
    ds.PatientName = ctx.patient_name
    ds.PatientID = ctx.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = ctx.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.SoftwareVersions = "hybridfuse-synth"
    ds.DeviceSerialNumber = f"SYN-{ctx.seed}"
    return ds


def atomic_save(ds: Dataset, path: Path) -> None:
    """Write ``ds`` to ``path`` through an exclusive temporary name in the same folder."""
    with atomic_file(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


@dataclass(frozen=True)
class XAFrameInfo:
    """Acquisition parameters of one stored fluoroscopy run."""

    kvp: float
    tube_current_ma: float
    pulse_width_ms: float
    pulse_rate_per_s: float
    dap_dgy_cm2: float
    sid_mm: float
    sod_mm: float
    imager_spacing_mm: tuple[float, float]
    primary_angle_deg: float
    secondary_angle_deg: float
    collimator_center_px_xy: tuple[float, float]
    collimator_radius_px: float


def write_xa(
    path: Path,
    ctx: StudyContext,
    frames: np.ndarray,
    frame_times_s: np.ndarray,
    start: _dt.datetime,
    info: XAFrameInfo,
    name: str,
    series_number: int,
    *,
    photometric: str = "MONOCHROME1",
    bits_stored: int = 8,
    shutter_edges_px: tuple[int, int, int, int] | None = None,
) -> str:
    """Write a multi-frame XA (MONOCHROME1, 8 bit by default). Returns its SOP Instance UID.

    ``shutter_edges_px`` (left, right, upper, lower; 0-based, inclusive) writes a
    rectangular shutter instead of the circular one of ``info``.
    """
    sop_uid = ctx.uid(f"{name}/sop")
    ds = _base_dataset(
        ctx, XA_STORAGE, sop_uid, ctx.uid(f"{name}/series"), "XA", series_number, start, name
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SINGLE PLANE"]
    ds.AcquisitionDateTime = _dt_str(start)
    ds.AcquisitionDate = start.strftime("%Y%m%d")
    ds.AcquisitionTime = start.strftime("%H%M%S.%f")
    ds.FrameOfReferenceUID = ctx.frame_of_reference_uid
    n, rows, cols = frames.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = rows, cols
    _set_bits(ds, bits_stored)
    ds.NumberOfFrames = n
    ds.FrameIncrementPointer = 0x00181065  # FrameTimeVector
    increments = np.diff(np.concatenate([[frame_times_s[0]], frame_times_s])) * 1000.0
    ds.FrameTimeVector = [_ds_num(v) for v in increments]
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1
    ds.RadiationSetting = "SC"
    ds.KVP = _ds_num(info.kvp)
    ds.XRayTubeCurrent = int(round(info.tube_current_ma))
    ds.ExposureTime = int(round(info.pulse_width_ms))
    ds.AveragePulseWidth = _ds_num(info.pulse_width_ms)
    ds.RadiationMode = "PULSED"
    ds.ImageAndFluoroscopyAreaDoseProduct = _ds_num(info.dap_dgy_cm2)
    ds.DistanceSourceToDetector = _ds_num(info.sid_mm)
    ds.DistanceSourceToPatient = _ds_num(info.sod_mm)
    ds.EstimatedRadiographicMagnificationFactor = _ds_num(info.sid_mm / info.sod_mm)
    ds.ImagerPixelSpacing = [_ds_num(s) for s in info.imager_spacing_mm]
    ds.PositionerMotion = "STATIC"
    ds.PositionerPrimaryAngle = _ds_num(info.primary_angle_deg)
    ds.PositionerSecondaryAngle = _ds_num(info.secondary_angle_deg)
    ds.IntensifierSize = _ds_num(max(rows, cols) * max(info.imager_spacing_mm))
    if shutter_edges_px is None:
        ds.ShutterShape = "CIRCULAR"
        cx, cy = info.collimator_center_px_xy
        ds.CenterOfCircularShutter = [int(round(cy)) + 1, int(round(cx)) + 1]  # row, col
        ds.RadiusOfCircularShutter = int(round(info.collimator_radius_px))
    else:
        ds.ShutterShape = "RECTANGULAR"
        left, right, upper, lower = (int(e) + 1 for e in shutter_edges_px)  # 1-based
        ds.ShutterLeftVerticalEdge = left
        ds.ShutterRightVerticalEdge = right
        ds.ShutterUpperHorizontalEdge = upper
        ds.ShutterLowerHorizontalEdge = lower
    ds.BurnedInAnnotation = "NO"
    ds.PatientOrientation = ""
    ds.PixelData = _pixel_bytes(frames, bits_stored)
    atomic_save(ds, path)
    return sop_uid


def write_us(
    path: Path,
    ctx: StudyContext,
    frames: np.ndarray,
    frame_times_s: np.ndarray,
    start: _dt.datetime,
    region: dict,
    name: str,
    series_number: int,
    transducer: str,
    compress: bool = True,
    *,
    bits_stored: int = 8,
) -> str:
    """Write a multi-frame US (MONOCHROME2, 8 bit by default), JPEG baseline unless told otherwise.

    More than 8 stored bits are written uncompressed (JPEG baseline holds 8 bits).
    """
    from PIL import Image as PILImage
    from pydicom.encaps import encapsulate

    sop_uid = ctx.uid(f"{name}/sop")
    ds = _base_dataset(
        ctx,
        US_MULTIFRAME_STORAGE,
        sop_uid,
        ctx.uid(f"{name}/series"),
        "US",
        series_number,
        start,
        name,
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", ""]
    ds.AcquisitionDateTime = _dt_str(start)
    ds.AcquisitionDate = start.strftime("%Y%m%d")
    ds.AcquisitionTime = start.strftime("%H%M%S.%f")
    n, rows, cols = frames.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    _set_bits(ds, bits_stored)
    compress = compress and bits_stored == 8
    ds.NumberOfFrames = n
    ds.FrameIncrementPointer = 0x00181065
    increments = np.diff(np.concatenate([[frame_times_s[0]], frame_times_s])) * 1000.0
    ds.FrameTimeVector = [_ds_num(v) for v in increments]
    ds.TransducerData = [transducer, "", ""]
    ds.BurnedInAnnotation = "YES"
    ds.LossyImageCompression = "01" if compress else "00"
    item = Dataset()
    item.RegionSpatialFormat = 1
    item.RegionDataType = 1
    item.RegionFlags = 0
    item.RegionLocationMinX0 = region["x0"]
    item.RegionLocationMinY0 = region["y0"]
    item.RegionLocationMaxX1 = region["x1"]
    item.RegionLocationMaxY1 = region["y1"]
    item.PhysicalUnitsXDirection = 3  # cm
    item.PhysicalUnitsYDirection = 3
    item.PhysicalDeltaX = region["spacing_mm"] / 10.0
    item.PhysicalDeltaY = region["spacing_mm"] / 10.0
    # Reference pixel relative to the region's upper-left corner, as DICOM stores it.
    item.ReferencePixelX0 = int(round(region["reference_x"] - region["x0"]))
    item.ReferencePixelY0 = int(round(region["reference_y"] - region["y0"]))
    item.ReferencePixelPhysicalValueX = 0.0
    item.ReferencePixelPhysicalValueY = 0.0
    item.TransducerFrequency = int(region.get("frequency_khz", 7500))
    ds.SequenceOfUltrasoundRegions = Sequence([item])
    if compress:
        encoded = []
        for frame in frames:
            buf = io.BytesIO()
            PILImage.fromarray(np.ascontiguousarray(frame)).save(buf, format="JPEG", quality=90)
            encoded.append(buf.getvalue())
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate(encoded)
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds.LossyImageCompressionRatio = _ds_num(frames.nbytes / sum(len(e) for e in encoded))
    else:
        ds.PixelData = _pixel_bytes(frames, bits_stored)
    atomic_save(ds, path)
    return sop_uid


def _set_bits(ds: Dataset, bits_stored: int) -> None:
    """Unsigned greyscale of ``bits_stored`` bits in 8- or 16-bit words."""
    if not 1 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be 1..16, got {bits_stored}")
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0


def _pixel_bytes(frames: np.ndarray, bits_stored: int) -> bytes:
    dtype = np.uint8 if bits_stored <= 8 else np.dtype("<u2")
    return np.ascontiguousarray(frames, dtype=dtype).tobytes()


# ---------------------------------------------------------------------------------------
# X-Ray Radiation Dose SR (TID 10001)
# ---------------------------------------------------------------------------------------


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _content(rel: str, vtype: str, concept: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.RelationshipType = rel
    item.ValueType = vtype
    item.ConceptNameCodeSequence = Sequence([_code(*concept)])
    return item


def sr_num(concept, value: float, unit: tuple[str, str]) -> Dataset:
    """A NUM content item with a UCUM unit (code value, meaning)."""
    item = _content("CONTAINS", "NUM", concept)
    mv = Dataset()
    mv.NumericValue = _ds_num(value)
    mv.MeasurementUnitsCodeSequence = Sequence([_code(unit[0], "UCUM", unit[1])])
    item.MeasuredValueSequence = Sequence([mv])
    return item


def sr_code(concept, value, rel: str = "CONTAINS") -> Dataset:
    """A CODE content item."""
    item = _content(rel, "CODE", concept)
    item.ConceptCodeSequence = Sequence([_code(*value)])
    return item


def sr_text(concept, text: str, rel: str = "CONTAINS") -> Dataset:
    """A TEXT content item."""
    item = _content(rel, "TEXT", concept)
    item.TextValue = text
    return item


def sr_uid(concept, uid: str, rel: str = "CONTAINS") -> Dataset:
    """A UIDREF content item."""
    item = _content(rel, "UIDREF", concept)
    item.UID = uid
    return item


def sr_datetime(concept, when: _dt.datetime, rel: str = "CONTAINS") -> Dataset:
    """A DATETIME content item."""
    item = _content(rel, "DATETIME", concept)
    item.DateTime = _dt_str(when)
    return item


def sr_container(concept, children: list[Dataset], rel: str = "CONTAINS") -> Dataset:
    """A CONTAINER content item holding ``children``."""
    item = _content(rel, "CONTAINER", concept)
    item.ContinuityOfContent = "SEPARATE"
    item.ContentSequence = Sequence(children)
    return item


DCM = "DCM"
SINGLE_PLANE = ("113622", DCM, "Single Plane")
FLUORO_EVENT = ("P5-06000", "SRT", "Fluoroscopy")
ACQ_EVENT = ("113611", DCM, "Stationary Acquisition")
GY_M2 = ("Gy.m2", "Gy.m2")
GY = ("Gy", "Gy")
SEC = ("s", "s")
MM = ("mm", "mm")
DEG = ("deg", "deg")
KV = ("kV", "kV")
MA = ("mA", "mA")
MS = ("ms", "ms")
ONE = ("1", "no units")
PULSE_PER_S = ("{pulse}/s", "pulse/s")
RP_DEFINITION = "15cm from Isocenter toward Source"


@dataclass(frozen=True)
class IrradiationEvent:
    """One irradiation event as the RDSR records it (values in the RDSR's own units)."""

    uid: str
    start: _dt.datetime
    event_type: str  # "fluoroscopy" | "acquisition"
    protocol: str
    dap_gy_m2: float
    dose_rp_gy: float
    kvp: float
    tube_current_ma: float
    pulse_rate_per_s: float | None
    pulse_width_ms: float
    number_of_pulses: int
    duration_s: float
    primary_angle_deg: float
    secondary_angle_deg: float
    sid_mm: float
    sod_mm: float
    field_area_at_rp_cm2: float
    filter_cu_mm: float = 0.1

    def content(self) -> Dataset:
        """TID 10003 Irradiation Event X-Ray Data container."""
        kind = FLUORO_EVENT if self.event_type == "fluoroscopy" else ACQ_EVENT
        src = [
            sr_code(("113764", DCM, "Acquisition Plane"), SINGLE_PLANE, rel="HAS CONCEPT MOD"),
            sr_uid(("113769", DCM, "Irradiation Event UID"), self.uid),
            sr_datetime(("111526", DCM, "DateTime Started"), self.start),
            sr_code(("113721", DCM, "Irradiation Event Type"), kind),
            sr_text(("125203", DCM, "Acquisition Protocol"), self.protocol),
            sr_text(("113780", DCM, "Reference Point Definition"), RP_DEFINITION),
            sr_num(("122130", DCM, "Dose Area Product"), self.dap_gy_m2, GY_M2),
            sr_num(("113738", DCM, "Dose (RP)"), self.dose_rp_gy, GY),
            sr_num(("112011", DCM, "Positioner Primary Angle"), self.primary_angle_deg, DEG),
            sr_num(("112012", DCM, "Positioner Secondary Angle"), self.secondary_angle_deg, DEG),
            sr_container(
                ("113771", DCM, "X-Ray Filters"),
                [
                    sr_code(("113772", DCM, "X-Ray Filter Type"), ("113653", DCM, "Flat filter")),
                    sr_code(
                        ("113757", DCM, "X-Ray Filter Material"),
                        ("C-127F9", "SRT", "Copper or Copper compound"),
                    ),
                    sr_num(
                        ("113758", DCM, "X-Ray Filter Thickness Minimum"), self.filter_cu_mm, MM
                    ),
                    sr_num(
                        ("113773", DCM, "X-Ray Filter Thickness Maximum"), self.filter_cu_mm, MM
                    ),
                ],
            ),
            sr_code(("113732", DCM, "Fluoro Mode"), ("113631", DCM, "Pulsed")),
        ]
        if self.pulse_rate_per_s is not None:
            src.append(sr_num(("113791", DCM, "Pulse Rate"), self.pulse_rate_per_s, PULSE_PER_S))
        src += [
            sr_num(("113768", DCM, "Number of Pulses"), self.number_of_pulses, ONE),
            sr_num(("113733", DCM, "KVP"), self.kvp, KV),
            sr_num(("113734", DCM, "X-Ray Tube Current"), self.tube_current_ma, MA),
            sr_num(("113793", DCM, "Pulse Width"), self.pulse_width_ms, MS),
            sr_num(("113742", DCM, "Irradiation Duration"), self.duration_s, SEC),
            sr_num(("113750", DCM, "Distance Source to Detector"), self.sid_mm, MM),
            sr_num(("113748", DCM, "Distance Source to Isocenter"), self.sod_mm, MM),
            sr_num(
                ("113790", DCM, "Collimated Field Area"),
                self.field_area_at_rp_cm2 / 1e4,
                ("m2", "m2"),
            ),
        ]
        return sr_container(("113706", DCM, "Irradiation Event X-Ray Data"), src)


def write_rdsr(
    path: Path,
    ctx: StudyContext,
    events: list[IrradiationEvent],
    end: _dt.datetime,
    series_number: int,
) -> tuple[str, dict]:
    """Write a TID 10001 Projection X-Ray dose report; totals are the events' sums.

    Returns the SOP Instance UID and the accumulated totals written (RDSR units).
    """
    fluoro = [e for e in events if e.event_type == "fluoroscopy"]
    acq = [e for e in events if e.event_type != "fluoroscopy"]
    totals = {
        "dap_total_gy_m2": float(sum(e.dap_gy_m2 for e in events)),
        "dose_rp_total_gy": float(sum(e.dose_rp_gy for e in events)),
        "fluoro_dap_total_gy_m2": float(sum(e.dap_gy_m2 for e in fluoro)),
        "fluoro_dose_rp_total_gy": float(sum(e.dose_rp_gy for e in fluoro)),
        "acquisition_dap_total_gy_m2": float(sum(e.dap_gy_m2 for e in acq)),
        "acquisition_dose_rp_total_gy": float(sum(e.dose_rp_gy for e in acq)),
        "total_fluoro_time_s": float(sum(e.duration_s for e in fluoro)),
        "total_acquisition_time_s": float(sum(e.duration_s for e in acq)),
        "total_number_of_radiographic_frames": int(sum(e.number_of_pulses for e in acq)),
    }
    sop_uid = ctx.uid("rdsr/sop")
    ds = _base_dataset(
        ctx,
        XRAY_DOSE_SR_STORAGE,
        sop_uid,
        ctx.uid("rdsr/series"),
        "SR",
        series_number,
        end,
        "Radiation Dose Information",
    )
    tmpl = Dataset()
    tmpl.MappingResource = "DCMR"
    tmpl.TemplateIdentifier = "10001"
    ds.ContentTemplateSequence = Sequence([tmpl])
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("113701", DCM, "X-Ray Radiation Dose Report")])
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.InstanceCreationDate = end.strftime("%Y%m%d")
    ds.InstanceCreationTime = end.strftime("%H%M%S")
    ds.ReferencedPerformedProcedureStepSequence = Sequence([])
    ds.PerformedProcedureCodeSequence = Sequence([])
    accumulated = sr_container(
        ("113702", DCM, "Accumulated X-Ray Dose Data"),
        [
            sr_code(("113764", DCM, "Acquisition Plane"), SINGLE_PLANE, rel="HAS CONCEPT MOD"),
            sr_text(("113780", DCM, "Reference Point Definition"), RP_DEFINITION),
            sr_num(("113722", DCM, "Dose Area Product Total"), totals["dap_total_gy_m2"], GY_M2),
            sr_num(("113725", DCM, "Dose (RP) Total"), totals["dose_rp_total_gy"], GY),
            sr_num(
                ("113726", DCM, "Fluoro Dose Area Product Total"),
                totals["fluoro_dap_total_gy_m2"],
                GY_M2,
            ),
            sr_num(
                ("113728", DCM, "Fluoro Dose (RP) Total"), totals["fluoro_dose_rp_total_gy"], GY
            ),
            sr_num(("113730", DCM, "Total Fluoro Time"), totals["total_fluoro_time_s"], SEC),
            sr_num(
                ("113727", DCM, "Acquisition Dose Area Product Total"),
                totals["acquisition_dap_total_gy_m2"],
                GY_M2,
            ),
            sr_num(
                ("113729", DCM, "Acquisition Dose (RP) Total"),
                totals["acquisition_dose_rp_total_gy"],
                GY,
            ),
            sr_num(
                ("113855", DCM, "Total Acquisition Time"), totals["total_acquisition_time_s"], SEC
            ),
            sr_num(
                ("113731", DCM, "Total Number of Radiographic Frames"),
                totals["total_number_of_radiographic_frames"],
                ONE,
            ),
        ],
    )
    first = min(e.start for e in events)
    ds.ContentSequence = Sequence(
        [
            sr_code(
                ("121058", DCM, "Procedure reported"),
                ("113704", DCM, "Projection X-Ray"),
                rel="HAS CONCEPT MOD",
            ),
            sr_code(
                ("121005", DCM, "Observer Type"), ("121007", DCM, "Device"), rel="HAS OBS CONTEXT"
            ),
            sr_uid(
                ("121012", DCM, "Device Observer UID"), ctx.uid("device"), rel="HAS OBS CONTEXT"
            ),
            sr_text(("121013", DCM, "Device Observer Name"), "SYNTH-CARM", rel="HAS OBS CONTEXT"),
            sr_text(
                ("121014", DCM, "Device Observer Manufacturer"), MANUFACTURER, rel="HAS OBS CONTEXT"
            ),
            sr_text(("121015", DCM, "Device Observer Model Name"), MODEL, rel="HAS OBS CONTEXT"),
            sr_code(
                ("113705", DCM, "Scope of Accumulation"),
                ("113014", DCM, "Study"),
                rel="HAS OBS CONTEXT",
            ),
            sr_datetime(("113809", DCM, "Start of X-Ray Irradiation"), first),
            sr_datetime(("113810", DCM, "End of X-Ray Irradiation"), end),
            accumulated,
            *[e.content() for e in sorted(events, key=lambda e: e.start)],
        ]
    )
    ds.ContentSequence[6].ContentSequence = Sequence(
        [sr_uid(("110180", DCM, "Study Instance UID"), ctx.study_uid, rel="HAS PROPERTIES")]
    )
    atomic_save(ds, path)
    return sop_uid, totals

"""Read X-Ray Radiation Dose Structured Reports (DICOM TID 10001).

Siemens' private radiation summary (root ``C-10``, scheme ``99SMS_RADSUM``) is read into
the same record, flagged as non-standard, with what it holds that could not be read.
Content is found by concept code value and coding scheme, never by code meaning (vendors
misspell meanings). Units come from each value's unit code through :mod:`dose.units`.
An empty measured value is missing, not zero. Nothing is silently chosen: where the
report contradicts itself, :attr:`DoseRecord.flags` says so.
"""

from __future__ import annotations

import datetime as _dt
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from hybridfuse.dicom import parse_datetime, parse_number

from .errors import DoseInputError
from .units import UnitError, convert, implausible

__all__ = [
    "DoseRecord",
    "IrradiationEvent",
    "PlaneTotals",
    "read_rdsr",
    "summarize_dose_report",
    "SR_STORAGE_CLASSES",
]

#: SR storage SOP classes a projection dose report may come in.
SR_STORAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.67": "X-Ray Radiation Dose SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR",
    "1.2.840.10008.5.1.4.1.1.88.35": "Extensible SR",
}
_OTHER_DOSE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.68": "Radiopharmaceutical Radiation Dose SR",
    "1.2.840.10008.5.1.4.1.1.88.73": "Patient Radiation Dose SR",
    "1.2.840.10008.5.1.4.1.1.88.74": "Planned Imaging Agent Administration SR",
    "1.2.840.10008.5.1.4.1.1.88.75": "Performed Imaging Agent Administration SR",
}

_DCM = frozenset({"DCM"})
_SNOMED = frozenset({"SRT", "SNM3", "SCT", "99SDM"})


def _code(value: str, scheme: frozenset = _DCM) -> tuple[str, frozenset]:
    return (value, scheme)


ROOT = _code("113701")
PROCEDURE_REPORTED = _code("121058")
PROJECTION_XRAY = _code("113704")
CT_PROCEDURES = (("P5-08000", _SNOMED), ("77477000", _SNOMED))
ACCUMULATED = _code("113702")
EVENT = _code("113706")
CT_EVENT = _code("113819")
PLANE = _code("113764")
DEVICE_TYPE = _code("122142")
FLUORO_TYPES = (("P5-06000", _SNOMED), ("44491008", _SNOMED))
ACQ_TYPES = (_code("113611"), _code("113612"), _code("113613"))

#: Siemens' private "Radiation Summary Report" (ARCADIS Varic, software VC10A): an
#: Enhanced SR of study totals only. Codes as OpenREM imports them (its ``_import_varic``).
RADSUM = frozenset({"99SMS_RADSUM"})
RADSUM_ROOT = ("C-10", RADSUM)
#: (attribute, code, unit kind) of the RADSUM totals read; the unit comes from each value.
_RADSUM_TOTALS = (
    ("fluoro_time_s", "C-202", "time"),  # cumulative fluoroscopy time
    ("dap_total_gy_cm2", "C-204", "dap"),  # cumulative dose-area product
)

# (attribute, code, unit kind) of accumulated and event numbers.
_TOTALS = (
    ("dap_total_gy_cm2", "113722", "dap"),
    ("dose_rp_total_mgy", "113725", "dose"),
    ("fluoro_dap_gy_cm2", "113726", "dap"),
    ("acquisition_dap_gy_cm2", "113727", "dap"),
    ("fluoro_dose_rp_mgy", "113728", "dose"),
    ("acquisition_dose_rp_mgy", "113729", "dose"),
    ("fluoro_time_s", "113730", "time"),
    ("acquisition_time_s", "113855", "time"),
    ("n_radiographic_frames", "113731", "count"),
    ("distance_source_to_rp_mm", "113737", "length"),
)
_EVENT_NUMS = (
    ("dap_gy_cm2", "122130", "dap"),
    ("dose_rp_mgy", "113738", "dose"),
    ("kvp_kv", "113733", "voltage"),
    ("tube_current_ma", "113734", "current"),
    ("exposure_time_ms", "113824", "short_time"),  # Exposure Time, current code
    ("exposure_time_retired_ms", "113735", "short_time"),  # its retired code (older units)
    ("exposure_mas", "113736", "charge"),
    ("pulse_rate_per_s", "113791", "rate"),
    ("number_of_pulses", "113768", "count"),
    ("pulse_width_ms", "113793", "short_time"),
    ("duration_s", "113742", "time"),
    ("primary_angle_deg", "112011", "angle"),
    ("secondary_angle_deg", "112012", "angle"),
    ("field_area_cm2", "113790", "area"),
    ("sid_mm", "113750", "length"),
    ("source_isocenter_mm", "113748", "length"),
)


def _concept(item) -> tuple[str, str] | None:
    seq = item.get("ConceptNameCodeSequence")
    if not seq:
        return None
    return (
        str(seq[0].get("CodeValue", "")).strip(),
        str(seq[0].get("CodingSchemeDesignator", "")).strip().upper(),
    )


def _is(code: tuple[str, str] | None, ref: tuple[str, frozenset]) -> bool:
    return code is not None and code[0] == ref[0] and code[1] in ref[1]


def _coded_value(item) -> tuple[str, str] | None:
    seq = item.get("ConceptCodeSequence")
    if not seq:
        return None
    return (
        str(seq[0].get("CodeValue", "")).strip(),
        str(seq[0].get("CodingSchemeDesignator", "")).strip().upper(),
    )


def _children(item) -> list:
    return list(item.get("ContentSequence", []) or [])


#: Largest dose SR file read: pydicom holds a content tree in about 40 times its file
#: size, so this keeps a report under ~1.5 GB of memory (5,000 events take 24 MiB).
MAX_SR_BYTES = 32 * 2**20

#: Deepest content-tree nesting read. TID 10001 is 4-5 levels deep; vendors' private trees
#: a few more. Deeper trees are refused rather than walked without bound.
MAX_SR_DEPTH = 64


class _TooDeep(Exception):
    """A content tree nested deeper than :data:`MAX_SR_DEPTH` (named with its file later)."""


def _is_dose_container(item) -> bool:
    code = _concept(item)
    return _is(code, ACCUMULATED) or _is(code, EVENT)


def _dose_containers(item):
    """Accumulated-dose and irradiation-event containers at any depth (not inside one)."""
    return (c for c in _walk(item, prune=_is_dose_container) if _is_dose_container(c))


def _walk(item, prune=None):
    """Yield every descendant content item, depth first, iteratively and to a bounded depth.

    ``prune(child)`` true: ``child`` is yielded but not descended into.
    """
    stack = [(iter(_children(item)), 1)]
    while stack:
        children, depth = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            continue
        yield child
        if "ContentSequence" in child and not (prune and prune(child)):
            if depth >= MAX_SR_DEPTH:
                raise _TooDeep()
            stack.append((iter(_children(child)), depth + 1))


@dataclass
class PlaneTotals:
    """Accumulated dose of one acquisition plane, canonical units (None = not recorded)."""

    plane: str
    dap_total_gy_cm2: float | None = None
    dose_rp_total_mgy: float | None = None
    fluoro_dap_gy_cm2: float | None = None
    acquisition_dap_gy_cm2: float | None = None
    fluoro_dose_rp_mgy: float | None = None
    acquisition_dose_rp_mgy: float | None = None
    fluoro_time_s: float | None = None
    acquisition_time_s: float | None = None
    n_radiographic_frames: float | None = None
    distance_source_to_rp_mm: float | None = None
    reference_point: str | None = None


@dataclass
class IrradiationEvent:
    """One irradiation event (TID 10003), canonical units (None = not recorded)."""

    uid: str | None
    plane: str
    start: _dt.datetime | None
    event_type: str  # "fluoroscopy", "acquisition" or "unknown"
    event_type_code: str | None = None
    protocol: str | None = None
    dap_gy_cm2: float | None = None
    dose_rp_mgy: float | None = None
    kvp_kv: float | None = None
    tube_current_ma: float | None = None
    exposure_time_ms: float | None = None
    exposure_mas: float | None = None
    pulse_rate_per_s: float | None = None
    number_of_pulses: float | None = None
    pulse_width_ms: float | None = None
    duration_s: float | None = None
    primary_angle_deg: float | None = None
    secondary_angle_deg: float | None = None
    field_area_cm2: float | None = None
    sid_mm: float | None = None
    source_isocenter_mm: float | None = None
    filters: list[str] = field(default_factory=list)
    reference_point: str | None = None
    multi_valued: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class DoseRecord:
    """What one dose report says: header, accumulated totals per plane, events, flags."""

    path: str
    sop_class_uid: str
    sop_class_name: str
    sop_instance_uid: str | None
    study_instance_uid: str | None
    manufacturer: str | None
    model: str | None
    template: str | None
    procedure_reported: str | None
    acquisition_device_type: str | None
    planes: dict[str, PlaneTotals]
    events: list[IrradiationEvent]
    flags: list[str] = field(default_factory=list)
    units_seen: set[str] = field(default_factory=set)
    patient: dict = field(default_factory=dict)
    #: What a non-standard report is (None for an RDSR), and the content items it holds
    #: that were not read (code, scheme and meaning; never their values).
    non_standard: str | None = None
    not_read: list[str] = field(default_factory=list)

    @property
    def n_fluoro_events(self) -> int:
        """Events whose type is fluoroscopy."""
        return sum(e.event_type == "fluoroscopy" for e in self.events)

    @property
    def n_acquisition_events(self) -> int:
        """Events whose type is an acquisition (stationary, stepping, rotational)."""
        return sum(e.event_type == "acquisition" for e in self.events)

    @property
    def has_fluoroscopy(self) -> bool:
        """Fluoroscopy decided from events and totals, not from the device type."""
        if self.n_fluoro_events:
            return True
        return any(
            (p.fluoro_dap_gy_cm2 or 0) > 0 or (p.fluoro_time_s or 0) > 0
            for p in self.planes.values()
        )

    def total(self, attr: str) -> float | None:
        """Study total of an accumulated quantity: the sum over planes (None if none has it)."""
        values = [getattr(p, attr) for p in self.planes.values()]
        known = [v for v in values if v is not None]
        if not known:
            return None
        if len(known) < len(values):
            self.flags.append(f"{attr}: recorded for {len(known)} of {len(values)} planes")
        return float(sum(known))


def read_rdsr(path: str | os.PathLike) -> DoseRecord:
    """Read a projection X-ray dose report (see :func:`_read_rdsr`).

    pydicom's warnings about malformed values are silenced here: every number goes
    through :func:`parse_number`, and an unusable value becomes unknown and is flagged.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Invalid value for VR")
        try:
            return _read_rdsr(path)
        except (_TooDeep, RecursionError) as exc:
            raise DoseInputError(
                f"{path}: content tree nested deeper than {MAX_SR_DEPTH} levels; refused"
            ) from exc
        except DoseInputError:
            raise
        except _CORRUPT as exc:
            # The tree is parsed lazily: a file cut short or garbled fails only when the
            # walk reaches the broken element.
            raise DoseInputError(
                f"{path}: truncated or corrupt dose report ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})"
            ) from exc


_CORRUPT = (
    struct.error,
    EOFError,
    OSError,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    NotImplementedError,
)


def _check_complete(ds, path: Path, size: int) -> None:
    """Refuse a file that ends inside its data set.

    pydicom reads a file cut short without complaint when the cut falls between items of
    a sequence: the report would silently lose its later events or totals. Every
    top-level element with a defined length must end within the file.
    """
    for elem in list(getattr(ds, "_dict", {}).values()):
        length = getattr(elem, "length", None)
        tell = getattr(elem, "value_tell", None)
        if not isinstance(length, int) or not isinstance(tell, int) or length == 0xFFFFFFFF:
            continue
        if tell + length > size:
            raise DoseInputError(
                f"{path}: truncated or corrupt dose report (element {elem.tag} declares "
                f"{length} bytes at offset {tell}, but the file ends at {size})"
            )


def _read_rdsr(path: str | os.PathLike) -> DoseRecord:
    """Read a projection X-ray dose report.

    Raises
    ------
    DoseInputError
        Not DICOM, not a structured report, or a dose report of another kind (CT,
        radiopharmaceutical) or no dose report at all; the message says which.
    """
    from .image_tags import read_header

    path = Path(path)
    size = path.stat().st_size if path.is_file() else 0
    if size > MAX_SR_BYTES:
        raise DoseInputError(
            f"{path}: {size / 2**20:.0f} MiB is larger than a dose report can be read "
            f"({MAX_SR_BYTES / 2**20:.0f} MiB, about 6,000 irradiation events)"
        )
    ds = read_header(path)
    _check_complete(ds, path, size)
    sop = str(ds.get("SOPClassUID", ""))
    if sop in _OTHER_DOSE_CLASSES:
        raise DoseInputError(
            f"{path}: {_OTHER_DOSE_CLASSES[sop]} is not a projection X-ray dose report"
        )
    if sop not in SR_STORAGE_CLASSES:
        described = str(ds.get("SeriesDescription", "") or ds.get("ImageComments", ""))
        has_pixels = int(ds.get("Rows", 0) or 0) > 0  # read stops before the pixels
        if has_pixels and any(w in described.lower() for w in ("dose", "protocol")):
            raise DoseInputError(
                f"{path}: a vendor dose summary captured as pixels ('{described}'); its "
                "figures are burned into the image and cannot be read reliably: use the "
                "unit's RDSR, or --images for per-image dose attributes"
            )
        raise DoseInputError(
            f"{path}: SOP class {sop or 'missing'} is not a structured report that can hold "
            "an X-ray dose report (for images, use --images)"
        )
    root_code = _concept(ds)
    if _is(root_code, RADSUM_ROOT):
        return _read_radsum(ds, path, sop)
    flags: list[str] = []
    lenient = False
    if not _is(root_code, ROOT):
        if any(_is(_concept(i), EVENT) or _is(_concept(i), ACCUMULATED) for i in _walk(ds)):
            # A vendor summary in a private tree: read what it carries, by code, and say
            # so on every figure's behalf.
            lenient = True
            where = f"{root_code[0]} ({root_code[1]})" if root_code else "missing"
            flags.append(
                f"non-standard SR: root concept {where}, not 113701 (DCM); accumulated "
                "dose (113702) and irradiation event (113706) containers were found by "
                "their codes at any depth and read as TID 10002/10003; anything else the "
                "vendor recorded in its own structure is not read"
            )
        else:
            raise DoseInputError(
                f"{path}: {SR_STORAGE_CLASSES[sop]} whose root concept is "
                f"{root_code[0] if root_code else 'missing'}, not an X-Ray Radiation Dose "
                "Report (113701, DCM)"
            )
    template = None
    if ds.get("ContentTemplateSequence"):
        template = str(ds.ContentTemplateSequence[0].get("TemplateIdentifier", "")) or None
    units: set[str] = set()

    procedure = None
    device_type = None
    for item in _children(ds):
        code = _concept(item)
        if _is(code, PROCEDURE_REPORTED):
            procedure = _coded_value(item)
        elif _is(code, DEVICE_TYPE):
            value = _coded_value(item)
            device_type = value[0] if value else None
    if procedure is not None and any(_is(procedure, ct) for ct in CT_PROCEDURES):
        raise DoseInputError(f"{path}: a CT dose report (TID 10011), not projection X-ray")
    if any(_is(_concept(i), CT_EVENT) for i in _walk(ds)):
        raise DoseInputError(f"{path}: holds CT acquisitions (113819), not projection X-ray")
    if procedure is None:
        flags.append("no 'Procedure reported' (121058): projection X-ray assumed from content")
    elif not _is(procedure, PROJECTION_XRAY):
        flags.append(f"Procedure reported is {procedure[0]} ({procedure[1]}), not 113704")
    if template is None and not lenient:
        flags.append("no ContentTemplateSequence: TID 10001 recognised from its root concept")
    elif template != "10001":
        flags.append(f"declared template {template}, not 10001")

    planes: dict[str, PlaneTotals] = {}
    events: list[IrradiationEvent] = []
    n_event_items, seen_uids = 0, set()
    for item in _dose_containers(ds) if lenient else _children(ds):
        code = _concept(item)
        if _is(code, ACCUMULATED):
            plane = _plane(item)
            if plane in planes:
                flags.append(
                    f"two accumulated-dose containers for plane '{plane}'; the second is ignored"
                )
                continue
            planes[plane] = _read_totals(item, plane, flags, units)
        elif _is(code, EVENT):
            event = _read_event(item, flags, units)
            n_event_items += 1
            if event.uid is not None and event.uid in seen_uids:
                # a report re-sent or merged: the same event summed twice inflates the
                # event sums and the dose saved (its UID is not named: it is an identifier)
                flags.append(
                    f"irradiation event {n_event_items} repeats an earlier event's UID "
                    "(0008,3010): recorded twice; the repeat is ignored"
                )
                continue
            seen_uids.add(event.uid)
            events.append(event)
    if not planes and not events:
        raise DoseInputError(
            f"{path}: X-Ray Radiation Dose Report without accumulated dose data (113702) or "
            "irradiation events (113706)"
        )
    if not planes:
        flags.append("no accumulated dose data (113702): totals must come from event sums")
    record = DoseRecord(
        **_header(ds, path, sop),
        template=template,
        procedure_reported=procedure[0] if procedure else None,
        acquisition_device_type=device_type,
        planes=planes,
        events=events,
        flags=flags,
        units_seen=units,
    )
    starts = [e.start for e in events if e.start is not None]
    if starts and max(starts) - min(starts) > _dt.timedelta(hours=24):
        # one event dated decades off moved the guided phase and the dose saved unflagged
        flags.append(
            f"irradiation event times span {(max(starts) - min(starts)).days} day(s), "
            "more than one procedure: check the event dates (DateTime Started, 111526)"
        )
    unknown = [e for e in events if e.event_type == "unknown"]
    if unknown:
        flags.append(f"{len(unknown)} event(s) of unrecognised type (113721)")
    return record


def _header(ds, path: Path, sop: str) -> dict:
    """The record fields every kind of dose report takes from its header."""
    return {
        "path": str(path),
        "sop_class_uid": sop,
        "sop_class_name": SR_STORAGE_CLASSES[sop],
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")) or None,
        "study_instance_uid": str(ds.get("StudyInstanceUID", "")) or None,
        "manufacturer": str(ds.get("Manufacturer", "")) or None,
        "model": str(ds.get("ManufacturerModelName", "")) or None,
        "patient": {
            "name": str(ds.get("PatientName", "")) or None,
            "id": str(ds.get("PatientID", "")) or None,
            "birth_date": str(ds.get("PatientBirthDate", "")) or None,
        },
    }


def _read_radsum(ds, path: Path, sop: str) -> DoseRecord:
    """Siemens' radiation summary: its study totals as one plane, no events, flagged.

    Only fluoro time (C-202) and DAP (C-204) have a meaning that is documented and
    matches a TID 10002 total; every other item is listed in ``not_read``.
    """
    flags: list[str] = []
    units: set[str] = set()
    totals = PlaneTotals(plane="single")  # one tube: OpenREM records it as Single Plane too
    by_code = {code: (attr, kind) for attr, code, kind in _RADSUM_TOTALS}
    not_read = []
    for item in _walk(ds):
        code = _concept(item)
        if code is None or item.get("ValueType") == "CONTAINER":
            continue  # a container's items are visited on their own
        if code[1] in RADSUM and code[0] in by_code and item.get("ValueType") == "NUM":
            attr, kind = by_code[code[0]]
            value = _number(item, kind, flags, units, f"RADSUM {code[0]} {attr}")
            if getattr(totals, attr) is not None and value is not None:
                flags.append(f"RADSUM {code[0]} recorded twice; first value kept")
            elif value is not None:
                setattr(totals, attr, value)
            continue
        meaning = str(item.ConceptNameCodeSequence[0].get("CodeMeaning", "")).strip()
        not_read.append(f"{code[0]} ({code[1]}) {meaning!r} {item.get('ValueType', '?')}")
    if totals.fluoro_time_s is None and totals.dap_total_gy_cm2 is None:
        raise DoseInputError(
            f"{path}: Siemens radiation summary (C-10, 99SMS_RADSUM) without a readable fluoro "
            "time (C-202) or dose-area product (C-204)"
        )
    what = "Siemens radiation summary (root C-10, 99SMS_RADSUM), not an RDSR (113701)"
    flags.append(
        f"non-standard SR: {what}; read: study fluoro time (C-202) and DAP (C-204) only; no "
        "irradiation events, so no Dose (RP), no fluoroscopy/acquisition split and no "
        f"per-event data; not read: {'; '.join(not_read) or 'nothing else recorded'}"
    )
    return DoseRecord(
        **_header(ds, path, sop),
        template=None,
        procedure_reported=None,
        acquisition_device_type=None,
        planes={"single": totals},
        events=[],
        flags=flags,
        units_seen=units,
        non_standard=what,
        not_read=not_read,
    )


def _plane(item) -> str:
    for child in _children(item):
        if _is(_concept(child), PLANE):
            value = _coded_value(child)
            if value:
                return {"113622": "single", "113620": "A", "113621": "B"}.get(value[0], value[0])
    return "unspecified"


def _number(item, kind: str, flags: list[str], units: set[str], what: str) -> float | None:
    """Value of a NUM item in canonical units; None when empty or in an unknown unit."""
    seq = item.get("MeasuredValueSequence")
    if not seq:
        return None
    mv = seq[0]
    raw = mv.get("NumericValue")
    value = parse_number(raw)
    if value is None:
        fp = mv.get("FloatingPointValue")
        value = parse_number(fp) if fp is not None else None
    if value is None:
        if str(raw if raw is not None else "").strip():  # present but unreadable: say so
            flags.append(f"{what}: value {str(raw)[:40]!r} is not a number; treated as unknown")
        return None
    unit_seq = mv.get("MeasurementUnitsCodeSequence")
    if not unit_seq:
        flags.append(f"{what}: value {value} has no unit code; treated as unknown")
        return None
    unit = str(unit_seq[0].get("CodeValue", "")).strip()
    units.add(unit)
    try:
        out = convert(value, unit, kind)
    except UnitError as exc:
        flags.append(f"{what}: {exc}; value treated as unknown")
        return None
    why = implausible(out, kind)
    if why:
        flags.append(f"{what}: {why}; value treated as unknown")
        return None
    return out


def _text_or_code(item) -> str | None:
    if item.get("ValueType") == "TEXT":
        return str(item.get("TextValue", "")) or None
    value = item.get("ConceptCodeSequence")
    if value:
        return str(value[0].get("CodeMeaning", "")) or str(value[0].get("CodeValue", ""))
    return None


def _read_totals(item, plane: str, flags, units) -> PlaneTotals:
    totals = PlaneTotals(plane=plane)
    by_code = {code: (attr, kind) for attr, code, kind in _TOTALS}
    for child in _walk(item):
        code = _concept(child)
        if code is None or code[1] not in _DCM:
            continue
        if code[0] == "113780":
            totals.reference_point = _text_or_code(child)
        elif code[0] in by_code and child.get("ValueType") == "NUM":
            attr, kind = by_code[code[0]]
            value = _number(child, kind, flags, units, f"plane {plane} {attr}")
            if getattr(totals, attr) is not None and value is not None:
                flags.append(f"plane {plane}: {attr} recorded twice; first value kept")
                continue
            setattr(totals, attr, value)
    return totals


def _read_event(item, flags, units) -> IrradiationEvent:
    plane = _plane(item)
    ev = IrradiationEvent(uid=None, plane=plane, start=None, event_type="unknown")
    by_code = {code: (attr, kind) for attr, code, kind in _EVENT_NUMS}
    values: dict[str, list[float]] = {}
    for child in _walk(item):
        code = _concept(child)
        if code is None:
            continue
        if code[1] in _DCM:
            if code[0] == "113769":
                ev.uid = str(child.get("UID", "")) or None
            elif code[0] == "111526":
                ev.start = parse_datetime(child.get("DateTime"))
                if ev.start is None and str(child.get("DateTime", "")).strip():
                    flags.append(  # the event was left out of the timeline without a word
                        "an irradiation event's DateTime Started (111526) is not a date and "
                        "time; that event has no time"
                    )
            elif code[0] == "113721":
                value = _coded_value(child)
                if value:
                    ev.event_type_code = value[0]
                    if any(_is(value, t) for t in FLUORO_TYPES):
                        ev.event_type = "fluoroscopy"
                    elif any(_is(value, t) for t in ACQ_TYPES):
                        ev.event_type = "acquisition"
            elif code[0] == "125203":
                ev.protocol = _text_or_code(child)
            elif code[0] == "113780":
                ev.reference_point = _text_or_code(child)
            elif code[0] == "113757":
                material = _text_or_code(child)
                if material:
                    ev.filters.append(material)
            elif code[0] in by_code and child.get("ValueType") == "NUM":
                attr, kind = by_code[code[0]]
                value = _number(child, kind, flags, units, f"event {attr}")
                if value is not None:
                    values.setdefault(attr, []).append(value)
    retired = values.pop("exposure_time_retired_ms", None)
    if retired and "exposure_time_ms" not in values:  # the current code wins when both are
        values["exposure_time_ms"] = retired
    for attr, vals in values.items():
        if len(vals) > 1:
            ev.multi_valued[attr] = vals
        # A multi-valued technique factor (one per pulse) is summarised by its mean;
        # dose quantities are never averaged: the first value is kept and flagged.
        if attr in ("dap_gy_cm2", "dose_rp_mgy") and len(vals) > 1:
            flags.append(f"event {ev.uid}: {attr} recorded {len(vals)} times; first kept")
            setattr(ev, attr, vals[0])
        else:
            setattr(ev, attr, sum(vals) / len(vals))
    return ev


def summarize_dose_report(path: str | os.PathLike) -> dict:
    """Short description of a dose report for ``hybridfuse info``."""
    try:
        rec = read_rdsr(path)
    except DoseInputError as exc:
        return {"summary": f"not a usable projection dose report: {exc}", "notes": []}
    totals = {
        "dap_total_gy_cm2": rec.total("dap_total_gy_cm2"),
        "ka_r_total_mgy": rec.total("dose_rp_total_mgy"),
        "fluoro_time_s": rec.total("fluoro_time_s"),
    }
    kind = (
        rec.non_standard
        or f"projection X-ray dose report (TID {rec.template or '10001, undeclared'})"
    )
    summary = (
        f"{kind}: "
        f"{len(rec.events)} irradiation events ({rec.n_fluoro_events} fluoroscopy, "
        f"{rec.n_acquisition_events} acquisition), {len(rec.planes)} plane(s) "
        f"[{', '.join(rec.planes)}]; read it with 'hybridfuse dose report'"
    )
    return {
        "summary": summary,
        "totals": {k: (None if v is None else round(v, 6)) for k, v in totals.items()},
        "notes": list(rec.flags),
    }

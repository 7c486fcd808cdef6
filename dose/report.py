"""``dose.json`` and ``events.csv``: what was delivered, where each number came from.

Delivered totals prefer the X-ray unit's accumulated totals (TID 10002) and say so; event
sums are the fallback and are always reconciled against the totals, per plane, with the
difference shown and contradictions flagged rather than silently resolved. Reports carry
no patient name, ID or birth date unless asked.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from contextlib import ExitStack
from pathlib import Path

from hybridfuse import __version__
from hybridfuse._safeio import UnsafeOutputError, atomic_file, csv_cell

from .descriptors import clean_record
from .inputs import input_record, shown_name
from .rdsr import DoseRecord, read_rdsr

__all__ = [
    "DOSE_SCHEMA",
    "EVENT_COLUMNS",
    "build_dose_report",
    "finite_json",
    "write_dose_outputs",
    "write_together",
]

DOSE_SCHEMA = "hybridfuse.dose/1"

#: Relative difference between event sums and accumulated totals that is flagged.
RECONCILE_TOLERANCE = 0.05

EVENT_COLUMNS = [
    ("event_uid", "uid"),
    ("start_datetime", "start"),
    ("time_from_first_event_s", None),
    ("type", "event_type"),
    ("plane", "plane"),
    ("protocol", "protocol"),
    ("dap_gy_cm2", "dap_gy_cm2"),
    ("dose_rp_mgy", "dose_rp_mgy"),
    ("kvp_kv", "kvp_kv"),
    ("tube_current_ma", "tube_current_ma"),
    ("pulse_rate_per_s", "pulse_rate_per_s"),
    ("pulse_width_ms", "pulse_width_ms"),
    ("number_of_pulses", "number_of_pulses"),
    ("irradiation_duration_s", "duration_s"),
    ("exposure_time_ms", "exposure_time_ms"),
    ("filters", "filters"),
    ("field_area_cm2", "field_area_cm2"),
    ("primary_angle_deg", "primary_angle_deg"),
    ("secondary_angle_deg", "secondary_angle_deg"),
]

# (delivered field, accumulated attribute, event attribute, event type filter)
_QUANTITIES = (
    ("dap_total_gy_cm2", "dap_total_gy_cm2", "dap_gy_cm2", None),
    ("fluoro_dap_gy_cm2", "fluoro_dap_gy_cm2", "dap_gy_cm2", "fluoroscopy"),
    ("acquisition_dap_gy_cm2", "acquisition_dap_gy_cm2", "dap_gy_cm2", "acquisition"),
    ("ka_r_total_mgy", "dose_rp_total_mgy", "dose_rp_mgy", None),
    ("fluoro_ka_r_mgy", "fluoro_dose_rp_mgy", "dose_rp_mgy", "fluoroscopy"),
    ("acquisition_ka_r_mgy", "acquisition_dose_rp_mgy", "dose_rp_mgy", "acquisition"),
    ("fluoro_time_s", "fluoro_time_s", "duration_s", "fluoroscopy"),
    ("acquisition_time_s", "acquisition_time_s", "duration_s", "acquisition"),
)


def _event_sum(events, attr, kind, plane=None):
    chosen = [
        e
        for e in events
        if (kind is None or e.event_type == kind) and (plane is None or e.plane == plane)
    ]
    values = [getattr(e, attr) for e in chosen]
    known = [v for v in values if v is not None]
    return (sum(known) if known else None), len(known), len(values)


def _plane_totals(rec: DoseRecord, acc_attr, ev_attr, kind) -> list[tuple]:
    """(value, taken from the events) per plane: the accumulated total, or the events' sum.

    The events' sum replaces a dose total (DAP, Ka,r) that reads 0 while every event
    records it and they sum above 0; not a time, whose event durations are often not
    additive.

    A zero total beside events with dose is a field the unit left unfilled, not a beam
    that never ran; :func:`_reconcile` flags it.
    """
    out = []
    for plane, totals in rec.planes.items():
        total = getattr(totals, acc_attr)
        if total == 0 and not acc_attr.endswith("time_s"):
            summed, n_known, n_all = _event_sum(rec.events, ev_attr, kind, plane)
            if summed and n_known == n_all:
                out.append((float(summed), True))
                continue
        out.append((total, False))
    return out


def _zero_total_kept(field: str, n_known: int, n_all: int) -> str:
    """What a flag says becomes of a total that reads 0 beside a non-zero event sum."""
    if field.endswith("time_s"):
        return "the 0 is reported (event durations are often not additive)"
    if n_known < n_all:
        return f"only {n_known} of {n_all} events record it, so the 0 is reported"
    return "the event sum is reported"


def _reconcile(rec: DoseRecord, flags: list[str]) -> list[dict]:
    rows = []
    for plane, totals in rec.planes.items():
        for dap_attr, kar_attr, what in (
            ("fluoro_dap_gy_cm2", "fluoro_dose_rp_mgy", "fluoroscopy"),
            ("acquisition_dap_gy_cm2", "acquisition_dose_rp_mgy", "acquisition"),
            ("dap_total_gy_cm2", "dose_rp_total_mgy", "total"),
        ):
            dap, kar = getattr(totals, dap_attr), getattr(totals, kar_attr)
            if dap is not None and kar is not None and (dap > 0) != (kar > 0):
                flags.append(
                    f"plane {plane}: {what} DAP total {dap:.6g} Gy·cm² but Dose (RP) total "
                    f"{kar:.6g} mGy: one is zero and the other not (contradiction in the report)"
                )
        for field, acc_attr, ev_attr, kind in _QUANTITIES:
            total = getattr(totals, acc_attr)
            summed, n_known, n_all = _event_sum(rec.events, ev_attr, kind, plane)
            row = {
                "plane": plane,
                "quantity": field,
                "accumulated_total": total,
                "event_sum": summed,
                "events_with_value": n_known,
                "events": n_all,
            }
            if total is not None and summed is not None:
                diff = summed - total
                # A zero total against a non-zero sum has no finite relative difference.
                rel = diff / total if total else (0.0 if diff == 0 else None)
                row["difference"] = diff
                row["relative_difference"] = rel
                if rel is None:
                    flags.append(
                        f"plane {plane}: {field} event sum {summed:.6g} but the accumulated "
                        "total is 0 (a field the unit left unfilled?); "
                        + _zero_total_kept(field, n_known, n_all)
                    )
                elif abs(rel) > RECONCILE_TOLERANCE:
                    what = (
                        "durations are vendor-defined and often not additive"
                        if field.endswith("time_s")
                        else "check the DAP meter records"
                    )
                    flags.append(
                        f"plane {plane}: {field} event sum {summed:.6g} differs from the "
                        f"accumulated total {total:.6g} by {100 * rel:+.1f}% ({what}); the "
                        "accumulated total is reported"
                    )
            rows.append(row)
    return rows


def read_csv_rows(path: Path, what: str) -> list[dict]:
    """The rows of a user's CSV table; unreadable or non-UTF-8 is one line naming ``path``."""
    from hybridfuse._safeio import settings_file_problem

    from .errors import DoseInputError

    problem = settings_file_problem(Path(path))
    if problem:
        raise DoseInputError(f"{path}: {problem}")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except UnicodeDecodeError as exc:
        raise DoseInputError(
            f"{path}: cannot read {what}: not UTF-8 text (byte {exc.start})"
        ) from exc
    except (OSError, csv.Error) as exc:
        raise DoseInputError(f"{path}: cannot read {what} ({exc})") from exc


COEFFICIENTS_TABLE = Path(__file__).parent / "tables" / "effective_dose_coefficients.csv"


def load_coefficients(path: str | os.PathLike | None = None) -> dict[str, tuple[float, str]]:
    """Effective-dose coefficients: CSV ``region,coefficient_msv_per_gy_cm2,source``.

    Without ``path``, the table shipped in ``dose/tables`` (one sourced row per region;
    an optional ``applicability`` column is appended to the source).
    """
    from .errors import DoseInputError

    path = Path(path) if path else COEFFICIENTS_TABLE
    rows = read_csv_rows(path, "coefficients")
    out = {}
    for r in rows:
        try:
            value = float(r["coefficient_msv_per_gy_cm2"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DoseInputError(
                f"{path}: need columns region,coefficient_msv_per_gy_cm2,source with numbers"
            ) from exc
        if not (math.isfinite(value) and value >= 0):
            raise DoseInputError(
                f"{path}: region {r.get('region')!r}: coefficient {value} is not a finite "
                "number >= 0"
            )
        if not r.get("source"):
            raise DoseInputError(f"{path}: region {r.get('region')!r} has no source")
        source = r["source"]
        if r.get("applicability"):
            source = f"{source} [{r['applicability']}]"
        out[r["region"].strip().lower()] = (value, source)
    return out


def _effective_dose(delivered, saved, region, coefficients) -> dict:
    note = (
        "Effective dose is a population-risk quantity for comparing exposures, not the "
        "dose this patient received."
    )
    if not coefficients or not region or region.lower() not in coefficients:
        return {
            "note": note
            + " Not computed: "
            + (
                f"no conversion coefficient for region {region!r}"
                if region
                else "no --region given"
            )
            + " (the shipped table has "
            f"{', '.join(sorted(coefficients or {})) or 'none'}; give --coefficients FILE "
            "with a sourced row)."
        }
    coef, source = coefficients[region.lower()]
    out = {
        "note": note,
        "region": region,
        "coefficient_msv_per_gy_cm2": coef,
        "source": source,
        "delivered_msv": (
            delivered["dap_total_gy_cm2"] * coef
            if delivered.get("dap_total_gy_cm2") is not None
            else None
        ),
    }
    cf = (saved or {}).get("counterfactual")
    if cf and cf["point"].get("dap_gy_cm2") is not None:
        lo, hi = cf["interval_95"]["dap_gy_cm2"]
        out["saved_msv"] = cf["point"]["dap_gy_cm2"] * coef
        out["saved_msv_interval_95"] = [lo * coef, hi * coef]
        out["interval_note"] = (
            "the interval carries the saved DAP's uncertainty only; the coefficient's own "
            "(one phantom, one projection set, its tissue weights) is not included"
        )
    return out


def build_dose_report(
    rdsr_path: str | os.PathLike,
    *,
    include_phi: bool = False,
    procedure: str | None = None,
    region: str | None = None,
    us_clips=(),
    us_intervals=(),
    guided_phase=None,
    coefficients: dict | None = None,
    registry_values: dict | None = None,
    table_transmission=None,
    seed: int = 0,
    force: bool = False,
) -> dict:
    """The ``dose.json`` record of one dose report.

    Parameters
    ----------
    us_clips : paths of ultrasound cine files, whose acquisition times give the
        ultrasound-guided intervals; or ``us_intervals`` given directly as
        (start_s, end_s) from the first irradiation event.
    guided_phase : (start_s, end_s) of the fluoroscopy-guided phase, when known.
    coefficients : region → (mSv per Gy·cm², source), for effective dose; ``None``
        uses the shipped table (:func:`load_coefficients`), ``{}`` computes none.
    registry_values : quantity → values of fluoroscopy-only procedures of the same type.
    force : compute (and flag) with an ultrasound interval that lies outside the
        procedure instead of refusing it (:func:`.plausibility.check_timing`).
    """
    from .plausibility import check_timing
    from .saved import (
        Interval,
        saved_against_baseline,
        saved_counterfactual,
        ultrasound_intervals_from_clips,
    )

    path = Path(rdsr_path)
    rec = read_rdsr(path)
    flags = list(rec.flags)
    if not include_phi:
        rec = clean_record(rec, flags)
    delivered: dict = {}
    sources: dict = {}
    for field, acc_attr, ev_attr, kind in _QUANTITIES:
        acc = _plane_totals(rec, acc_attr, ev_attr, kind)
        if acc and all(v is not None for v, _ in acc):
            delivered[field] = float(sum(v for v, _ in acc))
            sources[field] = "accumulated totals, summed over planes"
            if any(from_events for _, from_events in acc):
                sources[field] = (
                    "accumulated totals, summed over planes; the sum of the events where a "
                    "plane's total reads 0 but its events do not"
                )
            continue
        summed, n_known, n_all = _event_sum(rec.events, ev_attr, kind)
        if summed is not None and n_known == n_all:
            delivered[field] = float(summed)
            sources[field] = "sum of irradiation events"
            flags.append(f"{field}: no accumulated total; the sum of {n_all} events is reported")
        else:
            delivered[field] = None
            sources[field] = "not recorded"
            if n_known:
                flags.append(f"{field}: only {n_known} of {n_all} events record it; unknown")
    delivered["n_events"] = len(rec.events)
    delivered["n_fluoro_events"] = rec.n_fluoro_events
    delivered["n_acquisition_events"] = rec.n_acquisition_events
    delivered["n_planes"] = len(rec.planes)
    delivered["per_plane"] = {
        plane: {k: v for k, v in vars(t).items() if k != "plane"} for plane, t in rec.planes.items()
    }
    refs = {t.reference_point for t in rec.planes.values() if t.reference_point}
    refs |= {e.reference_point for e in rec.events if e.reference_point}
    delivered["reference_point"] = sorted(refs)[0] if len(refs) == 1 else sorted(refs) or None
    delivered["has_fluoroscopy"] = rec.has_fluoroscopy
    delivered["sources"] = sources
    reconciliation = _reconcile(rec, flags)
    software = __version__
    report = {
        "schema": DOSE_SCHEMA,
        "software_version": software,
        "procedure": procedure,
        "region": region,
        "device": {"manufacturer": rec.manufacturer, "model": rec.model},
        "delivered": delivered,
        "reconciliation": reconciliation,
        "saved": None,
        "assumptions": [
            "Delivered figures are the X-ray unit's accumulated totals (TID 10002) where "
            "recorded; event sums are shown beside them and used only when totals are absent "
            "or a dose total reads 0 while the events record dose.",
            "Dose (RP) is the air kerma at the unit's reference point, not a skin dose.",
        ],
        "flags": flags,
        "inputs": [
            {
                **input_record(path, role="RDSR", include_phi=include_phi),
                "sop_instance_uid": shown_uid(rec.sop_instance_uid, "sop", include_phi),
                "sop_class": rec.sop_class_name,
                "template": rec.template,
                "non_standard": rec.non_standard,
                "not_read": list(rec.not_read),
            }
        ],
        "units_seen": sorted(rec.units_seen),
    }
    saved = {}
    intervals = [Interval(float(a), float(b)) for a, b in us_intervals]
    starts = [e.start for e in rec.events if e.start is not None]
    if us_clips and starts:
        intervals += ultrasound_intervals_from_clips(
            list(us_clips), min(starts), rec, include_phi=include_phi
        )
    timing_flags = []
    if us_clips and not starts:  # a clip cannot be placed on a timeline the record lacks
        flags.append(
            "ultrasound clips given, but the dose record has no event times: the "
            "ultrasound-guided interval cannot be placed and no saved dose is estimated"
        )
    if intervals and starts:
        timing_flags = check_timing(intervals, rec, min(starts), guided_phase, force=force)
    if intervals:
        saved["counterfactual"] = saved_counterfactual(
            rec,
            intervals,
            guided_phase=guided_phase,
            table_transmission=table_transmission,
            seed=seed,
        )
        saved["counterfactual"]["flags"][:0] = timing_flags
        clips = [m for i in intervals for m in i.members]  # each file of a series too
        if clips:  # how the intervals' sources and flags name them
            saved["counterfactual"]["clips"] = clips
        flags.extend(saved["counterfactual"]["flags"])
    if procedure:
        saved["baseline"] = saved_against_baseline(
            delivered, procedure, registry_values=registry_values, seed=seed
        )
        flags.extend(saved["baseline"]["flags"])
    report["saved"] = saved or None
    if coefficients is None:
        coefficients = load_coefficients()
    report["effective_dose"] = _effective_dose(delivered, saved, region, coefficients)
    if include_phi:
        report["patient"] = rec.patient
    else:  # the reader's flags name an event by its UID
        report["flags"] = _flags_without_uids(flags, rec)
    # Private keys (leading underscore) are never written: events for events.csv, and
    # identifiers the registry hashes into a pseudonym.
    report["_events"] = rec.events
    report["_study_uid"] = rec.study_instance_uid
    report["_patient_id"] = rec.patient.get("id")
    report["_sop_uid"] = rec.sop_instance_uid
    report["_t0"] = min(starts) if starts else None
    report["_include_phi"] = include_phi
    return report


def shown_uid(uid: str | None, kind: str, include_phi: bool) -> str | None:
    """A UID as written: itself with ``include_phi``, else its keyed pseudonym.

    ``kind-<16 hex>`` (:mod:`.pseudonym`), the same every time for one key: events.csv's
    ``event-...`` and a flag naming that event agree, as do two reports of one SR.
    """
    if uid is None or include_phi:
        return uid
    from .pseudonym import pseudonym

    return f"{kind}-{pseudonym(uid)}"


def _flags_without_uids(flags: list[str], rec) -> list[str]:
    """``flags`` naming each event and the SR by pseudonym (:func:`shown_uid`), not UID."""
    names = {e.uid: shown_uid(e.uid, "event", False) for e in rec.events if e.uid}
    if rec.sop_instance_uid:
        names[rec.sop_instance_uid] = shown_uid(rec.sop_instance_uid, "sop", False)
    if not names:
        return flags
    # Longest first, and whole UIDs only: 1.2.3 is not the start of 1.2.34.
    alternatives = "|".join(re.escape(u) for u in sorted(names, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.])({alternatives})(?![\w]|\.\w)")
    return [pattern.sub(lambda m: names[m.group(1)], f) for f in flags]


def _event_value(ev, attr, first, include_phi):
    if attr is None:
        if ev.start is None or first is None:
            return None
        return (ev.start - first).total_seconds()
    value = getattr(ev, attr)
    if attr == "uid":
        return shown_uid(value, "event", include_phi)
    if isinstance(value, list):
        return ";".join(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _csv_value(v):
    """A cell: empty for not recorded, floats without conversion noise, text neutralised."""
    from .labels import csv_number

    if v is None:
        return ""
    return csv_number(v) if isinstance(v, float) else csv_cell(v)


def _events_csv(events, include_phi: bool = False) -> str:
    """One row per event; text cells neutralised for spreadsheets.

    Without ``include_phi`` times are relative to the first event only (no date) and
    event UIDs are keyed pseudonyms.
    """
    columns = [
        (name, attr) for name, attr in EVENT_COLUMNS if include_phi or name != "start_datetime"
    ]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([name for name, _ in columns])
    starts = [e.start for e in events if e.start is not None]
    first = min(starts) if starts else None
    for ev in sorted(events, key=lambda e: (e.start is None, e.start or first)):
        row = [_event_value(ev, attr, first, include_phi) for _name, attr in columns]
        writer.writerow([_csv_value(v) for v in row])
    return buf.getvalue()


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def finite_json(value, *, indent=1, flags: list[str] | None = None) -> str:
    """JSON text that is valid JSON: a NaN or infinity is written as null and flagged.

    A non-finite number reaching an output is a bug upstream; ``flags`` (when given)
    receives one line per such value naming where it was.
    """
    found: list[str] = []
    clean = _finite(value, "$", found)
    if found and flags is not None:
        flags.extend(f"internal: non-finite number at {where} written as null" for where in found)
        if isinstance(clean, dict) and isinstance(clean.get("flags"), list):
            clean["flags"] = clean["flags"] + [
                f"internal: non-finite number at {where} written as null" for where in found
            ]
    return json.dumps(clean, indent=indent, allow_nan=False, default=_json_default)


def _finite(value, where: str, found: list[str]):
    # Our own records are a few levels deep, so recursion is bounded by construction.
    if isinstance(value, dict):
        return {k: _finite(v, f"{where}.{k}", found) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, f"{where}[{i}]", found) for i, v in enumerate(value)]
    if hasattr(value, "item") and hasattr(value, "dtype"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        found.append(where)
        return None
    return value


def _fill(tmp: Path, data: bytes) -> None:
    """Write and flush one temporary output (a seam: tests make it fail as a full disk)."""
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_together(out_dir: str | os.PathLike, files: list[tuple[str, str | bytes]]) -> list[Path]:
    """Write several outputs so that they appear together or not at all.

    Every file is first written whole under an exclusive temporary name
    (:func:`hybridfuse._safeio.atomic_file`), then all are renamed into place. On any failure
    (a full disk, a signal) the temporaries are removed, and so is any output this call
    already renamed, so a re-run finds nothing half-written. ``out_dir`` may not be a link.
    """
    out = Path(out_dir)
    if out.is_symlink():
        raise UnsafeOutputError(f"{out}: output folder is a symbolic link; refused")
    if out.exists() and not out.is_dir():
        raise UnsafeOutputError(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UnsafeOutputError(f"{out}: cannot create the output folder ({exc.strerror})") from exc
    ours: dict[Path, int] = {}
    try:
        with ExitStack() as stack:
            for name, data in files:
                tmp = stack.enter_context(atomic_file(out / name))
                _fill(tmp, data.encode("utf-8") if isinstance(data, str) else data)
                ours[out / name] = tmp.stat().st_ino
    except BaseException:
        for target, ino in ours.items():
            try:
                if not target.is_symlink() and target.stat().st_ino == ino:
                    target.unlink()
            except OSError:
                pass
        raise
    return [out / name for name, _ in files]


def write_dose_outputs(report: dict, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``dose.json``, ``events.csv`` and ``report.html`` together or not at all.

    Everything is rendered before anything is written (see :func:`write_together`).
    """
    from .html import render_report_html

    include_phi = bool(report.get("_include_phi"))
    events = report.get("_events", [])
    record = {k: v for k, v in report.items() if not k.startswith("_")}
    cf = (report.get("saved") or {}).get("counterfactual")
    us_iv = cf["us_guided_intervals_s"] if cf else []
    text = finite_json(record, flags=record.setdefault("flags", []))
    record = json.loads(text)
    outputs = [("dose.json", text), ("events.csv", _events_csv(events, include_phi))]
    outputs.append(("report.html", render_report_html(record, events, us_iv, report.get("_t0"))))
    return write_together(out_dir, outputs)


def build_image_dose_report(
    image_paths,
    *,
    include_phi: bool = False,
    procedure: str | None = None,
    region: str | None = None,
) -> dict:
    """A ``dose.json`` record from per-image dose attributes, when there is no RDSR.

    Image DAP ((0018,115E), dGy·cm²) is summed over the images that record it; images
    without it leave the total unknown (never 0). Stored images are usually a fraction of
    the irradiation (unstored fluoroscopy is not in any image), which is stated.
    """
    from .errors import DoseInputError
    from .image_tags import check_xray_image, read_header, read_image_dose_tags

    inputs, per_image, flags = [], [], []
    seen: dict[str, Path] = {}
    for n, p in enumerate(image_paths, 1):
        path = Path(p)
        ds = read_header(path)
        check_xray_image(ds, path)
        # The same image twice would count its dose twice.
        for key in (os.path.realpath(path), str(ds.get("SOPInstanceUID", "") or "")):
            if key and key in seen:
                raise DoseInputError(f"{path}: the same image as {seen[key]}; give it once")
            if key:
                seen[key] = path
        tags = read_image_dose_tags(ds)
        rec = input_record(path, role="image", position=n, include_phi=include_phi)
        for text in dict(tags.sources).values():
            if text.endswith("treated as unknown"):
                flags.append(f"{shown_name(rec)}: {text}")
        # The full path with include_phi, as this table always kept it.
        named = {"file": str(path)} if include_phi else {}
        per_image.append({"input": rec["input"], **named, **tags.to_dict()})
        inputs.append(
            {
                **rec,
                "sop_instance_uid": shown_uid(
                    str(ds.get("SOPInstanceUID", "")) or None, "sop", include_phi
                ),
                "sop_class": str(ds.get("SOPClassUID", "")),
            }
        )
        if not tags.has_dose:
            flags.append(
                f"{shown_name(rec)}: no ImageAndFluoroscopyAreaDoseProduct or "
                "EntranceDoseInmGy: its dose is unknown"
            )
    daps = [im["dap_gy_cm2"] for im in per_image]
    known = [d for d in daps if d is not None]
    dap_total = float(sum(known)) if known and len(known) == len(daps) else None
    if known and dap_total is None:
        flags.append(
            f"DAP recorded on {len(known)} of {len(daps)} images: the total is "
            f"unknown (the known part is {sum(known):.4g} Gy·cm²)"
        )
    software = __version__
    delivered = {
        "dap_total_gy_cm2": dap_total,
        "fluoro_dap_gy_cm2": None,
        "acquisition_dap_gy_cm2": None,
        "ka_r_total_mgy": None,
        "fluoro_time_s": None,
        "acquisition_time_s": None,
        "n_events": None,
        "n_images": len(per_image),
        "per_image": per_image,
        "sources": {
            "dap_total_gy_cm2": "sum of per-image ImageAndFluoroscopyAreaDoseProduct "
            "(0018,115E), dGy·cm² converted to Gy·cm²"
            if dap_total is not None
            else "not recorded on every image"
        },
    }
    return {
        "schema": DOSE_SCHEMA,
        "software_version": software,
        "procedure": procedure,
        "region": region,
        "device": {"manufacturer": None, "model": None},
        "delivered": delivered,
        "reconciliation": [],
        "saved": None,
        "effective_dose": None,
        "assumptions": [
            "No dose structured report: figures come from the dose attributes of the stored "
            "images only; fluoroscopy that was not stored is not counted, so these are lower "
            "bounds of what was delivered.",
        ],
        "flags": flags,
        "inputs": inputs,
        "units_seen": ["dGy.cm2"],
        "_events": [],
        "_t0": None,
        "_include_phi": include_phi,
    }

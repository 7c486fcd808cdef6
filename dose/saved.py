"""The fluoroscopy dose that ultrasound guidance saved, with its uncertainty.

Method 1, within-procedure counterfactual
    The ultrasound-guided intervals would otherwise have been guided by intermittent
    fluoroscopy at this procedure's own fluoroscopy-guided duty cycle and dose rate.
    A *fluoroscopy-guided phase* is a run of at least ``min_taps`` fluoroscopy events
    separated by less than ``max_gap_s`` (or the phase given explicitly); its duty cycle
    is beam-on time / (number of taps × mean start-to-start interval), i.e. each tap is
    taken to cover one interval. Its dose rates are DAP and Dose (RP) per beam-on second.
    Without such a phase, a stated default protocol is used.

Method 2, against a baseline
    saved = baseline(procedure type) − delivered, the baseline being the median of
    fluoroscopy-only procedures of the same type in the local registry (bootstrap
    interval), or else a literature row shipped in ``dose/tables/baselines.csv``.

Uncertainty is propagated by Monte Carlo (seeded): DAP-meter tolerance (±35 %, uniform,
the tolerance allowed by IEC 60580), duty-cycle spread (bootstrap over the taps), the
boundaries of the ultrasound intervals (uniform within their stated tolerance), and an
optional table transmission for entrance kerma. Every figure comes with a 95 % interval.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hybridfuse import dicom
from hybridfuse.dicom import parse_number

from .errors import DoseInputError
from .image_tags import US_SOP_CLASSES
from .rdsr import DoseRecord, IrradiationEvent

__all__ = [
    "Interval",
    "ultrasound_intervals_from_clips",
    "saved_counterfactual",
    "saved_against_baseline",
    "load_baselines",
    "DEFAULT_PROTOCOL",
]

DAP_METER_TOLERANCE = 0.35
#: Share of an ultrasound clip's span assumed to be needle guidance (uniform range).
CLIP_GUIDED_FRACTION = (0.5, 1.0)
#: Why that share is not 100 % (shown in the report's methods).
CLIP_GUIDED_FRAMES_NOTE = (
    "our assumption: a clip also holds scanning before insertion and after arrival"
)
#: A detected fluoroscopy-guided phase: at least this many taps ...
MIN_TAPS = 3
#: ... with less than this (s) from the end of one to the start of the next.
MAX_GAP_S = 15.0
PHASE_RULE = (
    f"runs of >= {MIN_TAPS} fluoroscopy taps with < {MAX_GAP_S:g} s from the end of one to "
    "the start of the next (or the taps starting inside --guided-phase START,END)"
)
#: Used when the procedure has no fluoroscopy-guided phase of its own (stated in output).
DEFAULT_PROTOCOL = {
    "duty_cycle": 0.2,
    "duty_cycle_range": (0.1, 0.35),
    "description": "default protocol: intermittent fluoroscopy 20 % of the time "
    "(uniform 10-35 %), at this procedure's mean fluoroscopy dose rate",
}
TABLES = Path(__file__).resolve().parent / "tables"


@dataclass(frozen=True)
class Interval:
    """A time interval in seconds from the first irradiation event, with a tolerance."""

    start_s: float
    end_s: float
    tolerance_s: float = 0.0
    source: str = "given"
    guided_fraction: tuple[float, float] = (1.0, 1.0)
    #: False for a multi-frame clip without frame timing: its end is not known.
    span_known: bool = True
    #: Plausibility flags found while reading the clip (another patient, study or day).
    notes: tuple[str, ...] = ()
    #: The clip's input record (:func:`.inputs.input_record`); None for a given interval.
    clip: dict | None = None
    #: The clip as given, for errors on the user's terminal only (never written).
    path: str | None = None
    #: The input records of every file the interval comes from: the clip, or each
    #: single-frame file of a series taken as one clip (:mod:`.clip_series`).
    members: tuple[dict, ...] = ()

    def said(self) -> str:
        """The source as an error says it: naming the clip's path, not its label."""
        from .inputs import shown_name

        if self.clip is None or self.path is None:
            return self.source
        return self.path + self.source.removeprefix(shown_name(self.clip))

    @property
    def span_s(self) -> float:
        """Length of the interval in seconds."""
        return max(0.0, self.end_s - self.start_s)

    @property
    def duration_s(self) -> float:
        """Guided time: the span times the middle of its guided fraction."""
        return self.span_s * sum(self.guided_fraction) / 2.0


def _beam_on_s(ev: IrradiationEvent) -> float | None:
    """Beam-on time of a fluoroscopy event.

    The recorded Irradiation Duration (113742: first pulse to the end of the last) when it
    agrees within a factor 2 with pulses / pulse rate; otherwise pulses / pulse rate
    (some vendors record durations that are not beam time); otherwise whichever exists.
    """
    by_pulses = (
        ev.number_of_pulses / ev.pulse_rate_per_s
        if ev.number_of_pulses and ev.pulse_rate_per_s
        else None
    )
    if ev.duration_s and by_pulses:
        return ev.duration_s if 0.5 <= ev.duration_s / by_pulses <= 2.0 else by_pulses
    return ev.duration_s or by_pulses


def _beam_on_spread(ev: IrradiationEvent) -> float:
    """Half-width of the beam-on uncertainty: the gap between the two conventions."""
    by_pulses = (
        ev.number_of_pulses / ev.pulse_rate_per_s
        if ev.number_of_pulses and ev.pulse_rate_per_s
        else None
    )
    if ev.duration_s and by_pulses and 0.5 <= ev.duration_s / by_pulses <= 2.0:
        return abs(ev.duration_s - by_pulses)
    return 0.0


def _t(ev: IrradiationEvent, t0: _dt.datetime) -> float:
    return (ev.start - t0).total_seconds()


def ultrasound_intervals_from_clips(
    paths,
    t0: _dt.datetime,
    record: DoseRecord,
    *,
    include_phi: bool = False,
) -> list[Interval]:
    """Ultrasound-guided intervals from the acquisition times of US cine files.

    Each runs from the first frame to the last, cut where the first fluoroscopy event
    after the clip's start begins (guidance is then handed back to fluoroscopy).
    Single-frame files of one series taken in a row are one clip (:mod:`.clip_series`).
    Tolerance: one frame interval (at least 1 s). A clip from another patient, study or
    calendar day than the RDSR carries a note (:attr:`Interval.notes`). Sources and notes
    name a clip by its label (:mod:`.inputs`), by its file name only with ``include_phi``.
    """
    from .clip_series import group_frame_files, series_span

    out = []
    fluoro_starts = sorted(
        _t(e, t0) for e in record.events if e.event_type == "fluoroscopy" and e.start is not None
    )
    for group in group_frame_files(_read_clips(paths, t0, include_phi)):
        first = group[0]
        if len(group) == 1:
            iv = _clip_interval(
                first.ds, first.frames, first.path, first.offset_s, fluoro_starts, first.name
            )
        else:
            begin, end, tolerance, how = series_span(group, fluoro_starts)
            iv = Interval(
                begin, end, tolerance, how + _CLIP_FRACTION_TEXT,
                guided_fraction=CLIP_GUIDED_FRACTION,
            )  # fmt: skip
        # A series is named by its first file: one note for it, not one per frame.
        notes = (_identity_notes(c.ds, first.name, record, c.start, t0) for c in group)
        iv = replace(iv, notes=tuple(dict.fromkeys(n for ns in notes for n in ns)))
        members = tuple(c.record for c in group)
        out.append(replace(iv, clip=first.record, path=first.path, members=members))
    return out


def _read_clips(paths, t0: _dt.datetime, include_phi: bool) -> list:
    """Each file's header and acquisition start; a file given twice, or unplaceable, refused."""
    from .clip_series import ClipFile
    from .image_tags import read_header
    from .inputs import input_record, shown_name

    clips, seen = [], {}
    for n, path in enumerate(paths, 1):
        real = os.path.realpath(path)
        if real in seen:
            raise DoseInputError(f"{path}: given twice as --us (as {seen[real]}); give it once")
        seen[real] = path
        ds = read_header(path)
        _check_ultrasound(ds, path)
        uid = str(ds.get("SOPInstanceUID", "") or "")
        if uid and uid in seen:
            raise DoseInputError(
                f"{path}: the same ultrasound clip (SOP Instance UID) as {seen[uid]}; give it once"
            )
        if uid:
            seen[uid] = path
        start, _ = dicom.acquisition_start(ds)
        if start is None:
            raise DoseInputError(f"{path}: no acquisition date/time; give --us-interval")
        clip = input_record(path, role="clip", position=n, include_phi=include_phi)
        frames = _frame_count(ds, path)
        offset_s = (start - t0).total_seconds()
        clips.append(ClipFile(str(path), ds, frames, start, offset_s, clip, shown_name(clip)))
    return clips


def _identity_notes(ds, name: str, record: DoseRecord, start, t0) -> tuple[str, ...]:
    """Flags for a clip that may not belong to the RDSR's procedure (no identifiers written)."""
    notes = []
    clip_pid = str(ds.get("PatientID", "") or "").strip()
    rdsr_pid = str((getattr(record, "patient", None) or {}).get("id") or "").strip()
    if clip_pid and rdsr_pid and clip_pid != rdsr_pid:
        notes.append(
            f"{name}: Patient ID differs from the RDSR's: the clip may be of another patient"
        )
    clip_study = str(ds.get("StudyInstanceUID", "") or "").strip()
    rdsr_study = (getattr(record, "study_instance_uid", None) or "").strip()
    if clip_study and rdsr_study and clip_study != rdsr_study:
        notes.append(
            f"{name}: Study Instance UID differs from the RDSR's: the clip belongs to another "
            "study (check it is this procedure's)"
        )
    days = (start.date() - t0.date()).days
    if days:
        notes.append(
            f"{name}: acquired {abs(days)} calendar day(s) {'after' if days > 0 else 'before'} "
            "the first irradiation event"
        )
    return tuple(notes)


#: Most frames a clip may declare (an hour at 250 frames/s); more is a corrupt header.
MAX_CLIP_FRAMES = 900_000


def _frame_count(ds, path) -> int:
    raw = ds.get("NumberOfFrames")
    # Absent or empty means one frame; a written 0 is a corrupt header, not one frame.
    n = 1.0 if raw is None or str(raw).strip() == "" else parse_number(raw)
    if n is None or n != int(n) or not 1 <= n <= MAX_CLIP_FRAMES:
        raise DoseInputError(
            f"{path}: NumberOfFrames {ds.get('NumberOfFrames')!r} is not a whole number "
            f"from 1 to {MAX_CLIP_FRAMES}"
        )
    return int(n)


_CLIP_FRACTION_TEXT = (
    "; the needle advance is taken to fill 50-100 % of that span "
    "(uniform; the clip also holds scanning before insertion and "
    "after arrival). Give --us-interval for precision."
)


def _clip_interval(ds, n: int, path, offset_s: float, fluoro_starts, name: str) -> Interval:
    """One clip's interval: first frame to last, or to the first fluoroscopy in between.

    ``name`` is how the written source names the clip; errors name ``path``.
    """
    timing = dicom.frame_times(ds, n)
    if timing.implausible:
        raise DoseInputError(f"{path}: {timing.implausible}")
    times = timing.seconds
    begin = offset_s + times[0]
    if not timing.known:
        return Interval(
            begin,
            begin,
            1.0,
            f"{name}: {n} frames without frame timing (no FrameTimeVector, "
            "per-frame FrameAcquisitionDateTime, FrameTime or CineRate): its "
            "ultrasound-guided interval is unknown and not counted; give --us-interval",
            span_known=False,
        )
    end = offset_s + times[-1]
    later = [s for s in fluoro_starts if begin < s < end]
    if later:
        end = later[0]
    step = float(np.median(np.diff(times))) if n > 1 else 1.0
    return Interval(
        begin,
        end,
        max(step, 1.0),
        f"{name}: first frame to last frame"
        + (f" (cut at the fluoroscopy event starting at {end:.1f} s)" if later else "")
        + _CLIP_FRACTION_TEXT,
        guided_fraction=CLIP_GUIDED_FRACTION,
    )


def _check_ultrasound(ds, path) -> None:
    """Refuse a --us file that is not an ultrasound image (an RDSR, an X-ray run, ...)."""
    modality = str(ds.get("Modality", "") or "")
    sop = str(ds.get("SOPClassUID", "") or "")
    if modality != "US" and sop not in US_SOP_CLASSES:
        raise DoseInputError(
            f"{path}: not an ultrasound image (Modality {modality or 'missing'}, SOP class "
            f"{sop or 'missing'}); --us takes ultrasound cine clips"
        )


def _guided_phases(
    fluoro: list[IrradiationEvent], t0, us: list[Interval], min_taps: int, max_gap_s: float
) -> list[list[IrradiationEvent]]:
    outside = [e for e in fluoro if not any(i.start_s <= _t(e, t0) <= i.end_s for i in us)]
    outside.sort(key=lambda e: e.start)
    phases, cur = [], []
    for ev in outside:
        gap = _t(ev, t0) - _t(cur[-1], t0) - (_beam_on_s(cur[-1]) or 0.0) if cur else 0.0
        if cur and gap > max_gap_s:
            phases.append(cur)
            cur = []
        cur.append(ev)
    if cur:
        phases.append(cur)
    return [p for p in phases if len(p) >= min_taps]


def _select_phases(fluoro, t0, us, guided_phase, min_taps, max_gap_s):
    """The fluoroscopy-guided phase(s): detected from the taps, or those inside a given one.

    A given phase (START, END) only selects the taps: those starting from START to END
    outside the ultrasound intervals; at least two are needed to measure their spacing.
    """
    if guided_phase is None:
        return _guided_phases(fluoro, t0, us, min_taps, max_gap_s)
    g0, g1 = guided_phase
    taps = [
        e
        for e in sorted(fluoro, key=lambda e: e.start)
        if g0 <= _t(e, t0) <= g1 and not any(i.start_s <= _t(e, t0) <= i.end_s for i in us)
    ]
    if len(taps) < 2:
        raise DoseInputError(
            f"--guided-phase {g0:g},{g1:g}: {len(taps)} fluoroscopy event(s) start inside it "
            "(outside the ultrasound intervals); the duty cycle needs at least 2 taps"
        )
    return [taps]


def _phase_assumption(guided_phase, min_taps: int, max_gap_s: float, found: bool) -> str:
    """The guided-phase rule in words, with the one duty-cycle definition."""
    duty = (
        "duty cycle = beam-on time / (taps × mean start-to-start interval), i.e. each tap "
        "covers the interval to the next"
    )
    if guided_phase is not None:
        g0, g1 = guided_phase
        return (
            f"Fluoroscopy-guided phase given as {g0:g}-{g1:g} s: the fluoroscopy taps starting "
            f"in it (START at or before the first tap's start, END at or after the last "
            f"tap's start); {duty}, as for a detected phase."
        )
    if found:
        return (
            f"Fluoroscopy-guided phase(s) found as runs of >= {min_taps} fluoroscopy events "
            f"with less than {max_gap_s:g} s from the end of one to the start of the next; "
            f"{duty}."
        )
    return DEFAULT_PROTOCOL["description"]


def saved_counterfactual(
    record: DoseRecord,
    us_intervals: list[Interval],
    *,
    guided_phase: tuple[float, float] | None = None,
    min_taps: int = MIN_TAPS,
    max_gap_s: float = MAX_GAP_S,
    table_transmission: tuple[float, float] | None = None,
    n_samples: int = 20000,
    seed: int = 0,
) -> dict:
    """Method 1. Returns the ``saved`` block: point values, 95 % intervals, assumptions."""
    fluoro = [e for e in record.events if e.event_type == "fluoroscopy" and e.start is not None]
    if not fluoro:
        raise DoseInputError("no timed fluoroscopy events: the counterfactual needs them")
    unknown = [i for i in us_intervals if not i.span_known]
    us_intervals = [i for i in us_intervals if i.span_known]
    if not us_intervals:
        raise DoseInputError(
            "; ".join(i.said() for i in unknown)
            or "no ultrasound-guided interval: give --us CLIP or --us-interval"
        )
    t0 = min(e.start for e in record.events if e.start is not None)
    assumptions = [
        "Without ultrasound, the ultrasound-guided intervals would have been guided by "
        "intermittent fluoroscopy.",
        "Beam-on time of an event is its Irradiation Duration when that agrees within a "
        "factor 2 with pulses / pulse rate (else pulses / pulse rate); the difference between "
        "the two is a shared ± uncertainty.",
        f"DAP-meter tolerance ±{100 * DAP_METER_TOLERANCE:.0f} % (uniform), applied to "
        "DAP and Dose (RP).",
    ]
    flags: list[str] = [i.source for i in unknown]
    phases = _select_phases(fluoro, t0, us_intervals, guided_phase, min_taps, max_gap_s)
    assumptions.append(_phase_assumption(guided_phase, min_taps, max_gap_s, bool(phases)))
    if phases:
        taps = [e for p in phases for e in p]
        # Each tap covers one start-to-start interval of its phase: the same definition
        # for a detected and a given phase, so both give the same figure from the same taps.
        spans = np.concatenate([np.diff([_t(e, t0) for e in p]) for p in phases])
        rate_source = "this procedure's fluoroscopy-guided phase"
    else:
        taps, spans = fluoro, None
        rate_source = "all fluoroscopy events of this procedure (no guided phase found)"
        flags.append("no fluoroscopy-guided phase: the default protocol's duty cycle is used")
    on = np.array([_beam_on_s(e) or np.nan for e in taps])
    dap = np.array([e.dap_gy_cm2 if e.dap_gy_cm2 is not None else np.nan for e in taps])
    kar = np.array([e.dose_rp_mgy if e.dose_rp_mgy is not None else np.nan for e in taps])
    if spans is not None:
        duty_point = np.nansum(on) / (len(on) * np.mean(spans))
    else:
        duty_point = DEFAULT_PROTOCOL["duty_cycle"]
    if np.any(np.isnan(on)):
        raise DoseInputError("a fluoroscopy event has neither pulses/pulse rate nor duration")
    pulses = [e.pulse_rate_per_s for e in taps if e.pulse_rate_per_s]
    pulse_rate = float(np.median(pulses)) if pulses else None
    dap_rate = np.nansum(dap) / np.sum(on) if np.any(np.isfinite(dap)) else None
    kar_rate = np.nansum(kar) / np.sum(on) if np.any(np.isfinite(kar)) else None
    if dap_rate is None:
        flags.append("no DAP recorded on the guidance events: saved DAP unknown")
    if kar_rate is None:
        flags.append("no Dose (RP) recorded on the guidance events: saved Ka,r unknown")
    us_time = sum(i.duration_s for i in us_intervals)
    saved_time = duty_point * us_time
    point = {
        "fluoro_time_s": saved_time,
        "pulses": saved_time * pulse_rate if pulse_rate else None,
        "dap_gy_cm2": saved_time * dap_rate if dap_rate is not None else None,
        "ka_r_mgy": saved_time * kar_rate if kar_rate is not None else None,
    }

    # --- Monte Carlo -------------------------------------------------------------------
    # Resampled sums are drawn in chunks from their own stream, so memory stays
    # O(samples + events) and time O(samples x events) with a small constant.
    rng = np.random.default_rng(seed)
    boot = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    n = n_samples
    spread = np.array([_beam_on_spread(e) for e in taps])
    s_on, s_spread, s_dap, s_kar = _resampled_sums(boot, n, [on, spread, dap, kar])
    if spans is not None:
        (s_span,) = _resampled_sums(boot, n, [spans])
        duty = s_on / (len(on) * s_span / len(spans))
    else:
        lo, hi = DEFAULT_PROTOCOL["duty_cycle_range"]
        duty = rng.uniform(lo, hi, n)
    us_t = np.zeros(n)
    for i in us_intervals:
        span = (
            i.span_s
            + rng.uniform(-i.tolerance_s, i.tolerance_s, n)
            + rng.uniform(-i.tolerance_s, i.tolerance_s, n)
        )
        us_t += np.clip(span, 0.0, None) * rng.uniform(*i.guided_fraction, n)
    meter = rng.uniform(1 - DAP_METER_TOLERANCE, 1 + DAP_METER_TOLERANCE, n)
    # One convention applies to every event of a unit: a shared (systematic) deviation u,
    # so a sample's beam-on times are on + u * spread and their sums are linear in u.
    u = rng.uniform(-1.0, 1.0, n)
    # Beam-on uncertainty scales the duty cycle the same way it scales the rates.
    duty = duty * (np.sum(on) + u * np.sum(spread)) / np.sum(on)
    t_mc = duty * us_t
    samples = {"fluoro_time_s": t_mc}
    if pulse_rate:
        samples["pulses"] = t_mc * pulse_rate
    on_b = s_on + u * s_spread
    if dap_rate is not None:
        samples["dap_gy_cm2"] = t_mc * s_dap / on_b * meter
    if kar_rate is not None:
        samples["ka_r_mgy"] = t_mc * s_kar / on_b * meter
        if table_transmission is not None:
            lo, hi = table_transmission
            samples["entrance_kerma_mgy"] = samples["ka_r_mgy"] * rng.uniform(lo, hi, n)
            point["entrance_kerma_mgy"] = point["ka_r_mgy"] * (lo + hi) / 2
            assumptions.append(f"Table transmission uniform {lo:g}-{hi:g} (given).")
    intervals = {
        k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in samples.items()
    }
    return {
        "method": "within-procedure counterfactual",
        "point": point,
        "interval_95": intervals,
        "monte_carlo": {"samples": n, "seed": seed},
        "us_guided_intervals_s": [
            {
                "start_s": i.start_s,
                "end_s": i.end_s,
                "tolerance_s": i.tolerance_s,
                "guided_fraction": list(i.guided_fraction),
                "guided_time_s": i.duration_s,
                "source": i.source,
                # a series of frame files: which (by label), as the source says
                **({"files": [m["input"] for m in i.members]} if len(i.members) > 1 else {}),
            }
            for i in us_intervals
        ],
        "us_guided_time_s": us_time,
        "duty_cycle": float(duty_point),
        "guidance_events_s": [round(_t(e, t0), 3) for e in taps],
        "dose_rates": {
            "source": rate_source,
            "dap_gy_cm2_per_s": dap_rate,
            "ka_r_mgy_per_s": kar_rate,
            "pulse_rate_per_s": pulse_rate,
            "guidance_events": len(taps),
            "beam_on_s": float(np.sum(on)),
        },
        "assumptions": assumptions,
        "flags": flags,
    }


#: Elements of one chunk of bootstrap indices (32 MiB of int64).
_CHUNK_ELEMENTS = 1 << 22


def _resampled_sums(rng, n: int, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """For each of ``n`` bootstrap resamples of the positions, the (NaN-skipping) sum of each array.

    One resample of indices serves every array, so their sums stay paired. Drawn in
    chunks of rows: memory O(:data:`_CHUNK_ELEMENTS`), not O(n x len).
    """
    m = len(arrays[0])
    # NaN (not recorded) adds nothing, as in nansum.
    values = np.nan_to_num(np.stack([np.asarray(x, float) for x in arrays], axis=1), nan=0.0)
    sums = np.empty((n, len(arrays)))
    rows = max(1, _CHUNK_ELEMENTS // max(m, 1))
    for a in range(0, n, rows):
        r = min(n, a + rows) - a
        idx = rng.integers(0, m, size=(r, m))
        idx += np.arange(r)[:, None] * m
        # How often each position was drawn in each resample, then one matrix product.
        counts = np.bincount(idx.ravel(), minlength=r * m).reshape(r, m)
        sums[a : a + r] = counts.astype(float) @ values
    return list(sums.T)


def load_baselines(path: str | os.PathLike | None = None) -> list[dict]:
    """Literature baselines: one row per procedure type, quantity and source."""
    path = Path(path) if path else TABLES / "baselines.csv"
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if not r["procedure"].startswith("#")]
    for r in rows:
        for key in ("value", "low", "high"):
            r[key] = float(r[key])
    return rows


def saved_against_baseline(
    delivered: dict,
    procedure: str | None,
    *,
    registry_values: dict | None = None,
    baselines: list[dict] | None = None,
    n_boot: int = 5000,
    seed: int = 0,
) -> dict:
    """Method 2: baseline(procedure) − delivered, per quantity with a 95 % interval.

    ``registry_values`` maps quantity → list of values from fluoroscopy-only procedures of
    the same type (local history). Without it, literature rows are used.
    """
    quantities = {
        "dap_gy_cm2": "dap_total_gy_cm2",
        "ka_r_mgy": "ka_r_total_mgy",
        "fluoro_time_s": "fluoro_time_s",
    }
    out = {
        "method": "against a baseline",
        "procedure": procedure,
        "by_quantity": {},
        "assumptions": [],
        "flags": [],
    }
    rng = np.random.default_rng(seed)
    for q, dkey in quantities.items():
        mine = delivered.get(dkey)
        hist = (registry_values or {}).get(q) or []
        if len(hist) >= 5:
            hist = np.asarray(hist, float)
            boots = np.median(rng.choice(hist, size=(n_boot, len(hist))), axis=1)
            base, lo, hi = float(np.median(hist)), *np.percentile(boots, [2.5, 97.5])
            source = f"local registry: median of {len(hist)} fluoroscopy-only procedures"
        else:
            rows = [
                r
                for r in (baselines if baselines is not None else load_baselines())
                if r["procedure"] == procedure and r["quantity"] == q
            ]
            if not rows:
                out["by_quantity"][q] = {
                    "saved": None,
                    "reason": "no baseline for this "
                    "procedure and quantity (registry < 5 cases, no "
                    "literature row)",
                }
                continue
            row = rows[0]
            base, lo, hi = row["value"], row["low"], row["high"]
            source = (
                f"literature: {row['source']} ({row['statistic']}; interval: "
                f"{row['interval_note']})"
            )
        if mine is None:
            out["by_quantity"][q] = {"saved": None, "reason": "delivered value unknown"}
            continue
        out["by_quantity"][q] = {
            "baseline": base,
            "baseline_interval_95": [float(lo), float(hi)],
            "delivered": mine,
            "saved": base - mine,
            "saved_interval_95": [float(lo) - mine, float(hi) - mine],
            "source": source,
        }
    out["flags"] = _negative_savings(out["by_quantity"])
    out["assumptions"].append(
        "The baseline is what a fluoroscopy-only procedure of this type delivers; the "
        "difference to this procedure is attributed to ultrasound guidance (case mix, "
        "operator and equipment differences are not controlled)."
    )
    return out


_BASELINE_LABELS = {
    "dap_gy_cm2": ("DAP", "Gy·cm²"),
    "ka_r_mgy": ("Ka,r", "mGy"),
    "fluoro_time_s": ("fluoroscopy time", "s"),
}


def _negative_savings(by_quantity: dict) -> list[str]:
    """Flags (and a note on each row) where this procedure delivered more than the baseline.

    A negative "saved" is not an error of the arithmetic: the procedure used more than
    the typical fluoroscopy-only one, so the baseline method shows no saving for it.
    """
    flags, signs = [], {}
    for q, row in by_quantity.items():
        if row.get("saved") is None:
            continue
        signs[q] = row["saved"] >= 0
        if row["saved"] < 0:
            label, unit = _BASELINE_LABELS[q]
            row["note"] = (
                f"negative: this procedure delivered more {label} than the baseline "
                "(more than a typical fluoroscopy-only procedure of this type); the baseline "
                "method shows no saving here"
            )
            flags.append(
                f"baseline: saved {label} is negative ({row['saved']:.3g} {unit}): this "
                f"procedure delivered {row['delivered']:.3g} {unit} against a baseline of "
                f"{row['baseline']:.3g} {unit}; the case, operator or unit may differ from "
                "the baseline's"
            )
    if len(set(signs.values())) > 1:
        flags.append(
            "baseline: the quantities disagree in sign (saved on some, negative on others): "
            "the baseline's procedures differ from this one in technique, not only in guidance"
        )
    return flags

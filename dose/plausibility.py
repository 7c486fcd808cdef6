"""Plausibility of the timing behind a dose-saved estimate: flags, and refusal of the impossible.

An ultrasound-guided interval can only have replaced fluoroscopy while the procedure was
under way, with the beam off, on this patient. Every input that breaks one of these is
flagged (shown at the top of the report and in ``dose.json``); an interval that cannot
have replaced any fluoroscopy at all is refused unless the user insists (``force``).
"""

from __future__ import annotations

import datetime as _dt

from .errors import DoseInputError
from .rdsr import DoseRecord

__all__ = [
    "INTERVAL_MARGIN_S",
    "SPAN_MARGIN_S",
    "check_timing",
    "irradiation_span_s",
]

#: Part of an interval lying more than this (s) before the first or after the last
#: irradiation is flagged: ultrasound and X-ray clocks are often a few tens of seconds
#: apart, so less is not evidence of a wrong input.
SPAN_MARGIN_S = 60.0
#: An interval reaching further than this (s) outside the irradiation is refused (as is
#: one entirely outside it): guidance ten minutes away cannot have replaced fluoroscopy.
INTERVAL_MARGIN_S = 600.0
#: Fluoroscopy events named in one flag before the rest are only counted.
_NAMED = 5


def irradiation_span_s(record: DoseRecord, t0: _dt.datetime) -> float:
    """End of the last irradiation event, in s from the first one's start."""
    return max(
        (e.start - t0).total_seconds() + (e.duration_s or 0.0)
        for e in record.events
        if e.start is not None
    )


def _name(iv) -> str:
    """How a written flag names the interval: a clip by its label (or name with PHI)."""
    return "--us-interval" if iv.source == "given" else iv.source.split(":")[0]


def _said(iv) -> str:
    """How an error on the user's terminal names the interval: a clip by its path."""
    return getattr(iv, "path", None) or _name(iv)


def _impossible(iv, span: float) -> str | None:
    """Why the interval cannot have replaced any fluoroscopy, or None."""
    if iv.end_s < 0 or iv.start_s >= span or iv.end_s <= 0 < iv.span_s:
        return (
            f"ultrasound interval {iv.start_s:g}-{iv.end_s:g} s lies entirely outside the "
            f"procedure (irradiation from 0 to {span:g} s)"
        )
    if iv.start_s < -INTERVAL_MARGIN_S or iv.end_s > span + INTERVAL_MARGIN_S:
        return (
            f"ultrasound interval {iv.start_s:g}-{iv.end_s:g} s reaches more than "
            f"{INTERVAL_MARGIN_S:g} s beyond the procedure (irradiation from 0 to {span:g} s)"
        )
    return None


def _outside(iv, span: float) -> list[str]:
    """Flags for an interval that starts before the first irradiation or ends long after."""
    out = []
    if iv.start_s < 0:
        out.append(
            f"{_name(iv)}: ultrasound interval starts {-iv.start_s:g} s before the first "
            "irradiation event (negative time): check the clocks or the interval"
        )
    if iv.start_s < -SPAN_MARGIN_S or iv.end_s > span + SPAN_MARGIN_S:
        out.append(
            f"{_name(iv)}: ultrasound interval {iv.start_s:g}-{iv.end_s:g} s extends more "
            f"than {SPAN_MARGIN_S:g} s outside the procedure (irradiation from 0 to "
            f"{span:g} s); time outside it is still counted as guided"
        )
    if iv.span_s == 0:
        why = "" if iv.source == "given" else " (one frame, or cut at its first frame)"
        out.append(
            f"{_name(iv)}: ultrasound interval of 0 s{why}: it counts no guided time, so "
            "nothing is saved by it; give --us-interval"
        )
    return out


def _fluoro_inside(iv, fluoro, t0, beam_on) -> list[str]:
    """A flag naming the fluoroscopy events that ran during an "ultrasound-guided" interval."""
    inside = []
    for e in fluoro:
        s = (e.start - t0).total_seconds()
        if s < iv.end_s and s + (beam_on(e) or 0.0) > iv.start_s:
            inside.append(f"{e.protocol or 'fluoroscopy'} at {s:.1f} s")
    if not inside:
        return []
    named = "; ".join(inside[:_NAMED]) + (
        f"; and {len(inside) - _NAMED} more" if len(inside) > _NAMED else ""
    )
    return [
        f"{_name(iv)}: ultrasound interval {iv.start_s:g}-{iv.end_s:g} s overlaps "
        f"{len(inside)} fluoroscopy event(s) ({named}): fluoroscopy was on during time "
        "counted as ultrasound-guided; check the interval"
    ]


def _check_overlaps(intervals) -> None:
    ordered = sorted(intervals, key=lambda iv: (iv.start_s, iv.end_s))
    for prev, cur in zip(ordered, ordered[1:], strict=False):
        if cur.start_s < prev.end_s or (cur.start_s, cur.end_s) == (prev.start_s, prev.end_s):
            raise DoseInputError(
                f"{_said(cur)}: ultrasound interval {cur.start_s:g}-{cur.end_s:g} s overlaps "
                f"{prev.start_s:g}-{prev.end_s:g} s ({_said(prev)}); the same time would be "
                "counted twice"
            )


def check_timing(
    intervals, record: DoseRecord, t0: _dt.datetime, guided_phase=None, *, force: bool = False
) -> list[str]:
    """Flags for the ultrasound intervals (and guided phase); refuses impossible ones.

    Raises :class:`DoseInputError` for an interval entirely outside the irradiation or
    reaching more than :data:`INTERVAL_MARGIN_S` beyond it (unless ``force``: then it is
    flagged), for overlapping intervals, and for a guided phase beyond the procedure.
    """
    from .saved import _beam_on_s

    span = irradiation_span_s(record, t0)
    if guided_phase is not None:
        g0, g1 = guided_phase
        if g0 < -INTERVAL_MARGIN_S or g1 > span + INTERVAL_MARGIN_S:
            raise DoseInputError(
                f"--guided-phase: guided phase {g0:g}-{g1:g} s lies beyond the procedure "
                f"(irradiation from 0 to {span:g} s, {INTERVAL_MARGIN_S:g} s margin)"
            )
    fluoro = [e for e in record.events if e.event_type == "fluoroscopy" and e.start is not None]
    flags = [note for iv in intervals for note in iv.notes]
    known = [iv for iv in intervals if iv.span_known]
    for iv in known:
        why = _impossible(iv, span)
        if why and not force:
            raise DoseInputError(f"{_said(iv)}: {why}; --force computes it anyway (flagged)")
        if why:
            flags.append(f"{_name(iv)}: {why}; computed anyway (--force)")
        flags += _outside(iv, span)
        flags += _fluoro_inside(iv, fluoro, t0, _beam_on_s)
    _check_overlaps(known)
    return flags

"""The report's timeline picture: each irradiation event as wide as its beam-on time.

Bar widths are the beam-on time the dose-saved estimate uses (pulses / pulse rate where
the recorded duration is not beam time), bar heights the event's DAP on a labelled
scale; the cumulative event DAP is drawn beside the unit's accumulated total when the
two differ, and each ultrasound interval is labelled with where it came from.
"""

from __future__ import annotations

import io

import numpy as np

__all__ = ["timeline_png", "event_bars", "beam_on_width_s", "non_additive_types"]

#: Narrowest bar drawn (s), so an event without a beam-on time is still visible.
MIN_WIDTH_S = 0.6


def beam_on_width_s(ev, non_additive: bool) -> float:
    """The bar width (s): the estimator's beam-on time, or pulses / pulse rate.

    Where this unit's durations are flagged as not additive, the recorded duration is
    not beam time, so pulses / pulse rate (else the exposure time) is drawn instead.
    """
    from .saved import _beam_on_s

    if non_additive:
        if ev.number_of_pulses and ev.pulse_rate_per_s:
            on = ev.number_of_pulses / ev.pulse_rate_per_s
        else:
            on = (ev.exposure_time_ms or 0.0) / 1e3
    else:
        on = _beam_on_s(ev) or 0.0
    return max(on, MIN_WIDTH_S)


def event_bars(
    events, t0, non_additive: frozenset[str] = frozenset()
) -> dict[str, list[tuple[float, float, float]]]:
    """Per event type: (start s from the first event, beam-on width s, DAP Gy·cm²).

    ``non_additive`` names the event types whose recorded durations disagree with the
    unit's total time (flagged in the reconciliation): their durations are not used.
    """
    bars: dict[str, list[tuple[float, float, float]]] = {}
    for ev in sorted((e for e in events if e.start is not None), key=lambda e: e.start):
        width = beam_on_width_s(ev, ev.event_type in non_additive)
        start = (ev.start - t0).total_seconds()
        bars.setdefault(ev.event_type, []).append((start, width, ev.dap_gy_cm2 or 0.0))
    return bars


def _interval_label(iv: dict) -> str:
    source = iv.get("source", "")
    if source == "given":
        return "ultrasound, given"
    name = source.split(":")[0]  # a file name (--include-phi) or a label "clip N (sha256 …)"
    return f"ultrasound, {name}" if name.startswith("clip ") else f"ultrasound, clip {name}"


def _draw_intervals(ax, us_intervals) -> None:
    for iv in us_intervals:
        ax.axvspan(iv["start_s"], iv["end_s"], color="#8fd19e", alpha=0.45, lw=0)
        ax.annotate(
            _interval_label(iv),
            ((iv["start_s"] + iv["end_s"]) / 2, 1.0),
            xycoords=("data", "axes fraction"),
            ha="center",
            va="top",
            fontsize=7,
            color="#226633",
        )


def _draw_cumulative(ax2, bars, total) -> None:
    flat = sorted((s, w, d) for spans in bars.values() for s, w, d in spans)
    ts = [0.0] + [s + w for s, w, _ in flat]
    cum = np.concatenate([[0.0], np.cumsum([d for _, _, d in flat])])
    ax2.step(ts, cum, where="post", color="black", lw=1.4, label="cumulative event DAP")
    top = cum[-1]
    if total is not None and not np.isclose(total, cum[-1], rtol=1e-3, atol=0):
        ax2.axhline(total, color="#555", ls="--", lw=1.2, label="accumulated total (RDSR)")
        ax2.annotate(
            f"event sum {cum[-1]:.4g} vs total {total:.4g} Gy·cm²",
            (ts[-1], total),
            ha="right",
            va="bottom",
            fontsize=7,
        )
        top = max(top, total)
    ax2.set_ylim(0, max(top, 1e-9) * 1.15)
    ax2.set_ylabel("cumulative DAP (Gy·cm²)")


def timeline_png(
    events, us_intervals: list[dict], t0, total_dap=None, non_additive=frozenset()
) -> bytes:
    """The timeline as PNG bytes; ``total_dap`` (Gy·cm²) is the unit's accumulated total."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.4), dpi=110)
    bars = event_bars(events, t0, non_additive)
    _draw_intervals(ax, us_intervals)
    for kind, spans in bars.items():
        colour = "#d62728" if kind == "fluoroscopy" else "#1f77b4"
        s, w, d = (np.array(x) for x in zip(*spans, strict=True))
        ax.bar(s, d, width=w, align="edge", color=colour, label=f"{kind} (width: beam-on)")
    highest = max((d for spans in bars.values() for _, _, d in spans), default=0.0)
    ax.set_ylim(0, max(highest, 1e-9) * 1.3)
    ax.set_ylabel("event DAP (Gy·cm²)")
    ax.set_xlabel("time from first irradiation event (s)")
    ax2 = ax.twinx()
    if bars:
        _draw_cumulative(ax2, bars, total_dap)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def non_additive_types(reconciliation: list[dict], tolerance: float = 0.05) -> frozenset[str]:
    """Event types whose summed durations differ from the unit's total time beyond ``tolerance``."""
    kinds = {"fluoro_time_s": "fluoroscopy", "acquisition_time_s": "acquisition"}
    out = set()
    for r in reconciliation:
        rel = r.get("relative_difference")
        if r["quantity"] in kinds and "difference" in r and (rel is None or abs(rel) > tolerance):
            out.add(kinds[r["quantity"]])
    return frozenset(out)

"""The report's methods section: what was read, each formula, each assumption with its value.

A physicist signs a figure only when the page itself says where every input came from and
what every assumption's value, source and range is; this module writes that section
from the report record and from the constants the estimators actually use.
"""

from __future__ import annotations

from hybridfuse._safeio import html_text

from .clip_series import MAX_FRAME_GAP_S
from .labels import number
from .saved import (
    CLIP_GUIDED_FRACTION,
    CLIP_GUIDED_FRAMES_NOTE,
    DAP_METER_TOLERANCE,
    DEFAULT_PROTOCOL,
    PHASE_RULE,
)

__all__ = ["methods_html", "assumption_rows"]

#: Table transmission reported for under-couch C-arms (issue #18's source): shown so the
#: reader knows when --table-transmission applies; never applied unless given.
TABLE_TRANSMISSION_NOTE = (
    "Displayed DAP and Ka,r are free-in-air figures: with the tube under the table, the "
    "table and mattress transmit about 66-76 % (Mann et al., Pain Medicine 2019), part of "
    "why displayed DAP overestimates the DAP entering the patient. Give "
    "--table-transmission LO,HI for an entrance air kerma; it is not applied otherwise."
)


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def assumption_rows(report: dict) -> list[tuple[str, str, str, str]]:
    """(assumption, value, source, range used in the 95 % interval) for the report."""
    lo, hi = CLIP_GUIDED_FRACTION
    dlo, dhi = DEFAULT_PROTOCOL["duty_cycle_range"]
    cf = (report.get("saved") or {}).get("counterfactual") or {}
    mc = cf.get("monte_carlo") or {}
    rows = [
        (
            "DAP-meter tolerance",
            f"±{_pct(DAP_METER_TOLERANCE)}",
            "IEC 60580 (the tolerance a DAP meter may have)",
            f"uniform {_pct(-DAP_METER_TOLERANCE)} to +{_pct(DAP_METER_TOLERANCE)} on DAP and Ka,r",
        ),
        (
            "Beam-on rule",
            "Irradiation Duration when within a factor 2 of pulses / pulse rate, else "
            "pulses / pulse rate",
            "vendors record durations that are not beam time (e.g. Canon)",
            "the two conventions' difference, one shared deviation for all events",
        ),
        ("Guided-phase rule", PHASE_RULE, "this procedure's own fluoroscopy taps", "bootstrap"),
        (
            "Needle advance share of a clip",
            f"{_pct(lo)}-{_pct(hi)}",
            CLIP_GUIDED_FRAMES_NOTE,
            f"uniform {_pct(lo)}-{_pct(hi)}; given intervals 100 %",
        ),
        (
            "Default protocol (no guided phase)",
            f"duty cycle {_pct(DEFAULT_PROTOCOL['duty_cycle'])}",
            "stated default, used only when flagged",
            f"uniform {_pct(dlo)}-{_pct(dhi)}",
        ),
        (
            "Interval boundaries",
            "one frame interval, at least 1 s",
            "clip frame timing",
            "uniform within the tolerance",
        ),
        (
            "Monte Carlo",
            f"{mc.get('samples', 20000):,} samples, seed {mc.get('seed', 0)}",
            "2.5th and 97.5th percentiles",
            "all of the above together",
        ),
    ]
    if any("files" in iv for iv in cf.get("us_guided_intervals_s") or []):
        rows.insert(-1, _FRAME_FILES_ROW)  # said only where frame files were joined
    return rows


#: How single-frame files of one series become one clip (:mod:`.clip_series`).
_FRAME_FILES_ROW = (
    "Frame files joined into one clip",
    f"single-frame files of one series at most {MAX_FRAME_GAP_S:g} s apart",
    "B-mode imaging runs at 10-80 frames/s: a live loop leaves no 1 s without a frame",
    "first frame to last (plus a stated frame time), shared out as a clip",
)


def _input_html(record: dict) -> str:
    """An input: its path or name (kept with --include-phi) and sha256, else its label."""
    name = record.get("path") or record.get("file")
    if not name:  # the label carries the sha256's first digits itself
        return f"<b>{html_text(record.get('input'))}</b>"
    sha = str(record.get("sha256", ""))[:16]
    return f"<b>{html_text(name)}</b> (sha256 {html_text(sha)}…)"


def _inputs(report: dict) -> str:
    items = []
    for i in report["inputs"]:
        what = (
            "X-Ray Radiation Dose SR: accumulated totals (TID 10002) and irradiation events "
            "(TID 10003): DAP, Dose (RP), pulses, pulse rate, Irradiation Duration, start"
            if i.get("template") is not None or "Dose" in str(i.get("sop_class", ""))
            else "image dose attributes: Image and Fluoroscopy Area Dose Product (0018,115E)"
        )
        items.append(f"<li>{_input_html(i)}: {html_text(what)}</li>")
    cf = (report.get("saved") or {}).get("counterfactual") or {}
    for iv in cf.get("us_guided_intervals_s", []):
        src = iv["source"]
        what = (
            "--us-interval, given on the command line"
            if src == "given"
            else src.split(":")[0] + ": ultrasound clip: acquisition date/time and frame "
            "times only (no pixel is read for dose)"
        )
        items.append(f"<li>{html_text(what)}</li>")
    return "<ul>" + "".join(items) + "</ul>"


FORMULAS = (
    "Delivered figure = the unit's accumulated total (TID 10002), summed over planes; the "
    "sum of irradiation events only when no total is recorded.",
    "Reconciliation: difference = event sum − accumulated total; relative difference = "
    "difference / accumulated total; flagged beyond ±5 %.",
    "Beam-on time b of an event: see the beam-on rule below.",
    "Duty cycle d = Σ b / (n × mean start-to-start interval) over the n taps of the "
    "fluoroscopy-guided phase (each tap covers the interval to the next).",
    "Dose rates: r_DAP = Σ DAP / Σ b and r_Ka,r = Σ Ka,r / Σ b over the same taps.",
    "Ultrasound-guided time T = Σ over intervals of span × middle of the guided share.",
    "Saved fluoroscopy time = d × T; saved DAP = d × T × r_DAP; saved Ka,r = d × T × r_Ka,r; "
    "saved pulses = saved time × median pulse rate.",
    "Against a baseline: saved = baseline − delivered (negative: more than the baseline).",
    "Effective dose E = DAP × coefficient (mSv per Gy·cm²) of the region.",
)


def _interval_text(report: dict) -> str:
    cf = (report.get("saved") or {}).get("counterfactual")
    if not cf:
        return "No ultrasound interval was given, so no dose saved was estimated."
    parts = []
    for iv in cf["us_guided_intervals_s"]:
        span = iv["end_s"] - iv["start_s"]
        flo, fhi = iv["guided_fraction"]
        parts.append(
            f"{number(iv['start_s'])}-{number(iv['end_s'])} s (span {number(span)} s × "
            f"{_pct((flo + fhi) / 2)} = {number(iv['guided_time_s'])} s guided)"
        )
    return (
        "Included: each ultrasound clip from its first frame to its last frame, cut earlier "
        "only where a fluoroscopy event starts in between; a given interval as given. "
        "Excluded: the scout, confirmation and acquisition runs (needed with or without "
        "ultrasound) and the fluoroscopy-guided phase itself. This report: "
        + "; ".join(parts)
        + f"; ultrasound-guided time {number(cf['us_guided_time_s'])} s in all."
    )


def methods_html(report: dict) -> str:
    """The methods section as HTML (every value escaped)."""
    rows = "".join(
        "<tr>" + "".join(f"<td>{html_text(c)}</td>" for c in row) + "</tr>"
        for row in assumption_rows(report)
    )
    formulas = "".join(f"<li>{html_text(f)}</li>" for f in FORMULAS)
    return (
        '<section id="methods"><h2>Methods</h2>'
        f"<h3>What was read</h3>{_inputs(report)}"
        f"<h3>Formulas</h3><ol>{formulas}</ol>"
        "<h3>Assumptions</h3><table><tr><th>assumption</th><th>value</th><th>source</th>"
        f"<th>range in the 95 % interval</th></tr>{rows}</table>"
        f"<h3>What the ultrasound interval includes</h3><p>{html_text(_interval_text(report))}"
        f"</p><h3>Table transmission</h3><p>{html_text(TABLE_TRANSMISSION_NOTE)}</p></section>"
    )

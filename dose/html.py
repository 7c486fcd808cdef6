"""``report.html``: a self-contained, printable dose report for a medical physicist.

Every value from the input (protocol and procedure names, flags, file names, device
names, ...) goes through :func:`hybridfuse._safeio.html_text`; the page has no script at all
and its Content-Security-Policy forbids any, so markup smuggled into a DICOM tag cannot
run even where escaping were forgotten.
"""

from __future__ import annotations

import base64
import io

import numpy as np

from hybridfuse._safeio import html_text

__all__ = ["timeline_png", "render_report_html"]


def timeline_png(events, us_intervals: list[dict], t0) -> bytes:
    """Timeline: fluoro/acquisition events as bars, US intervals shaded, cumulative DAP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=110)
    timed = sorted((e for e in events if e.start is not None), key=lambda e: e.start)
    for iv in us_intervals:
        ax.axvspan(
            iv["start_s"],
            iv["end_s"],
            color="#8fd19e",
            alpha=0.45,
            lw=0,
            label="ultrasound-guided" if iv is us_intervals[0] else None,
        )
    bars: dict[str, list[tuple[float, float]]] = {}
    for ev in timed:
        width = max(ev.duration_s or 0.0, 0.6)
        bars.setdefault(ev.event_type, []).append(((ev.start - t0).total_seconds(), width))
    for kind, spans in bars.items():  # one call per kind: thousands of events stay fast
        colour = "#d62728" if kind == "fluoroscopy" else "#1f77b4"
        ax.broken_barh(spans, (0, 1), color=colour, label=kind)
    ax.set_ylim(0, 1.2)
    ax.set_yticks([])
    ax.set_xlabel("time from first irradiation event (s)")
    ax2 = ax.twinx()
    if timed:
        ts = [0.0] + [(e.start - t0).total_seconds() for e in timed]
        dap = np.concatenate([[0.0], np.cumsum([e.dap_gy_cm2 or 0.0 for e in timed])])
        ax2.step(ts, dap, where="post", color="black", lw=1.5, label="cumulative DAP")
        ax2.set_ylim(0, max(dap[-1], 1e-9) * 1.1)
    ax2.set_ylabel("cumulative DAP (Gy·cm²)")
    handles = ax.get_legend_handles_labels()
    h2 = ax2.get_legend_handles_labels()
    ax.legend(handles[0] + h2[0], handles[1] + h2[1], loc="upper left", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _fmt(v, digits=4):
    if v is None:
        return "unknown"
    if isinstance(v, float):
        return html_text(f"{v:.{digits}g}")
    return html_text(v)


def render_report_html(report: dict, events, us_intervals: list[dict], t0) -> str:
    """The whole report as one HTML string (the timeline is an embedded PNG)."""
    png = base64.b64encode(timeline_png(events, us_intervals, t0)).decode()
    d = report["delivered"]
    rows = "".join(
        f"<tr><td>{html_text(k)}</td><td>{_fmt(d.get(k))}</td>"
        f"<td>{html_text(d['sources'].get(k, ''))}</td></tr>"
        for k in (
            "dap_total_gy_cm2",
            "fluoro_dap_gy_cm2",
            "acquisition_dap_gy_cm2",
            "ka_r_total_mgy",
            "fluoro_time_s",
            "acquisition_time_s",
        )
    )

    def _rel(r):
        if "relative_difference" not in r:
            return "-"
        return _fmt(100 * r["relative_difference"], 3) + " %"

    recon = "".join(
        f"<tr><td>{html_text(r['plane'])}</td><td>{html_text(r['quantity'])}</td>"
        f"<td>{_fmt(r['accumulated_total'])}</td><td>{_fmt(r['event_sum'])}</td>"
        f"<td>{_rel(r)}</td></tr>"
        for r in report["reconciliation"]
    )
    saved_html = "<p>No saved-dose estimate (no ultrasound interval given).</p>"
    saved = report.get("saved") or {}
    cf = saved.get("counterfactual")
    if cf:
        srows = "".join(
            f"<tr><td>{html_text(q)}</td><td>{_fmt(cf['point'].get(q))}</td>"
            f"<td>{_fmt(cf['interval_95'][q][0])} – {_fmt(cf['interval_95'][q][1])}</td></tr>"
            for q in cf["interval_95"]
        )
        saved_html = (
            f"<h3>Method 1: within-procedure counterfactual</h3><table><tr><th>quantity</th>"
            f"<th>point</th><th>95 % interval</th></tr>{srows}</table>"
            f"<p>Duty cycle {_fmt(cf['duty_cycle'], 3)}; dose rates from "
            f"{html_text(cf['dose_rates']['source'])} (events at "
            f"{html_text(', '.join(f'{t:g}' for t in cf['guidance_events_s']))} s); "
            f"ultrasound-guided time {_fmt(cf['us_guided_time_s'])} s.</p>"
        )
    bl = saved.get("baseline")
    if bl:
        brows = "".join(
            f"<tr><td>{html_text(q)}</td><td>{_fmt(v.get('saved'))}</td><td>"
            + (
                f"{_fmt(v['saved_interval_95'][0])} – {_fmt(v['saved_interval_95'][1])}"
                if v.get("saved") is not None
                else html_text(v.get("reason", ""))
            )
            + f"</td><td>{html_text(v.get('source', ''))}</td></tr>"
            for q, v in bl["by_quantity"].items()
        )
        saved_html += (
            f"<h3>Method 2: against a baseline</h3><table><tr><th>quantity</th>"
            f"<th>saved</th><th>95 % interval</th><th>baseline source</th></tr>"
            f"{brows}</table>"
        )
    eff = report.get("effective_dose")
    eff_html = ("<p>" + html_text(eff["note"]) + "</p>") if eff else ""
    if eff and eff.get("delivered_msv") is not None:
        eff_html += (
            f"<p>Delivered: {_fmt(eff['delivered_msv'])} mSv "
            f"(coefficient {_fmt(eff['coefficient_msv_per_gy_cm2'])} mSv/(Gy·cm²), "
            f"{html_text(eff['source'])}).</p>"
        )
    if eff and eff.get("saved_msv") is not None:
        lo, hi = eff["saved_msv_interval_95"]
        eff_html += (
            f"<p>Saved (method 1): {_fmt(eff['saved_msv'])} mSv, 95 % interval "
            f"{_fmt(lo)}–{_fmt(hi)} mSv; {html_text(eff.get('interval_note', ''))}.</p>"
        )
    assumptions = "".join(f"<li>{html_text(a)}</li>" for a in report["assumptions"])
    flags = "".join(f"<li>{html_text(f)}</li>" for f in report["flags"]) or "<li>none</li>"
    inputs = "".join(
        f"<li>{html_text(i.get('path') or i.get('file'))} — sha256 "
        f"{html_text(str(i.get('sha256', ''))[:16])}…, SOP "
        f"{html_text(i.get('sop_instance_uid'))}</li>"
        for i in report["inputs"]
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>Dose report</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 1em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #bbb; padding: 0.2em 0.6em; font-size: 0.9em; }}
th {{ background: #eee; }}
img {{ max-width: 100%; }}
@media print {{ body {{ max-width: none; }} }}
</style></head><body>
<h1>Fluoroscopy dose report</h1>
<p>Device: {_fmt(report["device"]["manufacturer"])} {_fmt(report["device"]["model"])};
procedure: {_fmt(report.get("procedure"))}; region: {_fmt(report.get("region"))};
hybridfuse {_fmt(report["software_version"])}; schema {html_text(report["schema"])}.</p>
<h2>Timeline</h2><img alt="timeline of irradiation events" src="data:image/png;base64,{png}">
<h2>Delivered</h2><table><tr><th>quantity</th><th>value</th><th>source</th></tr>{rows}</table>
<p>Reference point: {_fmt(d.get("reference_point"))}. Dose (RP) is air kerma at that point,
not a skin dose.</p>
<h2>Reconciliation (event sums against accumulated totals)</h2>
<table><tr><th>plane</th><th>quantity</th><th>accumulated</th><th>event sum</th>
<th>difference</th></tr>{recon}</table>
<h2>Dose saved by ultrasound guidance</h2>{saved_html}
<h2>Effective dose</h2>{eff_html}
<h2>Assumptions</h2><ul>{assumptions}</ul>
<h2>Flags</h2><ul>{flags}</ul>
<h2>Inputs</h2><ul>{inputs}</ul>
</body></html>
"""

"""``report.html``: a self-contained, printable dose report for a medical physicist.

Flags come first, then the figures with human labels and units, then a methods section
(what was read, each formula, each assumption with its value, source and range). Every
value from the input (protocol and procedure names, flags, file names, device names, ...)
goes through :func:`hybridfuse._safeio.html_text`; the page has no script at all and its
Content-Security-Policy forbids any, so markup smuggled into a DICOM tag cannot run even
where escaping were forgotten.
"""

from __future__ import annotations

import base64
import re

from hybridfuse._safeio import html_text

from .inputs import shown_name
from .labels import LABELS, label, number, quantity, relative
from .methods import methods_html
from .timeline import non_additive_types, timeline_png
from .units import DELIVERED_KEYS

__all__ = ["timeline_png", "render_report_html"]

_DELIVERED = DELIVERED_KEYS
_UNITS = {"_gy_cm2": "Gy·cm²", "_mgy": "mGy", "_s": "s"}


def _unit(key: str) -> str:
    return next((u for end, u in _UNITS.items() if key.endswith(end)), "")


def _text(v) -> str:
    """Text for a cell: "not given" for None (never "None")."""
    return "not given" if v is None else html_text(v)


def _device(dev: dict) -> str:
    if not dev.get("manufacturer") and not dev.get("model"):
        return "not recorded (no dose SR)"
    return html_text(" ".join(str(v) for v in (dev["manufacturer"], dev["model"]) if v))


def _table(head: tuple[str, ...], rows: list[tuple]) -> str:
    th = "".join(f"<th>{html_text(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


_KEY = re.compile(r"\b(" + "|".join(sorted(LABELS, key=len, reverse=True)) + r")\b")


def _humanize(flag: str) -> str:
    """A flag as shown on the page: dose.json keys replaced by their labels."""
    return _KEY.sub(lambda m: label(m.group(1)), flag)


def _flags_html(report: dict) -> str:
    flags = report["flags"]
    if not flags:
        return '<section id="flags"><h2>Check first</h2><p>No flags.</p></section>'
    items = "".join(f"<li>{html_text(_humanize(f))}</li>" for f in flags)
    return (
        f'<section id="flags" class="flags"><h2>Check first: {len(flags)} flag(s)</h2>'
        f"<ul>{items}</ul></section>"
    )


def _delivered_html(report: dict) -> str:
    d = report["delivered"]
    rows = [
        (html_text(label(k)), html_text(number(d.get(k))), html_text(d["sources"].get(k, "")))
        for k in _DELIVERED
        if k in d
    ]
    if "n_images" in d:
        extra = (
            f"<p>From {d['n_images']} image(s): a lower bound (unstored fluoroscopy is in no "
            "image).</p>" + _per_image_html(d["per_image"])
        )
    else:
        extra = (
            f"<p>{d['n_events']} irradiation events ({d['n_fluoro_events']} fluoroscopy, "
            f"{d['n_acquisition_events']} acquisition), {d['n_planes']} plane(s). Reference "
            f"point: {_text(d.get('reference_point'))}. Ka,r is the air kerma at that point, "
            "not a skin dose.</p>"
        )
    return (
        '<section id="delivered"><h2>Delivered</h2>'
        + _table(("quantity", "value", "source"), rows)
        + extra
        + "</section>"
    )


def _difference(r: dict, unit: str) -> str:
    """Event sum − total, rounding noise (below 1e-9 of the values) shown as 0."""
    scale = max(abs(r["accumulated_total"]), abs(r["event_sum"]))
    diff = 0.0 if abs(r["difference"]) <= 1e-9 * scale else r["difference"]
    return f"{quantity(diff, unit)} ({relative(r['relative_difference'])})"


def _per_image_html(images: list[dict]) -> str:
    rows = [
        (
            html_text(im.get("file") or im.get("input")),
            html_text(number(im.get("dap_gy_cm2"))),
            html_text(number(im.get("entrance_dose_mgy"))),
            html_text(number(im.get("kvp_kv"))),
            html_text(number(im.get("number_of_frames"))),
        )
        for im in images
    ]
    head = ("image", "DAP (Gy·cm²)", "entrance dose (mGy)", "kVp (kV)", "frames")
    return _table(head, rows)


def _reconciliation_html(report: dict) -> str:
    rows = []
    for r in report["reconciliation"]:
        unit = _unit(r["quantity"])
        diff = _difference(r, unit) if "difference" in r else "-"
        rows.append(
            (
                html_text(r["plane"]),
                html_text(label(r["quantity"])),
                html_text(number(r["accumulated_total"])),
                html_text(f"{number(r['event_sum'])} ({r['events_with_value']}/{r['events']})"),
                html_text(diff),
            )
        )
    if not rows:
        return ""
    head = ("plane", "quantity", "accumulated total", "event sum (events)", "difference")
    return (
        '<section id="reconciliation"><h2>Reconciliation: event sums against the accumulated '
        "totals</h2>" + _table(head, rows) + "</section>"
    )


def _counterfactual_html(cf: dict) -> str:
    rows = [
        (
            html_text(label(q)),
            html_text(number(cf["point"].get(q))),
            html_text(f"{number(cf['interval_95'][q][0])} to {number(cf['interval_95'][q][1])}"),
        )
        for q in cf["interval_95"]
    ]
    rates = cf["dose_rates"]
    times = ", ".join(number(t) for t in cf["guidance_events_s"])
    return (
        "<h3>Method 1: within-procedure counterfactual</h3>"
        + _table(("quantity", "point estimate", "95 % interval"), rows)
        + f"<p>Duty cycle {html_text(number(100 * cf['duty_cycle'], 3))} % from "
        f"{html_text(rates['source'])} (taps at {html_text(times)} s; beam-on "
        f"{html_text(quantity(rates['beam_on_s'], 's'))}); DAP rate "
        f"{html_text(quantity(rates['dap_gy_cm2_per_s'], 'Gy·cm²/s'))}, Ka,r rate "
        f"{html_text(quantity(rates['ka_r_mgy_per_s'], 'mGy/s'))} per beam-on second. "
        f"Ultrasound-guided time {html_text(quantity(cf['us_guided_time_s'], 's'))} "
        "(each interval's span × the middle of its guided share: see Methods).</p>"
    )


def _baseline_html(bl: dict) -> str:
    rows = []
    for q, v in bl["by_quantity"].items():
        unit = _unit(q)
        if v.get("saved") is None:
            rows.append((html_text(label(q)), "unknown", html_text(v.get("reason", "")), ""))
            continue
        lo, hi = v["saved_interval_95"]
        note = f" — {v['note']}" if v.get("note") else ""
        rows.append(
            (
                html_text(label(q)),
                html_text(quantity(v["saved"], unit) + note),
                html_text(f"{number(lo)} to {number(hi)}"),
                html_text(f"baseline {quantity(v['baseline'], unit)}; {v['source']}"),
            )
        )
    head = ("quantity", "saved", "95 % interval", "baseline and its source")
    return "<h3>Method 2: against a baseline</h3>" + _table(head, rows)


def _saved_html(report: dict) -> str:
    saved = report.get("saved") or {}
    body = ""
    if saved.get("counterfactual"):
        body += _counterfactual_html(saved["counterfactual"])
    if saved.get("baseline"):
        body += _baseline_html(saved["baseline"])
    body = body or "<p>No dose-saved estimate: no ultrasound interval and no procedure given.</p>"
    return f'<section id="saved"><h2>Dose saved by ultrasound guidance</h2>{body}</section>'


def _corrections_html(report: dict) -> str:
    c = report.get("corrections")
    if not c:
        return ""
    if not c["applied"]:
        body = f"<p>{html_text(shown_name(c))}: no entry for this unit; nothing corrected.</p>"
    else:
        rows = []
        for key, r in c["figures"].items():
            base = key.removeprefix("saved_")
            unit = _unit(base) or _unit(key)
            name = ("Saved " if key.startswith("saved_") else "") + label(base)
            table = r["after_table"]
            rows.append(
                (
                    html_text(name),
                    html_text(quantity(r["recorded"], unit)),
                    html_text(quantity(r["calibrated"], unit)),
                    html_text(f"{number(table[0])} to {number(table[1])}" if table else "-"),
                )
            )
        tt = c["table_transmission"]
        body = (
            f"<p>From {html_text(shown_name(c))}: DAP-meter calibration factor "
            f"{html_text(number(c['dap_calibration_factor']))}"
            + (
                f", table transmission {html_text(number(tt[0]))} to {html_text(number(tt[1]))}"
                if tt
                else ""
            )
            + f" ({html_text(c['source'])}). {html_text(c['note'])}</p>"
            + _table(("figure", "recorded (before)", "calibrated (after)", "after the table"), rows)
        )
    return f'<section id="corrections"><h2>Corrections</h2>{body}</section>'


def _effective_html(report: dict) -> str:
    eff = report.get("effective_dose")
    if not eff:
        return ""
    out = "<p>" + html_text(eff["note"]) + "</p>"
    if eff.get("delivered_msv") is not None:
        out += (
            f"<p>Delivered: {html_text(quantity(eff['delivered_msv'], 'mSv', 3))} (coefficient "
            f"{html_text(number(eff['coefficient_msv_per_gy_cm2']))} mSv per Gy·cm², "
            f"{html_text(eff['source'])}).</p>"
        )
    if eff.get("saved_msv") is not None:
        lo, hi = eff["saved_msv_interval_95"]
        out += (
            f"<p>Saved (method 1): {html_text(quantity(eff['saved_msv'], 'mSv', 3))}, 95 % "
            f"interval {html_text(number(lo, 3))} to {html_text(quantity(hi, 'mSv', 3))}; "
            f"{html_text(eff.get('interval_note', ''))}.</p>"
        )
    return f'<section id="effective"><h2>Effective dose</h2>{out}</section>'


_CSS = """
body { font-family: sans-serif; max-width: 62em; margin: 1em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #bbb; padding: 0.2em 0.6em; font-size: 0.9em; text-align: left; }
th { background: #eee; }
img { max-width: 100%; }
.flags { border: 2px solid #c60; padding: 0 1em; background: #fff6ec; }
@page { size: A4; margin: 15mm; }
@media print {
  body { max-width: none; margin: 0; font-size: 10pt; }
  section, table, img { break-inside: avoid; }
  #methods { break-before: page; }
  th { background: none; }
}
"""


def render_report_html(report: dict, events, us_intervals: list[dict], t0) -> str:
    """The whole report as one HTML string (the timeline is an embedded PNG when timed)."""
    timeline = ""
    if t0 is not None:
        png = timeline_png(
            events,
            us_intervals,
            t0,
            report["delivered"].get("dap_total_gy_cm2"),
            non_additive_types(report["reconciliation"]),
        )
        timeline = (
            '<section id="timeline"><h2>Timeline</h2><img alt="timeline of irradiation '
            'events: width = beam-on time, height = event DAP" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}"></section>'
        )
    assumptions = "".join(f"<li>{html_text(a)}</li>" for a in report["assumptions"])
    dev = report["device"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>Dose report</title><style>{_CSS}</style></head><body>
<h1>Fluoroscopy dose report</h1>
<p>X-ray unit: {_device(dev)}; procedure:
{_text(report.get("procedure"))}; region: {_text(report.get("region"))}; hybridfuse
{html_text(report["software_version"])}, schema {html_text(report["schema"])}.</p>
{_flags_html(report)}
{timeline}
{_delivered_html(report)}
{_reconciliation_html(report)}
{_saved_html(report)}
{_corrections_html(report)}
{_effective_html(report)}
{methods_html(report)}
<section id="assumptions"><h2>Assumptions in words</h2><ul>{assumptions}</ul></section>
</body></html>
"""

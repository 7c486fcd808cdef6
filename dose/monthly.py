"""The audit over time: per month, procedure type, region and cohort, the median dose.

The registry shifts each patient's dates by a keyed per-patient offset (PS3.15), which
keeps intervals within a patient but scrambles months across patients. So each procedure
also gets its acquisition month moved by one registry-wide whole number of months
(``month_relative``): the months of different patients keep their order and distance,
and the calendar is hidden. The calendar month itself (``month_real``, ``YYYY-MM``) is
patient data, kept only when ingested with ``--include-phi`` and shown only by an audit
with ``--include-phi`` when every dated procedure has it; otherwise months are relative
("month +k": k months after the first month in the registry).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import io
from collections.abc import Sequence

import numpy as np

__all__ = ["month_index", "month_shift", "monthly_csv", "monthly_html", "monthly_view"]

#: The registry-wide shift is 10 to 100 years (a whole number of months).
_SHIFT_MONTHS = (120, 1200)
COHORTS = ((0, "fluoroscopy-only"), (1, "ultrasound-guided"))


def month_index(when: _dt.date) -> int:
    """Months since year 0 (January of year Y is 12 × Y)."""
    return when.year * 12 + when.month - 1


def month_shift(key: bytes) -> int:
    """The registry-wide month shift, derived from the registry's secret (never stored)."""
    mac = hmac.new(key, b"month-shift\x00", hashlib.sha256).digest()
    lo, hi = _SHIFT_MONTHS
    return lo + int.from_bytes(mac[:4], "big") % (hi - lo + 1)


def _calendar(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _kind(dated: list[dict], include_phi: bool) -> tuple[bool, str]:
    """Whether calendar months are shown, and why (or why not)."""
    with_real = sum(1 for r in dated if r.get("month_real"))
    if include_phi and with_real == len(dated):
        return True, "calendar months (patient data, shown with --include-phi)"
    if not include_phi and with_real:
        why = "calendar months are patient data, shown only with --include-phi"
    elif include_phi:
        why = (
            f"{len(dated) - with_real} of {len(dated)} dated procedure(s) were ingested "
            "without --include-phi and have no calendar month"
        )
    else:
        why = "the registry keeps no calendar month (ingested without --include-phi)"
    return False, (
        f"relative months: month +k is k months after the first month in the registry; {why}"
    )


def monthly_view(
    rows: list[dict], quantities: Sequence[str], *, include_phi: bool, missing: str | None
) -> dict:
    """Per procedure type, region, month and cohort: the count and the median of each figure.

    ``missing`` is why the registry cannot give months at all (an old schema), or None.
    """
    if missing:
        return {"available": False, "reason": missing, "rows": []}
    dated = [r for r in rows if r.get("month_relative") is not None]
    undated = len(rows) - len(dated)
    if not dated:
        return {
            "available": False,
            "reason": "no procedure in the registry has an acquisition month (ingested "
            "before months were kept, or from a dose.json whose RDSR was not found)",
            "rows": [],
        }
    calendar, months = _kind(dated, include_phi)
    first = min(r["month_relative"] for r in dated)
    groups: dict[tuple, list[dict]] = {}
    for r in dated:
        k = r["month_relative"] - first
        label = r["month_real"] if calendar else f"month +{k}"
        key = (r["procedure_type"] or "unspecified", r["region"] or "unspecified", k, label)
        groups.setdefault(key, []).append(r)
    out_rows = []
    for (proc, region, k, label), members in sorted(groups.items()):
        for guided, cohort in COHORTS:
            chosen = [m for m in members if m["us_guided"] == guided]
            if not chosen:
                continue
            row = {"procedure": proc, "region": region, "month": label, "cohort": cohort}
            row["months_from_first"], row["n"] = k, len(chosen)
            for q in quantities:
                vals = [m[q] for m in chosen if m[q] is not None]
                row[f"{q}_median"] = float(np.median(vals)) if vals else None
            out_rows.append(row)
    return {
        "available": True,
        "months": "calendar" if calendar else "relative",
        "note": months,
        "without_month": undated,
        "rows": out_rows,
    }


def monthly_csv(monthly: dict, quantities: Sequence[str]) -> str:
    """One row per procedure type, region, month and cohort; floats to 12 digits."""
    import csv

    from hybridfuse._safeio import csv_cell

    from .labels import csv_number

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["procedure", "region", "month", "cohort", "n", *(f"{q}_median" for q in quantities)]
    )
    for r in monthly["rows"]:
        medians = [r[f"{q}_median"] for q in quantities]
        cells = [r["procedure"], r["region"], r["month"], r["cohort"], r["n"]]
        w.writerow(
            [csv_cell(v) for v in cells] + ["" if v is None else csv_number(v) for v in medians]
        )
    return buf.getvalue()


def _plot(monthly: dict, quantities: Sequence[str]) -> str:
    """Base64 PNG: per figure, the monthly median of each group and cohort as a line."""
    import base64

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .labels import label

    # Placed by months from the first, so a month without procedures leaves its gap.
    ticks = sorted({(r["months_from_first"], r["month"]) for r in monthly["rows"]})
    fig, axes = plt.subplots(1, len(quantities), figsize=(11, 3.4), dpi=100)
    series: dict[tuple, list] = {}
    for r in monthly["rows"]:
        series.setdefault((r["procedure"], r["region"], r["cohort"]), []).append(r)
    for ax, q in zip(np.atleast_1d(axes), quantities, strict=True):
        for (proc, region, cohort), members in sorted(series.items()):
            pts = [(m["months_from_first"], m[f"{q}_median"]) for m in members]
            pts = [(k, v) for k, v in pts if v is not None]
            if pts:
                style = "-o" if cohort == "fluoroscopy-only" else "--s"
                ax.plot(*zip(*pts, strict=True), style, label=_text(f"{proc} {region}, {cohort}"))
        ax.set_xticks([k for k, _ in ticks], [_text(m) for _, m in ticks])
        ax.tick_params(axis="x", labelrotation=45)
        ax.set_title(f"median {label(q)}", fontsize=9)
        ax.tick_params(labelsize=7)
    first = np.atleast_1d(axes)[0]
    if first.get_legend_handles_labels()[0]:  # none when no month has a known value
        first.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _text(value) -> str:
    from hybridfuse._safeio import terminal_text

    return terminal_text(str(value)).replace("$", r"\$")  # matplotlib reads $...$ as maths


def monthly_html(monthly: dict, quantities: Sequence[str]) -> str:
    """The audit page's monthly section: which months, a plot, and the table."""
    import html

    from .labels import label, number

    head = "<h2>Over time (monthly)</h2>"
    if not monthly["available"]:
        return f"{head}<p>No monthly view: {html.escape(monthly['reason'])}.</p>"
    left = monthly["without_month"]
    extra = f" {left} procedure(s) without an acquisition month are left out." if left else ""
    cells = "".join(f"<th>median {html.escape(label(q))}</th>" for q in quantities)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(r[k]))}</td>"
            for k in ("procedure", "region", "month", "cohort", "n")
        )
        + "".join(f"<td>{number(r[f'{q}_median'])}</td>" for q in quantities)
        + "</tr>"
        for r in monthly["rows"]
    )
    return (
        f"{head}<p>{html.escape(monthly['note'])}.{html.escape(extra)}</p>"
        f'<img alt="monthly medians" src="data:image/png;base64,{_plot(monthly, quantities)}">'
        f"<table><tr><th>procedure</th><th>region</th><th>month</th><th>cohort</th><th>n</th>"
        f"{cells}</tr>{body}</table>"
    )

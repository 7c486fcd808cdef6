"""The audit of a dose registry: per procedure type and region, cohorts, months, outliers.

Counts, medians and 75th percentiles, the comparison with a table of diagnostic reference
levels, ultrasound-guided against fluoroscopy-only procedures (:mod:`dose.cohorts`), the
view over months (:mod:`dose.monthly`) and outliers, written as ``audit.json``,
``audit.csv``, ``cohorts.csv``, ``monthly.csv`` and ``audit.html``. Outliers carry the
study's accession number and date only with ``include_phi``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from hybridfuse._safeio import csv_cell, terminal_text

from .errors import DoseInputError
from .registry import QUANTITIES, Registry, upper_bound

__all__ = ["audit", "load_drl", "write_audit"]


def load_drl(path: str | os.PathLike) -> dict[tuple[str, str], dict]:
    """Read diagnostic reference levels.

    CSV columns ``procedure,region,dap_gy_cm2,ka_r_mgy,fluoro_time_s,source``; empty cells
    are allowed.
    """
    from .report import read_csv_rows

    path = Path(path)
    rows = read_csv_rows(path, "the DRL table")
    out = {}
    for r in rows:
        if "procedure" not in r or "region" not in r:
            raise DoseInputError(f"{path}: columns procedure,region,... are required")
        levels = {}
        for col, q in (
            ("dap_gy_cm2", "dap_total_gy_cm2"),
            ("ka_r_mgy", "ka_r_total_mgy"),
            ("fluoro_time_s", "fluoro_time_s"),
        ):
            text = (r.get(col) or "").strip()
            if text:
                try:
                    levels[q] = float(text)
                except ValueError as exc:
                    raise DoseInputError(f"{path}: {col}={text!r} is not a number") from exc
                if not (math.isfinite(levels[q]) and levels[q] > 0):
                    raise DoseInputError(f"{path}: {col}={text!r} must be a finite number > 0")
                if levels[q] > upper_bound(q):
                    raise DoseInputError(
                        f"{path}: {col}={text!r} exceeds the plausible {upper_bound(q):g}"
                    )
        levels["source"] = r.get("source", "")
        out[(r["procedure"], r["region"])] = levels
    return out


def _check_phi(reg: Registry, rows: list[dict]) -> None:
    """Refuse ``--include-phi`` on a registry that keeps no accession number or date."""
    missing = reg.missing(("accession_number", "study_date"))
    if missing is None and any(r["accession_number"] or r["study_date"] for r in rows):
        return
    why = missing or f"{reg.path.name} keeps no accession number or study date"
    raise DoseInputError(
        f"--include-phi: {why}; ingest the reports with dose ingest --include-phi to keep "
        "them, or audit without --include-phi (outliers by pseudonym)"
    )


def _outlier(m: dict, include_phi: bool, **fields) -> dict:
    """An outlier row: by pseudonym, plus accession number and study date with PHI."""
    row = {"id": m["id"], "pseudonym": m["pseudonym"], **fields}
    if include_phi:
        row["accession_number"] = m["accession_number"]
        row["study_date"] = m["study_date"]
    return row


def _group_figure(members, q: str, levels: dict, outliers: list, include_phi: bool) -> dict:
    """One figure of a group (median, 75th percentile, fence, DRL); its outliers appended."""
    vals = np.array([m[q] for m in members if m[q] is not None], float)
    if len(vals) == 0:
        return {"n": 0}
    q1, med, q3 = np.percentile(vals, [25, 50, 75])
    fence = q3 + 1.5 * (q3 - q1)
    entry = {
        "n": int(len(vals)),
        "median": float(med),
        "p75": float(q3),
        "tukey_upper_fence": float(fence),
    }
    if q in levels:
        entry["drl"] = levels[q]
        entry["median_over_drl"] = float(med / levels[q])
    for m in members:
        v = m[q]
        if v is None:
            continue
        why = []
        if len(vals) >= 4 and v > fence:
            why.append("above the Tukey fence of its group")
        if q in levels and v > levels[q]:
            why.append(f"above the DRL ({levels[q]:g})")
        if why:
            where = {"procedure": m["procedure_type"] or "unspecified"}
            where["region"] = m["region"] or "unspecified"
            outliers.append(
                _outlier(m, include_phi, **where, quantity=q, value=v, why="; ".join(why))
            )
    return entry


def _audit_flags(rows: list[dict], outliers: list[dict], include_phi: bool) -> list[str]:
    """Stored values treated as unknown; outliers shown by pseudonym despite --include-phi."""
    flags = [
        f"procedure {r['id']}: stored {', '.join(r['invalid'])} not a finite number from 0 "
        "to its plausible bound (dose.units.PLAUSIBLE_MAX); treated as unknown"
        for r in rows
        if r["invalid"]
    ]
    bare = [o for o in outliers if not (o.get("accession_number") or o.get("study_date"))]
    if include_phi and bare:
        flags.append(
            f"{len(bare)} outlier value(s) of procedures ingested without --include-phi: "
            "no accession number or study date kept, shown by pseudonym"
        )
    return flags


def audit(reg: Registry, drl: dict | None = None, *, include_phi: bool = False) -> dict:
    """Per procedure type and region: counts, median and 75th percentile, DRL, outliers.

    With ``include_phi`` outliers carry their accession number and study date and months
    may be calendar months (refused when the registry keeps none of them).
    """
    from .monthly import monthly_view

    rows = reg.rows()
    if not rows:
        raise DoseInputError(f"{reg.path}: the registry holds no procedures; nothing to audit")
    if include_phi:
        _check_phi(reg, rows)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(
            (r["procedure_type"] or "unspecified", r["region"] or "unspecified"), []
        ).append(r)
    out_groups, outliers = [], []
    for (proc, region), members in sorted(groups.items()):
        levels = (drl or {}).get((proc, region), {})
        g = {
            "procedure": proc,
            "region": region,
            "count": len(members),
            "us_guided": sum(m["us_guided"] for m in members),
        }
        for q in QUANTITIES:
            g[q] = _group_figure(members, q, levels, outliers, include_phi)
        out_groups.append(g)
    from .cohorts import compare_cohorts

    flags = _audit_flags(rows, outliers, include_phi)
    return {
        "schema": "hybridfuse.audit/1",
        "include_phi": include_phi,
        "procedures": len(rows),
        "flags": flags,
        "groups": out_groups,
        "cohorts": compare_cohorts(rows, QUANTITIES, drl),
        "monthly": monthly_view(
            rows,
            QUANTITIES,
            include_phi=include_phi,
            missing=reg.missing(("month_relative", "month_real")),
        ),
        "outliers": outliers,
        "conflicts": reg.conflicts(),
    }


def write_audit(result: dict, reg: Registry, out_dir: str | os.PathLike) -> list[Path]:
    """audit.json, audit.csv, cohorts.csv, monthly.csv and audit.html, atomically."""
    from .labels import csv_number
    from .monthly import monthly_csv
    from .report import finite_json, write_together

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = ["procedure", "region", "count", "us_guided"]
    for q in QUANTITIES:
        header += [f"{q}_median", f"{q}_p75", f"{q}_drl", f"{q}_median_over_drl"]
    w.writerow(header)
    for g in result["groups"]:
        row = [g["procedure"], g["region"], g["count"], g["us_guided"]]
        for q in QUANTITIES:
            e = g[q]
            row += [
                e.get("median", ""),
                e.get("p75", ""),
                e.get("drl", ""),
                e.get("median_over_drl", ""),
            ]
        w.writerow([csv_cell(csv_number(v) if isinstance(v, float) else v) for v in row])
    text = finite_json(result, flags=result.setdefault("flags", []))
    return write_together(
        out_dir,
        [
            ("audit.json", text),
            ("audit.csv", buf.getvalue()),
            ("cohorts.csv", _cohorts_csv(result["cohorts"])),
            ("monthly.csv", monthly_csv(result["monthly"], QUANTITIES)),
            ("audit.html", _audit_html(json.loads(text), reg)),
        ],
    )


_COHORT_COLUMNS = (
    "n_fluoro_only",
    "n_us_guided",
    "median_fluoro_only",
    "median_us_guided",
    "difference",
    "difference_interval_95",
    "mann_whitney_p",
    "drl",
    "fluoro_only_median_over_drl",
    "us_guided_median_over_drl",
)


def _cohorts_csv(cohorts: dict) -> str:
    """One row per group (or group and unit) and quantity; floats to 12 digits."""
    from .labels import csv_number

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["procedure", "region", "unit", "quantity", *_COHORT_COLUMNS])
    for g in cohorts["by_group"] + cohorts["by_unit"]:
        for q in QUANTITIES:
            e = g[q]
            cells = []
            for c in _COHORT_COLUMNS:
                v = e.get(c)
                if isinstance(v, list):
                    v = " to ".join(csv_number(x) for x in v)
                cells.append("" if v is None else csv_number(v) if isinstance(v, float) else v)
            w.writerow(
                [csv_cell(v) for v in (g["procedure"], g["region"], g.get("unit", "all"), q)]
                + cells
            )
    return buf.getvalue()


def _cohort_rows_html(cohorts: dict) -> str:
    import html

    from .labels import label, number

    rows = []
    for g in cohorts["by_group"] + cohorts["by_unit"]:
        for q in QUANTITIES:
            e = g[q]
            diff = (
                f"{number(e['difference'])} ({number(e['difference_interval_95'][0])} to "
                f"{number(e['difference_interval_95'][1])}); p = {number(e['mann_whitney_p'], 2)}"
                if "difference" in e
                else e.get("reason", "")
            )
            cells = (
                g["procedure"],
                g["region"],
                g.get("unit", "all units"),
                label(q),
                f"{e['n_fluoro_only']} / {e['n_us_guided']}",
                f"{number(e['median_fluoro_only'])} / {number(e['median_us_guided'])}",
                diff,
                _drl_ratios(e),
            )
            rows.append(
                "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"
            )
    return "".join(rows)


def _drl_ratios(e: dict) -> str:
    """Each cohort's median over the DRL, or a dash without a DRL."""
    from .labels import number

    if e.get("drl") is None:
        return "-"
    return (
        f"{number(e.get('fluoro_only_median_over_drl'), 2)} / "
        f"{number(e.get('us_guided_median_over_drl'), 2)} (DRL {number(e['drl'])})"
    )


def _cell(entry: dict) -> str:
    def fmt(v):
        return "-" if v is None else f"{v:.4g}"

    drl = f" (DRL {fmt(entry['drl'])})" if "drl" in entry else ""
    return f"<td>{fmt(entry.get('median'))} / {fmt(entry.get('p75'))}{drl}</td>"


def _cohort_boxes(ax, rows, groups, q) -> None:
    """Per group, a box for the fluoroscopy-only and one for the ultrasound-guided cohort."""
    for guided, shift, colour in ((0, -0.2, "#d62728"), (1, 0.2, "#2ca02c")):
        data = [
            [
                r[q]
                for r in rows
                if r[q] is not None
                and r["us_guided"] == guided
                and (r["procedure_type"] or "unspecified") == g["procedure"]
                and (r["region"] or "unspecified") == g["region"]
            ]
            or [np.nan]
            for g in groups
        ]
        pos = [i + shift for i in range(1, len(groups) + 1)]
        box = ax.boxplot(data, positions=pos, widths=0.35, patch_artist=True)
        for patch in box["boxes"]:
            patch.set_facecolor(colour)
            patch.set_alpha(0.5)


def _plot_text(text) -> str:
    """Registry text as a plot label, escaped.

    Control characters have no glyph; ``$...$`` would be parsed as mathematics by
    matplotlib and fail on bad markup.
    """
    return terminal_text(str(text)).replace("$", r"\$")


def _phi_cells(outlier: dict) -> str:
    """Accession number and study date cells ("not kept" where ingested without PHI)."""
    import html

    return "".join(
        f"<td>{html.escape(str(outlier.get(k) or 'not kept'))}</td>"
        for k in ("accession_number", "study_date")
    )


def _distributions_png(result: dict, rows: list[dict]) -> str:
    """Base64 PNG: per figure and group, a box per cohort, and the DRL where given."""
    import base64

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt

    from .labels import label

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), dpi=100)
    labels = [f"{_plot_text(g['procedure'])}\n{_plot_text(g['region'])}" for g in result["groups"]]
    for ax, q in zip(axes, QUANTITIES, strict=True):
        _cohort_boxes(ax, rows, result["groups"], q)
        ax.set_xticks(range(1, len(labels) + 1), labels)
        for i, g in enumerate(result["groups"], start=1):
            if "drl" in g[q]:
                ax.hlines(g[q]["drl"], i - 0.4, i + 0.4, colors="red", label="DRL")
        ax.set_title(label(q), fontsize=9)
        ax.tick_params(labelsize=7)
    handles = [
        matplotlib.patches.Patch(color=c, label=n)
        for n, c in (("fluoroscopy-only", "#d62728"), ("ultrasound-guided", "#2ca02c"))
    ]
    axes[0].legend(handles=handles, fontsize=7, loc="upper left")
    fig.tight_layout()
    b = io.BytesIO()
    fig.savefig(b, format="png")
    plt.close(fig)
    return base64.b64encode(b.getvalue()).decode()


def _audit_html(result: dict, reg: Registry) -> str:
    import html

    from .monthly import monthly_html

    png = _distributions_png(result, reg.rows())
    grows = "".join(
        f"<tr><td>{html.escape(g['procedure'])}</td><td>{html.escape(g['region'])}</td>"
        f"<td>{g['count']}</td>" + "".join(_cell(g[q]) for q in QUANTITIES) + "</tr>"
        for g in result["groups"]
    )
    phi = result.get("include_phi", False)
    orows = "".join(
        f"<tr><td>{o['id']}</td><td>{html.escape(str(o['pseudonym']))}</td>"
        + (_phi_cells(o) if phi else "")
        + f"<td>{html.escape(o['quantity'])}</td><td>{o['value']:.4g}</td>"
        f"<td>{html.escape(o['why'])}</td></tr>"
        for o in result["outliers"]
    ) or (f"<tr><td colspan={7 if phi else 5}>none</td></tr>")
    phi_head = "<th>accession number</th><th>study date</th>" if phi else ""
    flags = "".join(f"<li>{html.escape(f)}</li>" for f in result["flags"])
    flags = f"<h2>Check first</h2><ul>{flags}</ul>" if flags else ""
    crows = "".join(
        f"<li>{html.escape(c['sop_instance_uid'] or '')}: {html.escape(c['reason'])}</li>"
        for c in result["conflicts"]
    ) or ("<li>none</li>")
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>Dose audit</title><style>body{{font-family:sans-serif;max-width:64em;margin:1em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:.2em .5em;font-size:.9em}}
img{{max-width:100%}}</style></head><body>
<h1>Dose audit</h1>{flags}<p>{result["procedures"]} procedures. Median / 75th percentile per
group.{" Contains patient data (--include-phi)." if phi else ""}</p>
<img alt="distributions per group" src="data:image/png;base64,{png}">
<table><tr><th>procedure</th><th>region</th><th>n</th><th>DAP (Gy·cm²)</th><th>Ka,r (mGy)</th>
<th>fluoro time (s)</th></tr>{grows}</table>
<h2>Ultrasound-guided against fluoroscopy-only</h2><p>{html.escape(result["cohorts"]["note"])}</p>
<table><tr><th>procedure</th><th>region</th><th>unit</th><th>quantity</th>
<th>n fluoroscopy-only / ultrasound-guided</th><th>medians</th>
<th>difference (95 % interval); rank test</th>
<th>median / DRL, fluoroscopy-only / ultrasound-guided</th></tr>
{_cohort_rows_html(result["cohorts"])}</table>
{monthly_html(result["monthly"], QUANTITIES)}
<h2>Outliers</h2><table><tr><th>id</th><th>pseudonym</th>{phi_head}<th>quantity</th>
<th>value</th><th>why</th></tr>{orows}</table>
<h2>UID conflicts</h2><ul>{crows}</ul></body></html>
"""

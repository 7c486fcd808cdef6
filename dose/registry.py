"""A local dose registry (SQLite, embedded, no server) and the audit built on it.

Ingestion is idempotent: a procedure is identified by the sha256 of the dose report it
came from, so ingesting the same report twice changes nothing. A different report that
reuses a SOP Instance UID already in the registry is a distinct procedure: it is stored,
and the conflict is recorded and reported, never silently dropped. Patients appear only
as a pseudonym (a salted hash whose salt is random per registry).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import os
import secrets
import sqlite3
from pathlib import Path

import numpy as np

from .errors import DoseInputError

__all__ = ["Registry", "audit", "load_drl", "write_audit"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS procedures (
    id INTEGER PRIMARY KEY,
    report_sha256 TEXT NOT NULL UNIQUE,
    sop_instance_uid TEXT,
    study_instance_uid TEXT,
    pseudonym TEXT,
    device TEXT,
    procedure_type TEXT,
    region TEXT,
    start TEXT,
    us_guided INTEGER NOT NULL,
    dap_total_gy_cm2 REAL,
    ka_r_total_mgy REAL,
    fluoro_time_s REAL,
    n_events INTEGER,
    saved_dap_gy_cm2 REAL,
    source_path TEXT,
    ingested_at TEXT NOT NULL,
    dose_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    procedure_id INTEGER NOT NULL REFERENCES procedures(id),
    event_uid TEXT, start TEXT, type TEXT, dap_gy_cm2 REAL, ka_r_mgy REAL,
    duration_s REAL, pulses REAL
);
CREATE TABLE IF NOT EXISTS conflicts (
    id INTEGER PRIMARY KEY,
    sop_instance_uid TEXT, existing_sha256 TEXT, new_sha256 TEXT, reason TEXT, at TEXT
);
"""

QUANTITIES = ("dap_total_gy_cm2", "ka_r_total_mgy", "fluoro_time_s")


class Registry:
    """A registry file; create it on first use."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path)
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise DoseInputError(f"{self.path}: not a hybridfuse registry ({exc})") from exc
        row = self.db.execute("SELECT value FROM meta WHERE key='salt'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('salt', ?)", (secrets.token_hex(16),))
            self.db.execute("INSERT INTO meta VALUES ('schema', 'hybridfuse.registry/1')")
            self.db.commit()
            row = self.db.execute("SELECT value FROM meta WHERE key='salt'").fetchone()
        self._salt = row[0]

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def pseudonym(self, patient_id: str | None) -> str | None:
        """Salted hash of a patient ID (the ID itself is never stored)."""
        if not patient_id:
            return None
        return hashlib.sha256((self._salt + patient_id).encode()).hexdigest()[:16]

    def ingest(self, report: dict, events, patient_id: str | None = None) -> dict:
        """Add one report (a ``build_dose_report`` record); returns what happened."""
        inp = report["inputs"][0]
        sha, sop = inp["sha256"], inp.get("sop_instance_uid")
        existing = self.db.execute(
            "SELECT id FROM procedures WHERE report_sha256=?", (sha,)
        ).fetchone()
        if existing:
            return {"status": "already ingested", "id": existing[0], "sha256": sha}
        result = {"status": "ingested", "sha256": sha}
        if sop:
            same_uid = self.db.execute(
                "SELECT report_sha256 FROM procedures WHERE sop_instance_uid=?", (sop,)
            ).fetchone()
            if same_uid:
                reason = (
                    "SOP Instance UID reused by a different report (content differs); "
                    "stored as a distinct procedure"
                )
                self.db.execute(
                    "INSERT INTO conflicts (sop_instance_uid, existing_sha256, new_sha256, "
                    "reason, at) VALUES (?,?,?,?,?)",
                    (sop, same_uid[0], sha, reason, _dt.datetime.now().isoformat()),
                )
                result["conflict"] = reason
        d = report["delivered"]
        cf = (report.get("saved") or {}).get("counterfactual")
        starts = [e.start for e in events if e.start is not None]
        record = {k: v for k, v in report.items() if not k.startswith("_") and k != "patient"}
        cur = self.db.execute(
            "INSERT INTO procedures (report_sha256, sop_instance_uid, study_instance_uid, "
            "pseudonym, device, procedure_type, region, start, us_guided, dap_total_gy_cm2, "
            "ka_r_total_mgy, fluoro_time_s, n_events, saved_dap_gy_cm2, source_path, "
            "ingested_at, dose_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                sha,
                sop,
                report.get("_study_uid"),
                self.pseudonym(patient_id),
                " ".join(v for v in report["device"].values() if v),
                report.get("procedure"),
                report.get("region"),
                min(starts).isoformat() if starts else None,
                int(cf is not None),
                d.get("dap_total_gy_cm2"),
                d.get("ka_r_total_mgy"),
                d.get("fluoro_time_s"),
                d.get("n_events"),
                cf["point"].get("dap_gy_cm2") if cf else None,
                inp["path"],
                _dt.datetime.now().isoformat(),
                json.dumps(record, default=lambda v: v.item() if hasattr(v, "item") else str(v)),
            ),
        )
        pid = cur.lastrowid
        self.db.executemany(
            "INSERT INTO events VALUES (?,?,?,?,?,?,?,?)",
            [
                (
                    pid,
                    e.uid,
                    e.start.isoformat() if e.start else None,
                    e.event_type,
                    e.dap_gy_cm2,
                    e.dose_rp_mgy,
                    e.duration_s,
                    e.number_of_pulses,
                )
                for e in events
            ],
        )
        self.db.commit()
        result["id"] = pid
        return result

    def baseline_values(self, procedure_type: str) -> dict[str, list[float]]:
        """Values of fluoroscopy-only procedures of one type, for the baseline method."""
        rows = self.db.execute(
            "SELECT dap_total_gy_cm2, ka_r_total_mgy, fluoro_time_s FROM procedures "
            "WHERE procedure_type=? AND us_guided=0",
            (procedure_type,),
        ).fetchall()
        out: dict[str, list[float]] = {"dap_gy_cm2": [], "ka_r_mgy": [], "fluoro_time_s": []}
        for dap, kar, ft in rows:
            for key, v in (("dap_gy_cm2", dap), ("ka_r_mgy", kar), ("fluoro_time_s", ft)):
                if v is not None:
                    out[key].append(float(v))
        return out

    def rows(self) -> list[dict]:
        """Every procedure as a dict (no stored report text)."""
        cur = self.db.execute(
            "SELECT id, pseudonym, device, procedure_type, region, start, us_guided, "
            "dap_total_gy_cm2, ka_r_total_mgy, fluoro_time_s, saved_dap_gy_cm2 FROM procedures "
            "ORDER BY id"
        )
        names = [c[0] for c in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def conflicts(self) -> list[dict]:
        """Recorded UID conflicts."""
        cur = self.db.execute(
            "SELECT sop_instance_uid, existing_sha256, new_sha256, reason, "
            "at FROM conflicts ORDER BY id"
        )
        names = [c[0] for c in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def load_drl(path: str | os.PathLike) -> dict[tuple[str, str], dict]:
    """Read diagnostic reference levels.

    CSV columns ``procedure,region,dap_gy_cm2,ka_r_mgy,fluoro_time_s,source``; empty cells
    are allowed.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DoseInputError(f"{path}: cannot read the DRL table ({exc})") from exc
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
        levels["source"] = r.get("source", "")
        out[(r["procedure"], r["region"])] = levels
    return out


def audit(reg: Registry, drl: dict | None = None) -> dict:
    """Per procedure type and region: counts, median and 75th percentile, DRL, outliers."""
    rows = reg.rows()
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(
            (r["procedure_type"] or "unspecified", r["region"] or "unspecified"), []
        ).append(r)
    out_groups, outliers = [], []
    for (proc, region), members in sorted(groups.items()):
        g = {
            "procedure": proc,
            "region": region,
            "count": len(members),
            "us_guided": sum(m["us_guided"] for m in members),
        }
        levels = (drl or {}).get((proc, region), {})
        for q in QUANTITIES:
            vals = np.array([m[q] for m in members if m[q] is not None], float)
            if len(vals) == 0:
                g[q] = {"n": 0}
                continue
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
            g[q] = entry
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
                    outliers.append(
                        {
                            "id": m["id"],
                            "pseudonym": m["pseudonym"],
                            "procedure": proc,
                            "region": region,
                            "quantity": q,
                            "value": v,
                            "why": "; ".join(why),
                        }
                    )
        out_groups.append(g)
    return {
        "schema": "hybridfuse.audit/1",
        "procedures": len(rows),
        "groups": out_groups,
        "outliers": outliers,
        "conflicts": reg.conflicts(),
    }


def write_audit(result: dict, reg: Registry, out_dir: str | os.PathLike) -> list[Path]:
    """audit.json, audit.csv and audit.html (with distribution plots), atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
        w.writerow(row)
    files = [
        ("audit.json", json.dumps(result, indent=1)),
        ("audit.csv", buf.getvalue()),
        ("audit.html", _audit_html(result, reg)),
    ]
    written = []
    for name, text in files:
        tmp = out / f".{name}.partial"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)
        written.append(out / name)
    return written


def _cell(entry: dict) -> str:
    med = entry.get("median", float("nan"))
    p75 = entry.get("p75", float("nan"))
    drl = f" (DRL {entry['drl']:.4g})" if "drl" in entry else ""
    return f"<td>{med:.4g} / {p75:.4g}{drl}</td>"


def _audit_html(result: dict, reg: Registry) -> str:
    import base64
    import html

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = reg.rows()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), dpi=100)
    labels = [f"{g['procedure']}\n{g['region']}" for g in result["groups"]]
    for ax, q, unit in zip(axes, QUANTITIES, ("Gy·cm²", "mGy", "s"), strict=True):
        data = [
            [
                r[q]
                for r in rows
                if r[q] is not None
                and (r["procedure_type"] or "unspecified") == g["procedure"]
                and (r["region"] or "unspecified") == g["region"]
            ]
            for g in result["groups"]
        ]
        ax.boxplot([d if d else [np.nan] for d in data], tick_labels=labels)
        for i, g in enumerate(result["groups"], start=1):
            if "drl" in g[q]:
                ax.hlines(g[q]["drl"], i - 0.4, i + 0.4, colors="red", label="DRL")
        ax.set_title(f"{q} ({unit})", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    b = io.BytesIO()
    fig.savefig(b, format="png")
    plt.close(fig)
    png = base64.b64encode(b.getvalue()).decode()
    grows = "".join(
        f"<tr><td>{html.escape(g['procedure'])}</td><td>{html.escape(g['region'])}</td>"
        f"<td>{g['count']}</td>" + "".join(_cell(g[q]) for q in QUANTITIES) + "</tr>"
        for g in result["groups"]
    )
    orows = "".join(
        f"<tr><td>{o['id']}</td><td>{html.escape(str(o['pseudonym']))}</td>"
        f"<td>{html.escape(o['quantity'])}</td><td>{o['value']:.4g}</td>"
        f"<td>{html.escape(o['why'])}</td></tr>"
        for o in result["outliers"]
    ) or ("<tr><td colspan=5>none</td></tr>")
    crows = "".join(
        f"<li>{html.escape(c['sop_instance_uid'] or '')}: {html.escape(c['reason'])}</li>"
        for c in result["conflicts"]
    ) or ("<li>none</li>")
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>Dose audit</title><style>body{{font-family:sans-serif;max-width:64em;margin:1em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:.2em .5em;font-size:.9em}}
img{{max-width:100%}}</style></head><body>
<h1>Dose audit</h1><p>{result["procedures"]} procedures. Median / 75th percentile per group.</p>
<img alt="distributions per group" src="data:image/png;base64,{png}">
<table><tr><th>procedure</th><th>region</th><th>n</th><th>DAP (Gy·cm²)</th><th>Ka,r (mGy)</th>
<th>fluoro time (s)</th></tr>{grows}</table>
<h2>Outliers</h2><table><tr><th>id</th><th>pseudonym</th><th>quantity</th><th>value</th>
<th>why</th></tr>{orows}</table>
<h2>UID conflicts</h2><ul>{crows}</ul></body></html>
"""

"""The figures the verdict's plausibility guards are calibrated on: every answer kept whole.

Run from the repository root:
    python -m benchmarks.guard_margins run --set tuning --n 40
        --modes auto,start,landmarks,coarse --cache FOLDER --json OUT.json
    python -m benchmarks.guard_margins table OUT.json [OUT2.json ...]

``run`` is :mod:`benchmarks.family`'s trial (one ``hybridfuse register`` process with
``--accept-unverified``, the same modes, starts and clicks, the same right/refused/wrong),
but each row keeps the answer's matrix and its whole ``quality`` record, so that a guard
can be measured on answers computed before it existed. ``table`` prints, per mode and
outcome, the largest perspective figure (:mod:`registration.plausible`, computed from the
stored matrix and the case's files where the row predates it) and ``predicted_tre_mm``:
what each limit must stay above for the right answers to pass. Calibrate on the tuning
set only (docs/registration-method.md, *Plausible perspective*).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from benchmarks._header import print_header
from benchmarks.family import MODES, family_cases, judge, register_once


def run_trial(case: Path, truth: dict, mode: str, seed: int) -> dict:
    """One ``register`` run with its outcome, TRE, matrix and ``quality`` record."""
    row, result = register_once(case, truth, mode, seed)
    if result is None:
        return row
    outcome, tre = judge(row, result, truth)
    h, quality = result["moving_to_fixed_pixel"], result.get("quality") or {}
    return {**row, "outcome": outcome, "tre_mm": round(tre, 4), "h": h, "quality": quality}


def run(args) -> list[dict]:
    """Every mode on every case of the set, one at a time."""
    modes = [m for m in args.modes.split(",") if m]
    rows = []
    for name, path, make in family_cases(args.set, args.n, args.cache, args.skip):
        make()
        truth = json.loads((path / "truth.json").read_text())
        seed = int(truth.get("case", 0))
        for mode in modes:
            row = {"case": name, "mode": mode, **run_trial(path, truth, mode, seed)}
            print(json.dumps({k: row.get(k) for k in ("case", "mode", "outcome", "tre_mm")}))
            rows.append(row)
            args.json.write_text(json.dumps(rows))  # a stopped run keeps what it measured
    return rows


def perspective(row: dict, cache: Path | None) -> float | None:
    """The answer's ``depth_slope``: recorded, or computed as ``register`` would from the case.

    Rows run before the guard existed lack it; their matrix and the case's files give it
    (the fluoroscopy's SOD, the calibration, the ultrasound field).
    """
    check = (row.get("quality") or {}).get("verification") or {}
    if "perspective" in check:
        return check["perspective"]["depth_slope"]
    if cache is None or "h" not in row:
        return None
    return _figures(cache / row["case"], np.asarray(row["h"], float))["depth_slope"]


def _figures(case: Path, h: np.ndarray) -> dict:
    """:func:`registration.plausible.perspective_figures` of ``h`` on a family case."""
    from hybridfuse.fusion import read_image
    from hybridfuse.fusion.coregister import expected_scale, expected_scale_xy
    from hybridfuse.registration.plausible import perspective_figures
    from hybridfuse.registration.preprocess import mask_extent

    fixed, moving = read_image(case / "fluoro.dcm"), read_image(case / "us.dcm")
    x0, x1, y0, y1, cx, cy = mask_extent(moving.mask)[:6]
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
    scale_xy, iso = expected_scale_xy(fixed, moving), expected_scale(fixed, moving)[1]
    return perspective_figures(h, (cx, cy), corners, scale_xy, iso, fixed.xray.sod_mm)


def table(rows: list[dict], cache: Path | None) -> None:
    """Per mode and outcome: the largest depth slope and predicted TRE, the largest TRE."""
    print("| mode | outcome | n | depth_slope max | predicted_tre_mm max | TRE max (mm) |")
    print("|---|---|---|---|---|---|")
    for mode in MODES:
        for outcome in ("right", "wrong", "refused"):
            mine = [r for r in rows if r["mode"] == mode and r["outcome"] == outcome]
            if not mine:
                continue
            slopes = [s for r in mine if (s := perspective(r, cache)) is not None]
            preds = [p for r in mine if (p := (r.get("quality") or {}).get("predicted_tre_mm"))]
            tres = [r["tre_mm"] for r in mine if r.get("tre_mm") is not None]
            cells = [f"{max(v):.3f}" if v else "–" for v in (slopes, preds, tres)]
            print(f"| {mode} | {outcome} | {len(mine)} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--set", choices=["tuning", "report"], required=True)
    r.add_argument("--n", type=int, default=40)
    r.add_argument("--skip", type=int, default=0)
    r.add_argument("--modes", default="auto,start,landmarks,coarse")
    r.add_argument("--cache", type=Path, required=True)
    r.add_argument("--json", type=Path, required=True)
    t = sub.add_parser("table")
    t.add_argument("json", type=Path, nargs="+")
    t.add_argument("--cache", type=Path, help="the cases, to compute figures rows lack")
    args = ap.parse_args()
    print_header()
    if args.command == "run":
        rows = run(args)
    else:
        rows = [row for path in args.json for row in json.loads(path.read_text())]
    table(rows, args.cache)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()

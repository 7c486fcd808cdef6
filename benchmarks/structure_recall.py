"""Where automatic correspondences lose recall: structures in the truth against detected ones.

Run from the repository root:
    python -m benchmarks.structure_recall --set tuning --n 60
        [--cache /tmp/famcache] [--family-json rows.json] [--json OUT]

Per phantom-family case: the beads the truth puts in both images (``landmarks_exact``),
those the ultrasound and the fluoroscopy detectors find within ``HIT_MM`` of them, the
false detections, the needle (drawn mode; detected in each image; tip error where the tip
lies in the plane) and the items a match could use (beads found in both + the needle seen
in both). ``--family-json`` adds each case's ``auto`` and ``start`` outcome and reason from
a ``benchmarks.family --json`` run. Detection is run as ``register --init auto`` runs it
(:func:`registration.evidence.detect_structures` on the CLI's decoded frames).

Only tuning seeds may be used to choose anything (docs/phantom-family.md).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks._header import print_header

#: A detection within this (mm) of a true centre found it: the matcher's inlier distance.
HIT_MM = 1.5


def _hits(found_xy: np.ndarray, true_xy: np.ndarray, to_mm: np.ndarray) -> tuple[int, int]:
    """(true points found, detections matching no true point) within ``HIT_MM``."""
    if len(true_xy) == 0 or len(found_xy) == 0:
        return 0, len(found_xy)
    d = np.linalg.norm((found_xy[:, None, :] - true_xy[None]) * to_mm, axis=2)
    return int(np.sum(d.min(axis=0) <= HIT_MM)), int(np.sum(d.min(axis=1) > HIT_MM))


def _tip_error_mm(needle, true_xy, to_mm) -> float | None:
    """Distance (mm) from the true tip to the detected tip (either end when not known)."""
    if needle is None or true_xy is None:
        return None
    ends = [needle.tip_xy] if needle.tip_known else [needle.tip_xy, needle.tail_xy]
    return float(min(np.linalg.norm((np.asarray(e) - true_xy) * to_mm) for e in ends))


def case_row(case: Path) -> dict:
    """Truth against detection for one case folder."""
    from hybridfuse.fusion.io import read_image
    from hybridfuse.registration.evidence import detect_structures

    truth = json.loads((case / "truth.json").read_text())
    fixed = read_image(case / "fluoro.dcm").require_min_size()
    moving = read_image(case / "us.dcm")
    area = moving.imaged_area
    s = detect_structures(
        fixed.gray(0),
        moving.gray(0),
        fixed_spacing_mm=fixed.xray.isocenter_spacing_mm,
        moving_spacing_mm=moving.pixel_spacing_mm,
        fixed_mask=fixed.mask,
        moving_mask=moving.mask,
        beam_apex_xy=area.apex_xy if area is not None else None,
    )
    rows = truth.get("landmarks_exact", [])
    beads = [r for r in rows if r["name"].startswith("bead")]
    tip = next((r for r in rows if r["name"] == "needle_tip"), None)
    true_m = np.array([r["moving_xy"] for r in beads]).reshape(-1, 2)
    true_f = np.array([r["fixed_xy"] for r in beads]).reshape(-1, 2)
    us_hit, us_false = _hits(s.moving_beads.xy, true_m, s.moving_mm)
    fl_hit, fl_false = _hits(s.fixed_beads.xy, true_f, s.fixed_mm)
    both = 0
    if len(true_m):
        dm = np.linalg.norm((s.moving_beads.xy[:, None] - true_m[None]) * s.moving_mm, axis=2)
        df = np.linalg.norm((s.fixed_beads.xy[:, None] - true_f[None]) * s.fixed_mm, axis=2)
        in_m = dm.min(axis=0) <= HIT_MM if len(dm) else np.zeros(len(true_m), bool)
        in_f = df.min(axis=0) <= HIT_MM if len(df) else np.zeros(len(true_f), bool)
        both = int(np.sum(in_m & in_f))
    p = truth["params"]
    match = _auto_match(s, moving.mask, truth)
    needle_both = s.moving_needle is not None and s.fixed_needle is not None
    return {
        "case": case.name,
        "probe": p["probe"],
        "beads_drawn": int(p["n_beads"]),
        "beads_in_both": len(beads),
        "us_found": us_hit,
        "us_false": us_false,
        "fl_found": fl_hit,
        "fl_false": fl_false,
        "beads_found_both": both,
        "needle": p["needle"],
        "needle_us": s.moving_needle is not None,
        "needle_fl": s.fixed_needle is not None,
        "tip_err_us_mm": _tip_error_mm(
            s.moving_needle, None if tip is None else np.array(tip["moving_xy"]), s.moving_mm
        ),
        "tip_err_fl_mm": _tip_error_mm(
            s.fixed_needle, None if tip is None else np.array(tip["fixed_xy"]), s.fixed_mm
        ),
        "matchable_items": both + int(needle_both),
        **match,
    }


def _auto_match(s, moving_mask, truth: dict) -> dict:
    """The automatic match on these detections: items, refusal class, pairs right or not."""
    from hybridfuse.registration.correspond import NoFeaturesError
    from hybridfuse.registration.errors import RegistrationError
    from hybridfuse.registration.initial import match_structures

    try:
        found = match_structures(s, moving_mask)
    except NoFeaturesError:
        return {"match": "too few structures", "match_items": 0}
    except RegistrationError as exc:
        text = str(exc)
        kind = "ambiguous" if "two different ways" in text else "no consensus"
        return {"match": "collinear" if "line" in text else kind, "match_items": 0}
    lm = found.landmarks
    true_h = np.asarray(truth["moving_to_fixed_pixel"], float)
    mapped = np.c_[lm.moving_xy, np.ones(len(lm.moving_xy))] @ true_h.T
    err = np.linalg.norm(mapped[:, :2] / mapped[:, 2:] - lm.fixed_xy, axis=1)
    err_mm = err * truth["mm_per_fixed_pixel_at_isocenter"]
    return {
        "match": "matched",
        "match_items": found.match.items,
        "pairs_wrong": int(np.sum(err_mm > 3.0)),
        "pair_err_mm_max": round(float(err_mm.max()), 2) if len(err_mm) else None,
    }


def _reason(row: dict | None) -> str:
    """A short class of a family row's outcome and reason."""
    if row is None:
        return "-"
    if row["outcome"] != "refused":
        return row["outcome"]
    why = row.get("why", "")
    for key, label in (
        ("bead", "too few beads"),
        ("match in two", "ambiguous"),
        ("no placement", "no consensus"),
        ("lie along a line", "collinear"),
        ("lie nearly in a line", "collinear"),
        ("only", "< 5 items"),
        ("restart", "restarts disagree"),
        ("mirror", "mirror"),
        ("hop", "hop"),
        ("second metric", "metrics disagree"),
        ("MI", "metrics disagree"),
    ):
        if key in why:
            return label
    return "other: " + why[:60]


def main() -> None:
    """Print the per-case table and the totals."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="tuning", choices=("tuning", "report"))
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/hf-famcache"))
    ap.add_argument("--family-json", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from hybridfuse.testdata.phantom.family import REPORT_SEEDS, TUNING_SEEDS, family_case

    seeds = list(TUNING_SEEDS if args.set == "tuning" else REPORT_SEEDS)[: args.n]
    family = {}
    if args.family_json:
        data = json.loads(args.family_json.read_text())
        for r in data["rows"] if isinstance(data, dict) else data:
            family[(r["case"], r["mode"])] = r
    print_header()
    rows = []
    for seed in seeds:
        folder = args.cache / f"{args.set}-{seed}"
        if not (folder / "truth.json").is_file():
            family_case(seed, folder, overwrite=folder.exists())
        row = case_row(folder)
        for mode in ("auto", "start"):
            row[mode] = _reason(family.get((folder.name, mode)))
        rows.append(row)
        print(json.dumps(row), flush=True)
    _totals(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def _totals(rows: list[dict]) -> None:
    """Sums and the breakdown by matchable items."""
    keys = ("beads_drawn", "beads_in_both", "us_found", "us_false", "fl_found", "fl_false")
    keys += ("beads_found_both",)
    print("\n| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    print("| " + " | ".join(str(sum(r[k] for r in rows)) for k in keys) + " |")
    print("\nautomatic match: " + str(dict(Counter((r["match"], r["match_items"]) for r in rows))))
    wrong = sum(r.get("pairs_wrong", 0) > 0 for r in rows)
    print(f"matches with a pair > 3 mm off the truth: {wrong}")
    by_needle = Counter((r["needle"], r["needle_us"], r["needle_fl"]) for r in rows)
    print("\nneedle (mode, found in us, found in fluoro): count")
    for k, v in sorted(by_needle.items()):
        print(f"  {k}: {v}")
    print("\nmatchable items (beads found in both + needle in both) -> outcomes auto | start")
    for n in sorted({r["matchable_items"] for r in rows}):
        mine = [r for r in rows if r["matchable_items"] == n]
        a = Counter(r["auto"] for r in mine)
        s = Counter(r["start"] for r in mine)
        print(f"  {n}: {len(mine)} cases; auto {dict(a)}; start {dict(s)}")


if __name__ == "__main__":
    main()

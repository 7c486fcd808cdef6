"""Can a stiffer model check clicks that the requested model fits exactly? (issue #15)

Three clicks fix an affine map exactly, four leave an affine fit two coordinates of
redundancy. The idea under test: fit a model with fewer parameters (3 clicks: a
similarity, with or without reflection, leaves 2 coordinates; 4 clicks: an affine leaves
2) and accept the richer answer when the stiffer model's residuals are as small as the
click noise makes them, since a mis-click would show there. Two things can defeat it:
the stiffer model's own error on the true map (a tilted plane is not a similarity), and
mis-clicks in the directions the stiffer model absorbs.

Run from the repository root (family cases are written to ``--cache`` unless there):
    python -m benchmarks.exact_fit_check --set tuning --n 40 --cache DIR

For every case with 3 or 4 clicks (the generator's exact points, ``truth.json``), it draws
``--draws`` honest sets (0.5 px noise on both sides, as the family's ``landmarks.csv``) and
as many mis-clicked ones (one fluoroscopy point moved 10, 15 or 20 px in a random direction
on top of that noise), and prints: the stiffer model's error on the exact points, the
residual statistic (RMS px) of honest sets, and for thresholds at the honest sets'
percentiles how many mis-clicks whose answer lands >= 2 mm from the truth (median over the
truth grid, as benchmarks/family.py) would pass. Only the truth files are read; no
registration runs. See docs/registration-method.md, *Few clicks*.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks._header import print_header
from benchmarks.family import RIGHT_MM, apply_h, family_cases
from hybridfuse.registration.landmarks import fit_model

#: The stiffer model that checks each click count, and the answer it would license.
CHECK = {3: ("similarity", "affine"), 4: ("affine", "affine")}
MISCLICK_PX = (10.0, 15.0, 20.0)
CLICK_SIGMA_PX = 0.5


def stiff_residual_px(model: str, moving, fixed) -> float:
    """RMS fixed-image residual (px) of the stiffer model; a similarity may be mirrored."""
    flips = (1.0, -1.0) if model == "similarity" else (1.0,)
    best = np.inf
    for flip in flips:
        mov = np.asarray(moving, float) * [flip, 1.0]
        r = apply_h(fit_model(model, mov, fixed), mov) - fixed
        best = min(best, float(np.sqrt(np.mean(np.sum(r**2, axis=1)))))
    return best


def draw(truth: dict, rng: np.random.Generator, misclick: bool) -> tuple[float, float]:
    """One noisy (maybe mis-clicked) click set: its residual statistic and answer TRE (mm)."""
    pts = truth["landmarks_exact"]
    mov = np.array([p["moving_xy"] for p in pts]) + rng.normal(0, CLICK_SIGMA_PX, (len(pts), 2))
    fix = np.array([p["fixed_xy"] for p in pts]) + rng.normal(0, CLICK_SIGMA_PX, (len(pts), 2))
    if misclick:
        angle = rng.uniform(0, 2 * np.pi)
        fix[rng.integers(len(pts))] += rng.choice(MISCLICK_PX) * np.array(
            [np.cos(angle), np.sin(angle)]
        )
    stiff, answer = CHECK[len(pts)]
    grid = np.asarray(truth["grid_moving"], float)
    err = apply_h(fit_model(answer, mov, fix), grid) - np.asarray(truth["grid_fixed"], float)
    tre = float(np.median(np.linalg.norm(err, axis=1)) * truth["mm_per_fixed_pixel_at_isocenter"])
    return stiff_residual_px(stiff, mov, fix), tre


def case_figures(truth: dict, draws: int, seed: int) -> dict:
    """The stiffer model's error on exact points, and ``draws`` honest and mis-clicked draws."""
    pts = truth["landmarks_exact"]
    stiff = CHECK[len(pts)][0]
    exact = stiff_residual_px(
        stiff, [p["moving_xy"] for p in pts], np.array([p["fixed_xy"] for p in pts])
    )
    rng = np.random.default_rng([seed, len(pts)])
    honest = [draw(truth, rng, False)[0] for _ in range(draws)]
    bad = [draw(truth, rng, True) for _ in range(draws)]
    return {"n": len(pts), "tilt": truth["plane_tilt_deg"], "exact": exact, "honest": honest,
            "bad": bad}  # fmt: skip


def report(figs: list[dict]) -> None:
    """One table per click count."""
    for n, (stiff, answer) in CHECK.items():
        mine = [f for f in figs if f["n"] == n]
        if not mine:
            continue
        honest = np.concatenate([f["honest"] for f in mine])
        bad = np.array([b for f in mine for b in f["bad"]])
        harmful = bad[bad[:, 1] >= RIGHT_MM]
        worst_exact = max(mine, key=lambda f: f["exact"])
        print(f"\n{n} clicks ({len(mine)} cases): {stiff} checks the {answer} answer")
        print(f"- {stiff} error on the exact points: up to {worst_exact['exact']:.2f} px RMS "
              f"(plane tilt {worst_exact['tilt']:.1f} deg)")  # fmt: skip
        print(f"- mis-clicks whose answer is >= {RIGHT_MM:g} mm off: {len(harmful)}/{len(bad)}; "
              f"smallest statistic among them {harmful[:, 0].min():.2f} px")  # fmt: skip
        print("\n| threshold (honest percentile) | px | honest passing | harmful passing |")
        print("|---|---|---|---|")
        for pct in (50, 90, 99, 100):
            thr = float(np.percentile(honest, pct))
            passing = int(np.sum(harmful[:, 0] <= thr))
            print(f"| {pct} | {thr:.2f} | {np.mean(honest <= thr):.2f} | "
                  f"{passing}/{len(harmful)} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--set", choices=["tuning", "report"], default="tuning")
    ap.add_argument("--n", type=int, default=40, help="cases of the set to look at")
    ap.add_argument("--draws", type=int, default=200, help="honest and mis-clicked sets per case")
    ap.add_argument("--cache", type=Path, required=True, help="folder of generated family cases")
    args = ap.parse_args()
    print_header()
    figs = []
    for _name, folder, make in family_cases(args.set, args.n, args.cache):
        make()
        truth = json.loads((folder / "truth.json").read_text())
        if len(truth["landmarks_exact"]) in CHECK:
            figs.append(case_figures(truth, args.draws, int(truth.get("case", 0))))
    report(figs)


if __name__ == "__main__":
    main()

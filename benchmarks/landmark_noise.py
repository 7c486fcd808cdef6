"""Median TRE of landmark registration against the clicks' noise (issue #15, item 4).

Run: ``python -m benchmarks.landmark_noise --seeds 100,101,102,103 --noise 0,0.5,3 --draws 2``
(add ``--phantom-a`` for the validation cases). Seeds 100+ are the tuning set of the
click-noise estimate and of ``intensity_sigma_px``, 200+ the report set;
``../shared/validation/phantom-a`` is reported, never tuned on. Each seed is a generated
case (procedure by seed, as ``hybridfuse synth``) of which the first two lateral pairs are
used; each phantom-a case is one pair. Their true landmarks get N(0, s^2) per coordinate
added on the fixed side (s: ``--noise``, px), ``--draws`` times each, and are registered
by landmarks only, with LC2 and the landmark term in its cost (the method before
2026-12-01), with LC2 fused with the landmark fit, and both again with the fluoroscopy
clicks moved onto their beads first (``snap_to_beads_mm``, as ``hybridfuse register`` does
by default). The row "LC2 alone
from the truth" (once per pair) measures where the metric's own optimum lies: the
intensity pyramid's finest levels started at the true transform. TRE: median over a
grid of the ultrasound field (12 x 12; phantom-a: its truth's grid), mm at the isocentre.
Failures (inconsistent noisy landmarks, an edge-on result) are counted, not scored.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# benchmarks/ holds a fusion.py that would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

VALIDATION = Path(__file__).resolve().parents[2] / "shared" / "validation" / "phantom-a"
VARIANTS = {
    "landmarks only": {"metric": None, "snap_to_beads_mm": None},
    "LC2, landmark term in the cost (before)": {
        "intensity_sigma_px": None,
        "snap_to_beads_mm": None,
    },
    "LC2 fused with the landmark fit (before clicks on beads)": {"snap_to_beads_mm": None},
    "landmarks on beads only": {"metric": None},
    "LC2 fused, clicks on beads (default)": {},
}
#: The intensity-only refinement from the true transform (no search, no verification).
FROM_TRUTH = "LC2 alone from the truth"
TRUTH_OPTIONS = {
    "search": False,
    "levels": (4, 2, 1),
    "max_iterations": (30, 25, 20),
    "verify_restarts": 0,
    "accept_unverified": True,
}


@dataclass
class Pair:
    """One image pair with its truth, evaluation grid and true landmarks."""

    seed: int
    images: tuple  # fixed, moving, fixed mask, moving mask
    true_h: np.ndarray
    grid: np.ndarray
    iso: float
    landmarks: object


def own_pairs(folder: Path, seed: int) -> list[Pair]:
    """The first two lateral pairs of a generated case."""
    from hybridfuse.fusion import read_image
    from hybridfuse.fusion.coregister import read_landmarks_csv
    from hybridfuse.testdata.phantom import load_truth

    truth = load_truth(folder)
    us = read_image(folder / "us_clip.dcm")
    ys, xs = np.nonzero(us.mask)
    gx, gy = np.meshgrid(np.linspace(xs.min(), xs.max(), 12), np.linspace(ys.min(), ys.max(), 12))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    out = []
    for pair in [p for p in truth["pairs"] if not p["edge_on"]][:2]:
        fl = read_image(folder / pair["fluoro_file"])
        images = (fl.gray(pair["fluoro_frame"]), us.gray(pair["us_frame"]), fl.mask, us.mask)
        out.append(
            Pair(
                1000 * seed + pair["fluoro_frame"],
                images,
                np.asarray(pair["moving_to_fixed_pixel"]),
                grid,
                fl.xray.isocenter_spacing_mm[0],
                read_landmarks_csv(folder / pair["landmarks_csv"]),
            )
        )
    return out


def validation_pairs(folder: Path) -> list[Pair]:
    """One pair per phantom-a case (``fluoro.dcm``, ``us.dcm``, its truth and landmarks)."""
    from hybridfuse.fusion import read_image
    from hybridfuse.fusion.coregister import read_landmarks_csv

    out = []
    for i, case in enumerate(sorted(p for p in folder.iterdir() if p.is_dir())):
        truth = json.loads((case / "truth.json").read_text(encoding="utf-8"))
        fl, us = read_image(case / "fluoro.dcm"), read_image(case / "us.dcm")
        fmask = np.ones(fl.shape, bool) if fl.mask is None else fl.mask
        images = (fl.gray(0), us.gray(0), fmask, us.mask)
        out.append(
            Pair(
                i,
                images,
                np.asarray(truth["moving_to_fixed_pixel"]),
                np.asarray(truth["grid_moving"], float),
                float(truth["mm_per_fixed_pixel_at_isocenter"]),
                read_landmarks_csv(case / "landmarks.csv"),
            )
        )
    return out


def pair_rows(pair: Pair, noises, draws: int, truth_values: dict) -> list[tuple]:
    """(noise, variant, TRE mm or NaN) of one pair: from the truth, then every click set.

    ``truth_values``: options changed for the run from the truth; ``noises`` None: only it.
    """
    from hybridfuse.registration import Landmarks, RegistrationError, RegistrationOptions

    f, m, fmask, mmask = pair.images
    true = _apply(pair.true_h, pair.grid)

    def tre(**kwargs) -> float:
        try:
            res = register_pair(f, m, fmask, mmask, **kwargs)
        except RegistrationError:
            return float("nan")
        err = np.linalg.norm(_apply(res.transform.matrix, pair.grid) - true, axis=1)
        return float(np.median(err)) * pair.iso

    opts = RegistrationOptions().with_values(**{**TRUTH_OPTIONS, **truth_values})
    rows = [(None, FROM_TRUTH, tre(initial=pair.true_h, options=opts))]
    if noises is None:
        return rows
    lm = pair.landmarks
    for noise in noises:
        rng = np.random.default_rng(pair.seed)
        for _ in range(draws):
            shifted = lm.fixed_xy + rng.normal(0, noise, lm.fixed_xy.shape)
            clicks = Landmarks(lm.moving_xy, shifted, lm.names)
            for name, values in VARIANTS.items():
                opts = RegistrationOptions().with_values(**values)
                on_beads = _on_beads(clicks, pair, opts.landmarks.snap_to_beads_mm)
                rows.append((noise, name, tre(landmarks=on_beads, options=opts)))
    return rows


def _on_beads(clicks, pair: Pair, within_mm: float | None):
    """The clicks moved onto their beads as ``hybridfuse register`` moves them (None: as placed)."""
    from hybridfuse.registration.clicks import snap_to_beads

    if within_mm is None:
        return clicks
    f, _, fmask, _ = pair.images
    return snap_to_beads(clicks, f, fmask, (pair.iso, pair.iso), within_mm)[0]


def register_pair(f, m, fmask, mmask, **kwargs):
    from hybridfuse.registration import register

    return register(f, m, fixed_mask=fmask, moving_mask=mmask, **kwargs)


def _apply(h, pts):
    from hybridfuse.registration import Transform

    return Transform(np.asarray(h)).apply(pts)


def print_table(title: str, rows, noises) -> None:
    print(f"\n{title}\n\n| clicks | variant | median TRE mm | p90 mm | failed |")
    print("|---|---|---|---|---|")
    for noise, name in [(None, FROM_TRUTH)] + [(n, k) for n in noises or [] for k in VARIANTS]:
        v = np.array([t for n, k, t in rows if n == noise and k == name])
        ok = v[np.isfinite(v)]
        clicks = "none" if noise is None else f"{noise:g} px"
        med = f"{np.median(ok):.3f} | {np.percentile(ok, 90):.3f}" if len(ok) else "- | -"
        print(f"| {clicks} | {name} | {med} | {int((~np.isfinite(v)).sum())} of {len(v)} |")


def main() -> None:
    from benchmarks._header import print_header
    from hybridfuse.testdata.phantom import PRESETS, generate_procedure

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="100,101,102,103", help="own-phantom seeds; '' for none")
    ap.add_argument("--noise", default="0,0.5,3")
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--cases", help="folder to keep the generated cases in and reuse them from")
    ap.add_argument("--phantom-a", action="store_true", help="also report on phantom-a")
    ap.add_argument("--validation", type=Path, default=VALIDATION, help="phantom-a folder")
    ap.add_argument("--truth-only", action="store_true", help="only the run from the truth")
    ap.add_argument(
        "--truth-set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an option of the run from the truth (Python literal), e.g. lc2_patch_samples=4",
    )
    args = ap.parse_args()
    truth_values = {k: ast.literal_eval(v) for k, v in (a.split("=", 1) for a in args.truth_set)}
    print_header()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    noises = None if args.truth_only else [float(s) for s in args.noise.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            folder = Path(args.cases or tmp) / f"s{seed}"
            if not (folder / "truth.json").is_file():
                preset = sorted(PRESETS)[seed % len(PRESETS)]
                generate_procedure(folder, seed=seed, procedure=preset)
            for pair in own_pairs(folder, seed):
                rows += pair_rows(pair, noises, args.draws, truth_values)
    if truth_values:
        print(f"\nrun from the truth with {truth_values}")
    if seeds:
        print_table(f"own phantom, seeds {args.seeds}", rows, noises)
    if args.phantom_a:
        if not args.validation.is_dir():
            print(f"\nphantom-a: skipped, {args.validation} is absent")
            return
        va = [
            r
            for pair in validation_pairs(args.validation)
            for r in pair_rows(pair, noises, args.draws, truth_values)
        ]
        print_table(f"phantom-a ({args.validation}; report only)", va, noises)


if __name__ == "__main__":
    main()

"""Median TRE of landmark registration against the clicks' noise (issue #15, item 4).

Run: ``python -m benchmarks.landmark_noise --seeds 100,101,102,103 --noise 0.5,3 --draws 2``.
Seeds 100+ are the tuning set of the click-noise estimate and of ``intensity_sigma_px``,
200+ the report set. Each seed is a generated case (procedure by seed, as ``hybridfuse
synth``); its first two lateral pairs get their true landmarks with N(0, s^2) per
coordinate added on the fixed side (s: ``--noise``, px), ``--draws`` times each, and are
registered by landmarks only, with LC2 and the landmark term in its cost (the method
before 2026-12-01), and with LC2 fused with the landmark fit (the default). A row
"LC2 alone from the truth" (once per pair) measures where the metric's own optimum lies:
the intensity pyramid's finest levels started at the true transform. TRE: median over a
12 x 12 grid of the ultrasound field, mm at the isocentre. Failures (inconsistent noisy
landmarks, an edge-on result) are counted, not scored.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

# benchmarks/ holds a fusion.py that would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

VARIANTS = {
    "landmarks only": {"metric": None},
    "LC2, landmark term in the cost (before)": {"intensity_sigma_px": None},
    "LC2 fused with the landmark fit (default)": {},
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


def case_rows(folder: Path, seed: int, noises, draws: int) -> list[tuple]:
    """(noise, variant, TRE mm or NaN) for the first two lateral pairs of one case."""
    from hybridfuse.fusion import read_image
    from hybridfuse.fusion.coregister import read_landmarks_csv
    from hybridfuse.registration import (
        Landmarks,
        RegistrationError,
        RegistrationOptions,
        Transform,
        register,
    )
    from hybridfuse.testdata.phantom import load_truth

    truth = load_truth(folder)
    us = read_image(folder / "us_clip.dcm")
    ys, xs = np.nonzero(us.mask)
    gx, gy = np.meshgrid(np.linspace(xs.min(), xs.max(), 12), np.linspace(ys.min(), ys.max(), 12))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    rows = []
    for pair in [p for p in truth["pairs"] if not p["edge_on"]][:2]:
        fl = read_image(folder / pair["fluoro_file"])
        iso = fl.xray.isocenter_spacing_mm[0]
        true_h = np.asarray(pair["moving_to_fixed_pixel"])
        true = Transform(true_h).apply(grid)
        lm = read_landmarks_csv(folder / pair["landmarks_csv"])
        f, m = fl.gray(pair["fluoro_frame"]), us.gray(pair["us_frame"])
        opts = RegistrationOptions().with_values(**TRUTH_OPTIONS)
        res = register(f, m, fixed_mask=fl.mask, moving_mask=us.mask, initial=true_h, options=opts)
        err = np.linalg.norm(res.transform.apply(grid) - true, axis=1)
        rows.append((None, FROM_TRUTH, float(np.median(err)) * iso))
        for noise in noises:
            rng = np.random.default_rng(1000 * seed + pair["fluoro_frame"])
            for _ in range(draws):
                shifted = lm.fixed_xy + rng.normal(0, noise, lm.fixed_xy.shape)
                clicks = Landmarks(lm.moving_xy, shifted, lm.names)
                for name, values in VARIANTS.items():
                    opts = RegistrationOptions().with_values(**values)
                    try:
                        res = register(
                            f,
                            m,
                            fixed_mask=fl.mask,
                            moving_mask=us.mask,
                            landmarks=clicks,
                            options=opts,
                        )
                    except RegistrationError:
                        rows.append((noise, name, float("nan")))
                        continue
                    err = np.linalg.norm(res.transform.apply(grid) - true, axis=1)
                    rows.append((noise, name, float(np.median(err)) * iso))
    return rows


def main() -> None:
    from benchmarks._header import print_header
    from hybridfuse.testdata.phantom import PRESETS, generate_procedure

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="100,101,102,103")
    ap.add_argument("--noise", default="0.5,3")
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--cases", help="folder to keep the generated cases in and reuse them from")
    args = ap.parse_args()
    print_header()
    seeds = [int(s) for s in args.seeds.split(",")]
    noises = [float(s) for s in args.noise.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            folder = Path(args.cases or tmp) / f"s{seed}"
            if not (folder / "truth.json").is_file():
                preset = sorted(PRESETS)[seed % len(PRESETS)]
                generate_procedure(folder, seed=seed, procedure=preset)
            rows += case_rows(folder, seed, noises, args.draws)
    print(f"seeds {args.seeds}\n\n| clicks | variant | median TRE mm | p90 mm | failed |")
    print("|---|---|---|---|---|")
    for noise, name in [(None, FROM_TRUTH)] + [(n, k) for n in noises for k in VARIANTS]:
        v = np.array([t for n, k, t in rows if n == noise and k == name])
        ok = v[np.isfinite(v)]
        clicks = "none" if noise is None else f"{noise:g} px"
        print(
            f"| {clicks} | {name} | {np.median(ok):.3f} | "
            f"{np.percentile(ok, 90):.3f} | {int((~np.isfinite(v)).sum())} of {len(v)} |"
        )


if __name__ == "__main__":
    main()

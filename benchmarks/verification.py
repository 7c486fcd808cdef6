"""Verification benchmark: right / refused / wrong answers of intensity-only registration.

Run from the repository root:
    python -m benchmarks.verification [--cases N] [--starts M] [--phantom-a DIR]

Every trial registers one lateral (not edge-on) phantom pair, intensity only (LC2, the
defaults), from the true transform perturbed within ±10 mm (each axis), ±10° and ±5 %
about the ultrasound centre (uniform, seeded). Each result is written as the library
gives it with ``accept_unverified`` on, so both verdicts are counted from one run:
- *before*: the guards that existed before the verification (edge-on, scale against the
  calibration, the search's ambiguity margin) refuse;
- *after*: the verdict (those guards plus the restarts' verification).
Right: median TRE < 2 mm and accepted; wrong: accepted with a median TRE ≥ 2 mm;
refused: the verdict refused it or the library raised. Coverage: the share of accepted
results whose median TRE lies at or below ``quality.predicted_tre_mm``.

Seed sets (own phantom, :func:`hybridfuse.testdata.phantom.generate_procedure`): tuning
seeds 100 + i (the defaults and the predicted TRE's factor were chosen on them) and report
seeds 900 + i (never looked at while choosing). ``--phantom-a`` (default
``../shared/validation/phantom-a`` when present) reports on the independent generator's
cases, through the same route as ``register --init-transform``: reporting only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._header import print_header
from benchmarks.registration import own_cases, validation_cases
from hybridfuse.fusion import read_image
from hybridfuse.fusion.coregister import register_images
from hybridfuse.fusion.errors import FusionError
from hybridfuse.registration import Landmarks, RegistrationError, RegistrationOptions, Transform
from hybridfuse.registration.verify import UNVERIFIED
from hybridfuse.testdata.phantom import generate_procedure
from hybridfuse.testdata.phantom.variants import mirrored_ultrasound

PRESETS = ("lumbar-mbb", "cervical-mbb", "lumbar-facet", "si-joint")
#: Click noise (px, fluoroscopy side) of the landmark modes.
NOISE_PX = {"landmarks": 0.5, "coarse": 3.0}
SETS = {"tuning": 100, "report": 900}


def perturbed(true, centre_px, iso_mm, rng):
    """``true`` pre-composed with a random similarity within ±10°, ±5 %, ±10 mm."""
    a = np.radians(rng.uniform(-10, 10))
    s = 1 + rng.uniform(-0.05, 0.05)
    pre = np.eye(3)
    pre[:2, :2] = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    ct = Transform(true).apply(centre_px[None])[0]
    pre[:2, 2] = ct - pre[:2, :2] @ ct + rng.uniform(-10, 10, 2) / iso_mm
    return pre @ true


def trial(fixed, moving, start, grid, true_fixed, iso_mm, options, frames=(0, 0)) -> dict:
    """One registration: its median TRE and both verdicts (``None`` TRE: it raised)."""
    opts = options.with_values(accept_unverified=True)
    try:
        res = register_images(
            fixed,
            moving,
            fixed_frame=frames[0],
            moving_frame=frames[1],
            initial=start,
            options=opts,
        )
    except RegistrationError as exc:
        return {"tre": None, "before": "refused", "after": "refused", "why": str(exc)[:80]}
    q = res.quality
    old = [r for r in q.reasons if not r.startswith(UNVERIFIED)]
    tre = float(np.median(np.linalg.norm(res.transform.apply(grid) - true_fixed, axis=1)))
    check = q.verification or {}
    return {
        "tre": tre * iso_mm,
        "before": "refused" if old else "accepted",
        "after": q.verdict,
        "why": "; ".join(q.reasons)[:80],
        "spread_mm": check.get("spread_mm"),
        "distances_mm": check.get("distances_mm"),
        "relative_costs": check.get("relative_costs"),
        "drift": check.get("second_metric_drift_mm"),
        "mirrored_relative_cost": check.get("mirrored_relative_cost"),
        "mirrored_distance_mm": check.get("mirrored_distance_mm"),
        "margin": (q.search or {}).get("relative_margin_over_runner_up"),
        "predicted_tre_mm": q.predicted_tre_mm,
        "wall_s": res.wall_time_s,
    }


def _old_reasons(reasons) -> list[str]:
    """The reasons of the guards that existed before this verification round.

    The automatic route's exact-fit refusal ("only N beads matched") predates it.
    """
    return [r for r in reasons if not r.startswith(UNVERIFIED) or r.startswith("unverified: only")]


def other_route(case, mode: str, rng, options) -> dict:
    """One landmark (``landmarks``: 0.5 px, ``coarse``: 3 px clicks) or ``auto`` trial."""
    opts = options.with_values(accept_unverified=True)
    lm = None
    if mode in NOISE_PX:
        src = case.landmarks
        noise = rng.normal(0, NOISE_PX[mode], src.fixed_xy.shape)
        lm = Landmarks(src.moving_xy, src.fixed_xy + noise, src.names)
    try:
        res = register_images(
            case.fl, case.us, fixed_frame=case.fframe, moving_frame=case.uframe,
            landmarks=lm, options=opts,
        )  # fmt: skip
    except (RegistrationError, FusionError) as exc:  # refused, bad landmarks: no answer
        return {"tre": None, "before": "refused", "after": "refused", "why": str(exc)[:80]}
    q = res.quality
    d = np.linalg.norm(res.transform.apply(case.grid) - case.grid_fixed, axis=1)
    return {
        "tre": float(np.median(d)) * case.iso,
        "before": "refused" if _old_reasons(q.reasons) else "accepted",
        "after": q.verdict,
        "why": "; ".join(q.reasons)[:80],
        "predicted_tre_mm": q.predicted_tre_mm,
        "verification": q.verification,
        "wall_s": res.wall_time_s,
    }


def other_routes(cases, modes, rng, options, reps: int) -> dict[str, list[dict]]:
    """``reps`` trials of each of ``modes`` (``landmarks``, ``coarse``, ``auto``) per case."""
    out: dict[str, list[dict]] = {}
    for mode in modes:
        rows = out.setdefault(mode, [])
        for case in cases:
            for _ in range(1 if mode == "auto" else reps):
                rows.append({"case": case.name, **other_route(case, mode, rng, options)})
    return out


def own_phantom(first_seed: int, cases: int, starts: int, rng, options, mirror=False):
    """Trials on the lateral pairs (two per case) of ``cases`` own-phantom cases."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(cases):
            folder = Path(tmp) / f"c{i}"
            truth = generate_procedure(folder, seed=first_seed + i, procedure=PRESETS[i % 4])
            us0 = read_image(folder / "us_clip.dcm")
            us = mirrored_ultrasound(us0, np.eye(3))[0] if mirror else us0
            ys, xs = np.nonzero(us.mask)
            gx, gy = np.meshgrid(
                np.linspace(xs.min(), xs.max(), 12), np.linspace(ys.min(), ys.max(), 12)
            )
            grid = np.column_stack([gx.ravel(), gy.ravel()])
            centre = np.array([xs.mean(), ys.mean()])
            for pair in [p for p in truth["pairs"] if not p["edge_on"]][:2]:
                fl = read_image(folder / pair["fluoro_file"])
                true = near = np.asarray(pair["moving_to_fixed_pixel"])
                if mirror:
                    _, true, near = mirrored_ultrasound(us0, true)
                iso = fl.xray.isocenter_spacing_mm[0]
                frames = (pair["fluoro_frame"], pair["us_frame"])
                for _ in range(starts):
                    start = perturbed(near, centre, iso, rng)
                    row = trial(
                        fl, us, start, grid, Transform(true).apply(grid), iso, options, frames
                    )
                    rows.append({"case": first_seed + i, "pair": pair["id"], **row})
    return rows


def phantom_a(folder: Path, starts: int, rng, options) -> list[dict]:
    """Trials on the independent generator's cases (``register --init-transform`` route)."""
    rows = []
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        truth = json.loads((case / "truth.json").read_text())
        fl, us = read_image(case / "fluoro.dcm"), read_image(case / "us.dcm")
        true = np.asarray(truth["moving_to_fixed_pixel"])
        grid, grid_fixed = np.asarray(truth["grid_moving"]), np.asarray(truth["grid_fixed"])
        iso = float(truth["mm_per_fixed_pixel_at_isocenter"])
        ys, xs = np.nonzero(us.mask)
        centre = np.array([xs.mean(), ys.mean()])
        for _ in range(starts):
            row = trial(fl, us, perturbed(true, centre, iso, rng), grid, grid_fixed, iso, options)
            rows.append({"case": case.name, **row})
    return rows


def summarise(name: str, rows: list[dict]) -> None:
    """Print right / refused / wrong before and after, coverage and the time."""
    tre = np.array([np.inf if r["tre"] is None else r["tre"] for r in rows])
    print(f"\n{name}: {len(rows)} trials")
    for when in ("before", "after"):
        acc = np.array([r[when] == "accepted" for r in rows])
        right, wrong = int(np.sum(acc & (tre < 2.0))), int(np.sum(acc & (tre >= 2.0)))
        print(f"  {when:<7} right {right:>4}  refused {int(np.sum(~acc)):>4}  wrong {wrong:>4}")
    acc = [r for r in rows if r["after"] == "accepted"]
    if acc:
        covered = np.mean([r["tre"] <= r["predicted_tre_mm"] for r in acc])
        print(f"  coverage of predicted_tre_mm (accepted): {covered:.0%} of {len(acc)}")
    walls = [r["wall_s"] for r in rows if r.get("wall_s") is not None]
    if walls:
        print(f"  median wall per registration {np.median(walls):.3f} s")


def added_cost(reps: int = 3) -> None:
    """Time the sample pair's registration with and without the verification, interleaved."""
    from hybridfuse.testdata import sample_case
    from hybridfuse.testdata.phantom import load_truth

    folder = sample_case()
    pair = next(p for p in load_truth(folder)["pairs"] if not p["edge_on"])
    fl, us = read_image(folder / pair["fluoro_file"]), read_image(folder / "us_clip.dcm")
    start = np.asarray(pair["moving_to_fixed_pixel"]) + np.array(
        [[0, 0, 10], [0, 0, -8], [0, 0, 0]]
    )
    walls: dict[int, list] = {0: [], 4: []}
    for rep in range(reps + 1):  # the first round warms the caches up
        for n in walls:
            opts = RegistrationOptions().with_values(verify_restarts=n)
            res = register_images(
                fl, us, fixed_frame=pair["fluoro_frame"], moving_frame=pair["us_frame"],
                initial=start, options=opts,
            )  # fmt: skip
            if rep:
                walls[n].append(res.wall_time_s)
    off, on = np.median(walls[0]), np.median(walls[4])
    print(f"\nsample pair, median of {reps}: {off:.3f} s without, {on:.3f} s with the")
    print(f"verification ({on / off:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=4, help="own-phantom cases per seed set")
    ap.add_argument("--starts", type=int, default=3, help="starts per pair")
    ap.add_argument("--sets", default="tuning,report", help="own seed sets to run")
    ap.add_argument("--phantom-a", type=Path, default=Path("../shared/validation/phantom-a"))
    ap.add_argument(
        "--mirror", action="store_true", help="also run the own seed sets mirrored (wrong)"
    )
    ap.add_argument("--phantom-a-starts", type=int, default=4, help="starts per case")
    ap.add_argument("--dump", type=Path, help="write every trial's row to this JSON file")
    ap.add_argument("--set", action="append", default=[], help="option NAME=VALUE (JSON)")
    ap.add_argument("--timing", action="store_true", help="only time the added cost")
    ap.add_argument(
        "--modes",
        default="start",
        help="routes: start (intensity from a perturbed start), landmarks (0.5 px), "
        "coarse (3 px clicks), auto (no start, no landmarks)",
    )
    ap.add_argument("--reps", type=int, default=2, help="landmark noise draws per pair")
    args = ap.parse_args()
    print_header()
    if args.timing:
        added_cost()
        return
    values = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    options = RegistrationOptions().with_values(**values)
    modes = [m for m in args.modes.split(",") if m]
    out = {}
    t0 = time.perf_counter()
    for name in [s for s in args.sets.split(",") if s]:
        first = SETS[name]
        if "start" in modes:
            rows = own_phantom(
                first, args.cases, args.starts, np.random.default_rng(first), options
            )
            out[name] = rows
            summarise(f"own phantom, {name} seeds {first}-{first + args.cases - 1}", rows)
        if "start" in modes and args.mirror:
            rows = own_phantom(
                first, args.cases, args.starts, np.random.default_rng(first), options, True
            )
            out[name + "-mirrored"] = rows
            summarise(f"own phantom, {name} seeds, ultrasound mirrored (no right answer)", rows)
        others = [m for m in modes if m != "start"]
        if others:
            with tempfile.TemporaryDirectory() as tmp:
                cases = own_cases(first, args.cases, Path(tmp))
                rng = np.random.default_rng(first + 1)
                for mode, rows in other_routes(cases, others, rng, options, args.reps).items():
                    out[f"{name}-{mode}"] = rows
                    summarise(f"own phantom, {name} seeds, {mode}", rows)
    if args.phantom_a.is_dir():
        if "start" in modes:
            rng = np.random.default_rng(1)
            out["phantom-a"] = phantom_a(args.phantom_a, args.phantom_a_starts, rng, options)
            summarise(f"{args.phantom_a} (reporting only)", out["phantom-a"])
        others = [m for m in modes if m != "start"]
        cases = validation_cases(args.phantom_a) if others else []
        for mode, rows in other_routes(cases, others, np.random.default_rng(2), options, 1).items():
            out[f"phantom-a-{mode}"] = rows
            summarise(f"{args.phantom_a}, {mode} (reporting only)", rows)
    else:
        print(f"\n{args.phantom_a}: absent, not reported")
    print(f"\n{time.perf_counter() - t0:.0f} s in all")
    if args.dump:
        args.dump.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

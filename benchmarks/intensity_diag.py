"""Where the intensity route goes wrong on a folder of phantom-a format cases.

For each case: the registration from the exact truth (search off, then on), and the
cost (LC2, MI) of the preprocessed features on a grid of shifts and rotations about the
truth at a few pyramid levels: is the truth the optimum, how wide is its basin, where is
the best grid point? ``--png DIR`` also writes what the preprocessing feeds the metric.

usage: python -m benchmarks.intensity_diag --cases DIR [--only case00,case03] [--png DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.family import apply_h, median_tre_mm


def load(case: Path):
    """(fixed gray, fixed mask, moving gray, moving mask, expected_xy, iso_mm, sod, truth)."""
    from hybridfuse.fusion import read_image
    from hybridfuse.fusion.coregister import expected_scale, expected_scale_xy

    fixed, moving = read_image(case / "fluoro.dcm"), read_image(case / "us.dcm")
    truth = json.loads((case / "truth.json").read_text())
    _, iso = expected_scale(fixed, moving)
    sod = fixed.xray.sod_mm if fixed.xray else None
    return (
        fixed.gray(0),
        fixed.mask,
        moving.gray(0),
        moving.mask,
        expected_scale_xy(fixed, moving),
        iso,
        sod,
        truth,
    )


def features(f, fm, m, mm, h, opts, erode=0):
    """The preprocessed (fixed, moving) features at ``h``'s scale, as register makes them."""
    from hybridfuse.registration.preprocess import Preprocess, mask_extent, preprocess_pair
    from hybridfuse.registration.transforms import Transform

    fm = np.ones(f.shape, bool) if fm is None else fm
    mm = np.ones(m.shape, bool) if mm is None else mm
    if erode:
        from scipy.ndimage import binary_erosion

        fm = binary_erosion(fm, np.ones((3, 3), bool), erode)
    ext = mask_extent(mm)
    scale = float(np.mean(Transform(h).local_scales(np.array([[ext[4], ext[5]]]))))
    shadow = None if opts.shadow_px is None else tuple(opts.shadow_px)
    ff, mf = preprocess_pair(
        f, fm, m, mm, Preprocess(opts.preprocess), scale=scale, shadow_px=shadow
    )
    return ff, fm, mf, mm, scale, ext


def perturb(h, centre_fixed, dx_px, dy_px, deg):
    """``h`` pre-composed with a rotation about its image of the centre and a shift."""
    a = np.radians(deg)
    pre = np.eye(3)
    pre[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    pre[:2, 2] = centre_fixed - pre[:2, :2] @ centre_fixed + (dx_px, dy_px)
    return pre @ h


def landscape(pyr, h, centre, iso, metric, factor, reach_mm=20, step_mm=2, degs=(-10, 0, 10)):
    """Cost over shifts x rotations about ``h``: (cost at h, best cost, best (dx, dy, deg))."""
    from hybridfuse.registration.metrics import metric_cost

    ctx = pyr.level(factor)
    dh = np.zeros((1, 3, 3))
    shifts = np.arange(-reach_mm, reach_mm + 1e-9, step_mm)
    grid = np.full((len(degs), len(shifts), len(shifts)), np.nan)
    for k, deg in enumerate(degs):
        for i, dy in enumerate(shifts):
            for j, dx in enumerate(shifts):
                hh = perturb(h, centre, dx / iso, dy / iso, deg)
                c, _, n = metric_cost(metric, ctx, hh, dh)
                grid[k, i, j] = c if n > 0.25 * len(ctx.xs) else np.nan
    k0, i0 = list(degs).index(0), len(shifts) // 2
    at = grid[k0, i0, i0]
    kb, ib, jb = np.unravel_index(np.nanargmin(grid), grid.shape)
    # Basin: how far along x and y the cost keeps rising away from the truth (mm).
    row, col = grid[k0, i0, :], grid[k0, :, i0]
    return {
        "at_truth": round(float(at), 4),
        "best": round(float(grid[kb, ib, jb]), 4),
        "best_at_mm_deg": [float(shifts[jb]), float(shifts[ib]), float(degs[kb])],
        "rank_of_truth": int(np.sum(grid < at)),
        "monotone_mm": [_monotone(row, i0, step_mm), _monotone(col, i0, step_mm)],
    }


def _monotone(line, i0, step):
    """How far (mm) the cost rises monotonically on both sides of index ``i0``."""
    n = 0
    while i0 - n - 1 >= 0 and i0 + n + 1 < len(line):
        if not (line[i0 - n - 1] > line[i0 - n] and line[i0 + n + 1] > line[i0 + n]):
            break
        n += 1
    return n * step


def lc2_scores(ctx, hs, step=1):
    """LC2 of each search candidate, in place of the search's Mattes MI (``--search-score``)."""
    from hybridfuse.registration.metrics import Metric, metric_cost

    dh = np.zeros((1, 3, 3))
    out = np.full(len(hs), np.inf)
    for i, h in enumerate(hs):
        cost, _, count = metric_cost(Metric.LC2, ctx, h, dh)
        if count >= 0.25 * len(ctx.xs) and np.isfinite(cost):  # the optimiser's overlap rule
            out[i] = cost
    return out


def run_from(f, fm, m, mm, exp, iso, sod, h, truth, **values):
    """The registration from ``h`` with option ``values``: (TRE mm, verdict, reasons)."""
    from hybridfuse.registration import register
    from hybridfuse.registration.options import RegistrationOptions

    opts = RegistrationOptions().with_values(accept_unverified=True, **values)
    t = time.perf_counter()
    try:
        r = register(f, m, fixed_mask=fm, moving_mask=mm, initial=h, options=opts,
                     expected_scale=exp, fixed_spacing_mm=iso, source_object_mm=sod)  # fmt: skip
    except Exception as exc:  # a diagnosis records the failure and goes on
        return {"error": str(exc)[:120]}
    return {
        "tre_mm": round(median_tre_mm(r.transform.matrix, truth), 2),
        "verdict": r.quality.verdict,
        "why": "; ".join(r.quality.reasons or [])[:160],
        "s": round(time.perf_counter() - t, 1),
    }


def save_pngs(out: Path, name: str, f, fm, m, mm, ff, mf, h):
    """Raw and feature images, and the moving features warped onto the fixed ones."""
    from PIL import Image as PILImage
    from scipy.ndimage import map_coordinates

    def norm(a, mask):
        a = np.asarray(a, float)
        v = a[mask] if mask is not None and mask.any() else a.ravel()
        lo, hi = np.percentile(v, [1, 99.5])
        return (np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)

    out.mkdir(parents=True, exist_ok=True)
    for tag, img, mask in (("f", f, fm), ("ff", ff, fm), ("m", m, mm), ("mf", mf, mm)):
        PILImage.fromarray(norm(img, mask)).save(out / f"{name}_{tag}.png")
    # Overlay: fixed features grey, warped moving features in red.
    hinv = np.linalg.inv(h)
    yy, xx = np.mgrid[0 : f.shape[0], 0 : f.shape[1]]
    p = np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
    q = hinv @ p
    mx, my = q[0] / q[2], q[1] / q[2]
    warped = map_coordinates(mf, [my, mx], order=1, cval=0.0).reshape(f.shape)
    inside = map_coordinates(mm.astype(float), [my, mx], order=0, cval=0.0).reshape(f.shape)
    g = norm(ff, fm)
    rgb = np.stack([g, g, g], -1).astype(float) * 0.8
    w = norm(warped, inside > 0).astype(float)
    rgb[..., 0] = np.maximum(rgb[..., 0], w * (inside > 0))
    rgb[..., 2] *= np.where(inside > 0, 0.7, 1.0)
    PILImage.fromarray(rgb.astype(np.uint8)).save(out / f"{name}_overlay.png")


def diagnose(case: Path, args) -> dict:
    from hybridfuse.registration.metrics import Metric
    from hybridfuse.registration.optimise import Pyramid
    from hybridfuse.registration.options import RegistrationOptions

    f, fm, m, mm, exp, iso, sod, truth = load(case)
    h = np.asarray(truth["moving_to_fixed_pixel"], float)
    if args.flip and truth.get("generator", {}).get("fluoro", {}).get("dense_bright"):
        f = f.max() - f  # what a right polarity would give (diagnosis only)
    opts = RegistrationOptions().with_values(**json.loads(args.values or "{}"))
    ff, fm2, mf, mm2, scale, ext = features(f, fm, m, mm, h, opts, args.erode)
    pyr = Pyramid(ff, fm2, mf, mm2, scale, opts)
    centre = apply_h(h, np.array([[ext[4], ext[5]]]))[0]
    row = {"case": case.name, "iso_mm": round(iso, 4), "scale": round(scale, 3)}
    for metric in filter(None, args.metrics.split(",")):
        for factor in (int(x) for x in args.factors.split(",")):
            key = f"{metric}@{factor}"
            row[key] = landscape(pyr, h, centre, iso, Metric(metric), factor)
    if args.register:
        vals = json.loads(args.values or "{}")
        row["from_truth_nosearch"] = run_from(
            f, fm, m, mm, exp, iso, sod, h, truth, search=False, search_structures=False, **vals
        )
        row["from_truth_search"] = run_from(
            f, fm, m, mm, exp, iso, sod, h, truth, search_structures=False, **vals
        )
    if args.png:
        save_pngs(Path(args.png), case.name, f, fm, m, mm, ff, mf, h)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", required=True)
    ap.add_argument("--only", default="")
    ap.add_argument("--metrics", default="lc2,mi")
    ap.add_argument("--factors", default="16,4,1")
    ap.add_argument("--register", action="store_true")
    ap.add_argument("--values", default="", help="option values (JSON, flat names)")
    ap.add_argument("--png", default="")
    ap.add_argument("--search-score", default="mi", choices=("mi", "lc2"))
    ap.add_argument("--flip", action="store_true", help="invert dense-bright fluoroscopy")
    ap.add_argument("--erode", type=int, default=0, help="fixed mask erosion (px)")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if args.search_score == "lc2":  # an experiment: the search scores its grid by LC2
        import hybridfuse.registration.search as search

        search.batch_mi_cost = lc2_scores
    cases = sorted(p for p in Path(args.cases).iterdir() if (p / "truth.json").is_file())
    if args.only:
        cases = [c for c in cases if c.name in args.only.split(",")]
    rows = []
    for case in cases:
        row = diagnose(case, args)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

"""The global search: a similarity grid around the start, scored, refined, and compared.

Candidates (rotations, scales and shifts about where the start maps the ultrasound
centre) are scored by Mattes MI at a coarse pyramid level; the best that lie apart are
refined at the first pyramid level, those that then share a basin merge, the finalists
are refined at the second level, and the best is kept. A best match that beats a
distinct rival by too little is ambiguous: the summary says so and the verdict refuses it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .errors import ConvergenceError
from .guards import centre_scale
from .metrics import batch_mi_cost
from .optimise import LevelProblem, Pyramid, optimise_level
from .options import SearchOptions
from .transforms import Parameterization, Transform, TransformModel

__all__ = ["SAME_BASIN_MM", "SearchOutcome", "global_search"]

#: Refined search candidates whose centres land closer than this (mm) are one optimum.
SAME_BASIN_MM = 3.0

#: Without the fluoroscopy's pixel size, one fixed pixel counts as this many mm.
DEFAULT_PIXEL_MM = 0.3


@dataclass(frozen=True)
class SearchOutcome:
    """The chosen homography, iterations per refined level, and the search's summary."""

    matrix: np.ndarray
    iterations: list[int]
    info: dict


@dataclass
class _Candidate:
    cost: float
    matrix: np.ndarray
    iterations: list[int]
    centre: np.ndarray | None  # where it maps the ultrasound centre (fixed px)


def global_search(problem: LevelProblem, pyramid: Pyramid, start, fixed_spacing_mm=None):
    """Score a similarity grid around ``start``; refine distinct optima; keep the best.

    With ``problem.scale_prior`` the candidate scales are ``search_scales_calibrated``,
    relative to the expected scale instead of the start's, and clipped to the tolerance.
    Appends ``(-1, n_candidates, best cost)`` to ``problem.trace`` and reports it to
    ``problem.progress``.

    Raises
    ------
    ConvergenceError
        No candidate overlaps the fluoroscopy. An ambiguous best match is not raised:
        ``info["ambiguous"]`` says why, and the verdict refuses it.
    """
    opts = problem.options.grid
    px_mm = fixed_spacing_mm or DEFAULT_PIXEL_MM
    hs = _candidates(start, problem, px_mm)
    costs = batch_mi_cost(pyramid.level(opts.search_level), hs, _score_step(pyramid, opts))
    order = _keep_apart(hs, costs, problem.center, opts, px_mm)
    refined = _refine(problem, pyramid, [hs[i] for i in order], px_mm)
    best, info = _verdict(refined, len(hs), opts)
    problem.trace.append((-1, len(hs), float(best.cost)))
    if problem.progress is not None:
        problem.progress(-1, len(hs), float(best.cost))
    return SearchOutcome(best.matrix, best.iterations, info)


def _candidates(start, problem: LevelProblem, px_mm: float) -> np.ndarray:
    """The grid's homographies, (n, 3, 3), in (angle, scale, dx, dy) order."""
    opts = problem.options.grid
    c = np.array(problem.center)
    ct = Transform(start).apply(c[None])[0]
    reach, step = opts.search_translation_mm, opts.search_step_mm
    shifts = np.arange(-reach, reach + 1e-9, step) / px_mm
    rot, rot_step = opts.search_rotation_deg, opts.search_rotation_step_deg
    angles = np.radians(np.arange(-rot, rot + 1e-9, rot_step))
    scales = np.asarray(opts.search_scales, float)
    if problem.scale_prior is not None:
        _, expected, tol = problem.scale_prior
        r0 = expected / centre_scale(start, problem.center)
        wanted = np.asarray(opts.search_scales_calibrated, float)
        scales = r0 * np.unique(np.clip(wanted, 1.0 - tol, 1.0 + tol))
    # Each candidate is pre-composed onto the start: a rotation and scale about the
    # start's image of the centre, then a shift.
    ang, sc, dx, dy = (
        g.ravel() for g in np.meshgrid(angles, scales, shifts, shifts, indexing="ij")
    )
    pre = np.zeros((len(ang), 3, 3))
    pre[:, 0, 0] = pre[:, 1, 1] = sc * np.cos(ang)
    pre[:, 1, 0] = sc * np.sin(ang)
    pre[:, 0, 1] = -pre[:, 1, 0]
    pre[:, :2, 2] = ct - np.einsum("nij,j->ni", pre[:, :2, :2], ct) + np.column_stack([dx, dy])
    pre[:, 2, 2] = 1.0
    return np.ascontiguousarray(pre @ start, dtype=np.float64)


def _score_step(pyramid: Pyramid, opts: SearchOptions) -> int:
    """Every how many pixels of the search level's fixed image the candidates are scored.

    Smoothed with sigma = factor / 2 px, the image is still sampled at 4 points per sigma,
    and the smaller copy, read thousands of times, stays in cache.
    """
    ctx = pyramid.level(opts.search_level)
    pixel_map = np.eye(3) if ctx.fixed_pixel_map is None else ctx.fixed_pixel_map
    return max(1, int(opts.search_level * pixel_map[0, 0]) // 8)


def _keep_apart(hs, costs, center, opts: SearchOptions, px_mm: float) -> list[int]:
    """Indices of the best ``search_keep`` candidates whose centres lie apart.

    Other basins, not neighbours: each kept centre is more than ``search_separation_mm``
    from every better kept one.
    """
    c = np.array(center)
    centres = hs @ np.array([c[0], c[1], 1.0])
    centres = centres[:, :2] / centres[:, 2:3]
    order: list[int] = []
    # A field-wide search may look at thousands of near neighbours before it has kept
    # enough: one vector test against the kept centres each, not a Python loop.
    min_px = opts.search_separation_mm / px_mm
    for idx in np.argsort(costs, kind="stable"):
        if not np.isfinite(costs[idx]) or len(order) == opts.search_keep:
            break
        if not order or np.all(np.hypot(*(centres[order] - centres[idx]).T) > min_px):
            order.append(int(idx))
    if not order:
        raise ConvergenceError("global search found no candidate overlapping the fluoroscopy")
    return order


def _refine(problem: LevelProblem, pyramid: Pyramid, starts, px_mm: float):
    """Refine ``starts`` at the first two pyramid levels; distinct optima, best first.

    After each level, candidates landing within :data:`SAME_BASIN_MM` of a better one
    merge; the best ``search_finalists`` of the first level go on to the second.
    """
    opts = problem.options
    quiet = dataclasses.replace(
        problem, landmarks=None, landmark_weights=None, trace=[], progress=None
    )
    c = np.array(problem.center)
    model = TransformModel(opts.pyramid.coarse_model)
    refined = [_Candidate(np.inf, h, [], None) for h in starts]
    for level in range(min(2, len(opts.pyramid.levels))):
        factor, max_iter = opts.pyramid.levels[level], opts.pyramid.max_iterations[level]
        ctx = pyramid.level(factor)
        out = []
        for cand in refined:
            par = Parameterization(model, cand.matrix, problem.center, problem.half)
            res = optimise_level(quiet, par, ctx, level, max_iter)
            h = Transform(par.matrix(res.x)).matrix
            at = Transform(h).apply(c[None])[0]
            out.append(_Candidate(float(res.fun), h, [*cand.iterations, int(res.nit)], at))
        out.sort(key=lambda r: r.cost)
        refined = []
        for r in out:
            if all(np.linalg.norm(r.centre - q.centre) * px_mm > SAME_BASIN_MM for q in refined):
                refined.append(r)
        if level == 0:
            refined = refined[: opts.grid.search_finalists]
    return refined


def _verdict(refined: list[_Candidate], n_candidates: int, opts: SearchOptions):
    """The best optimum and the search summary, which says when the match is ambiguous."""
    # The merge leaves only optima > 3 mm apart: every other one is a rival.
    best = refined[0]
    rivals = [r.cost for r in refined[1:]]
    margin = (min(rivals) - best.cost) / max(abs(best.cost), 1e-12) if rivals else np.inf
    info = {
        "candidates": n_candidates,
        "distinct_optima_refined": len(refined),
        "rivals_more_than_3mm_away": len(rivals),
        "relative_margin_over_runner_up": float(margin) if np.isfinite(margin) else None,
        "translation_range_mm": float(opts.search_translation_mm),
    }
    if margin < opts.search_min_margin:
        # A reason of the verdict (registration.guards), not an exception: the result
        # may still be written, marked refused, on request.
        info["ambiguous"] = (
            f"ambiguous intensity match: the best position beats a distinct optimum > 3 mm "
            f"away by only {100 * margin:.1f}% (< {100 * opts.search_min_margin:.0f}%)"
        )
    return best, info

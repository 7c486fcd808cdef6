"""The coarse-to-fine pyramid: one L-BFGS-B run per level on the metric (plus landmarks).

Each level smooths both images (masked Gaussian, sigma = factor / 2 fixed pixels),
samples the ultrasound on a stride, and optimises a :class:`Parameterization` of the
level's model within a trust region; the coarse levels use a stiffer model for a wider
capture range. Transforms always map full-resolution pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ._blas import one_blas_thread
from .errors import ConvergenceError
from .guards import centre_scale
from .landmarks import fuse_with_intensity
from .metrics import Metric, MetricContext, metric_cost
from .options import RegistrationOptions
from .preprocess import decimated_smooth, masked_smooth
from .transforms import Parameterization, Transform, TransformModel

__all__ = [
    "LevelProblem",
    "LevelsOutcome",
    "Pyramid",
    "grain",
    "optimise_level",
    "run_levels",
]


def grain(opts: RegistrationOptions, px_mm: float | None) -> float:
    """Fixed pixels per pixel of the scales the options give in pixels.

    1, or more on a detector finer than ``pyramid.finest_pixel_mm`` at the isocentre.
    """
    finest = opts.pyramid.finest_pixel_mm
    if not finest or not px_mm or not np.isfinite(px_mm) or px_mm >= finest:
        return 1.0
    return float(finest / px_mm)


@dataclass
class Pyramid:
    """The metric context of each pyramid level of one image pair, built once per factor.

    ``fixed``/``moving`` are the preprocessed features; ``scale`` the start's fixed pixels
    per moving pixel, which sets the moving image's smoothing and sample stride;
    ``grain`` (:func:`grain`) the fixed pixels a level factor counts.
    """

    fixed: np.ndarray
    fixed_mask: np.ndarray
    moving: np.ndarray
    moving_mask: np.ndarray
    scale: float
    options: RegistrationOptions
    grain: float = 1.0
    _levels: dict = field(default_factory=dict, repr=False)

    def level(self, factor: int) -> MetricContext:
        """The (cached) context of the level with smoothing ``factor``."""
        # The search refines several candidates per level: smooth each level once.
        if factor not in self._levels:
            self._levels[factor] = _level_context(self, factor)
        return self._levels[factor]

    def crop_fixed(self, y0: int, y1: int, x0: int, x1: int) -> None:
        """Keep only fixed rows ``y0:y1`` and columns ``x0:x1`` (levels are rebuilt)."""
        self.fixed = self.fixed[y0:y1, x0:x1]
        self.fixed_mask = self.fixed_mask[y0:y1, x0:x1]
        self._levels.clear()


def _level_context(pyr: Pyramid, factor: int) -> MetricContext:
    """Smoothed images and a strided ultrasound sample grid for one pyramid level.

    With ``decimate_coarse_levels`` the fluoroscopy of a level whose factor, times the
    pyramid's grain, is 8 or more is kept on a grid ``factor // 4`` times coarser (its
    sigma is then 2 coarse pixels), which the context's ``fixed_pixel_map`` maps onto.
    """
    opts, scale, fmask, mmask = pyr.options, pyr.scale, pyr.fixed_mask, pyr.moving_mask
    factor = factor * pyr.grain  # in the detector's own pixels
    d = max(1, int(factor) // 4) if opts.pyramid.decimate_coarse_levels else 1
    pixel_map = None
    if d > 1:
        f_lvl, fmask = decimated_smooth(pyr.fixed, fmask, 0.5 * factor, d)
        off = (d - 1) / (2.0 * d)
        pixel_map = np.array([[1.0 / d, 0.0, -off], [0.0, 1.0 / d, -off], [0.0, 0.0, 1.0]])
    else:
        f_lvl = masked_smooth(pyr.fixed, fmask, 0.5 * factor)
    m_lvl = masked_smooth(pyr.moving, mmask, 0.5 * factor / max(scale, 1e-6))
    stride = max(1, int(round(factor / max(scale, 1e-6) / 2)))
    while np.count_nonzero(mmask[::stride, ::stride]) > opts.pyramid.max_samples:
        stride += 1
    return MetricContext.from_images(
        f_lvl,
        fmask,
        m_lvl,
        mmask,
        stride=stride,
        patch_samples=opts.lc2_patch_samples,
        n_bins=opts.n_bins,
        scale=scale / d,
        fixed_pixel_map=pixel_map,
    )


@dataclass
class LevelProblem:
    """What every level's optimisation shares: the metric, the options and the bounds.

    ``center``/``half``: the ultrasound region's centre and half extent (px), the
    parameter normalisation. ``scale_prior = (expected_min, expected_max, tolerance)``
    bounds the scale to the calibration's window. ``trace`` collects
    (level, iteration, cost); ``progress`` is called with the same.
    """

    metric: Metric
    options: RegistrationOptions
    center: tuple[float, float]
    half: float
    scale_prior: tuple[float, float, float] | None = None
    landmarks: object | None = None
    landmark_weights: np.ndarray | None = None
    trace: list = field(default_factory=list)
    progress: Callable[[int, int, float], None] | None = None


@dataclass
class LevelsOutcome:
    """The result of the pyramid levels run by :func:`run_levels`."""

    matrix: np.ndarray
    iterations: list[int]
    value: float | None
    converged: bool
    message: str


def run_levels(problem: LevelProblem, pyramid: Pyramid, start, model, first: int = 0):
    """Optimise ``model`` from ``start`` level by level, from level index ``first`` on.

    With landmarks, levels coarser than ``landmark_start_factor`` are skipped and every
    cap is at most ``landmark_max_iterations``; with ``intensity_sigma_px`` set the levels
    run on the metric alone and the result is combined with the landmark fit
    (:func:`registration.landmarks.fuse_with_intensity`), otherwise the landmark term is
    in the cost. Without landmarks, all but the last ``fine_levels`` levels optimise the
    stiffer ``coarse_model``.
    """
    opts, landmarks = problem.options, problem.landmarks
    pyr_opts, lm_opts = opts.pyramid, opts.landmarks
    n_levels = len(pyr_opts.levels)
    out = LevelsOutcome(start, [], None, True, "landmarks only")
    fuse = landmarks is not None and lm_opts.intensity_sigma_px is not None
    if fuse:
        # The images refine on their own; the landmarks join afterwards by their variance.
        problem = dataclasses.replace(problem, landmarks=None)
    for level, (factor, cap) in enumerate(
        zip(pyr_opts.levels, pyr_opts.max_iterations, strict=True)
    ):
        if level < first:
            continue
        max_iter = cap
        if landmarks is not None:
            if factor > lm_opts.landmark_start_factor:
                continue  # the landmark fit starts within pixels: coarse levels add nothing
            max_iter = min(cap, lm_opts.landmark_max_iterations)
        fine = level >= n_levels - pyr_opts.fine_levels
        lvl_model = model if fine or landmarks is not None else coarser(model, opts)
        par = Parameterization(lvl_model, out.matrix, problem.center, problem.half)
        res = optimise_level(problem, par, pyramid.level(factor), level, max_iter)
        out.matrix = Transform(par.matrix(res.x)).matrix
        out.iterations.append(int(res.nit))
        out.value = float(res.fun)
        if not np.isfinite(res.fun) or res.fun >= 1e3:
            raise ConvergenceError(
                "the ultrasound region maps outside the fluoroscopy field: the images "
                "do not overlap enough from this start"
            )
        # A cap reached, or a line search that found no decrease (at the metric's
        # noise floor), ends a level as planned.
        out.converged = (
            bool(res.success)
            or res.nit >= max_iter
            or str(res.message).startswith("ABNORMAL")  # "ABNORMAL_TERMINATION_IN_LNSRCH"
        )
        out.message = str(res.message)
    if fuse and out.iterations:
        sigma = lm_opts.landmark_sigma_px
        box = (*problem.center, problem.half)
        out.matrix = fuse_with_intensity(
            start, out.matrix, landmarks, sigma, lm_opts.intensity_sigma_px, box, model
        )
    return out


def coarser(model: TransformModel, opts: RegistrationOptions) -> TransformModel:
    """The coarse levels' model: ``coarse_model`` where it is stiffer than ``model``."""
    order = list(TransformModel)
    coarse_model = TransformModel(opts.pyramid.coarse_model)
    return coarse_model if order.index(coarse_model) < order.index(model) else model


def optimise_level(problem: LevelProblem, par: Parameterization, ctx, level: int, max_iter):
    """L-BFGS-B over ``par`` on level ``level``'s context ``ctx``; scipy's result."""
    from scipy.optimize import minimize

    opts = problem.options
    n_total = len(ctx.xs)
    last: dict = {}  # the most recent evaluation, so the callback need not redo it

    def fun(q):
        h, dh = par.matrix_and_jacobian(q)
        cost, grad, count = metric_cost(problem.metric, ctx, h, dh)
        if count < 0.25 * n_total or not np.isfinite(cost):
            # Too little overlap: a steep penalty pushes back towards the start.
            cost, grad = 1e3 + float(q @ q), 2.0 * q
        elif problem.landmarks is not None:
            sigma = opts.landmarks.landmark_sigma_px
            lc, lg = _landmark_cost(h, dh, problem.landmarks, problem.landmark_weights, sigma)
            cost += opts.landmarks.landmark_weight * lc
            grad = grad + opts.landmarks.landmark_weight * lg
        last["q"], last["cost"] = np.array(q, copy=True), cost
        return cost, grad

    it = [0]

    def callback(q):
        it[0] += 1
        c = last["cost"] if "q" in last and np.array_equal(last["q"], q) else fun(q)[0]
        problem.trace.append((level, it[0], float(c)))
        if problem.progress is not None:
            problem.progress(level, it[0], float(c))

    # SciPy's bundled OpenBLAS spins a second thread on L-BFGS-B's tiny products: 3-4x
    # slower on a shared machine (benchmarks/tracking.py).
    with one_blas_thread():
        return minimize(
            fun,
            np.zeros(par.n_params),
            jac=True,
            method="L-BFGS-B",
            bounds=level_bounds(par, opts, problem.scale_prior),
            callback=callback,
            options={
                "maxiter": max_iter,
                "ftol": opts.pyramid.cost_tolerance,
                "gtol": 1e-7,
                "maxls": opts.pyramid.line_search_steps,
            },
        )


def _landmark_cost(h, dh, lm, w, sigma):
    """Mean squared residual / sigma² and its gradient."""
    src = np.hstack([lm.moving_xy, np.ones((len(lm.moving_xy), 1))])
    u = src @ h.T
    proj = u[:, :2] / u[:, 2:3]
    r = proj - lm.fixed_xy
    wn = w / w.sum()
    cost = float(np.sum(wn * np.sum(r**2, axis=1)) / sigma**2)
    du = np.einsum("kij,nj->nki", dh, src)  # (N, K, 3)
    dproj = (du[:, :, :2] - proj[:, None, :] * du[:, :, 2:3]) / u[:, None, 2:3]
    grad = 2.0 * np.einsum("n,nd,nkd->k", wn, r, dproj) / sigma**2
    return cost, grad


def level_bounds(
    par: Parameterization, opts, scale_prior=None
) -> list[tuple[float | None, float | None]] | None:
    """Trust region of one pyramid level, in normalised parameters.

    A similarity level may change its scale by ``max_linear_change``; at an affine or
    projective level each linear-part entry may change by as much, and the perspective
    terms by ``max_perspective_change`` (distortion across half the ultrasound field);
    translations are free. Without it, an intensity metric can shrink the ultrasound
    field onto one bright structure, a degenerate optimum.
    """
    model = TransformModel(par.model)
    lin = opts.pyramid.max_linear_change
    if model is TransformModel.SIMILARITY:
        return [_similarity_scale_bounds(par, lin, scale_prior)] + [(None, None)] * 3
    if model is TransformModel.RIGID:
        return None
    bounds = [(-lin, lin)] * 4 + [(None, None)] * 2
    if scale_prior is not None:
        # No stretch along an ultrasound axis beyond the magnification's tolerance;
        # shrinking stays free within the trust region (a tilted plane foreshortens).
        _, e_hi, tol = scale_prior
        top = e_hi * (1 + tol) / centre_scale(par.initial, par.center_px) - 1.0
        bounds[0] = bounds[3] = (-lin, float(np.clip(top, -lin, lin)))
    if model is TransformModel.PROJECTIVE:
        per = opts.pyramid.max_perspective_change
        bounds += [(-per, per)] * 2
    return bounds


def _similarity_scale_bounds(par, lin: float, scale_prior) -> tuple[float, float]:
    """Bounds of a similarity level's log-scale: the trust region, within the prior."""
    lo, hi = np.log1p(-lin), np.log1p(lin)
    if scale_prior is not None:
        # Also inside the calibration's window; from a start outside it, as far
        # towards it as the trust region allows.
        e_lo, e_hi, tol = scale_prior
        now = centre_scale(par.initial, par.center_px)
        lo_p, hi_p = np.log(e_lo * (1 - tol) / now), np.log(e_hi * (1 + tol) / now)
        if hi_p < lo:
            hi = lo
        elif lo_p > hi:
            lo = hi
        else:
            lo, hi = max(lo, lo_p), min(hi, hi_p)
    return (float(lo), float(hi))

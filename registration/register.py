"""The public entry: register one ultrasound frame to one fluoroscopy frame.

Pipeline: optional preprocessing of both images (:mod:`registration.preprocess`) →
initial transform (given, from landmarks, or from geometry) → without landmarks, a global
search at the coarse levels, after which the fluoroscopy is narrowed to a window around
the match → coarse-to-fine pyramid
(masked Gaussian smoothing of both images and a sample stride on the ultrasound grid;
transforms always map full-resolution pixels, while the fluoroscopy of the coarse levels
is kept on a decimated grid) → L-BFGS-B on a cost that is the intensity
metric plus, when landmarks are given, their mean squared residual in units of their
localisation uncertainty. If intensity refinement moves well-fitted landmarks by more
than that uncertainty, the landmark-only result is kept and the result says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import (
    ConvergenceError,
    IllPosedGeometryError,
    LandmarkInputError,
    RegistrationError,
    StartTransformError,
)
from .landmarks import LandmarkFit, fit_landmarks, fit_model
from .metrics import Metric, MetricContext, metric_cost
from .preprocess import (
    Preprocess,
    decimated_smooth,
    mask_extent,
    masked_smooth,
    preprocess_pair,
    quantised_scale,
)
from .transforms import Parameterization, Transform, TransformModel

__all__ = ["RegistrationOptions", "RegistrationResult", "Landmarks", "register"]


@dataclass(frozen=True)
class Landmarks:
    """Corresponding points: moving (ultrasound) and fixed (fluoroscopy) pixels (x, y)."""

    moving_xy: np.ndarray
    fixed_xy: np.ndarray
    names: tuple[str, ...] = ()
    weights: np.ndarray | None = None
    #: Where the pairs came from (a CSV file) and the line of each, for error messages.
    source: str | None = None
    lines: tuple[int, ...] = ()


@dataclass(frozen=True)
class RegistrationOptions:
    """Settings of :func:`register`; every field is written into the result.

    Parameters
    ----------
    model, metric : str
        Transform model and intensity metric (``None`` metric: landmarks only).
    coarse_model, fine_levels : str, int
        The coarse levels optimise ``coarse_model`` (fewer degrees of freedom, a wider
        capture range); the last ``fine_levels`` levels optimise ``model``.
    levels : tuple of int
        Pyramid smoothing factors, coarse to fine (sigma = 0.5 * factor fixed pixels).
    max_iterations : tuple of int
        L-BFGS-B iteration cap per level.
    n_bins : int
        Histogram bins for MI.
    preprocess : str
        Image preprocessing, see :class:`registration.preprocess.Preprocess`.
    landmark_sigma_px : float
        Localisation uncertainty of a landmark in fixed pixels (weights the hybrid term).
    landmark_weight : float
        Weight of the landmark term against the intensity metric.
    reject_threshold_px : float
        Residual above which a landmark pair is rejected as inconsistent.
    search : bool or None
        Global search before the local optimiser: similarity candidates around the start
        (rotation, scale and translation grids below) are scored by Mattes MI at pyramid
        factor ``search_level``; the best ``search_keep`` that lie > ``search_separation_mm``
        apart (5 mm; :func:`registration.initial.wide_search_options` spreads them further
        for a search over the whole field) are refined at the first pyramid level, those
        that then land within 3 mm of a better one are
        merged, the best ``search_finalists`` are refined at the second level, and the best
        is kept. Default: on without landmarks, off with them. Keeping 8 instead of 4: every
        wrong answer on four sets of 48 phantom starts (2 of 192) had the true pose's basin
        outside the 4 best grid candidates, and with 8 all 192 were right. Passing only the
        4 best of the first level on to the second lost one held-out start (the first
        level's LC2 ranked the right basin sixth), so by default every distinct one goes on.
        The grid steps (3.5 mm, 10°) match the basin of the factor-16 level: 2.5 mm and 5°
        captured no more on three sets of 48 phantom starts and took about 40 % longer. With
        the calibration's scale (see ``scale_tolerance``) the candidate scales are
        ``search_scales_calibrated`` relative to it, clipped to its tolerance: two scales 8
        % apart leave any magnification within the ±8 % window at most 4 % from a candidate,
        which the first level's refinement closes (three scales, 0.92/1.0/1.08, captured the
        same on eight sets of 48 phantom starts: 381 of 384 either way, with 1.5× the grid).
        When the refined best candidate's cost beats the best one lying > 3 mm away by less
        than ``search_min_margin`` (relative), the match is ambiguous and
        :class:`ConvergenceError` is raised. 0.12: on four sets of 48 phantom starts (all
        presets, shadow weighting on, 4 candidates) the wrong answers had margins of
        0.038–0.098 and the right ones 0.132 or more. With 8 candidates, of 384 starts it
        refused 4 (margins 0.052–0.111), two of them wrong; a wrong answer with a margin
        of 0.30 has been seen (4 candidates), so it is a second line of defence, not a
        guarantee.
    max_samples : int
        Cap on ultrasound samples per level (the stride grows to respect it). 12 000:
        the phantom TRE was the same as with 40 000 (every pixel of the fine levels)
        and the fine levels took a third of the time.
    cost_tolerance : float
        L-BFGS-B stops when an iteration lowers the cost by less than this fraction
        (its ``ftol``). The metrics carry interpolation noise of about 1e-5 relative
        near an optimum: at 1e-9 two thirds of the evaluations went to chasing it,
        without changing TRE or capture on the phantom starts.
    line_search_steps : int
        Most cost evaluations in one L-BFGS-B line search (its ``maxls``). Near the
        noise floor a line search can spend 20 evaluations on a millionth of the cost;
        with 5, a search took 0.78× the evaluations, and capture on seven sets of 48
        phantom starts was 333 of 336 against 332 (a failed line search keeps the
        previous iterate, and the level ends there: ``converged`` stays true).
    max_linear_change, max_perspective_change : float
        Per-level trust region of affine and projective levels, in parameters
        normalised by half the ultrasound field: each linear-part entry may change by
        ``max_linear_change`` (0.15: 15 % scale or shear) and each perspective term by
        ``max_perspective_change`` (0.05: 5 % distortion across half the field; a
        plane-induced homography at C-arm distances stays near 1 %). Similarity levels
        bound their scale change by ``max_linear_change``; rotation and translation are
        free.
    landmark_start_factor : int
        With landmarks, pyramid levels coarser than this factor are skipped.
    landmark_max_iterations : int
        With landmarks, the iteration cap of every level is at most this: from a
        landmark fit the intensity term only refines (on the benchmark's 16 pairs a cap
        of 12 gave the TRE of caps 50/40/30 in half the iterations: 35 against 71).
    select_model : bool
        With landmarks and the projective model: fit affine too and keep projective
        only when its median leave-one-out landmark error is lower (the choice and both
        errors are in ``quality``).
    lc2_patch_samples : int
        LC2 patch side in samples of the level's grid (the patch grows in pixels with
        the stride at coarse levels).
    scale_tolerance : float or None
        With ``expected_scale`` given and no landmarks: how far (relative) the
        transform's scale at the ultrasound centre may stray from it (from the range of
        the two axis scales, for anisotropic ultrasound pixels). The search's candidate
        scales are taken relative to it, similarity levels are bounded to it, affine and
        projective levels may not stretch an axis beyond it, and a result outside it is
        refused. The calibration fixes the scale of a plane through
        the isocentre; a plane ``d`` mm nearer the source is magnified by about
        ``d / SOD`` more, so 0.08 allows about ±60 mm at SOD 750 mm. The scale compared
        is the larger local scale at the ultrasound centre (a tilted plane is
        foreshortened only across the tilt). ``None``: off. With landmarks the ratio
        is only reported.
    decimate_coarse_levels : bool
        Keep the fluoroscopy of levels with factor 8 or more on a grid ``factor // 4``
        times coarser (block average, then the rest of the level's Gaussian; see
        :func:`registration.preprocess.decimated_smooth`). Transforms still map
        full-resolution pixels. Setting up those two levels was a fifth of an
        intensity-only registration at full resolution.
    shadow_px : (float, float) or None
        ``structures`` preprocessing: ultrasound echoes are weighed by how bright the
        image stays this many fixed pixels below them, so that bone surfaces (which
        cast acoustic shadows and have no counterpart in a projection) drop out and
        the needle and beads lead; ``None`` keeps every echo. See
        :mod:`registration.preprocess`.
    """

    model: str = "projective"
    metric: str | None = "lc2"
    levels: tuple[int, ...] = (16, 8, 4, 2, 1)
    max_iterations: tuple[int, ...] = (60, 60, 30, 25, 20)
    coarse_model: str = "similarity"
    fine_levels: int = 2
    n_bins: int = 32
    preprocess: str = "structures"
    landmark_sigma_px: float = 1.5
    landmark_weight: float = 1.0
    reject_threshold_px: float = 6.0
    max_samples: int = 12000
    edge_on_ratio: float = 0.2
    search: bool | None = None
    search_level: int = 16
    search_translation_mm: float = 20.0
    search_step_mm: float = 3.5
    search_rotation_deg: float = 20.0
    search_rotation_step_deg: float = 10.0
    search_scales: tuple[float, ...] = (0.9, 1.0, 1.1)
    search_scales_calibrated: tuple[float, ...] = (0.96, 1.04)
    search_keep: int = 8
    search_separation_mm: float = 5.0
    search_finalists: int = 8
    search_min_margin: float = 0.12
    select_model: bool = True
    landmark_start_factor: int = 4
    landmark_max_iterations: int = 12
    max_linear_change: float = 0.15
    max_perspective_change: float = 0.05
    lc2_patch_samples: int = 7
    scale_tolerance: float | None = 0.08
    shadow_px: tuple[float, float] | None = (2.0, 10.0)
    cost_tolerance: float = 1e-5
    line_search_steps: int = 5
    decimate_coarse_levels: bool = True

    def to_dict(self) -> dict:
        """JSON-ready copy."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class RegistrationResult:
    """Outcome of :func:`register`."""

    transform: Transform
    model: str
    metric: str | None
    metric_value: float | None
    iterations: list[int]
    wall_time_s: float
    trace: list[tuple[int, int, float]]
    landmark_fit: LandmarkFit | None
    quality: dict
    converged: bool
    message: str
    options: dict = field(default_factory=dict)


def _landmark_cost(h, dh, lm: Landmarks, w, sigma):
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


def _register_core(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    fixed_mask: np.ndarray | None = None,
    moving_mask: np.ndarray | None = None,
    landmarks: Landmarks | None = None,
    initial: Transform | np.ndarray | None = None,
    options: RegistrationOptions | None = None,
    expected_scale: float | tuple[float, float] | None = None,
    fixed_spacing_mm: float | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> RegistrationResult:
    """The registration itself, on (possibly cropped) arrays; see :func:`register`."""
    from scipy.optimize import minimize

    opts = options or RegistrationOptions()
    model = TransformModel(opts.model)
    metric = Metric(opts.metric) if opts.metric else None
    fixed = np.asarray(fixed, dtype=np.float64)
    moving = np.asarray(moving, dtype=np.float64)
    for name, img in (("fixed", fixed), ("moving", moving)):
        if img.ndim != 2:
            raise RegistrationError(f"{name} image must be 2D (rows, cols), got {img.shape}")
        if not np.all(np.isfinite(img)):
            raise RegistrationError(f"{name} image holds NaN or infinite values")
    fmask = np.ones(fixed.shape, bool) if fixed_mask is None else np.asarray(fixed_mask, bool)
    mmask = np.ones(moving.shape, bool) if moving_mask is None else np.asarray(moving_mask, bool)
    if fmask.shape != fixed.shape or mmask.shape != moving.shape:
        raise RegistrationError("a mask's shape differs from its image")
    if len(opts.levels) != len(opts.max_iterations):
        raise RegistrationError("levels and max_iterations must have the same length")

    scale_range = _scale_range(expected_scale)
    t_start = time.perf_counter()
    requested_model = model
    model_note = None
    lm_fit = None
    lm_weights = None
    if landmarks is not None:
        lm_fit = fit_landmarks(
            landmarks.moving_xy,
            landmarks.fixed_xy,
            model,
            weights=landmarks.weights,
            names=list(landmarks.names),
            reject_threshold_px=opts.reject_threshold_px,
        )
        if opts.select_model and model is TransformModel.PROJECTIVE:
            lm_fit, model_note = _select_landmark_model(landmarks, lm_fit, opts)
            if lm_fit.transform.model is not TransformModel.PROJECTIVE:
                model = lm_fit.transform.model
        keep = lm_fit.inliers
        landmarks = Landmarks(
            np.asarray(landmarks.moving_xy, float)[keep],
            np.asarray(landmarks.fixed_xy, float)[keep],
            tuple(n for n, k in zip(landmarks.names, keep, strict=False) if k),
            None if landmarks.weights is None else np.asarray(landmarks.weights, float)[keep],
        )
        lm_weights = (
            np.ones(len(landmarks.moving_xy)) if landmarks.weights is None else landmarks.weights
        )
        start = lm_fit.transform.matrix
    elif initial is not None:
        start = initial.matrix if isinstance(initial, Transform) else np.asarray(initial, float)
    else:
        raise RegistrationError("give landmarks or an initial transform to start from")
    start = Transform(start, model).matrix

    ext = mask_extent(mmask)
    if not ext[6] > 0:
        raise RegistrationError("the moving mask is empty")
    center = (float(ext[4]), float(ext[5]))
    half = _half_extent(ext)
    current = start
    trace: list[tuple[int, int, float]] = []
    iterations: list[int] = []
    value = None
    converged = True
    message = "landmarks only"
    search_info = None
    scale_prior = None
    window = None  # fixed-pixel shift into the refinement window, when one is used

    if metric is not None:
        _check_start(start, ext, from_landmarks=lm_fit is not None)
        scale = quantised_scale(float(np.mean(Transform(start).local_scales(np.array([center])))))
        f_feat, m_feat = preprocess_pair(
            fixed,
            fmask,
            moving,
            mmask,
            Preprocess(opts.preprocess),
            scale=scale,
            shadow_px=None if opts.shadow_px is None else tuple(opts.shadow_px),
        )
        n_levels = len(opts.levels)
        contexts: dict[int, MetricContext] = {}

        def level_ctx(factor: int) -> MetricContext:
            # The search refines several candidates per level: smooth each level once.
            if factor not in contexts:
                contexts[factor] = _level_context(f_feat, fmask, m_feat, mmask, factor, scale, opts)
            return contexts[factor]

        do_search = opts.search if opts.search is not None else landmarks is None
        # The calibration's scale constrains an intensity-only match; landmarks outrank it.
        scale_prior = (
            (*scale_range, float(opts.scale_tolerance))
            if scale_range and opts.scale_tolerance is not None and landmarks is None
            else None
        )
        level0 = 0
        if do_search:
            current, searched, search_info = _global_search(
                current,
                center,
                half,
                fixed_spacing_mm,
                opts,
                metric,
                minimize,
                trace,
                progress,
                level_ctx,
                scale_prior,
            )
            iterations.extend(searched)
            level0 = len(searched)
            # The crop holds the whole search range; refining from the match needs only
            # where the ultrasound now maps, so the remaining levels smooth and sample a
            # smaller fluoroscopy window (the features were computed on the crop).
            box = _refine_box(current, ext, f_feat.shape, opts.levels[level0:])
            if box is not None:
                y0, y1, x0, x1 = box
                f_feat, fmask = f_feat[y0:y1, x0:x1], fmask[y0:y1, x0:x1]
                contexts.clear()
                window = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
                current = window @ current
        for level, (factor, level_cap) in enumerate(
            zip(opts.levels, opts.max_iterations, strict=True)
        ):
            if level < level0:
                continue
            max_iter = level_cap
            if landmarks is not None:
                if factor > opts.landmark_start_factor:
                    continue  # the landmark fit starts within pixels: coarse levels add nothing
                max_iter = min(level_cap, opts.landmark_max_iterations)
            fine = level >= n_levels - opts.fine_levels
            lvl_model = (
                model if fine or landmarks is not None else _coarser(model, opts.coarse_model)
            )
            par = Parameterization(lvl_model, current, center, half)
            ctx = level_ctx(factor)
            res = _optimise(
                minimize,
                par,
                ctx,
                metric,
                landmarks,
                lm_weights,
                opts,
                level,
                max_iter,
                trace,
                progress,
                scale_prior,
            )
            current = Transform(par.matrix(res.x)).matrix
            iterations.append(int(res.nit))
            value = float(res.fun)
            if not np.isfinite(res.fun) or res.fun >= 1e3:
                raise ConvergenceError(
                    "the ultrasound region maps outside the fluoroscopy field: the images "
                    "do not overlap enough from this start"
                )
            # A cap reached, or a line search that found no decrease (at the metric's
            # noise floor), ends a level as planned.
            converged = (
                bool(res.success)
                or res.nit >= max_iter
                or str(res.message).startswith("ABNORMAL")  # "ABNORMAL_TERMINATION_IN_LNSRCH"
            )
            message = str(res.message)
    if window is not None:
        current = np.linalg.inv(window) @ current
    final = Transform(current, model)
    wall = time.perf_counter() - t_start

    quality = _quality(final, landmarks, lm_fit, mmask, scale_range, opts)
    quality["model_used"] = model.value
    if scale_range:
        magnification = _centre_scale(final.matrix, center)
        quality["scale_ratio_to_calibration"] = _scale_ratio(magnification, scale_range)
    if model_note is not None:
        quality["model_selection"] = model_note
    if search_info is not None:
        quality["search"] = search_info
    if lm_fit is not None and metric is not None:
        # Guard: the intensity term may only refine what the landmarks say.
        moved = np.linalg.norm(
            final.apply(landmarks.moving_xy) - lm_fit.transform.apply(landmarks.moving_xy), axis=1
        )
        allowed = max(opts.landmark_sigma_px, 2.0 * lm_fit.fre_px)
        quality["landmark_shift_by_intensity_px"] = float(moved.max()) if len(moved) else 0.0
        if len(moved) and moved.max() > allowed:
            quality["intensity_refinement"] = (
                f"rejected: it moved landmarks by {moved.max():.2f} px (> {allowed:.2f} px "
                "allowed by their fit); the landmark-only transform is kept"
            )
            final = lm_fit.transform
            quality.update(_quality(final, landmarks, lm_fit, mmask, scale_range, opts))
        else:
            quality["intensity_refinement"] = "accepted"
    if quality.get("edge_on"):
        raise IllPosedGeometryError(
            f"the transform collapses the ultrasound plane (local scale ratio "
            f"{quality['scale_ratio_min']:.2f} < {opts.edge_on_ratio}): the plane is seen "
            "nearly edge-on by the X-ray beam, so a 2D-2D registration is ill-posed"
        )
    ratio = quality.get("scale_ratio_to_calibration")
    if scale_prior is not None and metric is not None and abs(ratio - 1.0) > scale_prior[2]:
        raise ConvergenceError(
            f"the match's scale is {100 * (ratio - 1):+.1f} % off what the calibration "
            f"and magnification predict (±{100 * scale_prior[2]:.0f} % allowed): a wrong "
            "match; give landmarks (--landmarks) or a closer start"
        )
    return RegistrationResult(
        transform=final,
        model=requested_model.value,
        metric=metric.value if metric else None,
        metric_value=value,
        iterations=iterations,
        wall_time_s=wall,
        trace=trace,
        landmark_fit=lm_fit,
        quality=quality,
        converged=converged,
        message=message,
        options=opts.to_dict(),
    )


def register(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    fixed_mask: np.ndarray | None = None,
    moving_mask: np.ndarray | None = None,
    landmarks: Landmarks | None = None,
    initial: Transform | np.ndarray | None = None,
    options: RegistrationOptions | None = None,
    expected_scale: float | tuple[float, float] | None = None,
    fixed_spacing_mm: float | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> RegistrationResult:
    """Register a moving (ultrasound) image to a fixed (fluoroscopy) image.

    Parameters
    ----------
    fixed, moving : ndarray (rows, cols)
        Greyscale images (MONOCHROME2 sense).
    fixed_mask, moving_mask : ndarray of bool, optional
        Valid pixels: the collimator disc, the calibrated ultrasound region.
    landmarks : Landmarks, optional
        Pairs to fit first and to keep in the cost.
    initial : Transform or (3, 3) array, optional
        Starting moving→fixed homography; required without landmarks.
    options : RegistrationOptions
    expected_scale : float or (float, float), optional
        Fixed pixels per moving pixel predicted by the geometry (ultrasound spacing ×
        SID/SOD / imager spacing), or the pair (along moving x, along moving y) for
        anisotropic ultrasound pixels. Used to detect an edge-on plane (a result whose
        smaller local scale is below ``edge_on_ratio`` × the smaller of them is
        refused) and, without landmarks, to keep the magnification within
        ``scale_tolerance`` of it.
    fixed_spacing_mm : float, optional
        Fixed pixel size at the isocentre plane (mm), to express the search range in mm;
        without it one fixed pixel counts as 0.3 mm.
    progress : callable, optional
        ``progress(level, iteration, cost)`` after each optimiser iteration of the
        pyramid; once after the global search as ``progress(-1, n_candidates, cost)``
        with the number of grid candidates scored and the chosen match's cost.

    Returns
    -------
    RegistrationResult

    Raises
    ------
    RegistrationError
        Bad inputs, inconsistent landmarks; :class:`IllPosedGeometryError` for an
        edge-on plane; :class:`ConvergenceError` when the optimiser fails.
    """
    opts = options or RegistrationOptions()
    fixed = np.asarray(fixed, dtype=np.float64)
    moving = np.asarray(moving, dtype=np.float64)
    args = dict(
        fixed_mask=fixed_mask,
        moving_mask=moving_mask,
        landmarks=landmarks,
        initial=initial,
        options=opts,
        expected_scale=expected_scale,
        fixed_spacing_mm=fixed_spacing_mm,
        progress=progress,
    )
    crop = _crop_boxes(
        fixed, moving, fixed_mask, moving_mask, landmarks, initial, opts, fixed_spacing_mm
    )
    if crop is None:
        return _register_core(fixed, moving, **args)
    (fy0, fy1, fx0, fx1), (my0, my1, mx0, mx1) = crop
    to_crop_f = np.array([[1.0, 0, -fx0], [0, 1, -fy0], [0, 0, 1]])
    from_crop_m = np.array([[1.0, 0, mx0], [0, 1, my0], [0, 0, 1]])

    def into(h):
        return to_crop_f @ h @ from_crop_m

    def back(h):
        return np.linalg.inv(to_crop_f) @ h @ np.linalg.inv(from_crop_m)

    if initial is not None:
        h0 = initial.matrix if isinstance(initial, Transform) else np.asarray(initial, float)
        args["initial"] = into(h0)
    if landmarks is not None:
        args["landmarks"] = Landmarks(
            np.asarray(landmarks.moving_xy, float) - (mx0, my0),
            np.asarray(landmarks.fixed_xy, float) - (fx0, fy0),
            landmarks.names,
            landmarks.weights,
        )
    if fixed_mask is not None:
        args["fixed_mask"] = np.asarray(fixed_mask, bool)[fy0:fy1, fx0:fx1]
    if moving_mask is not None:
        args["moving_mask"] = np.asarray(moving_mask, bool)[my0:my1, mx0:mx1]
    result = _register_core(fixed[fy0:fy1, fx0:fx1], moving[my0:my1, mx0:mx1], **args)
    result.transform = Transform(back(result.transform.matrix), result.transform.model)
    if result.landmark_fit is not None:
        lf = result.landmark_fit
        lf.transform = Transform(back(lf.transform.matrix), lf.transform.model)
    result.quality["crop_fixed_px_x0_y0_x1_y1"] = [int(fx0), int(fy0), int(fx1), int(fy1)]
    return result


def _crop_boxes(fixed, moving, fixed_mask, moving_mask, landmarks, initial, opts, fixed_spacing_mm):
    """Regions worth computing on, or None when cropping would not pay.

    The moving mask's box, and where the start maps it in the fixed image plus a margin
    for the coarsest smoothing and the search range.
    """
    if fixed.ndim != 2 or moving.ndim != 2:
        return None
    mmask = np.ones(moving.shape, bool) if moving_mask is None else np.asarray(moving_mask, bool)
    if mmask.shape != moving.shape or not mmask.any():
        return None
    ext = mask_extent(mmask)
    mx0, mx1, my0, my1 = int(ext[0]), int(ext[1]) + 1, int(ext[2]), int(ext[3]) + 1
    corners = np.array([[mx0, my0], [mx1, my0], [mx1, my1], [mx0, my1]], float)
    if initial is not None:
        h0 = initial.matrix if isinstance(initial, Transform) else np.asarray(initial, float)
        mapped = Transform(h0).apply(corners)
    elif landmarks is not None and len(landmarks.moving_xy) >= 3:
        try:
            mapped = Transform(fit_model("affine", landmarks.moving_xy, landmarks.fixed_xy)).apply(
                corners
            )
        except RegistrationError:
            return None
    else:
        return None
    if not np.all(np.isfinite(mapped)):
        return None
    do_search = opts.search if opts.search is not None else landmarks is None
    margin = 1.5 * max(opts.levels) + 16.0
    if do_search and opts.metric:
        margin += opts.search_translation_mm / (fixed_spacing_mm or 0.3)
        # Rotation and scale of the search move corners too.
        half = 0.5 * np.ptp(mapped, axis=0).max()
        margin += half * (
            np.radians(opts.search_rotation_deg) + max(abs(s - 1) for s in opts.search_scales)
        )
    rows, cols = fixed.shape
    # Box edges on a 32-pixel grid: frames of a clip then share their crop (and the
    # cached mask weights of the smoothing) while the probe moves a little.
    box = _mapped_box(mapped, margin, fixed.shape, grid=32)
    if box is None:
        return None
    fy0, fy1, fx0, fx1 = box
    saved = 1.0 - ((fx1 - fx0) * (fy1 - fy0)) / (rows * cols)
    saved_m = 1.0 - ((mx1 - mx0) * (my1 - my0)) / mmask.size
    if saved < 0.2 and saved_m < 0.2:
        return None
    return (fy0, fy1, fx0, fx1), (int(my0), int(my1), int(mx0), int(mx1))


#: Refined search candidates whose centres land closer than this (mm) are one optimum.
_SAME_BASIN_MM = 3.0


def _refine_box(h, ext, shape, factors) -> tuple[int, int, int, int] | None:
    """Fixed-image rows and columns (y0, y1, x0, x1) that refining ``h`` needs.

    The moving mask's box (``ext`` from :func:`mask_extent`) mapped by ``h``, plus room
    for the coarsest remaining smoothing (3 sigma) and 24 px of movement; None when
    that saves under a fifth of the image or the box degenerates.
    """
    if not len(factors):
        return None
    x0, x1, y0, y1 = (float(v) for v in ext[:4])
    corners = Transform(h).apply(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
    if not np.all(np.isfinite(corners)):
        return None
    box = _mapped_box(corners, 1.5 * max(factors) + 24.0, shape)
    if box is None or (box[1] - box[0]) * (box[3] - box[2]) > 0.8 * shape[0] * shape[1]:
        return None
    return box


def _mapped_box(points, margin, shape, grid=1) -> tuple[int, int, int, int] | None:
    """Rows and columns (y0, y1, x0, x1) around fixed ``points`` plus ``margin`` px.

    Edges lie on a ``grid``-pixel lattice and are clipped to ``shape``; None when a side
    is under 16 px.
    """
    rows, cols = shape
    x0 = int(max(0, grid * np.floor((points[:, 0].min() - margin) / grid)))
    x1 = int(min(cols, grid * np.ceil((points[:, 0].max() + margin + 1) / grid)))
    y0 = int(max(0, grid * np.floor((points[:, 1].min() - margin) / grid)))
    y1 = int(min(rows, grid * np.ceil((points[:, 1].max() + margin + 1) / grid)))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return None
    return y0, y1, x0, x1


def _global_search(
    start,
    center,
    half,
    fixed_spacing_mm,
    opts,
    metric,
    minimize,
    trace,
    progress,
    level_ctx,
    scale_prior=None,
):
    """Score a similarity grid around ``start`` by MI; refine distinct optima; keep the best.

    ``level_ctx(factor)`` gives the (cached) metric context of a pyramid level;
    ``center`` and ``half`` are the ultrasound region's centre and half extent (px). With
    ``scale_prior = (expected_min, expected_max, tolerance)`` the candidate scales are
    ``opts.search_scales_calibrated``, relative to the expected scale instead of the
    start's, and clipped to the tolerance.

    Returns the chosen homography, the iterations spent on each refined level and a
    summary (candidates, relative margin of the winner over the best distinct rival).
    """
    from . import _kernels as K

    px_mm = fixed_spacing_mm or 0.3
    ctx = level_ctx(opts.search_level)
    c = np.array(center)
    ct = Transform(start).apply(c[None])[0]
    shifts = (
        np.arange(
            -opts.search_translation_mm, opts.search_translation_mm + 1e-9, opts.search_step_mm
        )
        / px_mm
    )
    angles = np.radians(
        np.arange(
            -opts.search_rotation_deg,
            opts.search_rotation_deg + 1e-9,
            opts.search_rotation_step_deg,
        )
    )
    scales = np.asarray(opts.search_scales, float)
    if scale_prior is not None:
        _, expected, tol = scale_prior
        r0 = expected / _centre_scale(start, center)
        wanted = np.asarray(opts.search_scales_calibrated, float)
        scales = r0 * np.unique(np.clip(wanted, 1.0 - tol, 1.0 + tol))
    # Candidates in (angle, scale, dx, dy) order, each pre-composed onto the start:
    # a rotation and scale about the start's image of the centre, then a shift.
    ang, sc, dx, dy = (
        g.ravel() for g in np.meshgrid(angles, scales, shifts, shifts, indexing="ij")
    )
    pre = np.zeros((len(ang), 3, 3))
    pre[:, 0, 0] = pre[:, 1, 1] = sc * np.cos(ang)
    pre[:, 1, 0] = sc * np.sin(ang)
    pre[:, 0, 1] = -pre[:, 1, 0]
    pre[:, :2, 2] = ct - np.einsum("nij,j->ni", pre[:, :2, :2], ct) + np.column_stack([dx, dy])
    pre[:, 2, 2] = 1.0
    hs = np.ascontiguousarray(pre @ start, dtype=np.float64)
    # Candidates are scored on every ``step``-th pixel of the level's image: smoothed
    # with sigma = factor / 2 px, it is still sampled at 4 points per sigma, and the
    # smaller copy sampled thousands of times stays in cache (35 % faster at 2).
    pixel_map = np.eye(3) if ctx.fixed_pixel_map is None else ctx.fixed_pixel_map
    step = max(1, int(opts.search_level * pixel_map[0, 0]) // 8)
    to_grid = np.diag([1.0 / step, 1.0 / step, 1.0]) @ pixel_map
    costs = K.batch_mattes_cost(
        np.ascontiguousarray(ctx.fixed[::step, ::step]),
        np.ascontiguousarray(ctx.fixed_mask[::step, ::step]),
        np.ascontiguousarray(to_grid @ hs),
        ctx.xs,
        ctx.ys,
        ctx.fixed_bin,
        ctx.n_bins,
        ctx.b_norm_min,
        ctx.b_bin_size,
        0.5,
    )
    # Keep the best candidates that lie apart: other basins, not neighbours.
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
    # Refine each at the coarsest level; candidates that fall into one basin merge, and
    # the best ``search_finalists`` go on to the next level, where the distinct optima
    # compete.
    # Each entry: (cost, homography, iterations per level, where it maps the centre).
    refined = [(np.inf, hs[idx], [], None) for idx in order]
    for level in range(min(2, len(opts.levels))):
        factor, max_iter = opts.levels[level], opts.max_iterations[level]
        lctx = level_ctx(factor)
        out = []
        for _, current, its, _ in refined:
            par = Parameterization(TransformModel(opts.coarse_model), current, center, half)
            res = _optimise(
                minimize,
                par,
                lctx,
                metric,
                None,
                None,
                opts,
                level,
                max_iter,
                [],
                None,
                scale_prior,
            )
            h = Transform(par.matrix(res.x)).matrix
            at = Transform(h).apply(c[None])[0]
            out.append((float(res.fun), h, [*its, int(res.nit)], at))
        out.sort(key=lambda r: r[0])
        refined = []
        for r in out:
            if all(np.linalg.norm(r[3] - q[3]) * px_mm > _SAME_BASIN_MM for q in refined):
                refined.append(r)
        if level == 0:
            refined = refined[: opts.search_finalists]
    # The merge leaves only optima > 3 mm apart: every other one is a rival.
    best = refined[0]
    rivals = [r[0] for r in refined[1:]]
    margin = (min(rivals) - best[0]) / max(abs(best[0]), 1e-12) if rivals else np.inf
    info = {
        "candidates": len(hs),
        "distinct_optima_refined": len(refined),
        "rivals_more_than_3mm_away": len(rivals),
        "relative_margin_over_runner_up": float(margin) if np.isfinite(margin) else None,
        "translation_range_mm": float(opts.search_translation_mm),
    }
    if margin < opts.search_min_margin:
        raise ConvergenceError(
            f"ambiguous intensity match: the best position beats a distinct optimum > 3 mm "
            f"away by only {100 * margin:.1f}% (< {100 * opts.search_min_margin:.0f}%); give "
            "landmarks (--landmarks) or a closer start"
        )
    trace.append((-1, len(hs), float(best[0])))
    if progress is not None:
        progress(-1, len(hs), float(best[0]))
    return best[1], best[2], info


#: Local scales (fixed px per moving px) an intensity refinement may start from: the
#: smoothing follows the scale, and a start of 1e-9 blurred for minutes.
START_SCALE_RANGE = (0.02, 50.0)


def _check_start(h, ext, *, from_landmarks: bool) -> None:
    """Refuse a start that maps the moving field implausibly before any image work.

    Raises
    ------
    LandmarkInputError
        The start is the landmark fit.
    StartTransformError
        The start was given: its horizon crosses the moving field, or its local scale
        is outside :data:`START_SCALE_RANGE`.
    """
    x0, x1, y0, y1 = (float(v) for v in ext[:4])
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    w = np.hstack([corners, np.ones((4, 1))]) @ h[2]
    err = LandmarkInputError if from_landmarks else StartTransformError
    what = "the landmark fit" if from_landmarks else "the starting transform"
    if not (np.all(w > 0) or np.all(w < 0)):
        raise err(f"{what} puts its horizon across the ultrasound field (points map to infinity)")
    scales = Transform(h).local_scales(corners)
    lo, hi = START_SCALE_RANGE
    if not (scales.min() >= lo and scales.max() <= hi):
        raise err(
            f"{what} scales the ultrasound field by {scales.min():.3g}..{scales.max():.3g} "
            f"fluoroscopy px per ultrasound px (plausible: {lo:g}..{hi:g})"
        )


def _select_landmark_model(landmarks: Landmarks, proj_fit: LandmarkFit, opts):
    """Keep projective only where held-out landmarks say its two extra parameters help.

    The plane-induced homography is the exact model, but its perspective terms are
    small (about 1 % across a typical ultrasound field) and, with a handful of clicked
    landmarks, fitting them mostly fits the clicking noise; away from the landmarks the
    error then grows. The affine fit competes on the median leave-one-out error of the
    same inliers; projective is kept only when it is lower.
    """
    keep = proj_fit.inliers
    src = np.asarray(landmarks.moving_xy, float)[keep]
    dst = np.asarray(landmarks.fixed_xy, float)[keep]
    w = None if landmarks.weights is None else np.asarray(landmarks.weights, float)[keep]
    names = [n for n, k in zip(landmarks.names, keep, strict=False) if k]
    loo_p = proj_fit.loo_tre_px[np.isfinite(proj_fit.loo_tre_px)]
    if len(src) < 4:
        return proj_fit, None
    aff = fit_landmarks(src, dst, "affine", weights=w, names=names, reject_threshold_px=None)
    loo_a = aff.loo_tre_px[np.isfinite(aff.loo_tre_px)]
    err_p = float(np.median(loo_p)) if len(loo_p) else np.inf
    err_a = float(np.median(loo_a)) if len(loo_a) else np.inf
    note = {
        "loo_tre_px_median_projective": err_p if np.isfinite(err_p) else None,
        "loo_tre_px_median_affine": err_a if np.isfinite(err_a) else None,
    }
    if err_a <= err_p:
        # Report the same pairs as the projective fit did, rejected ones included.
        src_all = np.asarray(landmarks.moving_xy, float)
        dst_all = np.asarray(landmarks.fixed_xy, float)
        resid = np.linalg.norm(aff.transform.apply(src_all) - dst_all, axis=1)
        loo = np.full(len(keep), np.nan)
        loo[keep] = aff.loo_tre_px
        fit = LandmarkFit(
            aff.transform, keep, resid, aff.fre_px, loo, proj_fit.names, aff.loo_pairs
        )
        note["chosen"] = "affine"
        return fit, note
    note["chosen"] = "projective"
    return proj_fit, note


def _coarser(model: TransformModel, coarse: str) -> TransformModel:
    order = list(TransformModel)
    coarse_model = TransformModel(coarse)
    return coarse_model if order.index(coarse_model) < order.index(model) else model


def _level_context(f_feat, fmask, m_feat, mmask, factor, scale, opts) -> MetricContext:
    """Smoothed images and a strided ultrasound sample grid for one pyramid level.

    With ``opts.decimate_coarse_levels`` the fluoroscopy of a level with factor 8 or
    more is kept on a grid ``factor // 4`` times coarser (its sigma is then 2 coarse
    pixels), which the context's ``fixed_pixel_map`` maps onto.
    """
    d = max(1, factor // 4) if opts.decimate_coarse_levels else 1
    pixel_map = None
    if d > 1:
        f_lvl, fmask = decimated_smooth(f_feat, fmask, 0.5 * factor, d)
        off = (d - 1) / (2.0 * d)
        pixel_map = np.array([[1.0 / d, 0.0, -off], [0.0, 1.0 / d, -off], [0.0, 0.0, 1.0]])
    else:
        f_lvl = masked_smooth(f_feat, fmask, 0.5 * factor)
    m_lvl = masked_smooth(m_feat, mmask, 0.5 * factor / max(scale, 1e-6))
    stride = max(1, int(round(factor / max(scale, 1e-6) / 2)))
    while True:
        sub = np.zeros_like(mmask)
        sub[::stride, ::stride] = True
        sel = mmask & sub
        if sel.sum() <= opts.max_samples:
            break
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


def _optimise(
    minimize,
    par,
    ctx,
    metric,
    landmarks,
    lm_weights,
    opts,
    level,
    max_iter,
    trace,
    progress,
    scale_prior=None,
):
    n_total = len(ctx.xs)
    last: dict = {}  # the most recent evaluation, so the callback need not redo it

    def fun(q):
        h, dh = par.matrix_and_jacobian(q)
        cost, grad, count = metric_cost(metric, ctx, h, dh)
        if count < 0.25 * n_total or not np.isfinite(cost):
            # Too little overlap: a steep penalty pushes back towards the start.
            cost, grad = 1e3 + float(q @ q), 2.0 * q
        elif landmarks is not None:
            lc, lg = _landmark_cost(h, dh, landmarks, lm_weights, opts.landmark_sigma_px)
            cost += opts.landmark_weight * lc
            grad = grad + opts.landmark_weight * lg
        last["q"], last["cost"] = np.array(q, copy=True), cost
        return cost, grad

    it = [0]

    def callback(q):
        it[0] += 1
        c = last["cost"] if "q" in last and np.array_equal(last["q"], q) else fun(q)[0]
        trace.append((level, it[0], float(c)))
        if progress is not None:
            progress(level, it[0], float(c))

    return minimize(
        fun,
        np.zeros(par.n_params),
        jac=True,
        method="L-BFGS-B",
        bounds=_level_bounds(par, opts, scale_prior),
        callback=callback,
        options={
            "maxiter": max_iter,
            "ftol": opts.cost_tolerance,
            "gtol": 1e-7,
            "maxls": opts.line_search_steps,
        },
    )


def _centre_scale(h: np.ndarray, center) -> float:
    """Magnification of ``h`` at the moving point ``center``: the larger local scale.

    A plane tilted against the detector is foreshortened along one direction (the
    smaller singular value, which the edge-on test watches); along the other it keeps
    the magnification of its depth, which is what the calibration predicts.
    """
    return float(Transform(h).local_scales(np.array([center]))[0].max())


def _level_bounds(
    par: Parameterization, opts, scale_prior=None
) -> list[tuple[float | None, float | None]] | None:
    """Trust region of one pyramid level, in normalised parameters.

    A similarity level may change its scale by ``opts.max_linear_change``; at an
    affine or projective level each linear-part entry may change by as much, and the
    perspective terms by ``opts.max_perspective_change`` (distortion across half the
    ultrasound field); translations are free. Without it, an intensity metric can
    shrink the ultrasound field onto one bright structure, a degenerate optimum.
    """
    model = TransformModel(par.model)
    lin = opts.max_linear_change
    if model is TransformModel.SIMILARITY:
        lo, hi = np.log1p(-lin), np.log1p(lin)
        if scale_prior is not None:
            # Also inside the calibration's window; from a start outside it, as far
            # towards it as the trust region allows.
            e_lo, e_hi, tol = scale_prior
            now = _centre_scale(par.initial, par.center_px)
            lo_p, hi_p = np.log(e_lo * (1 - tol) / now), np.log(e_hi * (1 + tol) / now)
            if hi_p < lo:
                hi = lo
            elif lo_p > hi:
                lo = hi
            else:
                lo, hi = max(lo, lo_p), min(hi, hi_p)
        return [(float(lo), float(hi))] + [(None, None)] * 3
    if model is TransformModel.RIGID:
        return None
    bounds = [(-lin, lin)] * 4 + [(None, None)] * 2
    if scale_prior is not None:
        # No stretch along an ultrasound axis beyond the magnification's tolerance;
        # shrinking stays free within the trust region (a tilted plane foreshortens).
        _, e_hi, tol = scale_prior
        top = e_hi * (1 + tol) / _centre_scale(par.initial, par.center_px) - 1.0
        bounds[0] = bounds[3] = (-lin, float(np.clip(top, -lin, lin)))
    if model is TransformModel.PROJECTIVE:
        per = opts.max_perspective_change
        bounds += [(-per, per)] * 2
    return bounds


def _scale_range(expected_scale) -> tuple[float, float] | None:
    """(smaller, larger) expected fixed px per moving px, or None when unknown."""
    if expected_scale is None:
        return None
    e = np.atleast_1d(np.asarray(expected_scale, dtype=float)).ravel()
    if e.size not in (1, 2) or not np.all(np.isfinite(e)) or not np.all(e > 0):
        return None
    return float(e.min()), float(e.max())


def _scale_ratio(magnification: float, scale_range: tuple[float, float]) -> float:
    """Magnification against the calibration's: 1 inside its range, else past the edge.

    With isotropic ultrasound pixels the range is one value and this is the plain
    ratio; with anisotropic ones a plane parallel to the detector has the larger
    expected scale as its magnification, a tilted one anything down to the smaller.
    """
    e_lo, e_hi = scale_range
    if magnification > e_hi:
        return magnification / e_hi
    if magnification < e_lo:
        return magnification / e_lo
    return 1.0 if e_lo < e_hi else magnification / e_hi


def _half_extent(ext: np.ndarray) -> float:
    """Half the larger side of a mask's box (the parameter normalisation), in pixels."""
    return float(max(ext[1] - ext[0], ext[3] - ext[2], 2.0)) / 2.0


def _quality(tr: Transform, landmarks, lm_fit, mmask, scale_range, opts) -> dict:
    x0, x1, y0, y1 = mask_extent(mmask)[:4]
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
    scales = tr.local_scales(corners)
    out = {"local_scale_min": float(scales.min()), "local_scale_max": float(scales.max())}
    if scale_range:
        e_lo, e_hi = scale_range
        out["expected_scale"] = float(np.sqrt(e_lo * e_hi))
        if e_lo < e_hi:
            out["expected_scale_range"] = [e_lo, e_hi]  # anisotropic ultrasound pixels
        out["scale_ratio_min"] = float(scales.min() / e_lo)
        out["edge_on"] = bool(scales.min() / e_lo < opts.edge_on_ratio)
    else:
        out["anisotropy"] = float(scales[:, 1].min() / scales[:, 0].max())
        out["edge_on"] = bool(out["anisotropy"] < opts.edge_on_ratio)
    if lm_fit is not None and landmarks is not None and len(landmarks.moving_xy):
        resid = np.linalg.norm(tr.apply(landmarks.moving_xy) - landmarks.fixed_xy, axis=1)
        out["landmark_fre_px"] = float(np.sqrt(np.mean(resid**2)))
        loo = lm_fit.loo_tre_px[np.isfinite(lm_fit.loo_tre_px)]
        out["landmark_loo_tre_px"] = float(np.median(loo)) if len(loo) else None
        out["landmarks_rejected"] = lm_fit.rejected
        ys, xs = np.nonzero(mmask)
        out.update(_landmark_coverage(landmarks.moving_xy, xs, ys))
    return out


def _landmark_coverage(moving_xy, xs, ys) -> dict:
    """How much of the ultrasound field the landmarks span, and how far they leave it.

    A fit is an interpolation inside the landmarks' hull and an extrapolation outside
    it, where errors grow with the distance: figures for a reader to weigh the
    landmark errors (FRE, leave-one-out) against, not a verdict.
    """
    from scipy.spatial import ConvexHull, QhullError, cKDTree

    pts = np.asarray(moving_xy, float)
    area = float(len(xs))
    try:
        hull = ConvexHull(pts).volume if len(pts) >= 3 else 0.0  # 2D: volume is the area
    except QhullError:
        hull = 0.0  # collinear landmarks span no area
    step = max(1, len(xs) // 4000)
    field = np.column_stack([xs[::step], ys[::step]]).astype(float)
    farthest = float(cKDTree(pts).query(field)[0].max())
    out = {
        "landmark_hull_fraction_of_field": min(1.0, hull / area),
        "landmark_farthest_field_px": farthest,
    }
    return out

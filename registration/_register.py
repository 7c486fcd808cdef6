"""The public entry: register one ultrasound frame to one fluoroscopy frame.

Pipeline: crop both images to what the registration needs (:mod:`registration._crop`) →
start from landmarks or a given transform (:mod:`registration.start`) → preprocess both
images (:mod:`registration.preprocess`) → without landmarks, a global search
(:mod:`registration.search`), after which the fluoroscopy is narrowed to a window around
the match → the coarse-to-fine pyramid (:mod:`registration.optimise`): L-BFGS-B on the
intensity metric; with landmarks, the metric alone from the landmark fit, fused with it by
their variances (``intensity_sigma_px``; none: the landmark term in the cost) → the
verification (:mod:`registration.verify`, :mod:`registration.verify_landmarks`: restarts,
a second metric and the mirrored placement; held-out landmark pairs) → the quality figures
and the verdict (:mod:`registration.guards`), which refuses what the guards or the
verification do not support unless ``accept_unverified`` is set.
If intensity refinement moves well-fitted landmarks by more than their uncertainty, the
landmark-only result is kept and the result says so.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ._crop import crop_boxes, refine_box
from .errors import RegistrationError
from .evidence import near_route, near_start, with_evidence
from .guards import (
    Quality,
    centre_scale,
    landmark_shift_guard,
    measure,
    raise_if_refused,
    refusal_reasons,
    scale_range,
    scale_ratio,
    with_perspective,
)
from .initial import AUTO_SOURCE_TO_CONFIRM
from .landmarks import LandmarkFit, is_automatic
from .metrics import Metric
from .optimise import LevelProblem, LevelsOutcome, Pyramid, grain, run_levels
from .options import RegistrationOptions
from .preprocess import Preprocess, mask_extent, preprocess_pair, quantised_scale
from .search import DEFAULT_PIXEL_MM, global_search
from .start import Landmarks, Start, check_start, find_start
from .transforms import N_PARAMS, Transform, TransformModel
from .verify import (
    PREDICTED_TRE_FLOOR_MM,
    UNCONFIRMED,
    intensity_agreement,
    intensity_route_check,
    restart_check,
)
from .verify_landmarks import MIN_DOF_FOR_TEST, landmark_check

__all__ = ["Landmarks", "RegistrationOptions", "RegistrationResult", "register"]

#: Most the images alone may move a few-pair landmark answer before it is refused (mm):
#: the TRE at which a result counts as wrong (#15).
AGREEMENT_MAX_MM = 2.0
#: Most either metric alone may move a landmark answer whose pairs check each other (mm):
#: right clicks' answers move 0.3-0.6 mm; pairs consistent with each other but not with
#: the images (swapped or mirrored coordinates) move tens of mm. Both metrics moving a
#: clicked answer more than :data:`AGREEMENT_MAX_MM` refuses it too (clicks all off the
#: same way; docs/registration-method.md, *Clicks off the same way*).
GROSS_DISAGREEMENT_MM = 10.0


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
    quality: Quality
    converged: bool
    message: str
    #: The options used, by flat name (:meth:`RegistrationOptions.to_dict`).
    options: dict = field(default_factory=dict)


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
    source_object_mm: float | None = None,
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
        with the number of grid candidates scored and the chosen match's cost. (The
        automatic start's placements announce each run as ``progress(-2, k, n)``:
        :data:`registration.hypotheses.CANDIDATE_LEVEL`; a few-item match's rivals as
        ``progress(-3, k, n)``: ``RIVAL_LEVEL``.)
    source_object_mm : float, optional
        X-ray source to isocentre (SOD, mm), for the plane's distance in the perspective
        check (:mod:`registration.plausible`); a short default without it.

    Returns
    -------
    RegistrationResult

    Raises
    ------
    RegistrationError
        Bad inputs, inconsistent landmarks; :class:`IllPosedGeometryError` for an
        edge-on plane; :class:`ConvergenceError` when the optimiser fails, and its
        :class:`UnverifiedResultError` when ``quality.verdict`` refuses the result (both
        only without ``accept_unverified``; the reasons are in the message).
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
        # Matched without a start, too few to check each other: the images must confirm them.
        confirm=landmarks is not None and landmarks.source == AUTO_SOURCE_TO_CONFIRM,
    )
    structures = near = result = declined = None
    if landmarks is None and opts.runs_search(False):  # a start to search around
        masks = (fixed_mask, moving_mask)
        _check_given_start(initial, moving_mask, moving.shape)
        structures, near = near_start(
            fixed, moving, masks, initial, opts, expected_scale, fixed_spacing_mm
        )
    if near is not None:  # the structures matched near the start as landmarks
        result, declined = near_route(lambda: _register_once(fixed, moving, near.landmarks, args))
    if result is None:
        result = _register_once(fixed, moving, landmarks, args)
    result = with_evidence(result, structures, near, fixed_mask, declined)
    geometry = (expected_scale, fixed_spacing_mm, source_object_mm)
    field = np.ones(moving.shape, bool) if moving_mask is None else moving_mask
    result = with_perspective(result, field, geometry, opts)
    raise_if_refused(result, opts)
    return result


def _check_given_start(initial, moving_mask, shape) -> None:
    """:func:`check_start` on a given start before the structures' image work (1-2 s)."""
    if initial is None:
        return
    h = initial.matrix if isinstance(initial, Transform) else np.asarray(initial, float)
    mask = np.ones(shape, bool) if moving_mask is None else np.asarray(moving_mask, bool)
    ext = mask_extent(mask)
    if h.shape == (3, 3) and np.all(np.isfinite(h)) and ext[6] > 0:
        check_start(h, ext, from_landmarks=False)


def _register_once(fixed, moving, landmarks, args) -> RegistrationResult:
    """:func:`_register_core` with ``landmarks``, on the crop when one helps."""
    opts = args["options"]
    do_search = opts.runs_search(landmarks is not None)
    args = dict(args, landmarks=landmarks, do_search=do_search)
    crop = crop_boxes(
        fixed,
        moving,
        args["moving_mask"],
        landmarks=landmarks,
        initial=args["initial"],
        opts=opts,
        do_search=do_search,
        fixed_spacing_mm=args["fixed_spacing_mm"],
    )
    if crop is None:
        return _register_core(fixed, moving, **args)
    return _register_cropped(fixed, moving, crop, args)


def _register_cropped(fixed, moving, crop, args) -> RegistrationResult:
    """:func:`_register_core` on the ``crop`` boxes, its transforms mapped back."""
    (fy0, fy1, fx0, fx1), (my0, my1, mx0, mx1) = crop
    to_crop_f = np.array([[1.0, 0, -fx0], [0, 1, -fy0], [0, 0, 1]])
    from_crop_m = np.array([[1.0, 0, mx0], [0, 1, my0], [0, 0, 1]])

    def into(h):
        return to_crop_f @ h @ from_crop_m

    def back(h):
        return np.linalg.inv(to_crop_f) @ h @ np.linalg.inv(from_crop_m)

    initial, landmarks = args["initial"], args["landmarks"]
    if initial is not None:
        h0 = initial.matrix if isinstance(initial, Transform) else np.asarray(initial, float)
        args["initial"] = into(h0)
    if landmarks is not None:
        args["landmarks"] = dataclasses.replace(
            landmarks,
            moving_xy=np.asarray(landmarks.moving_xy, float) - (mx0, my0),
            fixed_xy=np.asarray(landmarks.fixed_xy, float) - (fx0, fy0),
        )
    if args["fixed_mask"] is not None:
        args["fixed_mask"] = np.asarray(args["fixed_mask"], bool)[fy0:fy1, fx0:fx1]
    if args["moving_mask"] is not None:
        args["moving_mask"] = np.asarray(args["moving_mask"], bool)[my0:my1, mx0:mx1]
    result = _register_core(fixed[fy0:fy1, fx0:fx1], moving[my0:my1, mx0:mx1], **args)
    result.transform = Transform(back(result.transform.matrix), result.transform.model)
    if result.landmark_fit is not None:
        lf = result.landmark_fit
        lf.transform = Transform(back(lf.transform.matrix), lf.transform.model)
    box = [int(fx0), int(fy0), int(fx1), int(fy1)]
    result.quality = result.quality.replace(crop_fixed_px_x0_y0_x1_y1=box)
    return result


def _register_core(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    fixed_mask,
    moving_mask,
    landmarks: Landmarks | None,
    initial,
    options: RegistrationOptions,
    do_search: bool,
    expected_scale,
    fixed_spacing_mm: float | None,
    progress,
    confirm: bool = False,
) -> RegistrationResult:
    """The registration itself, on (possibly cropped) arrays; see :func:`register`.

    ``confirm``: landmarks too few to check each other must be confirmed by the
    intensity-only route (:func:`registration.verify.intensity_route_check`).
    """
    opts = options
    model = TransformModel(opts.model)
    metric = Metric(opts.metric) if opts.metric else None
    fixed, moving, fmask, mmask = _checked_images(fixed, moving, fixed_mask, moving_mask, opts)
    expected = scale_range(expected_scale)
    t_start = time.perf_counter()
    start = find_start(landmarks, initial, model, opts)
    _check_levels_run(opts, metric, start.landmarks is not None, do_search)
    ext = mask_extent(mmask)
    if not ext[6] > 0:
        raise RegistrationError("the moving mask is empty")
    problem = LevelProblem(
        metric,
        start.run_options(opts),  # the landmark σ resolved (estimated when auto)
        center=(float(ext[4]), float(ext[5])),
        half=_half_extent(ext),
        landmarks=start.landmarks,
        landmark_weights=start.weights,
        progress=progress,
    )
    outcome = LevelsOutcome(start.matrix, [], None, True, "landmarks only")
    search_info = check = None
    px_mm = fixed_spacing_mm or DEFAULT_PIXEL_MM
    if metric is not None:
        check_start(start.matrix, ext, from_landmarks=start.fit is not None)
        # The calibration's scale constrains an intensity-only match; landmarks outrank it.
        tol = opts.guards.scale_tolerance
        if expected and tol is not None and start.landmarks is None:
            problem.scale_prior = (*expected, float(tol))
        images = (fixed, fmask, moving, mmask)
        # The intensity-only route that confirms few matches keeps to the calibration.
        prior = (*expected, float(tol)) if confirm and expected and tol is not None else None
        outcome, search_info, check = _refine(
            problem, images, start, ext, (do_search, confirm, prior), px_mm
        )
    final = Transform(outcome.matrix, start.model)
    wall = time.perf_counter() - t_start
    if start.fit is not None:
        check = {**_landmark_evidence(start, mmask, px_mm, check), **(check or {})}
        if confirm and _too_few_to_test(start) and "intensity_agrees" not in check:
            check["unverified"] = UNCONFIRMED  # no metric, or the verification turned off
    final, quality = _assess(final, start, mmask, expected, problem, (search_info, check))
    return RegistrationResult(
        transform=final,
        model=model.value,
        metric=metric.value if metric else None,
        metric_value=outcome.value,
        iterations=outcome.iterations,
        wall_time_s=wall,
        trace=problem.trace,
        landmark_fit=start.fit,
        quality=quality,
        converged=outcome.converged,
        message=outcome.message,
        options=opts.to_dict(),
    )


def _check_levels_run(opts, metric, with_landmarks: bool, do_search: bool) -> None:
    """Refuse, before any work, options under which the asked-for metric never runs.

    With landmarks, levels coarser than ``landmark_start_factor`` are skipped; when that is
    every level (and no search runs them), the result was the landmark fit alone while
    ``transform.json`` named the metric.
    """
    from hybridfuse._options import OptionError

    factor = opts.landmarks.landmark_start_factor
    if metric is None or not with_landmarks or do_search:
        return
    if all(level > factor for level in opts.pyramid.levels):
        raise OptionError(
            f"options: landmark_start_factor = {factor} skips every pyramid level "
            f"({', '.join(map(str, opts.pyramid.levels))}) when landmarks are given, so "
            f"metric {metric.value} would never run: raise it, add a finer level, or use "
            "metric none for landmarks only"
        )


def _checked_images(fixed, moving, fixed_mask, moving_mask, opts):
    """Float images and boolean masks, or :class:`RegistrationError` saying what is wrong."""
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
    if len(opts.pyramid.levels) != len(opts.pyramid.max_iterations):
        raise RegistrationError("levels and max_iterations must have the same length")
    return fixed, moving, fmask, mmask


def _refine(problem: LevelProblem, images, start: Start, ext, steps, px_mm: float):
    """Search (when asked), run the pyramid and, intensity-only, verify the answer.

    Returns the outcome, the search's summary and the verification's figures (each
    ``None`` when that step did not run); ``steps``: (search, confirm few landmarks by the
    intensity-only route, its scale prior or None); ``px_mm``: a fixed pixel at the
    isocentre.
    """
    fixed, fmask, moving, mmask = images
    do_search, confirm, prior = steps
    opts = problem.options
    centre_scales = Transform(start.matrix).local_scales(np.array([problem.center]))
    scale = quantised_scale(float(np.mean(centre_scales)))
    shadow = None if opts.shadow_px is None else tuple(opts.shadow_px)
    f_feat, m_feat = preprocess_pair(
        fixed,
        fmask,
        moving,
        mmask,
        Preprocess(opts.preprocess),
        scale=scale,
        shadow_px=shadow,
        fluoro_dense=opts.fluoro_dense,
        grain=grain(opts, px_mm),
    )
    pyramid = Pyramid(f_feat, fmask, m_feat, mmask, scale, opts, grain(opts, px_mm))
    current, searched, info, window = start.matrix, [], None, None
    if do_search:
        found = global_search(problem, pyramid, current, px_mm)
        current, searched, info = found.matrix, list(found.iterations), found.info
        # The crop holds the whole search range; refining from the match needs only
        # where the ultrasound now maps, so the remaining levels smooth and sample a
        # smaller fluoroscopy window (the features were computed on the crop).
        remaining = opts.pyramid.levels[len(searched) :]
        box = refine_box(current, ext, f_feat.shape, remaining, pyramid.grain)
        if box is not None:
            y0, y1, x0, x1 = box
            pyramid.crop_fixed(y0, y1, x0, x1)
            window = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
            current = window @ current
    outcome = run_levels(problem, pyramid, current, start.model, first=len(searched))
    check = None
    if start.fit is not None and opts.guards.verify_restarts > 0:
        # Pairs that check each other are still asked whether the images contradict them
        # grossly: six clicks with the fluoroscopy x and y swapped fit each other exactly
        # and were accepted 37 mm off at a predicted 1.3 mm (LC2 alone moved it 63 mm).
        few = _too_few_to_test(start)
        limit = _agreement_limit_mm(start, mmask, px_mm, opts) if few else GROSS_DISAGREEMENT_MM
        # Clicks all off the same way (a shifted or resized display) check each other
        # perfectly: 10 px on the family's tuning seeds were accepted 2-3.7 mm off at a
        # predicted 0.3-1.9 mm, and both metrics alone moved most of them over 2 mm.
        both = AGREEMENT_MAX_MM if not (few or _automatic(start)) else None
        answer = (problem, pyramid, outcome.matrix, start.model)
        check = intensity_agreement(*answer, px_mm, limit, both_limit_mm=both)
        if confirm and few and check["intensity_agrees"]:
            check |= intensity_route_check(*answer, px_mm, limit, scale_prior=prior)
    if start.landmarks is None and opts.guards.verify_restarts > 0:
        # Intensity alone is verified whether or not a search chose the start (tracking
        # turns it off: checking every frame would cost more than the frame).
        outcome, check = restart_check(problem, pyramid, outcome, start.model, len(searched), px_mm)
    outcome.iterations[:0] = searched
    if window is not None:
        outcome.matrix = np.linalg.inv(window) @ outcome.matrix
    return outcome, info, check


def _agreement_limit_mm(start: Start, mmask, px_mm: float, opts) -> float:
    """How far the images alone may move a few-pair landmark answer (mm).

    As far as the landmarks' own predicted TRE, at least ``verify_max_spread_mm`` and
    never :data:`AGREEMENT_MAX_MM`: two answers that far apart cannot both be right.
    """
    predicted = _landmark_evidence(start, mmask, px_mm, None)["predicted_tre_mm"]
    return float(np.clip(predicted, opts.guards.verify_max_spread_mm, AGREEMENT_MAX_MM))


def _too_few_to_test(start: Start) -> bool:
    """Whether the start's landmarks leave too few coordinates over for the held-out test."""
    dof = 2 * len(start.landmarks.moving_xy) - N_PARAMS[start.model]
    return dof < MIN_DOF_FOR_TEST


def _assess(final: Transform, start: Start, mmask, expected, problem, evidence):
    """The transform to return and its :class:`Quality` with the verdict and its reasons.

    ``evidence``: the search's summary and the verification's figures (or ``None``).
    """
    opts = problem.options
    search_info, check = evidence
    quality = measure(final, start.landmarks, start.fit, mmask, expected, opts)
    changes = {
        "model_used": start.model.value,
        "model_selection": start.model_note,
        "search": search_info,
    }
    if check is not None:
        # The predicted TRE is the verdict's figure; the rest is the evidence behind it.
        changes["predicted_tre_mm"] = check["predicted_tre_mm"]
        changes["verification"] = {k: v for k, v in check.items() if k != "predicted_tre_mm"}
        if _automatic(start) and problem.metric is not None:
            # Detected structures sit where the images put them, so the answer carries the
            # metric's bias that the bead fit's noise does not describe (verify's floor).
            changes["predicted_tre_mm"] = max(check["predicted_tre_mm"], PREDICTED_TRE_FLOOR_MM)
    if expected:
        magnification = centre_scale(final.matrix, problem.center)
        changes["scale_ratio_to_calibration"] = scale_ratio(magnification, expected)
    if start.fit is not None and problem.metric is not None:
        kept, shift, verdict = landmark_shift_guard(final, start.landmarks, start.fit, opts)
        changes["landmark_shift_by_intensity_px"] = shift
        changes["intensity_refinement"] = verdict
        if kept is not final:
            final = kept
            quality = measure(final, start.landmarks, start.fit, mmask, expected, opts)
    quality = quality.replace(**changes)
    clicked = 0
    if start.landmarks is not None and not _automatic(start):
        clicked = len(start.landmarks.moving_xy)
    reasons = refusal_reasons(
        quality, opts, problem.scale_prior, problem.metric is not None, clicked=clicked
    )
    if reasons:
        unverified = True if opts.guards.accept_unverified else None
        quality = quality.replace(
            verdict="refused", reasons=reasons, accepted_unverified=unverified
        )
    return final, quality


def _automatic(start: Start) -> bool:
    """Whether the start's landmarks were detected and matched, not clicked."""
    return start.landmarks is not None and is_automatic(start.landmarks.names)


def _landmark_evidence(start: Start, mmask, px_mm: float, images) -> dict:
    """The landmark answer's held-out test and predicted TRE over a 7 × 7 grid of the field.

    ``images``: :func:`intensity_agreement`'s figures where they were computed, or None.
    """
    x0, x1, y0, y1 = mask_extent(mmask)[:4]
    gx, gy = np.meshgrid(np.linspace(x0, x1, 7), np.linspace(y0, y1, 7))
    field_xy = np.column_stack([gx.ravel(), gy.ravel()])
    # A σ the user gave is what each click is checked against; matched structures keep the
    # pairs' own scatter (their σ is the detector's, not a hand's).
    note = start.model_note or {}
    given = not note.get("landmark_sigma_estimated", True) and not _automatic(start)
    return landmark_check(
        start.fit.transform, start.landmarks, start.weights, start.sigma_px, field_xy, px_mm,
        images=images, sigma_known=given,
    )  # fmt: skip


def _half_extent(ext: np.ndarray) -> float:
    """Half the larger side of a mask's box (the parameter normalisation), in pixels."""
    return float(max(ext[1] - ext[0], ext[3] - ext[2], 2.0)) / 2.0

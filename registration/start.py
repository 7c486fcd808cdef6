"""Where the optimisation starts: the landmark fit (with model selection) or a given transform.

A start is checked before any image work, because a start that sends the ultrasound
field to infinity or scales it absurdly makes the smoothing run for minutes and the
metric meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import LandmarkInputError, RegistrationError, StartTransformError
from .landmarks import (
    DEGREES_OF_FREEDOM,
    MIN_POINTS,
    LandmarkFit,
    estimate_sigma,
    fit_landmarks,
    is_automatic,
)
from .options import RegistrationOptions
from .transforms import Transform, TransformModel
from .verify_landmarks import MIN_DOF_FOR_TEST

__all__ = [
    "START_SCALE_RANGE",
    "Landmarks",
    "Start",
    "check_start",
    "few_clicks_reason",
    "find_start",
    "supported_model",
]

#: Weight (relative to the largest) under which a clicked pair does not count towards the
#: pairs that check each other (:func:`few_clicks_reason`).
MIN_COUNTED_WEIGHT = 0.1
#: Local scales (fixed px per moving px) an intensity refinement may start from: the
#: smoothing follows the scale, and a start of 1e-9 blurred for minutes.
START_SCALE_RANGE = (0.02, 50.0)


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
    #: The weights as given, where ``weights`` also carry each pair's measured noise
    #: (:mod:`registration.clicks`): they decide which pairs count as checks
    #: (:func:`few_clicks_reason`); None: ``weights`` do.
    given_weights: np.ndarray | None = None


@dataclass(frozen=True)
class Start:
    """The starting homography and what the landmarks (if any) decided."""

    matrix: np.ndarray
    #: The model to optimise: the requested one, or affine where landmarks chose it.
    model: TransformModel
    fit: LandmarkFit | None = None
    #: The landmark inliers (kept in the cost) and their weights.
    landmarks: Landmarks | None = None
    weights: np.ndarray | None = None
    #: What the landmarks decided (model fallback and selection, click noise σ), the
    #: ``quality.model_selection`` record; None without landmarks.
    model_note: dict | None = None
    #: The click noise σ (px) the landmark term is measured in: the option's value or,
    #: when it is auto, the estimate from the fit's residuals.
    sigma_px: float | None = None

    def run_options(self, opts: RegistrationOptions) -> RegistrationOptions:
        """``opts`` with ``landmark_sigma_px`` resolved to the σ this start uses."""
        if self.sigma_px is None or opts.landmarks.landmark_sigma_px == self.sigma_px:
            return opts
        return opts.with_values(landmark_sigma_px=self.sigma_px)


def supported_model(requested: TransformModel, n_pairs: int) -> tuple[TransformModel, str | None]:
    """The richest model up to ``requested`` that ``n_pairs`` landmarks determine, and why.

    Three pairs fix an affine map but not a projective one, two a similarity; refusing
    them left a user with clicked points and no result. The second value is the
    sentence saying so, None when ``requested`` is kept.
    """
    order = list(TransformModel)  # rigid, similarity, affine, projective: stiffest first
    if n_pairs >= MIN_POINTS[requested]:
        return requested, None
    richer_first = reversed(order[: order.index(requested)])
    for model in richer_first:
        if model is not TransformModel.RIGID and n_pairs >= MIN_POINTS[model]:
            return model, (
                f"{n_pairs} landmark pairs cannot determine a {requested.value} transform "
                f"(it needs {MIN_POINTS[requested]}); fitted {model.value} instead"
            )
    return requested, None  # too few for any model: the fit refuses with the minimums


def find_start(
    landmarks: Landmarks | None, initial, model: TransformModel, opts: RegistrationOptions
) -> Start:
    """The start from ``landmarks`` (fitted, outliers rejected) or ``initial``."""
    if landmarks is None:
        if initial is None:
            raise RegistrationError("give landmarks or an initial transform to start from")
        h = initial.matrix if isinstance(initial, Transform) else np.asarray(initial, float)
        return Start(Transform(h, model).matrix, model)
    lm_opts = opts.landmarks
    requested = model
    model, fallback = supported_model(model, len(np.asarray(landmarks.moving_xy)))
    fit = fit_landmarks(
        landmarks.moving_xy,
        landmarks.fixed_xy,
        model,
        weights=landmarks.weights,
        names=list(landmarks.names),
        reject_threshold_px=lm_opts.reject_threshold_px,
    )
    note = {"requested": requested.value}
    if fallback:
        note["fallback"] = fallback
    if lm_opts.select_model and model is TransformModel.PROJECTIVE:
        fit, selection = select_landmark_model(landmarks, fit)
        note.update(selection or {})
    model = fit.transform.model
    note["chosen"] = model.value
    sigma = lm_opts.landmark_sigma_px
    note["landmark_sigma_estimated"] = sigma is None
    if sigma is None:
        sigma, note["landmark_sigma_dof"] = estimate_sigma(fit)
    note["landmark_sigma_px"] = sigma
    keep = fit.inliers
    counted_w = landmarks.weights if landmarks.given_weights is None else landmarks.given_weights
    kept_w = None if counted_w is None else np.asarray(counted_w, float)[keep]
    few = few_clicks_reason(int(keep.sum()), model, landmarks.names, kept_w)
    if few:
        note["unchecked_clicks"] = few
    inliers = Landmarks(
        np.asarray(landmarks.moving_xy, float)[keep],
        np.asarray(landmarks.fixed_xy, float)[keep],
        tuple(n for n, k in zip(landmarks.names, keep, strict=False) if k),
        None if landmarks.weights is None else np.asarray(landmarks.weights, float)[keep],
    )
    weights = np.ones(len(inliers.moving_xy)) if inliers.weights is None else inliers.weights
    matrix = Transform(fit.transform.matrix, model).matrix
    return Start(matrix, model, fit, inliers, weights, note, sigma)


def few_clicks_reason(n_pairs: int, model: TransformModel, names=(), weights=None) -> str | None:
    """Why ``n_pairs`` clicked pairs cannot vouch for a ``model`` fit, or None when they can.

    Fewer than :data:`~registration.verify_landmarks.MIN_DOF_FOR_TEST` coordinates over
    the model leave no test of each pair against the others. The residuals of those few
    do not catch a mis-click either: four clicks, one moved 10-20 px, fit an affine map
    with residuals as small as right clicks (0.05 px against 0.4 px for right ones), their
    answer 2-5 mm off (docs/registration-method.md, *Few clicks*). Exact fits (no
    coordinate over) are refused by the held-out check itself; matched beads
    (``auto_`` names) were checked by their consensus, so this is for clicks only.

    ``weights``: a pair weighted under :data:`MIN_COUNTED_WEIGHT` of the largest does not
    count: four clicks, one 11 px off, and a fifth at weight 1e-6 were accepted 2.5 mm off
    (the fifth checks nothing), as were three and one such (no longer an exact fit).
    """
    dof = DEGREES_OF_FREEDOM[TransformModel(model)]
    counted = n_pairs
    if weights is not None and len(weights) == n_pairs and n_pairs:
        w = np.asarray(weights, float)
        counted = int(np.sum(w >= MIN_COUNTED_WEIGHT * w.max()))
    spare = 2 * counted - dof
    auto = is_automatic(names)
    # An exact fit of every pair is refused by the held-out check itself.
    if auto or (spare <= 0 and counted == n_pairs) or spare >= MIN_DOF_FOR_TEST:
        return None
    if counted < n_pairs:
        return (
            f"unverified: {n_pairs} landmark pairs, {n_pairs - counted} weighted under "
            f"{MIN_COUNTED_WEIGHT:g} of the largest, leave {max(spare, 0)} coordinates over "
            f"the {TransformModel(model).value} model, too few to check each other; give "
            "more pairs, or --accept-unverified to keep it marked"
        )
    return (
        f"unverified: {n_pairs} landmark pairs leave {spare} coordinates over the "
        f"{TransformModel(model).value} model, too few to check each other (a mis-click of "
        "10-20 px leaves residuals as small as right clicks do); give more pairs, or "
        "--accept-unverified to keep it marked"
    )


def select_landmark_model(landmarks: Landmarks, proj_fit: LandmarkFit):
    """Keep projective only where held-out landmarks say its two extra parameters help.

    The plane-induced homography is the exact model, but its perspective terms are
    small (about 1 % across a typical ultrasound field) and, with a handful of clicked
    landmarks, fitting them mostly fits the clicking noise; away from the landmarks the
    error then grows. The affine fit competes on the median leave-one-out error of the
    same inliers; projective is kept only when it is lower, and never when only the
    affine fit leaves the pairs enough coordinates to check each other (5 pairs:
    projective 2 over, affine 4; :func:`few_clicks_reason`), since an answer nothing
    checks is refused (5 clicks of 3 px noise on tuning seed 9: projective 2.2 mm off,
    affine 0.8 mm).
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
    if _checkable_only_affine(len(src)):
        note["chosen_because"] = "only the affine fit leaves the pairs enough to check"
    if err_a <= err_p or "chosen_because" in note:
        # Report the same pairs as the projective fit did, rejected ones included.
        src_all = np.asarray(landmarks.moving_xy, float)
        dst_all = np.asarray(landmarks.fixed_xy, float)
        resid = np.linalg.norm(aff.transform.apply(src_all) - dst_all, axis=1)
        loo = np.full(len(keep), np.nan)
        loo[keep] = aff.loo_tre_px
        fit = LandmarkFit(
            aff.transform, keep, resid, aff.fre_px, loo, proj_fit.names, aff.loo_pairs
        )
        return fit, note
    return proj_fit, note


def _checkable_only_affine(n_pairs: int) -> bool:
    """Whether ``n_pairs`` leave the held-out test its coordinates under affine only."""
    spare = {m: 2 * n_pairs - DEGREES_OF_FREEDOM[m] for m in TransformModel}
    return spare[TransformModel.PROJECTIVE] < MIN_DOF_FOR_TEST <= spare[TransformModel.AFFINE]


def check_start(h, ext, *, from_landmarks: bool) -> None:
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

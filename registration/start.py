"""Where the optimisation starts: the landmark fit (with model selection) or a given transform.

A start is checked before any image work, because a start that sends the ultrasound
field to infinity or scales it absurdly makes the smoothing run for minutes and the
metric meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import LandmarkInputError, RegistrationError, StartTransformError
from .landmarks import LandmarkFit, fit_landmarks
from .options import RegistrationOptions
from .transforms import Transform, TransformModel

__all__ = ["START_SCALE_RANGE", "Landmarks", "Start", "check_start", "find_start"]

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
    #: The model selection's figures, when it ran.
    model_note: dict | None = None


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
    fit = fit_landmarks(
        landmarks.moving_xy,
        landmarks.fixed_xy,
        model,
        weights=landmarks.weights,
        names=list(landmarks.names),
        reject_threshold_px=lm_opts.reject_threshold_px,
    )
    note = None
    if lm_opts.select_model and model is TransformModel.PROJECTIVE:
        fit, note = select_landmark_model(landmarks, fit)
        if fit.transform.model is not TransformModel.PROJECTIVE:
            model = fit.transform.model
    keep = fit.inliers
    inliers = Landmarks(
        np.asarray(landmarks.moving_xy, float)[keep],
        np.asarray(landmarks.fixed_xy, float)[keep],
        tuple(n for n, k in zip(landmarks.names, keep, strict=False) if k),
        None if landmarks.weights is None else np.asarray(landmarks.weights, float)[keep],
    )
    weights = np.ones(len(inliers.moving_xy)) if inliers.weights is None else inliers.weights
    matrix = Transform(fit.transform.matrix, model).matrix
    return Start(matrix, model, fit, inliers, weights, note)


def select_landmark_model(landmarks: Landmarks, proj_fit: LandmarkFit):
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

"""Clicked fluoroscopy points moved onto the centre of the bead each was placed on.

A bead's disc in the fluoroscopy is located to a few hundredths of a pixel by its
Laplacian-of-Gaussian peak (:func:`registration.features.detect_beads`), far more
precisely than a hand places a click (0.5-3 px), so a click that sits on exactly one
detected bead takes the bead's centre. The ultrasound side stays as clicked: an echo's
centre is found only to about 0.4 mm, worse than a click there. The moves must make the
pairs agree better, or the clicks stay as placed. A click left where it
was (a needle tip, a bone edge) keeps the hand's noise, which the moves measure, and is
weighed by it; it still counts as a check on the others, at that noise
(docs/registration-method.md, *Clicks on beads*).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .click_beside import beside_beads
from .click_offset import off_beads
from .errors import LandmarkInputError
from .evidence import needle_zone
from .features import detect_beads
from .landmarks import (
    MIN_POINTS,
    SIGMA_PRIOR_DOF,
    SIGMA_PRIOR_PX,
    SIGMA_RANGE_PX,
    fit_landmarks,
    fit_model,
)
from .needle import detect_needle
from .start import Landmarks
from .transforms import Transform, TransformModel

__all__ = ["snap_to_beads"]

#: Most fluoroscopy beads looked at: every bead a user may click, not the matcher's few.
MAX_BEADS = 64
#: Least strength (peak response / noise) of a blob a click moves onto. Clicked beads
#: stand far above the bone texture and noise the detector also returns at its
#: ``MIN_SNR``: on tuning seeds 0-59, 147 clicked beads 42 or more (1st percentile 52), the
#: 2414 other blobs 99 % under 30; an anatomical click beside such a blob moved onto it
#: where coarse bead clicks made the scatter as a whole drop (session 17 attack).
MIN_BEAD_SNR = 35.0


def snap_to_beads(
    landmarks: Landmarks,
    fixed: np.ndarray,
    fixed_mask: np.ndarray | None,
    spacing_mm: tuple[float, float],
    within_mm: float,
    reject_px: float | None = 6.0,
) -> tuple[Landmarks, dict]:
    """``landmarks`` with each fluoroscopy click on one bead moved to its centre.

    A click moves when exactly one detected bead lies within ``within_mm`` (at the
    isocentre; ``spacing_mm`` is the fluoroscopy's (row, column) spacing there) and no
    other click claims the same bead: where two beads, or two clicks, compete, the click
    is left as the user placed it. Beads are not looked for near the needle, whose tip
    answers like a bead. The moves are kept only where the pairs fit one affine map at
    least as well on the beads as where placed (4 pairs or more; compared over the pairs
    that fit keeps, ``reject_px`` being the landmark rejection threshold): a detection
    pulled off its bead by an edge or a neighbour is not trusted over the hand. Returns
    the landmarks (weights: :func:`_weights`) and the record of what moved, with
    ``off_beads`` (:func:`registration.click_offset.off_beads`) on the clicks as kept.
    """
    fixed_xy = np.asarray(landmarks.fixed_xy, float)
    needle = detect_needle(fixed, fixed_mask, spacing_mm, bright=False)
    beads = detect_beads(
        fixed, fixed_mask, spacing_mm, bright=False, max_blobs=MAX_BEADS, min_snr=MIN_BEAD_SNR,
        exclude=needle_zone(needle, spacing_mm),
    )  # fmt: skip
    target = _targets(fixed_xy, beads.xy, np.asarray(spacing_mm, float)[::-1], within_mm)
    moved = target >= 0
    new_xy = fixed_xy.copy()
    new_xy[moved] = beads.xy[target[moved]]
    shift_px = np.linalg.norm(new_xy - fixed_xy, axis=1)
    weights, hand_px = _weights(landmarks.weights, moved, shift_px)
    record = {"within_mm": float(within_mm), "beads_detected": len(beads), "of": len(fixed_xy)}
    if moved.any():
        why = _declined(landmarks.moving_xy, fixed_xy, new_xy, reject_px, record)
        if why:
            record["declined"] = why
            moved[:] = False
    record["moved"] = int(moved.sum())
    record["median_shift_px"] = round(float(np.median(shift_px[moved])), 3) if moved.any() else None
    record["click_sigma_px"] = None if hand_px is None or not moved.any() else round(hand_px, 3)
    final_xy = np.where(moved[:, None], new_xy, fixed_xy)
    to_mm = np.asarray(spacing_mm, float)[::-1]
    fit = _affine_fit(landmarks.moving_xy, final_xy, reject_px)  # one fit for both checks
    record["off_beads"] = off_beads(
        landmarks.moving_xy, final_xy, beads.xy, to_mm, reject_px, fit=fit
    )
    given = landmarks.weights if landmarks.weights is not None else np.ones(len(fixed_xy))
    if fit is not None:
        w = weights if moved.any() and weights is not None else given
        kept = np.asarray(fit.inliers, bool)
        record["beside_bead"] = beside_beads(
            landmarks.moving_xy, final_xy, w, given, kept, beads.xy, to_mm
        )
    else:  # 3 pairs or fewer (under beside_beads's least), or no consensus
        record["beside_bead"] = None
    if not moved.any():
        return landmarks, record
    out = dataclasses.replace(landmarks, fixed_xy=new_xy, weights=weights, given_weights=given)
    return out, record


def _targets(fixed_xy, beads_xy, to_mm, within_mm: float) -> np.ndarray:
    """Per click, the one bead within ``within_mm`` that no other click claims, or -1."""
    target = np.full(len(fixed_xy), -1)
    if len(beads_xy):
        d = np.linalg.norm((fixed_xy[:, None, :] - beads_xy[None]) * to_mm, axis=2)
        near = d <= within_mm
        one = near.sum(axis=1) == 1
        target[one] = np.argmax(near[one], axis=1)
        claimed = np.bincount(target[target >= 0], minlength=len(beads_xy))
        target[(target >= 0) & (claimed[np.maximum(target, 0)] > 1)] = -1
    return target


def _declined(moving_xy, fixed_xy, new_xy, reject_px, record: dict) -> str | None:
    """Why the moves are not kept, or None; the scatters go into ``record``.

    The beads' centres must fit one map no worse than the clicks: a detection pulled by an
    edge or a neighbour does not.
    """
    agree = _agreeing(moving_xy, fixed_xy, reject_px)
    if agree is None:
        agree = np.ones(len(fixed_xy), bool)
    src = np.asarray(moving_xy, float)[agree]
    before, after = _scatter(src, fixed_xy[agree]), _scatter(src, new_xy[agree])
    record["scatter_px_as_placed"] = None if before is None else round(before, 3)
    record["scatter_px_on_beads"] = None if after is None else round(after, 3)
    if before is None or after is None:  # as placed they may fix no map: the fit refuses
        return "too few pairs to compare"
    if after > before:
        return "the pairs fit worse on the beads"
    return None


def _agreeing(moving_xy, fixed_xy, reject_px: float | None) -> np.ndarray | None:
    """The pairs an affine fit keeps (all with 3 pairs or fewer), None where none agree.

    The scatter is compared over them: a few wild pairs would swamp the RMS, and moves
    that pull right clicks off their points would go unseen.
    """
    if len(fixed_xy) <= MIN_POINTS[TransformModel.AFFINE]:
        return np.ones(len(fixed_xy), bool)
    fit = _affine_fit(moving_xy, fixed_xy, reject_px)
    return None if fit is None else np.asarray(fit.inliers, bool)


def _affine_fit(moving_xy, fixed_xy, reject_px: float | None):
    """The affine landmark fit with rejection, or None with 3 pairs or fewer or no consensus."""
    if len(fixed_xy) <= MIN_POINTS[TransformModel.AFFINE]:
        return None
    try:
        return fit_landmarks(moving_xy, fixed_xy, "affine", reject_threshold_px=reject_px)
    except LandmarkInputError:  # no consensus, or points that fix no map
        return None


def _scatter(moving_xy, fixed_xy) -> float | None:
    """RMS residual (px) of an affine fit to the pairs, or None where it fits them exactly.

    Affine whatever the model: it leaves the most coordinates over for the comparison,
    and across an ultrasound field it differs from the homography by about 1 %.
    """
    if len(fixed_xy) <= MIN_POINTS[TransformModel.AFFINE]:
        return None
    try:
        h = fit_model(TransformModel.AFFINE, moving_xy, fixed_xy)
    except LandmarkInputError:  # the points fix no affine map (in a line)
        return None
    resid = Transform(h).apply(np.asarray(moving_xy, float)) - fixed_xy
    return float(np.sqrt(np.mean(np.sum(resid**2, axis=1))))


def _weights(given, moved: np.ndarray, shift_px: np.ndarray):
    """Pair weights with the clicks left in place down-weighted, and the hand's noise (px).

    Where some clicks moved and some did not, the moves measure how precisely this hand
    clicks (per coordinate, pooled with the landmark fit's prior); a click left in place
    carries that noise on top of the floor a moved pair is assumed to keep
    (:data:`registration.landmarks.SIGMA_RANGE_PX`), and is weighed by the ratio of the
    variances. Otherwise the weights stay as given.
    """
    if moved.all() or not moved.any():
        return given, None
    n = int(moved.sum())
    hand2 = SIGMA_PRIOR_DOF * SIGMA_PRIOR_PX**2 + float(np.sum(shift_px[moved] ** 2))
    hand2 /= SIGMA_PRIOR_DOF + 2 * n
    floor2 = SIGMA_RANGE_PX[0] ** 2
    w = np.ones(len(moved)) if given is None else np.asarray(given, float).copy()
    w[~moved] *= floor2 / (floor2 + hand2)
    return w, float(np.sqrt(hand2))

"""Fluoroscopy clicks that sit off the beads under them, all the same way.

Clicks read off a shifted or resized display (or a fluoroscopy other than the one
clicked on) still agree with each other: every check that compares pairs passes, and the
answer carries the offset. The beads under the clicks show it. Each click is paired with
the bead it sits nearest (and which sits nearest it) within :data:`PAIR_MM`; the clicks'
displacements onto their beads are fitted with a shift, a scale (one, or one along each
image axis) and a turn common to all, and that common part is tested against the clicks'
scatter (docs/registration-method.md, *Clicks off the beads under them*).
"""

from __future__ import annotations

import numpy as np

from .errors import LandmarkInputError
from .landmarks import fit_landmarks, residual_sigma
from .verify_landmarks import FALSE_REFUSAL_RATE

__all__ = ["off_beads"]

#: Farthest a click's bead may lie from it (mm at the isocentre): beyond the snap's 2 mm,
#: so that clicks a few millimetres off still find their bead, and under the spacing of
#: beads placed to be told apart.
PAIR_MM = 5.0
#: Smallest common displacement (RMS at the clicks, mm at the isocentre) that refuses:
#: half the 2 mm within which an answer counts as right, so that a harmless bias of the
#: hand is not refused for being consistent.
LIMIT_MM = 1.0
#: The common parts tested, by their columns: a shift, a scale and a turn (a display shifted
#: or resized alike); and a shift, a scale along each image axis and a turn (a picture
#: stretched to another shape resizes one axis only). Each is tested at half the rate: the
#: first has the power for the common case, the second catches what the first passes.
_COMMON_PARTS = {"shift, scale, turn": 4, "shift, axis scales, turn": 5}


def off_beads(
    moving_xy, fixed_xy, beads_xy, to_mm, reject_px: float | None, *, fit=None
) -> dict | None:
    """The clicks' common displacement onto their beads, and a reason to refuse, or None.

    ``to_mm`` is (x, y) mm at the isocentre per fluoroscopy pixel. Each common part's
    significance is an F test against the displacements' own residual pooled with the
    landmark fit's (an affine fit of all pairs, whose residuals a common offset leaves
    unchanged); the more significant is recorded, its p-value multiplied by the parts
    tested (two; one, one scale, with 3 clicks on beads). ``fit``: that affine fit where
    the caller has it (:class:`registration.landmarks.LandmarkFit`), not made again.
    None with fewer than 3 clicks on beads.
    """
    fixed_xy = np.asarray(fixed_xy, float).reshape(-1, 2)
    beads_xy = np.asarray(beads_xy, float).reshape(-1, 2)
    to_mm = np.asarray(to_mm, float)
    clicks, beads = _on_beads(fixed_xy, beads_xy, to_mm)
    m = len(clicks)
    if m < 3:
        return None
    # With 3 clicks on beads, 5 parameters leave one coordinate of scatter, near 0 by chance
    # for 1 set of right anatomical clicks beside beads in 10 (session 21 review): one scale.
    parts = {name: n for name, n in _COMMON_PARTS.items() if 2 * m - n >= 2}
    scatter = _landmark_scatter(moving_xy, fixed_xy, reject_px, fit)
    best = None
    for name, n_par in parts.items():
        common, resid = _common_part(fixed_xy[clicks], beads_xy[beads], to_mm, n_par)
        var, dof = _scatter_variance(resid, 2 * m - n_par, scatter, to_mm)
        f_stat = (float(common @ common) / n_par) / max(var, 1e-12)
        p_value = min(1.0, len(parts) * float(_f_tail(f_stat, n_par, dof)))
        offset_mm = float(np.sqrt(common @ common / m))
        if best is None or p_value < best[2]:
            best = (name, offset_mm, p_value)
    name, offset_mm, p_value = best
    record = {"clicks_on_beads": m, "common": name, "offset_mm": round(offset_mm, 3)}
    record["p_value"] = p_value
    if offset_mm >= LIMIT_MM and p_value < FALSE_REFUSAL_RATE:
        record["refuse"] = (
            f"the fluoroscopy clicks sit {offset_mm:.1f} mm off the {m} beads under them, "
            "all the same way (a shift, resize or turn common to them, which the pairs cannot "
            "see): an answer from them carries it. Were they read off a shifted or resized "
            "display, or another image? If they are on anatomy beside the beads, "
            "--snap-to-beads-mm none leaves beads out of it, or --accept-unverified keeps "
            "the answer marked"
        )
    return record


def _on_beads(fixed_xy, beads_xy, to_mm) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (clicks, beads) that are each other's nearest within :data:`PAIR_MM`."""
    if not len(beads_xy) or not len(fixed_xy):
        return np.zeros(0, int), np.zeros(0, int)
    d = np.linalg.norm((fixed_xy[:, None, :] - beads_xy[None]) * to_mm, axis=2)
    bead_of = np.argmin(d, axis=1)
    click_of = np.argmin(d, axis=0)
    rows = np.arange(len(fixed_xy))
    ok = (d[rows, bead_of] <= PAIR_MM) & (click_of[bead_of] == rows)
    return rows[ok], bead_of[ok]


def _common_part(clicks, beads, to_mm, n_par: int) -> tuple[np.ndarray, np.ndarray]:
    """(fitted, residual) displacements in mm: least squares shift, scale(s) and turn.

    ``n_par`` 4: one scale; 5: a scale along each image axis.
    """
    m = len(clicks)
    rel = (clicks - clicks.mean(axis=0)) * to_mm
    design = np.zeros((2 * m, n_par))
    design[0::2, 0] = 1.0
    design[1::2, 1] = 1.0
    design[0::2, 2], design[1::2, n_par - 2] = rel[:, 0], rel[:, 1]
    design[0::2, n_par - 1], design[1::2, n_par - 1] = -rel[:, 1], rel[:, 0]
    shift = ((beads - clicks) * to_mm).ravel()
    params, *_ = np.linalg.lstsq(design, shift, rcond=None)
    fitted = design @ params
    return fitted, shift - fitted


def _scatter_variance(resid, dof: int, scatter, to_mm):
    """(variance per coordinate in mm², dof) the common part is tested against.

    The displacements' own residual, pooled with the landmark fit's ``scatter`` (click
    noise in px and its dof, :func:`_landmark_scatter`); the own
    alone where it is the larger. Clicks on anatomy beside beads leave displacements
    that no common part explains, far beyond the hand's noise: pooled with that noise
    they read as significant (session 20 review: 1-3 % of such right sets refused).
    """
    own = float(resid @ resid) / dof
    sigma_px, lm_dof = scatter
    if sigma_px is None:
        return own, dof
    pooled = (own * dof + lm_dof * (sigma_px * float(np.mean(to_mm))) ** 2) / (dof + lm_dof)
    return (own, dof) if own > pooled else (pooled, dof + lm_dof)


def _landmark_scatter(moving_xy, fixed_xy, reject_px, fit=None) -> tuple[float | None, int]:
    """Click noise (px) and its dof from an affine fit of every pair; (None, 0) if none."""
    if len(fixed_xy) < 4:
        return None, 0
    if fit is None:
        try:
            fit = fit_landmarks(moving_xy, fixed_xy, "affine", reject_threshold_px=reject_px)
        except LandmarkInputError:
            return None, 0
    sigma, dof = residual_sigma(fit.residuals_px[fit.inliers], "affine")
    return sigma, dof


def _f_tail(f_stat: float, n_par: int, dof: int) -> float:
    """P(F(n_par, dof) > f_stat)."""
    from scipy.special import fdtrc

    return fdtrc(n_par, dof, f_stat)

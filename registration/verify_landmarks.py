"""Verification of a landmark answer (clicked or matched beads) by its held-out pairs.

A landmark fit's own residuals say how well the pairs fit the model, not whether each
pair is right: a wrong pair with high leverage pulls the fit onto itself. Every pair is
therefore also predicted from the others (leave-one-out, in closed form from the
linearised fit, so thousands of pairs cost one small matrix per pair): a pair the others
contradict far beyond the click noise refuses the answer. The same linearised fit
(:func:`registration.uncertainty.linearise`, the one propagation of the click noise)
carries the noise to every point of the ultrasound field, which is the predicted TRE
(:data:`PREDICTED_TRE_FACTOR`; docs/registration-method.md, *Calibrating predicted_tre_mm*).
"""

from __future__ import annotations

import numpy as np

from .correspond import INLIER_MM
from .landmarks import SIGMA_PRIOR_PX, is_automatic
from .transforms import N_PARAMS, Transform, TransformModel
from .uncertainty import linearise

__all__ = [
    "BEAD_AGREE_MM",
    "FALSE_REFUSAL_RATE",
    "HELD_OUT_PRIOR_DOF",
    "HELD_OUT_PRIOR_SIGMA_PX",
    "MIN_DOF_FOR_TEST",
    "bead_reprojection",
    "PREDICTED_TRE_FACTOR",
    "landmark_check",
]

#: Predicted 90th-percentile TRE = factor × σ × the RMS error a unit click noise leaves at
#: the median point of the ultrasound field (own tuning seeds 100-103; 0.5 and 3 px clicks;
#: on the family's tuning seeds a wide, safe bound: docs/registration-method.md).
PREDICTED_TRE_FACTOR = 2.0
#: Chance that a set of right pairs with Gaussian click noise is refused by the held-out
#: test (its statistic's limit is set at this tail, shared over the pairs).
FALSE_REFUSAL_RATE = 1e-3
#: A mapped ultrasound bead within this (mm at the isocentre) of a fluoroscopy bead lands
#: on it: the matcher's inlier distance.
BEAD_AGREE_MM = INLIER_MM
#: The least click noise (px) the held-out test assumes: no position is known better than
#: a tenth of a pixel, and exact (synthetic) pairs would otherwise test rounding errors.
MIN_SIGMA_PX = 0.1
#: Least redundant coordinates (2 × pairs − parameters) before the held-out test runs:
#: with fewer, the robust noise scale it compares against is itself unknown.
MIN_DOF_FOR_TEST = 4
#: The click noise (px per coordinate) the held-out test pools the other pairs' scatter
#: with, and how many residual coordinates it weighs as: a handful of pairs alone leave
#: the noise nearly unknown, and the limit then lets any mis-click through (9998 σ² at 4
#: coordinates over the model). Chosen on the family's tuning seeds
#: (docs/registration-method.md, *Verification*).
HELD_OUT_PRIOR_SIGMA_PX = SIGMA_PRIOR_PX
HELD_OUT_PRIOR_DOF = 8.0


def landmark_check(
    fit_transform: Transform,
    landmarks,
    weights,
    sigma_px: float,
    field_xy: np.ndarray,
    px_mm: float,
    images: dict | None = None,
    *,
    sigma_known: bool = False,
    noise_prior: tuple[float, float] | None = None,
) -> dict:
    """Held-out test of the pairs and the predicted TRE: ``quality.verification``.

    Parameters
    ----------
    fit_transform : Transform
        The landmark fit (its model sets the parameters counted).
    landmarks : Landmarks
        The inlier pairs (moving, fixed px) the fit used, with ``names``.
    weights : ndarray or None
        Their weights (inverse variance, relative).
    sigma_px : float
        The click noise the registration used (given, or estimated from the residuals).
    field_xy : ndarray (n, 2)
        Moving points spanning the ultrasound field, where the TRE is predicted.
    px_mm : float
        A fixed pixel at the isocentre, mm.
    images : dict, optional
        :func:`registration.verify.intensity_agreement`'s figures: the evidence for pairs
        too few for the held-out test (fewer than :data:`MIN_DOF_FOR_TEST` coordinates
        over the model), and for more a check against gross disagreement (pairs consistent
        with each other, swapped or mirrored against the images).
    sigma_known : bool
        ``sigma_px`` was given by the user (``--landmark-sigma-px``): the held-out test
        compares against it (χ²₂) instead of estimating the noise.
    noise_prior : (float, float), optional
        The click noise (px) and the coordinates it weighs as that the estimate pools
        with; default (:data:`HELD_OUT_PRIOR_SIGMA_PX`, :data:`HELD_OUT_PRIOR_DOF`).

    Returns
    -------
    dict
        ``evidence`` "landmarks", ``pairs``, ``redundant_coordinates``,
        ``residual_sigma_px`` (None without redundancy), ``sigma_px`` (the larger of it and
        ``sigma_px``), the held-out test (``loo_statistic_max``, its limit and pair, the
        noise it compared with, ``loo_noise_px``, and ``loo_noise_from``: "given",
        "pairs" or "pairs+prior"), ``predicted_tre_mm``, and ``unverified`` (the reason)
        when a pair is contradicted.
    """
    src = np.asarray(landmarks.moving_xy, float)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, float)
    model = TransformModel(fit_transform.model)
    h = fit_transform.matrix / fit_transform.matrix[2, 2]
    # Each model along its own parameters: as affine, 2 similarity pairs were under-determined
    # and their bound came out half the true one, and 4 clicks left 2 coordinates, not 4.
    lin = linearise(h, model, src, w)
    dof = 2 * len(src) - lin.jac.shape[2]
    resid = np.asarray(landmarks.fixed_xy, float) - Transform(h).apply(src)
    out = {"evidence": "landmarks", "pairs": len(src), "redundant_coordinates": int(dof)}
    sigma_res = None
    if dof > 0:
        sigma_res = float(np.sqrt(np.sum(w[:, None] * resid**2) / dof))
    out["residual_sigma_px"] = sigma_res
    sigma = max(float(sigma_px), sigma_res or 0.0)
    out["sigma_px"] = sigma
    if dof >= MIN_DOF_FOR_TEST:
        prior = noise_prior or (HELD_OUT_PRIOR_SIGMA_PX, HELD_OUT_PRIOR_DOF)
        known = float(sigma_px) if sigma_known else None
        out.update(_held_out(lin.jac, w, lin.cov, resid, landmarks.names, dof, known, prior))
    rms_unit = lin.rms_unit_px(field_xy)  # per unit σ
    out["predicted_tre_mm"] = float(PREDICTED_TRE_FACTOR * sigma * np.median(rms_unit) * px_mm)
    auto = is_automatic(landmarks.names)
    out.update(_doubt(out, model, dof, auto, images))
    return out


def _doubt(out: dict, model: TransformModel, dof: int, auto: bool, images) -> dict:
    """``unverified`` (a reason to refuse) or ``unchecked`` (a caveat), or nothing."""
    n = out["pairs"]
    drifts = None if images is None else images.get("intensity_only_drift_mm")
    if dof < MIN_DOF_FOR_TEST and images is not None and not images["intensity_agrees"]:
        metric, drift = max(drifts.items(), key=lambda kv: kv[1])
        why = f"{metric} alone moves it {drift:.1f} mm (> {images['agreement_limit_mm']:.1f} mm)"
        noun = "beads matched" if auto else "landmark pairs"
        return {
            "unverified": f"unverified: only {n} {noun}, too few to check each other under "
            f"the {model.value} model, and the images disagree: {why}"
        }
    if not auto and 2 * n <= N_PARAMS[model]:
        # Nothing checks an exact fit: 3 pairs, one mis-clicked by 25 px, were accepted
        # 6 mm off at a predicted 2.1 mm; with an intensity metric, mis-clicks of 10-20 px
        # moved LC2 and MI no more than right clicks did (0.3-0.5 mm), so the images cannot
        # stand in (automatic matches were checked by the consensus).
        images_said = (
            ""
            if drifts is None
            else f" (the images alone moved it {max(drifts.values()):.1f} mm, as they move a "
            "mis-click of 10-20 px)"
        )
        return {
            "unverified": f"unverified: {n} landmark pairs fit the {model.value} model "
            f"exactly, so nothing could catch a mis-click{images_said}; give more pairs, or "
            "--accept-unverified to keep it marked"
        }
    if dof < MIN_DOF_FOR_TEST:
        checked = "the images were not checked" if drifts is None else (
            f"the images alone moved it no more than {max(drifts.values()):.1f} mm, which "
            "rules out only gross errors"
        )  # fmt: skip
        return {
            "unchecked": f"{n} pairs leave {max(dof, 0)} coordinates over the {model.value} "
            f"model (the held-out test needs {MIN_DOF_FOR_TEST}); {checked}"
        }
    if images is not None and not images["intensity_agrees"]:
        metric, drift = max(drifts.items(), key=lambda kv: kv[1])
        if drift <= images["agreement_limit_mm"]:  # each moved it past the two-metric limit
            moved = " and ".join(f"{m} {d:.1f} mm" for m, d in sorted(drifts.items()))
            return {
                "unverified": f"unverified: the images alone move the landmark answer ({moved}, "
                f"each > {images['agreement_both_limit_mm']:.1f} mm): the pairs agree with "
                "each other but not with the images (clicks all off the same way: read off a "
                "shifted or resized display?)"
            }
        return {
            "unverified": f"unverified: {metric} alone moves the landmark answer {drift:.1f} "
            f"mm (> {images['agreement_limit_mm']:.1f} mm): the pairs agree with each other "
            "but not with the images (swapped or mirrored coordinates?)"
        }
    if out.get("loo_statistic_max", 0.0) > out.get("loo_statistic_limit", np.inf):
        return {"unverified": _held_out_reason(out)}
    return {}


def _held_out_reason(out: dict) -> str:
    """Why the held-out test refused: the worst pair, how far off, against what noise."""
    spread = np.sqrt(out["loo_statistic_max"] / out["loo_statistic_limit"])
    noise_from = {
        "given": "given",
        "pairs": "the other pairs' scatter",
        "pairs+prior": f"the other pairs' scatter pooled with {HELD_OUT_PRIOR_SIGMA_PX} px",
    }[out["loo_noise_from"]]
    return (
        f"unverified: landmark {out['loo_worst_pair']} lies {out['loo_worst_px']:.1f} px "
        f"from where the other pairs put it, {spread:.1f}× what a click noise of "
        f"{out['loo_noise_px']:.2g} px ({noise_from}) allows: a wrong pair the fit absorbed"
    )


def _held_out(jac, w, cov, resid, names, dof: int, known: float | None, prior) -> dict:
    """The worst pair's held-out error (px) and its test statistic against the click noise.

    For a linear fit, pair i's residual without it is (I − H_ii)⁻¹ e_i with the block
    leverage H_ii = w_i J_i C J_iᵀ, and q_i = w_i e_iᵀ (I − H_ii)⁻¹ e_i is what leaving it
    out removes from the residual sum; for a right pair q_i / σ² is χ²₂. A given σ
    (``known``) is used as such. Otherwise σ² is estimated without the pair, so a wrong
    pair that spread its error over the others is measured against their own scatter:
    (RSS − q_i) over dof − 2 coordinates (q_i / σ²₍ᵢ₎ is 2 F(2, dof − 2)), and the same
    pooled with ``prior`` = (σ₀, ν₀) as ν₀ more coordinates of scatter σ₀ (a scaled
    inverse-χ² prior on σ²: 2 F(2, dof − 2 + ν₀)). The pooled test has the power with
    few pairs, the other with many precise ones; a pair fails when either refuses it,
    each at half the false-refusal rate.
    """
    lev = np.einsum("nap,pq,nbq->nab", jac, cov, jac) * w[:, None, None]
    inv = np.linalg.pinv(np.eye(2)[None] - lev, rcond=1e-9)
    loo = np.einsum("nab,nb->na", inv, resid)
    q = np.einsum("na,na->n", resid, loo) * w
    rss = float(np.sum(w[:, None] * resid**2))
    s0, nu0 = prior
    if known is not None:
        tests = [("given", np.full(len(q), known**2), np.inf)]
    else:
        tests = [("pairs", (rss - q) / (dof - 2), dof - 2)]
        if nu0 > 0:
            pooled = (nu0 * s0**2 + rss - q) / (nu0 + dof - 2)
            tests.append(("pairs+prior", pooled, dof - 2 + nu0))
    best = None
    for source, variance, ref_dof in tests:
        noise = np.maximum(variance, MIN_SIGMA_PX**2)
        stat = q / noise
        limit = _limit(len(q) * len(tests), ref_dof)
        k = int(np.argmax(stat))
        if best is None or stat[k] / limit > best[0]:
            best = (stat[k] / limit, k, float(stat[k]), limit, np.sqrt(noise[k]), source)
    _, k, stat_k, limit, noise_px, source = best
    label = names[k] if k < len(names) and names[k] else str(k)
    return {
        "loo_statistic_max": stat_k,
        "loo_statistic_limit": limit,
        "loo_noise_px": float(noise_px),
        "loo_noise_from": source,
        "loo_worst_pair": label,
        "loo_worst_px": float(np.linalg.norm(loo[k])),
    }


def _limit(n_tests: int, ref_dof: float) -> float:
    """2 F(2, ref_dof) (χ²₂ when infinite) at 1 − :data:`FALSE_REFUSAL_RATE` / n_tests.

    The tail is shared over the pairs and tests (Bonferroni): one set of right pairs in
    1 / :data:`FALSE_REFUSAL_RATE` is refused when the noise model holds.
    """
    # Closed forms of both tails with two numerator degrees of freedom: importing
    # scipy.stats for them cost every landmark registration seconds of start-up.
    tail = FALSE_REFUSAL_RATE / n_tests
    if not np.isfinite(ref_dof):
        return float(-2.0 * np.log(tail))
    return float(ref_dof * (tail ** (-2.0 / ref_dof) - 1.0))


def bead_reprojection(transform: Transform, moving_xy, fixed_xy, fixed_mask, px_mm: float):
    """Where the answer puts every detected ultrasound bead among the fluoroscopy's beads.

    Every detection counts, matched or not: a bead the consensus left out that lands on a
    fluoroscopy bead is evidence the match did not use; the matched ones' distances after
    the final transform (intensity included) say whether the answer kept to them.
    Returns the figures of ``quality.verification["beads"]`` (distances in mm).
    """
    mapped = transform.apply(np.asarray(moving_xy, float).reshape(-1, 2))
    fixed = np.asarray(fixed_xy, float).reshape(-1, 2)
    mask = np.asarray(fixed_mask, bool) if fixed_mask is not None else None
    col, row = np.round(mapped).astype(int).T
    inside = np.isfinite(mapped).all(axis=1)
    if mask is not None:
        inside &= (row >= 0) & (row < mask.shape[0]) & (col >= 0) & (col < mask.shape[1])
        inside[inside] = mask[row[inside], col[inside]]
    d = np.full(len(mapped), np.inf)
    if len(fixed):
        d = np.linalg.norm(mapped[:, None, :] - fixed[None], axis=2).min(axis=1) * px_mm
    return {
        "detected_moving": len(mapped),
        "mapped_into_field": int(inside.sum()),
        "on_a_fluoroscopy_bead": int(np.sum(inside & (d <= BEAD_AGREE_MM))),
        "distance_mm": [round(float(v), 3) if np.isfinite(v) else None for v in d],
    }

"""Verification of a landmark answer (clicked or matched beads) by its held-out pairs.

A landmark fit's own residuals say how well the pairs fit the model, not whether each
pair is right: a wrong pair with high leverage pulls the fit onto itself. Every pair is
therefore also predicted from the others (leave-one-out, in closed form from the
linearised fit, so thousands of pairs cost one small matrix per pair): a pair the others
contradict far beyond the click noise refuses the answer. The same linearised fit
propagates the click noise to every point of the ultrasound field, which is the
predicted TRE (:data:`PREDICTED_TRE_FACTOR` calibrated on tuning seeds, see
docs/registration-method.md, *Verification*).
"""

from __future__ import annotations

import numpy as np

from .transforms import N_PARAMS, Transform, TransformModel

__all__ = [
    "BEAD_AGREE_MM",
    "FALSE_REFUSAL_RATE",
    "MIN_DOF_FOR_TEST",
    "bead_reprojection",
    "PREDICTED_TRE_FACTOR",
    "landmark_check",
]

#: Predicted 90th-percentile TRE = factor × σ × the RMS error a unit click noise leaves at
#: the median point of the ultrasound field (tuning seeds 100-103; 0.5 and 3 px clicks).
PREDICTED_TRE_FACTOR = 2.0
#: Chance that a set of right pairs with Gaussian click noise is refused by the held-out
#: test (its statistic's limit is set at this tail, shared over the pairs).
FALSE_REFUSAL_RATE = 1e-3
#: A mapped ultrasound bead within this (mm at the isocentre) of a fluoroscopy bead lands
#: on it: the matcher's inlier distance.
BEAD_AGREE_MM = 1.5
#: The least click noise (px) the held-out test assumes: no position is known better than
#: a tenth of a pixel, and exact (synthetic) pairs would otherwise test rounding errors.
MIN_SIGMA_PX = 0.1
#: Least redundant coordinates (2 × pairs − parameters) before the held-out test runs:
#: with fewer, the robust noise scale it compares against is itself unknown.
MIN_DOF_FOR_TEST = 4


def landmark_check(
    fit_transform: Transform,
    landmarks,
    weights,
    sigma_px: float,
    field_xy: np.ndarray,
    px_mm: float,
    images: dict | None = None,
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

    Returns
    -------
    dict
        ``evidence`` "landmarks", ``pairs``, ``redundant_coordinates``,
        ``residual_sigma_px`` (None without redundancy), ``sigma_px`` (the larger of it and
        ``sigma_px``), the held-out test (``loo_statistic_max``, its limit and pair),
        ``predicted_tre_mm``, and ``unverified`` (the reason) when a pair is contradicted.
    """
    src = np.asarray(landmarks.moving_xy, float)
    dst = np.asarray(landmarks.fixed_xy, float)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, float)
    model = TransformModel(fit_transform.model)
    h = fit_transform.matrix / fit_transform.matrix[2, 2]
    centre, scale = src.mean(axis=0), max(float(np.ptp(src, axis=0).max()) / 2.0, 1.0)
    jac = _jacobian(h, src, model, centre, scale)  # (n, 2, p)
    p = jac.shape[2]
    dof = 2 * len(src) - p
    info = np.einsum("nap,n,naq->pq", jac, w, jac)
    cov = np.linalg.pinv(info)  # per unit σ²
    resid = dst - Transform(h).apply(src)
    out = {"evidence": "landmarks", "pairs": len(src), "redundant_coordinates": int(dof)}
    sigma_res = None
    if dof > 0:
        sigma_res = float(np.sqrt(np.sum(w[:, None] * resid**2) / dof))
    out["residual_sigma_px"] = sigma_res
    sigma = max(float(sigma_px), sigma_res or 0.0)
    out["sigma_px"] = sigma
    if dof >= MIN_DOF_FOR_TEST:
        out.update(_held_out(jac, w, cov, resid, landmarks.names, dof))
    gj = _jacobian(h, np.asarray(field_xy, float), model, centre, scale)
    rms_unit = np.sqrt(np.einsum("gap,pq,gaq->g", gj, cov, gj))  # per unit σ
    out["predicted_tre_mm"] = float(PREDICTED_TRE_FACTOR * sigma * np.median(rms_unit) * px_mm)
    # Matched beads are named auto_bead<k> (registration.initial); the start drops the
    # landmarks' source, so the name tells the automatic route.
    auto = bool(landmarks.names) and all(str(n).startswith("auto_") for n in landmarks.names)
    if dof < MIN_DOF_FOR_TEST and images is not None and not images["intensity_agrees"]:
        metric, drift = max(images["intensity_only_drift_mm"].items(), key=lambda kv: kv[1])
        why = f"{metric} alone moves it {drift:.1f} mm (> {images['agreement_limit_mm']:.1f} mm)"
        noun = "beads matched" if auto else "landmark pairs"
        out["unverified"] = (
            f"unverified: only {len(src)} {noun}, too few to check each other under the "
            f"{model.value} model, and the images disagree: {why}"
        )
    elif not auto and 2 * len(src) <= N_PARAMS[model]:
        # Nothing checks an exact fit: 3 pairs, one mis-clicked by 25 px, were accepted
        # 6 mm off at a predicted 2.1 mm; with an intensity metric, mis-clicks of 10-20 px
        # moved LC2 and MI no more than right clicks did (0.3-0.5 mm), so the images cannot
        # stand in (automatic matches were checked by the consensus).
        moved = None if images is None else max(images["intensity_only_drift_mm"].values())
        images_said = (
            ""
            if moved is None
            else f" (the images alone moved it {moved:.1f} mm, as they move a mis-click of "
            "10-20 px)"
        )
        out["unverified"] = (
            f"unverified: {len(src)} landmark pairs fit the {model.value} model exactly, so "
            f"nothing could catch a mis-click{images_said}; give more pairs, or "
            "--accept-unverified to keep it marked"
        )
    elif dof < MIN_DOF_FOR_TEST:
        checked = "no intensity metric ran" if images is None else (
            "the images alone moved it no more than "
            f"{max(images['intensity_only_drift_mm'].values()):.1f} mm, which rules out "
            "only gross errors"
        )  # fmt: skip
        out["unchecked"] = (
            f"{len(src)} pairs leave {max(dof, 0)} coordinates over the {model.value} model "
            f"(the held-out test needs {MIN_DOF_FOR_TEST}); {checked}"
        )
    elif images is not None and not images["intensity_agrees"]:
        metric, drift = max(images["intensity_only_drift_mm"].items(), key=lambda kv: kv[1])
        out["unverified"] = (
            f"unverified: {metric} alone moves the landmark answer {drift:.1f} mm (> "
            f"{images['agreement_limit_mm']:.1f} mm): the pairs agree with each other but "
            "not with the images (swapped or mirrored coordinates?)"
        )
    elif out.get("loo_statistic_max", 0.0) > out.get("loo_statistic_limit", np.inf):
        spread = np.sqrt(out["loo_statistic_max"] / out["loo_statistic_limit"])
        out["unverified"] = (
            f"unverified: landmark {out['loo_worst_pair']} lies "
            f"{out['loo_worst_px']:.1f} px from where the other pairs put it, {spread:.1f}× "
            "what their own scatter allows: a wrong pair the fit absorbed"
        )
    return out


def _held_out(jac, w, cov, resid, names, dof: int) -> dict:
    """The worst pair's held-out error (px) and its test statistic against the others.

    For a linear fit, pair i's residual without it is (I − H_ii)⁻¹ e_i with the block
    leverage H_ii = w_i J_i C J_iᵀ, and q_i = w_i e_iᵀ (I − H_ii)⁻¹ e_i is what leaving it
    out removes from the residual sum. The noise is estimated without the pair
    (externally: (RSS − q_i) / (dof − 2)), so a wrong pair that spread its error over the
    others is measured against their own scatter; q_i / σ²₍ᵢ₎ is then 2 F(2, dof − 2).
    """
    lev = np.einsum("nap,pq,nbq->nab", jac, cov, jac) * w[:, None, None]
    inv = np.linalg.pinv(np.eye(2)[None] - lev, rcond=1e-9)
    loo = np.einsum("nab,nb->na", inv, resid)
    q = np.einsum("na,na->n", resid, loo) * w
    rss = float(np.sum(w[:, None] * resid**2))
    external = np.maximum((rss - q) / (dof - 2), MIN_SIGMA_PX**2)
    stat = q / external
    k = int(np.argmax(stat))
    label = names[k] if k < len(names) and names[k] else str(k)
    return {
        "loo_statistic_max": float(stat[k]),
        "loo_statistic_limit": _limit(len(q), dof),
        "loo_worst_pair": label,
        "loo_worst_px": float(np.linalg.norm(loo[k])),
    }


def _limit(n_pairs: int, dof: int) -> float:
    """2 F(2, dof − 2) at 1 − :data:`FALSE_REFUSAL_RATE` / n_pairs (Bonferroni over pairs)."""
    from scipy.stats import f

    return float(2.0 * f.ppf(1.0 - FALSE_REFUSAL_RATE / n_pairs, 2, dof - 2))


def _jacobian(h, pts, model: TransformModel, centre, scale) -> np.ndarray:
    """d(mapped point)/d(parameters), (n, 2, p): affine entries, plus perspective ones.

    Rigid and similarity fits are propagated as affine (two more parameters: a slightly
    larger, safe prediction). Moving points are centred and scaled for conditioning; the
    propagated errors do not depend on that choice.
    """
    u = (pts - centre) / scale
    mapped = Transform(h).apply(pts)
    n = len(pts)
    ones = np.ones(n)
    hn = h @ np.array([[scale, 0, centre[0]], [0, scale, centre[1]], [0, 0, 1.0]])
    den = u @ hn[2, :2] + hn[2, 2]
    base = np.column_stack([u, ones]) / den[:, None]
    zero = np.zeros((n, 3))
    jx, jy = [np.hstack([base, zero])], [np.hstack([zero, base])]
    if model is TransformModel.PROJECTIVE:
        jx.append(-u * mapped[:, :1] / den[:, None])
        jy.append(-u * mapped[:, 1:] / den[:, None])
    return np.stack([np.hstack(jx), np.hstack(jy)], axis=1)


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

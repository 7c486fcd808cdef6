"""Closed-form landmark fits, robust rejection, FRE and leave-one-out TRE.

Rigid and similarity fits are Umeyama's weighted least squares (with the scale really
estimated: SimpleITK's LandmarkBasedTransformInitializer returns scale 1 for
Similarity2D). Affine is weighted linear least squares. Projective is the normalised DLT
followed by Gauss-Newton on the reprojection error in the fixed image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import RegistrationError
from .transforms import Transform, TransformModel

__all__ = ["LandmarkFit", "fit_landmarks", "fit_model", "MIN_POINTS"]

MIN_POINTS = {
    TransformModel.RIGID: 2,
    TransformModel.SIMILARITY: 2,
    TransformModel.AFFINE: 3,
    TransformModel.PROJECTIVE: 4,
}


def _umeyama(src, dst, w, with_scale: bool) -> np.ndarray:
    w = w / w.sum()
    mu_s = w @ src
    mu_d = w @ dst
    s0, d0 = src - mu_s, dst - mu_d
    cov = (d0 * w[:, None]).T @ s0
    u, sv, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ sign @ vt
    var_s = w @ np.sum(s0**2, axis=1)
    scale = (sv * np.diag(sign)).sum() / var_s if with_scale else 1.0
    h = np.eye(3)
    h[:2, :2] = scale * rot
    h[:2, 2] = mu_d - scale * rot @ mu_s
    return h


def _affine(src, dst, w) -> np.ndarray:
    a = np.hstack([src, np.ones((len(src), 1))]) * np.sqrt(w)[:, None]
    b = dst * np.sqrt(w)[:, None]
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    h = np.eye(3)
    h[:2] = sol.T
    return h


def _hartley(pts) -> np.ndarray:
    mean = pts.mean(axis=0)
    dist = np.sqrt(np.sum((pts - mean) ** 2, axis=1)).mean()
    s = np.sqrt(2.0) / max(dist, 1e-12)
    return np.array([[s, 0, -s * mean[0]], [0, s, -s * mean[1]], [0, 0, 1.0]])


def _dlt(src, dst, w) -> np.ndarray:
    ts, td = _hartley(src), _hartley(dst)
    s = (np.hstack([src, np.ones((len(src), 1))]) @ ts.T)[:, :2]
    d = (np.hstack([dst, np.ones((len(dst), 1))]) @ td.T)[:, :2]
    rows = []
    for (x, y), (u, v), wi in zip(s, d, np.sqrt(w), strict=True):
        rows.append(wi * np.array([-x, -y, -1, 0, 0, 0, u * x, u * y, u]))
        rows.append(wi * np.array([0, 0, 0, -x, -y, -1, v * x, v * y, v]))
    _, _, vt = np.linalg.svd(np.asarray(rows))
    hn = vt[-1].reshape(3, 3)
    h = np.linalg.inv(td) @ hn @ ts
    return h / h[2, 2]


def _project(h, pts):
    u = np.hstack([pts, np.ones((len(pts), 1))]) @ h.T
    return u[:, :2] / u[:, 2:3]


def _refine_projective(h, src, dst, w, iters: int = 20) -> np.ndarray:
    """Gauss-Newton on the weighted reprojection error in the fixed image."""
    p = (h / h[2, 2]).ravel()[:8].copy()
    for _ in range(iters):
        hm = np.append(p, 1.0).reshape(3, 3)
        u = np.hstack([src, np.ones((len(src), 1))]) @ hm.T
        proj = u[:, :2] / u[:, 2:3]
        r = (proj - dst).ravel() * np.repeat(np.sqrt(w), 2)
        jac = np.zeros((2 * len(src), 8))
        x, y = src[:, 0], src[:, 1]
        z = u[:, 2]
        for k, (px, py) in enumerate(proj):
            sw = np.sqrt(w[k])
            jac[2 * k] = sw * np.array([x[k], y[k], 1, 0, 0, 0, -px * x[k], -px * y[k]]) / z[k]
            jac[2 * k + 1] = sw * np.array([0, 0, 0, x[k], y[k], 1, -py * x[k], -py * y[k]]) / z[k]
        step, *_ = np.linalg.lstsq(jac, -r, rcond=None)
        p += step
        if np.linalg.norm(step) < 1e-12 * (1 + np.linalg.norm(p)):
            break
    return np.append(p, 1.0).reshape(3, 3)


def fit_model(model, moving_xy, fixed_xy, weights=None) -> np.ndarray:
    """Least-squares homography of ``model`` mapping moving points onto fixed points."""
    model = TransformModel(model)
    src = np.asarray(moving_xy, float)
    dst = np.asarray(fixed_xy, float)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2:
        raise RegistrationError(
            f"landmarks must be two (N, 2) arrays of equal shape, got {src.shape} and {dst.shape}"
        )
    if len(src) < MIN_POINTS[model]:
        raise RegistrationError(
            f"a {model.value} fit needs at least {MIN_POINTS[model]} landmark pairs, got {len(src)}"
        )
    w = np.ones(len(src)) if weights is None else np.asarray(weights, float)
    if np.any(w < 0) or w.sum() <= 0:
        raise RegistrationError("landmark weights must be non-negative and not all zero")
    if model is TransformModel.RIGID:
        return _umeyama(src, dst, w, with_scale=False)
    if model is TransformModel.SIMILARITY:
        return _umeyama(src, dst, w, with_scale=True)
    if model is TransformModel.AFFINE:
        return _affine(src, dst, w)
    h = _dlt(src, dst, w)
    return _refine_projective(h, src, dst, w)


@dataclass
class LandmarkFit:
    """A landmark-based transform with its quality figures (pixels of the fixed image).

    Attributes
    ----------
    transform : Transform
    inliers : ndarray of bool
        Pairs used in the final fit.
    residuals_px : ndarray
        Fixed-image distance of every pair after the fit (inliers and rejected).
    fre_px : float
        Root-mean-square fiducial registration error over the inliers.
    loo_tre_px : ndarray
        For each inlier, its distance when the fit is made without it (NaN when the
        remaining pairs are too few); an estimate of target registration error.
    """

    transform: Transform
    inliers: np.ndarray
    residuals_px: np.ndarray
    fre_px: float
    loo_tre_px: np.ndarray
    names: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> list[str]:
        """Names (or indices) of the pairs rejected as inconsistent."""
        labels = self.names or [str(i) for i in range(len(self.inliers))]
        return [n for n, ok in zip(labels, self.inliers, strict=True) if not ok]


def fit_landmarks(
    moving_xy,
    fixed_xy,
    model: TransformModel | str = TransformModel.PROJECTIVE,
    *,
    weights=None,
    names: list[str] | None = None,
    reject_threshold_px: float | None = 6.0,
    seed: int = 0,
) -> LandmarkFit:
    """Fit a transform to landmark pairs, rejecting inconsistent pairs robustly.

    Rejection is RANSAC over minimal subsets (all subsets when there are few pairs,
    otherwise a seeded random draw), keeping the largest consensus within
    ``reject_threshold_px``, then a refit on the consensus. ``None`` disables rejection.

    Raises
    ------
    RegistrationError
        Too few pairs, or fewer than the minimal number are mutually consistent.
    """
    model = TransformModel(model)
    src = np.asarray(moving_xy, float)
    dst = np.asarray(fixed_xy, float)
    n = len(src)
    w = np.ones(n) if weights is None else np.asarray(weights, float)
    h = fit_model(model, src, dst, w)
    inliers = np.ones(n, bool)
    k = MIN_POINTS[model]
    if reject_threshold_px is not None and n > k:
        resid = np.linalg.norm(_project(h, src) - dst, axis=1)
        if resid.max() > reject_threshold_px:
            inliers = _ransac(model, src, dst, w, k, reject_threshold_px, seed)
            if inliers.sum() < k + 1 and n >= k + 1:
                raise RegistrationError(
                    f"inconsistent landmarks: no {k + 1} pairs agree on a {model.value} "
                    f"transform within {reject_threshold_px:g} px"
                )
            h = fit_model(model, src[inliers], dst[inliers], w[inliers])
    resid = np.linalg.norm(_project(h, src) - dst, axis=1)
    fre = float(np.sqrt(np.mean(resid[inliers] ** 2)))
    loo = np.full(n, np.nan)
    idx = np.flatnonzero(inliers)
    if len(idx) > k:
        for i in idx:
            keep = idx[idx != i]
            hi = fit_model(model, src[keep], dst[keep], w[keep])
            loo[i] = float(np.linalg.norm(_project(hi, src[i : i + 1]) - dst[i]))
    return LandmarkFit(Transform(h, model), inliers, resid, fre, loo, list(names or []))


def _ransac(model, src, dst, w, k, thr, seed) -> np.ndarray:
    from itertools import combinations

    n = len(src)
    subsets = list(combinations(range(n), k))
    if len(subsets) > 500:
        rng = np.random.default_rng(seed)
        subsets = [tuple(rng.choice(n, k, replace=False)) for _ in range(500)]
    best = np.zeros(n, bool)
    best_err = np.inf
    for sub in subsets:
        try:
            h = fit_model(model, src[list(sub)], dst[list(sub)], w[list(sub)])
        except (RegistrationError, np.linalg.LinAlgError):
            continue
        if not np.all(np.isfinite(h)):
            continue
        resid = np.linalg.norm(_project(h, src) - dst, axis=1)
        ok = resid < thr
        err = resid[ok].sum()
        if ok.sum() > best.sum() or (ok.sum() == best.sum() and err < best_err):
            best, best_err = ok, err
    return best

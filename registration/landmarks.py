"""Closed-form landmark fits, robust rejection, FRE and leave-one-out TRE.

Rigid and similarity fits are Umeyama's weighted least squares (with the scale really
estimated: SimpleITK's LandmarkBasedTransformInitializer returns scale 1 for
Similarity2D). Affine is weighted linear least squares. Projective is the normalised DLT
followed by Gauss-Newton on the reprojection error in the fixed image.

Every step is linear in memory and near-linear in time in the number of pairs: the DLT
takes a thin SVD of its 2n x 9 system, Gauss-Newton builds its 2n x 8 Jacobian in one
go, RANSAC draws at most :data:`RANSAC_DRAWS` minimal subsets (never enumerating all of
them) and the leave-one-out error is computed for a bounded, seeded sample of pairs
when there are many (:data:`LOO_EXACT_MAX`, :data:`LOO_SAMPLE`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from .errors import LandmarkInputError, RegistrationError
from .transforms import Transform, TransformModel

__all__ = [
    "AUTO_PREFIX",
    "LandmarkFit",
    "is_automatic",
    "fit_landmarks",
    "fit_model",
    "MIN_POINTS",
    "MAX_COORDINATE_PX",
    "RANSAC_DRAWS",
    "LOO_EXACT_MAX",
    "LOO_SAMPLE",
    "DEGREES_OF_FREEDOM",
    "SIGMA_PRIOR_PX",
    "SIGMA_PRIOR_DOF",
    "SIGMA_RANGE_PX",
    "estimate_sigma",
    "fuse_with_intensity",
    "landmark_leverage",
    "residual_sigma",
]

#: Landmark names beginning so are automatic matches (registration.initial,
#: registration.evidence), checked by their consensus; clicked names may not take it.
AUTO_PREFIX = "auto_"


def is_automatic(names) -> bool:
    """Whether every landmark is an automatic match: the name tells, the source is dropped."""
    return bool(names) and all(str(n).startswith(AUTO_PREFIX) for n in names)


MIN_POINTS = {
    TransformModel.RIGID: 2,
    TransformModel.SIMILARITY: 2,
    TransformModel.AFFINE: 3,
    TransformModel.PROJECTIVE: 4,
}
#: Parameters of each model, which its fit spends of the 2n residual coordinates.
DEGREES_OF_FREEDOM = {
    TransformModel.RIGID: 3,
    TransformModel.SIMILARITY: 4,
    TransformModel.AFFINE: 6,
    TransformModel.PROJECTIVE: 8,
}
#: The click noise assumed before any residual is seen (px per coordinate) and how many
#: residual coordinates that assumption weighs as (docs/registration-method.md).
SIGMA_PRIOR_PX = 1.5
SIGMA_PRIOR_DOF = 0.5
#: Bounds of the estimated click noise (px): below, sub-pixel clicks would let the
#: landmarks overrule every image detail; above, pairs the rejection kept (6 px) would
#: count for nothing.
SIGMA_RANGE_PX = (0.25, 5.0)
#: Largest accepted |coordinate| in pixels: no image is a million pixels across, and
#: squares of larger values lose the fit's precision (1e300 overflows outright).
MAX_COORDINATE_PX = 1e6
#: Minimal subsets RANSAC tries: every one when there are at most this many, otherwise
#: this many seeded random draws.
RANSAC_DRAWS = 500
#: Up to this many inliers every one is left out in turn (that many refits) ...
LOO_EXACT_MAX = 200
#: ... above it, a seeded sample of this many inliers (the others get NaN).
LOO_SAMPLE = 50


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
    # Normal equations on centred, scaled points: a 3 x 3 system whatever n is (LAPACK's
    # least squares on the n x 3 matrix took 0.1 s for 10,000 pairs here).
    ts, td = _hartley(src), _hartley(dst)
    s = np.hstack([src, np.ones((len(src), 1))]) @ ts.T
    d = (np.hstack([dst, np.ones((len(dst), 1))]) @ td.T)[:, :2]
    sol = _solve_normal(s * np.sqrt(w)[:, None], d * np.sqrt(w)[:, None])
    hn = np.eye(3)
    hn[:2] = sol.T
    h = np.linalg.inv(td) @ hn @ ts
    return h / h[2, 2]


def _solve_normal(a, b) -> np.ndarray:
    """Least-squares solution of ``a x = b`` from the small system ``a'a x = a'b``.

    ``a`` is tall (2n x 8 at most) and well scaled by the caller; a singular system (a
    degenerate subset) gets the minimum-norm answer, which the regularity check refuses.
    """
    sol, *_ = np.linalg.lstsq(a.T @ a, a.T @ b, rcond=None)
    return sol


def _hartley(pts) -> np.ndarray:
    mean = pts.mean(axis=0)
    dist = np.sqrt(np.sum((pts - mean) ** 2, axis=1)).mean()
    s = np.sqrt(2.0) / max(dist, 1e-12)
    return np.array([[s, 0, -s * mean[0]], [0, s, -s * mean[1]], [0, 0, 1.0]])


def _dlt(src, dst, w) -> np.ndarray:
    ts, td = _hartley(src), _hartley(dst)
    s = (np.hstack([src, np.ones((len(src), 1))]) @ ts.T)[:, :2]
    d = (np.hstack([dst, np.ones((len(dst), 1))]) @ td.T)[:, :2]
    x, y, u, v = s[:, 0], s[:, 1], d[:, 0], d[:, 1]
    rows = np.zeros((len(s), 2, 9))
    rows[:, 0, 0], rows[:, 0, 1], rows[:, 0, 2] = -x, -y, -1.0
    rows[:, 1, 3], rows[:, 1, 4], rows[:, 1, 5] = -x, -y, -1.0
    rows[:, 0, 6], rows[:, 0, 7], rows[:, 0, 8] = u * x, u * y, u
    rows[:, 1, 6], rows[:, 1, 7], rows[:, 1, 8] = v * x, v * y, v
    a = (rows * np.sqrt(w)[:, None, None]).reshape(-1, 9)
    # Thin SVD: the full one builds a 2n x 2n U (6.4 GB for 10,000 pairs). With fewer
    # than 9 rows only the full V holds the null vector.
    _, _, vt = np.linalg.svd(a, full_matrices=len(a) < 9)
    hn = vt[-1].reshape(3, 3)
    h = np.linalg.inv(td) @ hn @ ts
    return h / h[2, 2]


def _project(h, pts):
    u = np.hstack([pts, np.ones((len(pts), 1))]) @ h.T
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return u[:, :2] / u[:, 2:3]


def _refine_projective(h, src, dst, w, iters: int = 20) -> np.ndarray:
    """Gauss-Newton on the weighted reprojection error in the fixed image.

    Iterates in Hartley-normalised coordinates, where the 8 x 8 normal equations are
    well conditioned; the fixed-image scaling is isotropic, so the minimiser is the same.
    """
    ts, td = _hartley(src), _hartley(dst)
    p = _to_params(td @ h @ np.linalg.inv(ts))
    hom, d, sw = _normalised(src, dst, w, ts, td)
    for _ in range(iters):
        jac, r = _gn_system(p, hom, d, sw)
        step = _solve_normal(jac, -r)
        p += step
        if np.linalg.norm(step) < 1e-12 * (1 + np.linalg.norm(p)):
            break
    return _from_params(p, ts, td)


def _to_params(hn) -> np.ndarray:
    return (hn / hn[2, 2]).ravel()[:8].copy()


def _from_params(p, ts, td) -> np.ndarray:
    h = np.linalg.inv(td) @ np.append(p, 1.0).reshape(3, 3) @ ts
    return h / h[2, 2]


def _normalised(src, dst, w, ts, td):
    """Homogeneous normalised moving points, normalised fixed points, sqrt weights."""
    hom = np.hstack([src, np.ones((len(src), 1))]) @ ts.T
    d = (np.hstack([dst, np.ones((len(dst), 1))]) @ td.T)[:, :2]
    return hom, d, np.sqrt(w)


def _gn_system(p, hom, d, sw):
    """Weighted Jacobian (2n, 8) and residuals (2n,) of the projective fit at ``p``."""
    n = len(hom)
    x, y = hom[:, 0], hom[:, 1]
    ones, zeros = np.ones(n), np.zeros(n)
    u = hom @ np.append(p, 1.0).reshape(3, 3).T
    z = u[:, 2]
    px, py = u[:, 0] / z, u[:, 1] / z
    r = (np.column_stack([px, py]) - d).ravel() * np.repeat(sw, 2)
    jac = np.empty((n, 2, 8))
    jac[:, 0] = np.column_stack([x, y, ones, zeros, zeros, zeros, -px * x, -px * y])
    jac[:, 1] = np.column_stack([zeros, zeros, zeros, x, y, ones, -py * x, -py * y])
    jac *= (sw / z)[:, None, None]
    return jac.reshape(2 * n, 8), r


def _affine_loo(_h_all, src, dst, w, idx, out) -> np.ndarray:
    """Exact leave-one-out errors of the affine fit on ``idx`` for the pairs ``out``.

    Linear least squares: leaving pair i out turns its residual e_i into
    e_i / (1 - h_ii), h_ii its weighted leverage, so no refit is needed.
    """
    ts, td = _hartley(src[idx]), _hartley(dst[idx])
    x = np.hstack([src, np.ones((len(src), 1))]) @ ts.T
    y = (np.hstack([dst, np.ones((len(dst), 1))]) @ td.T)[:, :2]
    xw = x[idx] * np.sqrt(w[idx])[:, None]
    g = np.linalg.inv(xw.T @ xw)
    beta = g @ (xw.T @ (y[idx] * np.sqrt(w[idx])[:, None]))
    resid = y[out] - x[out] @ beta
    lev = w[out] * np.einsum("ki,ij,kj->k", x[out], g, x[out])
    return np.linalg.norm(resid, axis=1) / (1.0 - lev) / td[0, 0]


def _projective_loo_one_step(h_all, src, dst, w, idx, out) -> np.ndarray:
    """Fits without each pair of ``out``: one Gauss-Newton step from the fit on ``idx``.

    The normal equations of all pairs are built once and each pair's two rows taken
    out (a rank-two downdate), so the cost is that of one fit, not one per pair. With
    hundreds of pairs one pair moves the fit so little that the step is converged to
    well below a thousandth of a pixel (the step's error is of second order).
    """
    ts, td = _hartley(src[idx]), _hartley(dst[idx])
    p = _to_params(td @ h_all @ np.linalg.inv(ts))
    hom, d, sw = _normalised(src, dst, w, ts, td)
    jac, r = _gn_system(p, hom[idx], d[idx], sw[idx])
    a, g = jac.T @ jac, jac.T @ r
    pos = np.searchsorted(idx, out)
    ji = jac.reshape(-1, 2, 8)[pos]  # (m, 2, 8)
    ri = r.reshape(-1, 2)[pos]
    a_i = a - np.einsum("mki,mkj->mij", ji, ji)
    g_i = g - np.einsum("mki,mk->mi", ji, ri)
    steps = np.linalg.solve(a_i, -g_i[..., None])[..., 0]
    loo = np.empty(len(out))
    for j, (i, step) in enumerate(zip(out, steps, strict=True)):
        hi = _from_params(p + step, ts, td)
        loo[j] = float(np.linalg.norm(_project(hi, src[i : i + 1]) - dst[i]))
    return loo


def _checked(model, moving_xy, fixed_xy, weights):
    """Arrays and model of a fit, refused with :class:`LandmarkInputError` when unusable."""
    model = TransformModel(model)
    src = np.asarray(moving_xy, float)
    dst = np.asarray(fixed_xy, float)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2:
        raise LandmarkInputError(
            f"landmarks must be two (N, 2) arrays of equal shape, got {src.shape} and {dst.shape}"
        )
    if len(src) < MIN_POINTS[model]:
        raise LandmarkInputError(
            f"a {model.value} fit needs at least {MIN_POINTS[model]} landmark pairs, got "
            f"{len(src)} ({_minimums()})"
        )
    for label, pts in (("moving", src), ("fixed", dst)):
        bad = ~np.all(np.isfinite(pts) & (np.abs(pts) <= MAX_COORDINATE_PX), axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise LandmarkInputError(
                f"landmark pair {i}: {label} point {tuple(pts[i])} is not a pixel coordinate "
                f"(finite, |value| <= {MAX_COORDINATE_PX:g})"
            )
    w = np.ones(len(src)) if weights is None else np.asarray(weights, float)
    if w.shape != (len(src),):
        raise LandmarkInputError(f"{w.size} landmark weights for {len(src)} pairs")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise LandmarkInputError("landmark weights must be finite, non-negative and not all zero")
    return model, src, dst, w


def _minimums() -> str:
    return ", ".join(f"{m.value} {k}" for m, k in MIN_POINTS.items())


def _fit(model: TransformModel, src, dst, w) -> np.ndarray:
    """The fit itself on checked arrays; refuses a degenerate (singular) answer."""
    # Degenerate points divide by zero on the way; the regularity check then refuses.
    with np.errstate(all="ignore"):
        try:
            if model is TransformModel.RIGID:
                h = _umeyama(src, dst, w, with_scale=False)
            elif model is TransformModel.SIMILARITY:
                h = _umeyama(src, dst, w, with_scale=True)
            elif model is TransformModel.AFFINE:
                h = _affine(src, dst, w)
            else:
                h = _refine_projective(_dlt(src, dst, w), src, dst, w)
        except np.linalg.LinAlgError:
            h = np.full((3, 3), np.nan)
    _check_regular(h, model)
    return h


def _check_regular(h, model) -> None:
    with np.errstate(all="ignore"):
        sv = np.linalg.svd(h, compute_uv=False) if np.all(np.isfinite(h)) else None
    if sv is None or not sv[-1] > 1e-12 * sv[0]:
        raise LandmarkInputError(
            f"the landmarks do not determine a {model.value} transform: the moving or fixed "
            "points coincide or lie on one line"
        )


def fit_model(model, moving_xy, fixed_xy, weights=None) -> np.ndarray:
    """Least-squares homography of ``model`` mapping moving points onto fixed points.

    Raises
    ------
    LandmarkInputError
        Too few pairs for the model, coordinates that are not finite or beyond
        :data:`MAX_COORDINATE_PX`, bad weights, or points that determine no regular map.
    """
    model, src, dst, w = _checked(model, moving_xy, fixed_xy, weights)
    return _fit(model, src, dst, w)


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
        remaining pairs are too few, or the pair was not in the sample); an estimate of
        target registration error.
    loo_pairs : int
        How many pairs ``loo_tre_px`` holds a value for: every inlier up to
        :data:`LOO_EXACT_MAX` of them, otherwise a seeded sample of :data:`LOO_SAMPLE`.
    """

    transform: Transform
    inliers: np.ndarray
    residuals_px: np.ndarray
    fre_px: float
    loo_tre_px: np.ndarray
    names: list[str] = field(default_factory=list)
    loo_pairs: int | None = None

    @property
    def rejected(self) -> list[str]:
        """Names (or indices) of the pairs rejected as inconsistent."""
        labels = self.names or [str(i) for i in range(len(self.inliers))]
        return [n for n, ok in zip(labels, self.inliers, strict=True) if not ok]

    @property
    def loo_sampled(self) -> bool:
        """Whether the leave-one-out error covers only a sample of the inliers."""
        return self.loo_pairs is not None and self.loo_pairs < int(self.inliers.sum())


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

    Rejection is RANSAC over minimal subsets (all subsets when there are at most
    :data:`RANSAC_DRAWS`, otherwise that many seeded random draws), keeping the largest
    consensus within ``reject_threshold_px``, then a refit on the consensus. ``None``
    disables rejection. The same inputs and seed give the same answer.

    Raises
    ------
    LandmarkInputError
        Unusable pairs (see :func:`fit_model`), or fewer than the minimal number plus
        one are mutually consistent.
    """
    model, src, dst, w = _checked(model, moving_xy, fixed_xy, weights)
    n = len(src)
    h = _fit(model, src, dst, w)
    inliers = np.ones(n, bool)
    k = MIN_POINTS[model]
    if reject_threshold_px is not None and n > k:
        resid = np.linalg.norm(_project(h, src) - dst, axis=1)
        if resid.max() > reject_threshold_px:
            inliers = _ransac(model, src, dst, w, k, reject_threshold_px, seed)
            if inliers.sum() < k + 1 and n >= k + 1:
                raise LandmarkInputError(
                    f"inconsistent landmarks: no {k + 1} pairs agree on a {model.value} "
                    f"transform within {reject_threshold_px:g} px"
                )
            h = _fit(model, src[inliers], dst[inliers], w[inliers])
    resid = np.linalg.norm(_project(h, src) - dst, axis=1)
    fre = float(np.sqrt(np.mean(resid[inliers] ** 2)))
    loo = _leave_one_out(model, src, dst, w, np.flatnonzero(inliers), h, seed)
    return LandmarkFit(
        Transform(h, model),
        inliers,
        resid,
        fre,
        loo,
        list(names or []),
        int(np.isfinite(loo).sum()),
    )


def _leave_one_out(model, src, dst, w, idx, h_all, seed) -> np.ndarray:
    """Distance of each (sampled) inlier from the fit made without it; NaN elsewhere.

    Up to :data:`LOO_EXACT_MAX` inliers every one is left out in turn, an exact refit
    each. Above, a seeded sample of :data:`LOO_SAMPLE` keeps the cost linear in the
    number of pairs; affine errors then come in closed form (:func:`_affine_loo`, exact)
    and projective ones from one Gauss-Newton step from the fit with every pair
    (:func:`_projective_loo_one_step`).
    """
    loo = np.full(len(src), np.nan)
    if len(idx) <= MIN_POINTS[model]:
        return loo
    if len(idx) > LOO_EXACT_MAX:
        out = np.sort(np.random.default_rng(seed).choice(idx, LOO_SAMPLE, replace=False))
        closed_form = {
            TransformModel.PROJECTIVE: _projective_loo_one_step,
            TransformModel.AFFINE: _affine_loo,
        }.get(model)
        if closed_form is not None:
            try:
                with np.errstate(all="ignore"):
                    loo[out] = closed_form(h_all, src, dst, w, idx, out)
            except np.linalg.LinAlgError:
                pass  # a singular downdate: no estimate rather than a wrong one
            return loo
    else:
        out = idx
    for i in out:
        keep = idx[idx != i]
        try:
            hi = _fit(model, src[keep], dst[keep], w[keep])
        except LandmarkInputError:
            continue  # without this pair the rest is degenerate: no estimate for it
        loo[i] = float(np.linalg.norm(_project(hi, src[i : i + 1]) - dst[i]))
    return loo


def _subsets(n: int, k: int, seed: int) -> np.ndarray:
    """Minimal subsets to try, (m, k): all when few, else seeded draws; never a full list."""
    if math.comb(n, k) <= RANSAC_DRAWS:
        return np.array(list(combinations(range(n), k)), dtype=np.intp).reshape(-1, k)
    rng = np.random.default_rng(seed)
    return np.array([rng.choice(n, k, replace=False) for _ in range(RANSAC_DRAWS)])


def _minimal_fits(model, src, dst, w, subsets) -> np.ndarray:
    """Exact homographies (m, 3, 3) through each minimal subset; NaN where degenerate.

    Affine and projective subsets are solved all at once (3 x 3 and 8 x 9 systems):
    a Python loop of 500 fits cost more than scoring them on 10,000 pairs.
    """
    if model in (TransformModel.RIGID, TransformModel.SIMILARITY):
        out = np.full((len(subsets), 3, 3), np.nan)
        for j, sub in enumerate(subsets):
            try:
                out[j] = _fit(model, src[sub], dst[sub], w[sub])
            except (RegistrationError, np.linalg.LinAlgError):
                pass
        return out
    s, d = src[subsets], dst[subsets]  # (m, k, 2)
    with np.errstate(all="ignore"):
        if model is TransformModel.AFFINE:
            a = np.concatenate([s, np.ones(s.shape[:2] + (1,))], axis=2)  # (m, 3, 3)
            ok = np.abs(np.linalg.det(a)) > 1e-9 * np.abs(a).max(axis=(1, 2)) ** 2
            a[~ok] = np.eye(3)
            sol = np.linalg.solve(a, d)  # (m, 3, 2)
            out = np.zeros((len(subsets), 3, 3))
            out[:, :2] = np.transpose(sol, (0, 2, 1))
            out[:, 2, 2] = 1.0
        else:
            out = _batch_dlt(s, d)
            ok = np.ones(len(subsets), bool)
        sv = np.linalg.svd(np.nan_to_num(out), compute_uv=False)
        ok &= np.all(np.isfinite(out), axis=(1, 2)) & (sv[:, -1] > 1e-12 * sv[:, 0])
    out[~ok] = np.nan
    return out


def _batch_dlt(src, dst) -> np.ndarray:
    """Homographies through each set of four pairs, (m, 4, 2) each side."""
    ts, s = _batch_hartley(src)
    td, d = _batch_hartley(dst)
    x, y, u, v = s[..., 0], s[..., 1], d[..., 0], d[..., 1]
    rows = np.zeros(s.shape[:2] + (2, 9))
    rows[..., 0, 0], rows[..., 0, 1], rows[..., 0, 2] = -x, -y, -1.0
    rows[..., 1, 3], rows[..., 1, 4], rows[..., 1, 5] = -x, -y, -1.0
    rows[..., 0, 6], rows[..., 0, 7], rows[..., 0, 8] = u * x, u * y, u
    rows[..., 1, 6], rows[..., 1, 7], rows[..., 1, 8] = v * x, v * y, v
    _, _, vt = np.linalg.svd(rows.reshape(len(s), -1, 9))
    h = np.linalg.inv(td) @ vt[:, -1].reshape(-1, 3, 3) @ ts
    return h / h[:, 2:3, 2:3]


def _batch_hartley(pts):
    """Per-subset Hartley normalisation of (m, k, 2) points: matrices and moved points."""
    mean = pts.mean(axis=1)
    dist = np.linalg.norm(pts - mean[:, None], axis=2).mean(axis=1)
    sc = np.sqrt(2.0) / np.maximum(dist, 1e-12)
    t = np.zeros((len(pts), 3, 3))
    t[:, 0, 0] = t[:, 1, 1] = sc
    t[:, :2, 2] = -sc[:, None] * mean
    t[:, 2, 2] = 1.0
    return t, (pts - mean[:, None]) * sc[:, None, None]


def _ransac(model, src, dst, w, k, thr, seed) -> np.ndarray:
    n = len(src)
    best = np.zeros(n, bool)
    best_err = np.inf
    hs = _minimal_fits(model, src, dst, w, _subsets(n, k, seed))
    chunk = max(1, 500_000 // n)  # bounds the (chunk, n) arrays to a few MB each
    for j0 in range(0, len(hs), chunk):
        d2 = _batch_squared_residuals(hs[j0 : j0 + chunk], src, dst)
        ok = d2 < thr * thr
        counts = ok.sum(axis=1)
        top = counts.max()
        if top < best.sum():
            continue
        # The first subset with the most inliers, then the least error among them, wins.
        for j in np.flatnonzero(counts == top):
            err = np.sqrt(d2[j][ok[j]]).sum()
            if top > best.sum() or err < best_err:
                best, best_err = ok[j], err
    return best


def _batch_squared_residuals(hs, src, dst) -> np.ndarray:
    """Squared fixed-image distances (m, n) of every pair under each (m, 3, 3) map."""
    x, y = src[:, 0], src[:, 1]
    with np.errstate(all="ignore"):
        z = hs[:, 2, 0, None] * x + hs[:, 2, 1, None] * y + hs[:, 2, 2, None]
        u = hs[:, 0, 0, None] * x + hs[:, 0, 1, None] * y + hs[:, 0, 2, None]
        u /= z
        u -= dst[:, 0]
        v = hs[:, 1, 0, None] * x + hs[:, 1, 1, None] * y + hs[:, 1, 2, None]
        v /= z
        v -= dst[:, 1]
        u *= u
        v *= v
        u += v
    return u


def residual_sigma(residuals_px, model) -> tuple[float | None, int]:
    """Click noise (px per coordinate) the residuals of a ``model`` fit show, and its dof.

    The median squared residual, corrected for the parameters the fit spent, is robust to
    a pair the rejection kept although it is off. None when the fit spent every residual.
    """
    r2 = np.asarray(residuals_px, float) ** 2
    n, p = len(r2), DEGREES_OF_FREEDOM[TransformModel(model)]
    dof = max(0, 2 * n - p)
    if dof == 0:
        return None, 0
    # For Gaussian noise |r|^2 / (sigma^2 (1 - p / 2n)) follows chi-squared with two
    # degrees of freedom, whose median is 2 ln 2.
    return math.sqrt(float(np.median(r2)) / (2.0 * math.log(2.0) * dof / (2 * n))), dof


def estimate_sigma(fit: LandmarkFit) -> tuple[float, int]:
    """Click noise (px per coordinate) of a landmark fit's inliers, and its degrees of freedom.

    :func:`residual_sigma` pooled with :data:`SIGMA_PRIOR_PX` (weighing as
    :data:`SIGMA_PRIOR_DOF` coordinates), so that a few pairs cannot claim a precision
    they do not show, and clipped to :data:`SIGMA_RANGE_PX`.
    """
    measured, dof = residual_sigma(fit.residuals_px[fit.inliers], fit.transform.model)
    pooled = SIGMA_PRIOR_PX**2
    if measured is not None:
        pooled = (SIGMA_PRIOR_DOF * pooled + dof * measured**2) / (SIGMA_PRIOR_DOF + dof)
    lo, hi = SIGMA_RANGE_PX
    return float(np.clip(math.sqrt(pooled), lo, hi)), dof


def landmark_leverage(moving_xy, points, weights=None) -> np.ndarray:
    """Leverage of each of ``points`` (moving px) in an affine fit to ``moving_xy``.

    A fitted map's error at a point, per coordinate, is σ·sqrt(leverage) for clicks of
    noise σ: about 1/n inside the landmarks' hull and growing with the distance outside
    it (extrapolation). The affine design stands in for the projective one, whose two
    perspective terms change it by about 1 % across an ultrasound field.
    """
    src = np.asarray(moving_xy, float)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, float)
    w = w / w.mean()
    ts = _hartley(src)  # conditioning only: the leverage does not depend on the frame
    a = np.hstack([src, np.ones((len(src), 1))]) @ ts.T
    g = np.hstack([np.asarray(points, float), np.ones((len(points), 1))]) @ ts.T
    inv = np.linalg.pinv((a * w[:, None]).T @ a)
    return np.einsum("ni,ij,nj->n", g, inv, g)


def fuse_with_intensity(
    landmark_h, intensity_h, landmarks, sigma_px: float, intensity_sigma_px: float, box, model
) -> np.ndarray:
    """The landmark fit and the intensity result combined point by point, as a ``model``.

    On a 9 × 9 grid over ``box`` = (centre x, centre y, half side) in moving pixels, each
    point goes to the inverse-variance weighted mean of where the two maps send it: the
    landmark fit's variance there is σ² × leverage (:func:`landmark_leverage`), the
    intensity result's ``intensity_sigma_px``² everywhere. ``landmarks``: the inliers
    (``moving_xy``, ``weights``). Precise clicks keep the landmark fit; coarse ones, and
    the field far outside the landmarks, follow the images. The model is fitted to the
    combined points.
    """
    cx, cy, half = box
    ticks = np.linspace(-half, half, 9)
    gx, gy = np.meshgrid(cx + ticks, cy + ticks)
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    lev = landmark_leverage(landmarks.moving_xy, grid, landmarks.weights)
    var_l = sigma_px**2 * lev
    w = var_l / (var_l + intensity_sigma_px**2)
    p_l = _project(np.asarray(landmark_h, float), grid)
    p_i = _project(np.asarray(intensity_h, float), grid)
    return fit_model(model, grid, p_l + w[:, None] * (p_i - p_l))

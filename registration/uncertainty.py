"""Predicted registration error at any ultrasound pixel, from a landmark fit's noise.

A landmark fit is a least-squares estimate: noise of σ pixels per coordinate on the
landmarks (as :func:`registration.landmarks.estimate_sigma` measures it, in the fixed
image) becomes a covariance of the model's parameters, and through the map's Jacobian
a 2×2 covariance of where any ultrasound pixel lands in the fixed image. Its 90th
percentile length in millimetres at the isocentre plane is the predicted error there;
it is small between the landmarks and grows outside their hull, which is what the
viewer outlines. First order (the fit linearised at its answer); a Monte Carlo refit
agrees within a few per cent for noise well below the landmarks' spread
(``tests/registration/test_uncertainty.py``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import erf

from .landmarks import DEGREES_OF_FREEDOM, MIN_POINTS
from .transforms import Transform, TransformModel

__all__ = ["QUANTILE", "Linearised", "error_grid", "linearise", "point_error_mm"]

#: The quantile of the error length reported (as ``quality.predicted_tre_mm``).
QUANTILE = 0.9


@dataclasses.dataclass(frozen=True)
class Linearised:
    """A landmark fit linearised at its answer: the one propagation of click noise.

    Both the predicted error map here and the held-out test of
    :mod:`registration.verify_landmarks` read it, so the two cannot disagree on how the
    fit's noise reaches a point.
    """

    h: np.ndarray  # the fitted moving→fixed matrix, h33 = 1
    model: TransformModel  # the family the parameters move in
    centre: np.ndarray  # moving points are centred and scaled (conditioning only)
    scale: float
    jac: np.ndarray  # (n, 2, p): d(mapped landmark)/d(parameters)
    cov: np.ndarray  # (p, p): the parameters' covariance per unit click variance
    determined: bool  # the landmarks fix every parameter (a regular normal matrix)

    def jacobian(self, points_xy) -> np.ndarray:
        """d(mapped point)/d(parameters), (m, 2, p), at moving pixels ``points_xy``."""
        pts = np.asarray(points_xy, float).reshape(-1, 2)
        return _jacobian(self.h, pts, self.model, self.centre, self.scale)

    def point_covariance(self, points_xy) -> np.ndarray:
        """Covariance (m, 2, 2) in fixed pixels² per unit click variance of mapped points."""
        g = self.jacobian(points_xy)
        return np.einsum("map,pq,mbq->mab", g, self.cov, g)

    def rms_unit_px(self, points_xy) -> np.ndarray:
        """RMS length (m,) in fixed pixels of mapped points' error per unit click noise."""
        g = self.jacobian(points_xy)
        return np.sqrt(np.einsum("gap,pq,gaq->g", g, self.cov, g))


def linearise(h, model, moving_xy, weights=None) -> Linearised:
    """The fit of ``model`` through landmarks ``moving_xy`` (n, 2), linearised at ``h``.

    ``weights``: relative inverse variances of the pairs (as the registration fits them);
    the covariance is then per unit-weight click variance. Pass ``model`` affine to
    propagate a rigid or similarity fit as affine (a slightly larger, safe prediction).
    """
    model = TransformModel(model)
    h = np.asarray(h, float) / float(np.asarray(h, float)[2, 2])
    src = np.asarray(moving_xy, float).reshape(-1, 2)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, float)
    centre, scale = src.mean(axis=0), max(float(np.ptp(src, axis=0).max()) / 2.0, 1.0)
    jac = _jacobian(h, src, model, centre, scale)
    info = np.einsum("nap,n,naq->pq", jac, w, jac)
    # Columns to unit length for the regularity test only: a perspective entry moves
    # points far less than a translation does, which is scale, not degeneracy.
    norm = 1.0 / np.maximum(np.sqrt(np.diag(info)), 1e-300)
    determined = bool(np.linalg.cond(info * norm[:, None] * norm[None, :]) < 1e10)
    return Linearised(h, model, centre, scale, jac, np.linalg.pinv(info), determined)


def _jacobian(h, pts, model: TransformModel, centre, scale) -> np.ndarray:
    """d(mapped point)/d(parameters), (n, 2, p), in the family of ``model``.

    Affine entries, plus the perspective ones for a projective fit, of ``h`` in centred
    and scaled moving coordinates; a rigid or similarity fit moves only along its
    family's tangent (rotation, translation, and scale), first order being all the
    propagation needs. The propagated errors do not depend on the coordinates chosen.
    """
    u = (pts - centre) / scale
    mapped = Transform(h).apply(pts)
    n = len(pts)
    ones = np.ones(n)
    frame = np.array([[scale, 0, centre[0]], [0, scale, centre[1]], [0, 0, 1.0]])
    hn = h @ frame
    den = u @ hn[2, :2] + hn[2, 2]
    base = np.column_stack([u, ones]) / den[:, None]
    zero = np.zeros((n, 3))
    jx, jy = [np.hstack([base, zero])], [np.hstack([zero, base])]
    if model is TransformModel.PROJECTIVE:
        jx.append(-u * mapped[:, :1] / den[:, None])
        jy.append(-u * mapped[:, 1:] / den[:, None])
    jac = np.stack([np.hstack(jx), np.hstack(jy)], axis=1)
    if model in (TransformModel.RIGID, TransformModel.SIMILARITY):
        jac = jac @ _tangent(h, model, frame)
    return jac


def _tangent(h, model: TransformModel, frame) -> np.ndarray:
    """Directions (6, p) in the affine entries of ``h @ frame`` that ``model`` allows."""
    lin = h[:2, :2]
    turn, grow = np.zeros((3, 3)), np.zeros((3, 3))
    turn[:2, :2] = lin @ np.array([[0.0, -1.0], [1.0, 0.0]])  # d/dθ of lin·R(θ) at θ = 0
    grow[:2, :2] = lin  # d/ds of s·lin at s = 1
    shift_x, shift_y = np.zeros((3, 3)), np.zeros((3, 3))
    shift_x[0, 2], shift_y[1, 2] = 1.0, 1.0
    dirs = [turn, shift_x, shift_y]
    if model is TransformModel.SIMILARITY:
        dirs.insert(0, grow)
    return np.stack([(d @ frame).ravel()[:6] for d in dirs], axis=1)


def _quantile_length(c: np.ndarray, q: float = QUANTILE) -> np.ndarray:
    """The ``q`` quantile of |e| for e ~ N(0, C), C (n, 2, 2): a weighted chi-squared.

    With C's eigenvalues λ1 ≥ λ2 and a = r / √λ1, P(|e| ≤ r) is the integral over
    z1 = a·sin t of φ(z1)·erf(r·cos t / √(2 λ2))·a·cos t, t in (−π/2, π/2): smooth, so
    Gauss-Legendre converges fast; r is found by bisection, all points at once.
    """
    lam = np.clip(np.linalg.eigvalsh(c), 0.0, None)  # ascending: λ2 ≤ λ1
    l1 = np.maximum(lam[:, 1:2], 1e-300)
    l2 = np.maximum(lam[:, 0:1], 1e-12 * l1)
    t, wq = np.polynomial.legendre.leggauss(64)
    t, wq = t * np.pi / 2, wq * np.pi / 2
    lo = np.zeros(len(c))
    hi = np.sqrt(l1[:, 0] + l2[:, 0]) * 4.0
    for _ in range(60):
        r = (lo + hi) / 2
        a = r[:, None] / np.sqrt(l1)
        z = a * np.sin(t)
        inner = np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi) * a * np.cos(t)
        inner = inner * erf(r[:, None] * np.cos(t) / np.sqrt(2.0 * l2))
        below = (inner @ wq) < q
        lo, hi = np.where(below, r, lo), np.where(below, hi, r)
    return (lo + hi) / 2


def point_error_mm(h, model, moving_xy, sigma_px, points_xy, fixed_spacing_mm, weights=None):
    """Predicted error (mm, 90th percentile) at ultrasound pixels ``points_xy`` (m, 2).

    The error is that of where a point lands in the fixed image, converted with the
    fixed pixel size at the isocentre plane ``fixed_spacing_mm`` (row, column).
    ``weights``: the pairs' relative inverse variances, ``sigma_px`` the unit-weight noise.

    Raises
    ------
    ValueError
        Fewer landmarks than the model needs, or landmarks that leave a parameter
        undetermined (a singular system).
    """
    model = TransformModel(model)
    xy = np.asarray(moving_xy, float).reshape(-1, 2)
    if len(xy) < MIN_POINTS[model] or 2 * len(xy) < DEGREES_OF_FREEDOM[model]:
        raise ValueError(f"{len(xy)} landmarks do not determine a {model.value} fit")
    lin = linearise(h, model, xy, weights)
    if not lin.determined:
        raise ValueError(f"the landmarks leave the {model.value} fit undetermined")
    c = sigma_px**2 * lin.point_covariance(points_xy)
    d = np.diag([float(fixed_spacing_mm[1]), float(fixed_spacing_mm[0])])
    return _quantile_length(d @ c @ d)


def error_grid(h, model, moving_xy, sigma_px, shape, fixed_spacing_mm, step_px=16, weights=None):
    """Predicted error (mm) on a grid over an ultrasound image of ``shape`` (rows, cols).

    Returns the grid's x and y pixel positions (every ``step_px`` from 0, the last row
    and column included) and the errors, (len(ys), len(xs)).
    """
    rows, cols = int(shape[0]), int(shape[1])
    xs = np.unique(np.append(np.arange(0, cols, step_px), cols - 1)).astype(float)
    ys = np.unique(np.append(np.arange(0, rows, step_px), rows - 1)).astype(float)
    gx, gy = np.meshgrid(xs, ys)
    pts = np.column_stack([gx.ravel(), gy.ravel()])
    err = point_error_mm(h, model, moving_xy, sigma_px, pts, fixed_spacing_mm, weights)
    return xs, ys, err.reshape(gy.shape)

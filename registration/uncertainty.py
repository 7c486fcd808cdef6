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

import numpy as np
from scipy.special import erf

from .landmarks import DEGREES_OF_FREEDOM, MIN_POINTS
from .transforms import TransformModel

__all__ = ["QUANTILE", "error_grid", "parameter_covariance", "point_error_mm"]

#: The quantile of the error length reported (as ``quality.predicted_tre_mm``).
QUANTILE = 0.9


def _basis(h: np.ndarray, model: TransformModel) -> np.ndarray:
    """Directions (9, p) in which ``model`` lets the 3×3 matrix ``h`` (h33 = 1) move.

    The tangent space of the model's family at ``h``: first order is all the
    propagation needs, so no parametrisation has to be inverted.
    """
    e = np.eye(9)
    if model is TransformModel.PROJECTIVE:
        return e[:, :8]
    if model is TransformModel.AFFINE:
        return e[:, :6]
    translate = [e[:, 2], e[:, 5]]
    lin = h[:2, :2]
    turn = np.zeros((3, 3))
    turn[:2, :2] = lin @ np.array([[0.0, -1.0], [1.0, 0.0]])  # d/dθ of lin·R(θ) at θ = 0
    dirs = [turn.ravel(), *translate]
    if model is TransformModel.SIMILARITY:
        grow = np.zeros((3, 3))
        grow[:2, :2] = lin  # d/ds of s·lin at s = 1
        dirs.insert(0, grow.ravel())
    return np.stack(dirs, axis=1)


def _point_jacobian(h: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mapped points (n, 2) and their derivatives (n, 2, 9) by the entries of ``h``."""
    hom = np.hstack([xy, np.ones((len(xy), 1))])
    u = hom @ h.T
    w = u[:, 2:3]
    p = u[:, :2] / w
    jac = np.zeros((len(xy), 2, 9))
    jac[:, 0, 0:3] = hom / w
    jac[:, 1, 3:6] = hom / w
    jac[:, 0, 6:9] = -p[:, :1] * hom / w
    jac[:, 1, 6:9] = -p[:, 1:] * hom / w
    return p, jac


def parameter_covariance(h, model, moving_xy, sigma_px: float, weights=None) -> np.ndarray:
    """Covariance (p, p) of the model's parameters (along :func:`_basis`) of a landmark fit.

    ``h`` is the fitted moving→fixed matrix, ``moving_xy`` the landmarks used (n, 2)
    and ``sigma_px`` their noise per coordinate in the fixed image. Weighted fits use
    the sandwich form, so weights need not be inverse variances.

    Raises
    ------
    ValueError
        Fewer landmarks than the model needs, or landmarks that leave a parameter
        undetermined (a singular system).
    """
    model = TransformModel(model)
    h = np.asarray(h, float) / float(np.asarray(h, float)[2, 2])
    xy = np.asarray(moving_xy, float).reshape(-1, 2)
    if len(xy) < MIN_POINTS[model] or 2 * len(xy) < DEGREES_OF_FREEDOM[model]:
        raise ValueError(f"{len(xy)} landmarks do not determine a {model.value} fit")
    w = np.ones(len(xy)) if weights is None else np.asarray(weights, float)
    _, jac = _point_jacobian(h, xy)
    j = (jac @ _basis(h, model)).reshape(-1, _basis(h, model).shape[1])
    # Columns to unit length: a perspective entry moves points ~1e5 times less than a
    # translation does, and the raw normal matrix would look singular for it.
    scale = 1.0 / np.maximum(np.linalg.norm(j, axis=0), 1e-300)
    j = j * scale
    ww = np.repeat(w, 2)
    a = j.T @ (j * ww[:, None])
    b = j.T @ (j * (ww**2)[:, None])
    if not np.linalg.cond(a) < 1e10:
        raise ValueError(f"the landmarks leave the {model.value} fit undetermined")
    a_inv = np.linalg.inv(a)
    return sigma_px**2 * (scale[:, None] * (a_inv @ b @ a_inv) * scale[None, :])


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
    """
    model = TransformModel(model)
    h = np.asarray(h, float) / float(np.asarray(h, float)[2, 2])
    cov = parameter_covariance(h, model, moving_xy, sigma_px, weights)
    _, jac = _point_jacobian(h, np.asarray(points_xy, float).reshape(-1, 2))
    g = jac @ _basis(h, model)  # (m, 2, p)
    c = g @ cov @ np.swapaxes(g, 1, 2)
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

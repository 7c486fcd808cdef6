"""The predicted error of a landmark fit against Monte Carlo refits of noisy landmarks."""

from __future__ import annotations

import numpy as np
import pytest

from hybridfuse.registration.landmarks import fit_model
from hybridfuse.registration.uncertainty import _quantile_length, error_grid, point_error_mm

H_TRUE = np.array([[0.52, -0.06, 120.0], [0.05, 0.55, 40.0], [2e-5, -3e-5, 1.0]])
SPACING = (0.3, 0.28)  # fixed pixel (row, column) at the isocentre, mm
SIGMA = 1.2


def _landmarks(n, seed=1, box=(150, 350, 120, 300)):
    rng = np.random.default_rng(seed)
    x0, x1, y0, y1 = box
    return np.column_stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)])


def _apply(h, xy):
    u = np.hstack([xy, np.ones((len(xy), 1))]) @ h.T
    return u[:, :2] / u[:, 2:3]


def _monte_carlo(model, moving, h, points, draws=800, seed=7):
    """90th percentile (mm) of where ``points`` land after refits on noisy fixed points."""
    rng = np.random.default_rng(seed)
    fixed = _apply(h, moving)
    base = _apply(fit_model(model, moving, fixed), points)
    err = np.empty((draws, len(points)))
    sp = np.array([SPACING[1], SPACING[0]])
    for k in range(draws):
        hk = fit_model(model, moving, fixed + rng.normal(0, SIGMA, fixed.shape))
        err[k] = np.linalg.norm((_apply(hk, points) - base) * sp, axis=1)
    return np.quantile(err, 0.9, axis=0)


@pytest.mark.parametrize(
    ("model", "n"), [("projective", 8), ("affine", 6), ("similarity", 5), ("rigid", 4)]
)
def test_analytic_error_matches_monte_carlo_refits(model, n):
    moving = _landmarks(n)
    h = H_TRUE if model == "projective" else fit_model(model, moving, _apply(H_TRUE, moving))
    # Inside the landmarks, at their edge and far outside them (extrapolation).
    points = np.array([[250.0, 210.0], [340.0, 290.0], [40.0, 450.0], [500.0, 30.0]])
    want = _monte_carlo(model, moving, h, points)
    got = point_error_mm(h, model, moving, SIGMA, points, SPACING)
    assert got == pytest.approx(want, rel=0.15)


def test_error_grows_away_from_the_landmarks_and_shrinks_with_more_of_them():
    few = _landmarks(5)
    xs, ys, err = error_grid(H_TRUE, "projective", few, SIGMA, (480, 640), SPACING, step_px=32)
    assert err.shape == (len(ys), len(xs)) and xs[-1] == 639 and ys[-1] == 479
    centre = point_error_mm(H_TRUE, "projective", few, SIGMA, [[250, 210]], SPACING)[0]
    assert err.max() > 5 * centre  # the far corners extrapolate
    many = _landmarks(80, box=(0, 640, 0, 480))
    _, _, dense = error_grid(H_TRUE, "projective", many, SIGMA, (480, 640), SPACING, step_px=32)
    assert dense.max() < err.max() / 3


def test_quantile_of_a_2d_gaussian_length():
    # Isotropic: |e|² / λ is chi-squared(2), whose 90th percentile is 2 ln 10.
    c = np.array([[[4.0, 0.0], [0.0, 4.0]], [[9.0, 0.0], [0.0, 1e-12]]])
    got = _quantile_length(c)
    assert got[0] == pytest.approx(np.sqrt(4.0 * 2 * np.log(10)), rel=1e-4)
    assert got[1] == pytest.approx(3.0 * 1.6448536, rel=1e-3)  # one axis: |N(0, 9)|


def test_too_few_or_collinear_landmarks_are_refused():
    with pytest.raises(ValueError, match="do not determine"):
        point_error_mm(H_TRUE, "projective", _landmarks(3), SIGMA, [[0, 0]], SPACING)
    line = np.column_stack([np.linspace(0, 100, 6), np.linspace(0, 50, 6)])
    with pytest.raises(ValueError, match="undetermined"):
        point_error_mm(H_TRUE, "affine", line, SIGMA, [[0, 0]], SPACING)

"""The one propagation of a landmark fit's noise (``uncertainty.linearise``) against refits.

Both the viewer's error map and the landmark verification's predicted TRE read it, so it
is checked here where it is defined: weighted pairs (the automatic route weights the
needle tip below the beads), every model, and the affine stand-in for rigid fits.
"""

from __future__ import annotations

import numpy as np
import pytest

from hybridfuse.registration.landmarks import fit_model
from hybridfuse.registration.uncertainty import linearise

H_TRUE = np.array([[0.52, -0.06, 120.0], [0.05, 0.55, 40.0], [2e-5, -3e-5, 1.0]])
#: A strong perspective (the denominator from 0.89 to 1.29 over POINTS) for the projective terms.
H_STEEP = np.array([[0.52, -0.06, 120.0], [0.05, 0.55, 40.0], [6e-4, -3e-4, 1.0]])
SIGMA = 0.5  # a careful click: the first order holds far outside the landmarks too
# Inside the landmarks, at their edge and far outside them (extrapolation).
POINTS = np.array([[250.0, 210.0], [340.0, 290.0], [40.0, 450.0], [500.0, 30.0]])


def _apply(h, xy):
    u = np.hstack([xy, np.ones((len(xy), 1))]) @ np.asarray(h, float).T
    return u[:, :2] / u[:, 2:3]


def _case(model, n, seed=3, h_true=H_TRUE):
    rng = np.random.default_rng(seed)
    moving = np.column_stack([rng.uniform(150, 350, n), rng.uniform(120, 300, n)])
    weights = rng.uniform(0.3, 1.0, n)
    h = h_true if model == "projective" else fit_model(model, moving, _apply(h_true, moving))
    return moving, weights, h


def _refit_covariance(model, moving, weights, h, draws=800, seed=11):
    """Covariance (m, 2, 2) of where POINTS land over weighted refits of noisy clicks."""
    rng = np.random.default_rng(seed)
    fixed = _apply(h, moving)
    noise_sd = SIGMA / np.sqrt(weights)[:, None]  # weights are inverse variances
    mapped = np.empty((draws, len(POINTS), 2))
    for k in range(draws):
        noisy = fixed + rng.normal(0.0, 1.0, fixed.shape) * noise_sd
        mapped[k] = _apply(fit_model(model, moving, noisy, weights=weights), POINTS)
    d = mapped - mapped.mean(axis=0)
    return np.einsum("kma,kmb->mab", d, d) / (draws - 1)


@pytest.mark.parametrize(
    ("model", "n", "h_true"),
    [
        ("projective", 9, H_TRUE),
        ("projective", 9, H_STEEP),
        ("affine", 6, H_TRUE),
        ("similarity", 5, H_TRUE),
        ("rigid", 4, H_TRUE),
    ],
)
def test_point_covariance_matches_weighted_refits(model, n, h_true):
    moving, weights, h = _case(model, n, h_true=h_true)
    want = _refit_covariance(model, moving, weights, h)
    got = SIGMA**2 * linearise(h, model, moving, weights).point_covariance(POINTS)
    for g, w in zip(got, want, strict=True):
        # The whole 2 × 2 matrix: its size, its shape and its orientation.
        assert np.linalg.norm(g - w) <= 0.15 * np.linalg.norm(w)


def test_rigid_fit_propagated_as_affine_is_wider_not_narrower():
    # The landmark verification propagates rigid fits as affine: a safe side only.
    moving, weights, h = _case("rigid", 6)
    exact = linearise(h, "rigid", moving, weights).rms_unit_px(POINTS)
    affine = linearise(h, "affine", moving, weights).rms_unit_px(POINTS)
    assert np.all(affine >= exact * (1 - 1e-9)) and np.any(affine > 1.2 * exact)


def test_rms_is_the_root_of_the_covariance_trace():
    moving, weights, h = _case("projective", 9)
    lin = linearise(h, "projective", moving, weights)
    cov = lin.point_covariance(POINTS)
    assert lin.rms_unit_px(POINTS) == pytest.approx(np.sqrt(np.trace(cov, axis1=1, axis2=2)))
    assert lin.determined


def test_the_landmark_check_propagates_a_similarity_along_its_own_parameters():
    # As affine, 4 similarity pairs left 2 coordinates over the model (not 4) and 2 pairs
    # were under-determined, their bound about half the similarity's own.
    from hybridfuse.registration.start import Landmarks
    from hybridfuse.registration.transforms import Transform
    from hybridfuse.registration.verify_landmarks import landmark_check

    rng = np.random.default_rng(5)
    h = np.array([[0.6, -0.1, 100.0], [0.1, 0.6, 50.0], [0.0, 0.0, 1.0]])
    moving = rng.uniform(50, 350, (4, 2))
    fixed = _apply(h, moving) + rng.normal(0, 0.5, (4, 2))
    fit = Transform(h, "similarity")
    field = rng.uniform(50, 350, (9, 2))
    out = landmark_check(fit, Landmarks(moving, fixed, ("a", "b", "c", "d")), None, 0.5,
                         field, 0.25)  # fmt: skip
    assert out["redundant_coordinates"] == 4
    two = landmark_check(fit, Landmarks(moving[:2], fixed[:2], ("a", "b")), None, 0.5, field, 0.25)
    own = linearise(h, "similarity", moving[:2]).rms_unit_px(field)
    assert two["predicted_tre_mm"] == pytest.approx(2.0 * 0.5 * np.median(own) * 0.25)

"""Landmarks as users give them: too few for the model, and clicks of unknown precision."""

import numpy as np
import pytest

from hybridfuse.registration import RegistrationError, RegistrationOptions, Transform, register
from hybridfuse.registration.landmarks import (
    SIGMA_PRIOR_DOF,
    SIGMA_PRIOR_PX,
    SIGMA_RANGE_PX,
    estimate_sigma,
    fit_landmarks,
    fit_model,
    residual_sigma,
)
from hybridfuse.registration.start import Landmarks, find_start, supported_model
from hybridfuse.registration.transforms import TransformModel

AFFINE = np.array([[1.2, 0.08, 30.0], [-0.05, 1.1, 20.0], [0, 0, 1.0]])
PROJECTIVE = np.array([[0.55, 0.05, 40.0], [-0.02, 0.5, -12.0], [2e-4, -1e-4, 1.0]])


def _through(h, n, rng, noise=0.0):
    src = rng.uniform(20, 180, (n, 2))
    return src, Transform(h).apply(src) + rng.normal(0, noise, (n, 2))


@pytest.mark.parametrize(
    "requested, n, expected",
    [
        ("projective", 4, "projective"),
        ("projective", 3, "affine"),
        ("projective", 2, "similarity"),
        ("affine", 2, "similarity"),
        ("rigid", 2, "rigid"),
        ("similarity", 1, "similarity"),  # too few for any model: the fit refuses
    ],
)
def test_the_richest_model_the_pairs_determine_is_fitted(requested, n, expected):
    model, why = supported_model(TransformModel(requested), n)
    assert model.value == expected
    assert (why is None) == (expected == requested)


def test_three_pairs_fall_back_to_affine_and_say_so(rng):
    src, dst = _through(AFFINE, 3, rng)
    res = register(
        np.zeros((200, 200)),
        np.zeros((200, 200)),
        landmarks=Landmarks(src, dst, ("a", "b", "c")),
        # Written marked refused: without a metric nothing checks an exact fit.
        options=RegistrationOptions(metric=None).with_values(accept_unverified=True),
    )
    assert res.quality.verdict == "refused"
    note = res.quality.model_selection
    assert res.quality.model_used == note["chosen"] == "affine"
    assert note["requested"] == "projective"
    assert "3 landmark pairs cannot determine a projective transform" in note["fallback"]
    np.testing.assert_allclose(res.transform.matrix, AFFINE, atol=1e-9)


def test_two_pairs_fall_back_to_similarity_and_one_is_refused(rng):
    sim = np.array([[1.1, -0.2, 5.0], [0.2, 1.1, -3.0], [0, 0, 1.0]])
    src, dst = _through(sim, 2, rng)
    start = find_start(Landmarks(src, dst), None, TransformModel.PROJECTIVE, RegistrationOptions())
    assert start.model is TransformModel.SIMILARITY
    assert "fitted similarity instead" in start.model_note["fallback"]
    np.testing.assert_allclose(start.matrix, sim, atol=1e-9)
    with pytest.raises(RegistrationError, match="got 1"):
        find_start(Landmarks(src[:1], dst[:1]), None, TransformModel.PROJECTIVE, _opts())


def _opts(**values):
    return RegistrationOptions().with_values(**values)


@pytest.mark.parametrize("model, n", [("projective", 8), ("affine", 6), ("affine", 40)])
def test_residual_sigma_recovers_the_click_noise_with_the_models_degrees_of_freedom(model, n):
    # Few pairs: the fit absorbs a large part of the noise (8 of 16 coordinates for a
    # projective fit on 8 pairs), which the estimate must put back.
    rng = np.random.default_rng(7)
    h = PROJECTIVE if model == "projective" else AFFINE
    est = []
    for _ in range(200):
        src, dst = _through(h, n, rng, noise=2.0)
        resid = np.linalg.norm(Transform(fit_model(model, src, dst)).apply(src) - dst, axis=1)
        est.append(residual_sigma(resid, model)[0])
    assert np.mean(est) == pytest.approx(2.0, rel=0.1)


def test_estimate_is_pooled_with_the_prior_and_clipped(rng):
    src, dst = _through(PROJECTIVE, 400, rng, noise=3.0)
    many = estimate_sigma(fit_landmarks(src, dst, "projective", reject_threshold_px=None))
    assert many[0] == pytest.approx(3.0, rel=0.1) and many[1] == 792
    exact = estimate_sigma(fit_landmarks(src, Transform(PROJECTIVE).apply(src), "projective"))
    assert exact[0] == SIGMA_RANGE_PX[0]  # exact points claim no sub-floor precision
    src5, dst5 = _through(AFFINE, 4, rng)  # 2 residual coordinates, no noise
    few, dof = estimate_sigma(fit_landmarks(src5, dst5, "affine", reject_threshold_px=None))
    # Pooled: (dof_prior * prior^2 + 2 * 0) / (dof_prior + 2).
    pooled = SIGMA_PRIOR_PX * np.sqrt(SIGMA_PRIOR_DOF / (SIGMA_PRIOR_DOF + 2))
    assert dof == 2 and few == pytest.approx(pooled)
    three = fit_landmarks(src5[:3], dst5[:3], "affine")
    assert estimate_sigma(three) == (SIGMA_PRIOR_PX, 0)  # nothing to estimate from


def test_the_sigma_used_is_recorded_and_a_given_one_wins(rng):
    src, dst = _through(AFFINE, 30, rng, noise=2.0)
    lms = Landmarks(src, dst)
    auto = find_start(lms, None, TransformModel.AFFINE, RegistrationOptions())
    assert auto.model_note["landmark_sigma_estimated"] is True
    assert auto.model_note["landmark_sigma_px"] == auto.sigma_px == pytest.approx(2.0, rel=0.25)
    assert auto.run_options(RegistrationOptions()).landmarks.landmark_sigma_px == auto.sigma_px
    given = find_start(lms, None, TransformModel.AFFINE, _opts(landmark_sigma_px=0.7))
    assert given.model_note["landmark_sigma_estimated"] is False
    assert given.sigma_px == given.model_note["landmark_sigma_px"] == 0.7

"""Landmark fits against known transforms; rejection; the SimpleITK scale pitfall."""

import numpy as np
import pytest
import SimpleITK as sitk
from numpy.testing import assert_allclose

from hybridfuse.registration import RegistrationError, Transform, fit_landmarks, fit_model

TRUE = {
    "rigid": np.array(
        [[np.cos(0.3), -np.sin(0.3), 40.0], [np.sin(0.3), np.cos(0.3), -12.0], [0, 0, 1.0]]
    ),
    "similarity": np.array(
        [
            [0.5 * np.cos(0.3), -0.5 * np.sin(0.3), 40.0],
            [0.5 * np.sin(0.3), 0.5 * np.cos(0.3), -12.0],
            [0, 0, 1.0],
        ]
    ),
    "affine": np.array([[0.55, 0.05, 40.0], [-0.02, 0.5, -12.0], [0, 0, 1.0]]),
    "projective": np.array([[0.55, 0.05, 40.0], [-0.02, 0.5, -12.0], [2e-4, -1e-4, 1.0]]),
}


@pytest.mark.parametrize("model", list(TRUE))
def test_exact_landmarks_recover_the_transform(model, rng):
    pts = rng.uniform(0, 400, (8, 2))
    dst = Transform(TRUE[model]).apply(pts)
    h = fit_model(model, pts, dst)
    assert_allclose(h / h[2, 2], TRUE[model], atol=1e-7)


def test_similarity_scale_is_estimated_unlike_simpleitk(rng):
    pts = rng.uniform(0, 400, (6, 2))
    dst = Transform(TRUE["similarity"]).apply(pts)
    h = fit_model("similarity", pts, dst)
    assert np.sqrt(abs(np.linalg.det(h[:2, :2]))) == pytest.approx(0.5, rel=1e-9)
    # SimpleITK's initializer keeps scale 1 for Similarity2D (the pitfall we avoid).
    init = sitk.LandmarkBasedTransformInitializer(
        sitk.Similarity2DTransform(), dst.ravel().tolist(), pts.ravel().tolist()
    )
    assert sitk.Similarity2DTransform(init).GetScale() == pytest.approx(1.0)


def test_outlier_is_rejected_and_named(rng):
    pts = rng.uniform(0, 400, (7, 2))
    dst = Transform(TRUE["projective"]).apply(pts) + rng.normal(0, 0.3, (7, 2))
    dst[3] += [25.0, -18.0]
    names = [f"p{i}" for i in range(7)]
    fit = fit_landmarks(pts, dst, "projective", names=names, reject_threshold_px=4.0)
    assert fit.rejected == ["p3"]
    assert fit.fre_px < 0.6
    assert np.all(np.isfinite(fit.loo_tre_px[fit.inliers]))


def test_too_few_landmarks():
    with pytest.raises(RegistrationError, match="at least 4"):
        fit_model("projective", np.zeros((3, 2)), np.zeros((3, 2)))


def test_inconsistent_landmarks_fail_clearly(rng):
    pts = rng.uniform(0, 400, (5, 2))
    dst = rng.uniform(0, 400, (5, 2))
    with pytest.raises(RegistrationError, match="inconsistent landmarks"):
        fit_landmarks(pts, dst, "affine", reject_threshold_px=1.0)

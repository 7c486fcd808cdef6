"""Metric kernels against NumPy twins, finite differences and SimpleITK's own values."""

import numba
import numpy as np
import pytest
import SimpleITK as sitk
from numpy.testing import assert_allclose

from registration import MetricContext, Parameterization, metric_cost
from registration.preprocess import masked_smooth
from tests.registration import naive


@pytest.fixture
def images(rng):
    fixed = masked_smooth(rng.normal(size=(120, 140)), np.ones((120, 140), bool), 3.0) * 100
    moving = masked_smooth(rng.normal(size=(60, 70)), np.ones((60, 70), bool), 2.0) * 50 + 20
    yy, xx = np.mgrid[0:60, 0:70]
    ctx = MetricContext(
        fixed, None, xx.ravel().astype(float), yy.ravel().astype(float), moving.ravel(), n_bins=32
    )
    par = Parameterization(
        "affine", np.array([[1.1, 0.1, 30], [-0.08, 1.05, 25], [0, 0, 1.0]]), (35.0, 30.0), 35.0
    )
    return fixed, moving, ctx, par


P = np.array([0.01, -0.02, 0.03, 0.01, 0.05, -0.04])


def test_warp_kernel_matches_numpy_twin(images):
    fixed, _, ctx, par = images
    h, dh = par.matrix_and_jacobian(P)
    b, _, valid = ctx.warp(h, dh)
    twin = naive.warp(fixed, np.ones(fixed.shape, bool), h, ctx.xs, ctx.ys)
    assert_allclose(b[valid], twin[valid], rtol=1e-12)
    assert np.array_equal(valid, ~np.isnan(twin))


def test_ncc_matches_numpy_twin(images):
    fixed, _, ctx, par = images
    h, dh = par.matrix_and_jacobian(P)
    cost, _, _ = metric_cost("ncc", ctx, h, dh)
    twin = naive.ncc(ctx.a, naive.warp(fixed, np.ones(fixed.shape, bool), h, ctx.xs, ctx.ys))
    assert cost == pytest.approx(-twin, rel=1e-10)


def test_mattes_mi_matches_numpy_twin(images):
    fixed, _, ctx, par = images
    h, dh = par.matrix_and_jacobian(P)
    cost, _, _ = metric_cost("mi", ctx, h, dh)
    b = naive.warp(fixed, np.ones(fixed.shape, bool), h, ctx.xs, ctx.ys)
    fixed_bin, _ = naive.mattes_mi(ctx.a, b, 32)
    twin = naive.mattes_mi_value(ctx.a, b, fixed_bin, 32, fixed.min(), fixed.max())
    assert cost == pytest.approx(-twin, rel=1e-10)


def test_nmi_matches_numpy_twin(images):
    fixed, _, ctx, par = images
    h, dh = par.matrix_and_jacobian(P)
    cost, _, _ = metric_cost("nmi", ctx, h, dh)
    b = naive.warp(fixed, np.ones(fixed.shape, bool), h, ctx.xs, ctx.ys)
    fixed_bin, _ = naive.mattes_mi(ctx.a, b, 32)
    twin = naive.nmi_value(ctx.a, b, fixed_bin, 32, fixed.min(), fixed.max())
    assert cost == pytest.approx(-twin, rel=1e-10)
    assert 1.0 < twin < 2.0  # NMI lies between 1 (independent) and 2 (identical)


@pytest.mark.parametrize("metric", ["mi", "nmi", "ncc"])
def test_analytic_gradient_matches_finite_differences(metric, images):
    _, _, ctx, par = images
    _, grad, _ = metric_cost(metric, ctx, *par.matrix_and_jacobian(P))
    for k in range(len(P)):
        e = np.zeros(len(P))
        e[k] = 1e-6
        up = metric_cost(metric, ctx, *par.matrix_and_jacobian(P + e))[0]
        down = metric_cost(metric, ctx, *par.matrix_and_jacobian(P - e))[0]
        assert grad[k] == pytest.approx((up - down) / 2e-6, rel=1e-4, abs=1e-7)


def _sitk_value(metric, fixed, moving, h):
    tx = sitk.AffineTransform(2)
    tx.SetMatrix(h[:2, :2].ravel().tolist())
    tx.SetTranslation(h[:2, 2].tolist())
    reg = sitk.ImageRegistrationMethod()
    if metric == "mi":
        reg.SetMetricAsMattesMutualInformation(32)
    else:
        reg.SetMetricAsCorrelation()
    reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetInitialTransform(tx)
    # ITK's "fixed" image is our sample domain (the ultrasound), its "moving" the image
    # we interpolate (the fluoroscopy).
    return reg.MetricEvaluate(sitk.GetImageFromArray(moving), sitk.GetImageFromArray(fixed))


def test_mattes_mi_equals_simpleitk(images):
    fixed, moving, ctx, par = images
    h = par.matrix(P)
    ours, _, _ = metric_cost("mi", ctx, *par.matrix_and_jacobian(P))
    # Same bins (32), same Parzen windows, linear interpolation, dense sampling.
    assert ours == pytest.approx(_sitk_value("mi", fixed, moving, h / h[2, 2]), rel=1e-9)


def test_ncc_equals_simpleitk_correlation(images):
    fixed, moving, ctx, par = images
    h = par.matrix(P)
    ours, _, _ = metric_cost("ncc", ctx, *par.matrix_and_jacobian(P))
    # SimpleITK's Correlation metric is -rho^2; ours is -rho.
    assert -(ours**2) == pytest.approx(_sitk_value("ncc", fixed, moving, h / h[2, 2]), rel=1e-9)


def test_results_do_not_depend_on_the_thread_count(images):
    _, _, ctx, par = images
    h, dh = par.matrix_and_jacobian(P)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = [metric_cost(m, ctx, h, dh) for m in ("mi", "nmi", "ncc")]
        numba.set_num_threads(max(2, before))
        many = [metric_cost(m, ctx, h, dh) for m in ("mi", "nmi", "ncc")]
    finally:
        numba.set_num_threads(before)
    for (c1, g1, _), (c2, g2, _) in zip(one, many, strict=True):
        assert c1 == c2
        assert np.array_equal(g1, g2)

"""Metric kernels against NumPy twins, finite differences and SimpleITK's own values."""

import numba
import numpy as np
import pytest
import SimpleITK as sitk
from numpy.testing import assert_allclose

from hybridfuse.registration import MetricContext, Parameterization, RegistrationError, metric_cost
from hybridfuse.registration.preprocess import masked_smooth
from tests.registration import naive


@pytest.fixture
def images(rng):
    fixed = masked_smooth(rng.normal(size=(120, 140)), np.ones((120, 140), bool), 3.0) * 100
    moving = masked_smooth(rng.normal(size=(60, 70)), np.ones((60, 70), bool), 2.0) * 50 + 20
    ctx = MetricContext.from_images(fixed, None, moving, None, n_bins=32, patch_samples=7)
    par = Parameterization(
        "affine", np.array([[1.1, 0.1, 30], [-0.08, 1.05, 25], [0, 0, 1.0]]), (35.0, 30.0), 35.0
    )
    return fixed, moving, ctx, par


P = np.array([0.01, -0.02, 0.03, 0.01, 0.05, -0.04])
ALL_METRICS = ("mi", "nmi", "ncc", "ngf", "lc2")


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


def test_ngf_matches_numpy_twin(images):
    fixed, moving, ctx, par = images
    h, dh = par.matrix_and_jacobian(P)
    cost, _, count = metric_cost("ngf", ctx, h, dh)
    gy, gx = np.gradient(fixed)
    warped = naive.warped_gradient(gx, gy, h, ctx.xs, ctx.ys)
    my, mx = np.gradient(moving)
    inner = np.zeros(moving.shape, bool)
    inner[1:-1, 1:-1] = True  # the gradient stencil stays inside the image
    m = np.column_stack([mx.ravel(), my.ravel()]) * inner.ravel()[:, None]
    eps_m = 0.2 * np.hypot(m[:, 0], m[:, 1]).mean()
    eps_f = 0.2 * np.hypot(gx, gy)[2:-2, 2:-2].mean()
    assert count == len(ctx.xs)
    assert cost == pytest.approx(-naive.ngf_value(m, warped, eps_m, eps_f), rel=1e-8)


def test_ngf_ignores_edge_polarity(images):
    # Bone is bright in ultrasound and dark in fluoroscopy: only alignment counts.
    fixed, moving, ctx, par = images
    h, dh = par.matrix_and_jacobian(P)
    flipped = MetricContext.from_images(fixed, None, -moving, None)
    assert metric_cost("ngf", flipped, h, dh)[0] == pytest.approx(
        metric_cost("ngf", ctx, h, dh)[0], rel=1e-12
    )


def test_lc2_matches_numpy_twin(images):
    fixed, moving, ctx, par = images
    h, dh = par.matrix_and_jacobian(P)
    cost, _, _ = metric_cost("lc2", ctx, h, dh)
    gy, gx = np.gradient(fixed)
    mag = np.hypot(gx, gy)
    ones = np.ones(fixed.shape, bool)
    b = naive.warp(fixed, ones, h, ctx.xs, ctx.ys)
    g = naive.warp(mag, ones, h, ctx.xs, ctx.ys)
    inner = (slice(2, -2), slice(2, -2))
    ridge_b, ridge_g = 1e-3 * fixed[inner].var(), 1e-3 * mag[inner].var()
    twin = naive.lc2_value(ctx.a, b, g, ctx.patch, ridge_b, ridge_g)
    assert cost == pytest.approx(-twin, rel=1e-9)
    assert 0.0 < twin < 1.0


def test_lc2_is_one_when_echoes_are_a_linear_combination():
    # Wein's model exactly: ultrasound = c1·F + c2·|∇F| + γ, at the identity transform.
    rng = np.random.default_rng(3)
    fixed = masked_smooth(rng.normal(size=(80, 80)), np.ones((80, 80), bool), 2.5) * 100
    gy, gx = np.gradient(fixed)
    moving = 0.7 * fixed - 2.0 * np.hypot(gx, gy) + 40.0
    ctx = MetricContext.from_images(fixed, None, moving[10:70, 10:70], None)
    shift = np.array([[1.0, 0, 10], [0, 1, 10], [0, 0, 1]])
    par = Parameterization("rigid", shift, (30.0, 30.0), 30.0)
    cost, _, _ = metric_cost("lc2", ctx, *par.matrix_and_jacobian(np.zeros(3)))
    # Only the ridge (1e-3 of each regressor's variance) keeps it from -1.
    assert -1.0 <= cost < -0.99
    off, _, _ = metric_cost("lc2", ctx, *par.matrix_and_jacobian(np.array([0.0, 0.1, 0.0])))
    assert off > cost + 0.05


def test_gradient_metrics_need_their_sample_data(images):
    fixed, moving, ctx, par = images
    bare = MetricContext(fixed, None, ctx.xs, ctx.ys, ctx.a)
    for metric in ("ngf", "lc2"):
        with pytest.raises(RegistrationError, match="from_images"):
            metric_cost(metric, bare, *par.matrix_and_jacobian(P))


@pytest.mark.parametrize("metric", ["mi", "nmi", "ncc", "ngf", "lc2"])
def test_analytic_gradient_matches_finite_differences(metric, images):
    _, _, ctx, par = images
    _, grad, _ = metric_cost(metric, ctx, *par.matrix_and_jacobian(P))
    _assert_finite_differences(metric, ctx, par, grad)


def _assert_finite_differences(metric, ctx, par, grad):
    # Gradient metrics interpolate gradient images whose derivative jumps at pixel
    # lines, so a step small enough not to cross one is needed.
    step = 1e-7 if metric in ("ngf", "lc2") else 1e-6
    for k in range(len(P)):
        e = np.zeros(len(P))
        e[k] = step
        up = metric_cost(metric, ctx, *par.matrix_and_jacobian(P + e))[0]
        down = metric_cost(metric, ctx, *par.matrix_and_jacobian(P - e))[0]
        assert grad[k] == pytest.approx((up - down) / (2 * step), rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("metric", ALL_METRICS)
def test_a_coarse_fixed_grid_is_reached_through_its_pixel_map(metric, images):
    # A decimated pyramid level keeps the fluoroscopy on a grid 2x coarser; the
    # homographies still map to full-resolution pixels.
    fixed, moving, _, par = images
    coarse = fixed[::2, ::2]
    to_coarse = np.array([[0.5, 0, -0.25], [0, 0.5, -0.25], [0, 0, 1.0]])
    kw = dict(n_bins=32, patch_samples=7)
    ctx = MetricContext.from_images(coarse, None, moving, None, fixed_pixel_map=to_coarse, **kw)
    same_grid = MetricContext.from_images(coarse, None, moving, None, **kw)
    h, dh = par.matrix_and_jacobian(P)
    cost, grad, count = metric_cost(metric, ctx, h, dh)
    ref = metric_cost(metric, same_grid, to_coarse @ h, to_coarse @ dh)
    assert (cost, count) == (ref[0], ref[2])
    assert_allclose(grad, ref[1], rtol=1e-12)
    _assert_finite_differences(metric, ctx, par, grad)


def test_projective_gradients_of_gradient_metrics(images):
    # The warped gradient carries the homography's Jacobian; check its perspective terms.
    _, _, ctx, _ = images
    h0 = np.array([[1.1, 0.1, 30], [-0.08, 1.05, 25], [3e-4, -2e-4, 1.0]])
    par = Parameterization("projective", h0, (35.0, 30.0), 35.0)
    q = np.array([0.01, -0.02, 0.03, 0.01, 0.05, -0.04, 0.02, -0.01])
    for metric in ("ngf", "lc2"):
        _, grad, _ = metric_cost(metric, ctx, *par.matrix_and_jacobian(q))
        for k in range(len(q)):
            e = np.zeros(len(q))
            e[k] = 1e-7
            up = metric_cost(metric, ctx, *par.matrix_and_jacobian(q + e))[0]
            down = metric_cost(metric, ctx, *par.matrix_and_jacobian(q - e))[0]
            assert grad[k] == pytest.approx((up - down) / 2e-7, rel=1e-4, abs=1e-7)


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


def test_results_do_not_depend_on_the_thread_count(images, parallel_path):
    _, _, ctx, par = images
    h, dh = par.matrix_and_jacobian(P)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = [metric_cost(m, ctx, h, dh) for m in ALL_METRICS]
        numba.set_num_threads(max(2, before))
        many = [metric_cost(m, ctx, h, dh) for m in ALL_METRICS]
    finally:
        numba.set_num_threads(before)
    for (c1, g1, _), (c2, g2, _) in zip(one, many, strict=True):
        assert c1 == c2
        assert np.array_equal(g1, g2)


@pytest.fixture
def parallel_path(monkeypatch):
    """Send every kernel call of a metric down its parallel build, whatever its size."""
    import hybridfuse.registration._numba as numba_settings

    monkeypatch.setattr(numba_settings, "PARALLEL_MIN_ITEMS", 0)


def test_parallel_kernels_give_the_serial_twins_results_bit_for_bit(images, monkeypatch):
    # Small inputs take the serial twin, large ones the parallel build: the choice
    # must never show in a result.
    import hybridfuse.registration._numba as numba_settings

    _, _, ctx, par = images
    h, dh = par.matrix_and_jacobian(P)
    monkeypatch.setattr(numba_settings, "PARALLEL_MIN_ITEMS", 10**12)
    serial = [metric_cost(m, ctx, h, dh) for m in ALL_METRICS]
    monkeypatch.setattr(numba_settings, "PARALLEL_MIN_ITEMS", 0)
    parallel = [metric_cost(m, ctx, h, dh) for m in ALL_METRICS]
    for (c1, g1, n1), (c2, g2, n2) in zip(serial, parallel, strict=True):
        assert c1 == c2 and n1 == n2
        assert np.array_equal(g1, g2)


def test_batch_mi_of_search_candidates_equals_single_evaluations(images):
    # The global search scores candidates with a batch kernel and a one-logarithm-per-
    # bin MI; each score must be the MI that the optimiser's metric gives.
    from hybridfuse.registration.metrics import batch_mi_cost

    _, _, ctx, par = images
    steps = [np.zeros(6), P, -P, 2 * P]
    hs = np.ascontiguousarray([par.matrix(p) for p in steps])
    batch = batch_mi_cost(ctx, hs)
    single = [metric_cost("mi", ctx, *par.matrix_and_jacobian(p))[0] for p in steps]
    assert_allclose(batch, single, rtol=1e-12)

"""Transforms: parameterisation, derivatives, composition, JSON round trip."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from hybridfuse.registration import Parameterization, RegistrationError, Transform, TransformModel
from tests.registration import naive

H0 = np.array([[0.55, 0.02, 120.0], [-0.03, 0.56, 80.0], [1e-5, -2e-5, 1.0]])


@pytest.mark.parametrize("model", list(TransformModel))
def test_zero_parameters_give_the_initial_transform(model):
    par = Parameterization(model, H0, (300.0, 250.0), 160.0)
    h = par.matrix(np.zeros(par.n_params))
    assert_allclose(h / h[2, 2], H0, atol=1e-12)


@pytest.mark.parametrize("model", list(TransformModel))
def test_matrix_jacobian_matches_finite_differences(model, rng):
    par = Parameterization(model, H0, (300.0, 250.0), 160.0)
    p = rng.normal(0, 0.05, par.n_params)
    _, dh = par.matrix_and_jacobian(p)
    for k in range(par.n_params):
        e = np.zeros(par.n_params)
        e[k] = 1e-6
        fd = (par.matrix_and_jacobian(p + e)[0] - par.matrix_and_jacobian(p - e)[0]) / 2e-6
        assert_allclose(dh[k], fd, atol=1e-6)


@pytest.mark.parametrize("model", list(TransformModel))
def test_matrix_and_jacobian_kernel_matches_its_numpy_twin(model, rng):
    par = Parameterization(model, H0, (300.0, 250.0), 160.0)
    p = rng.normal(0, 0.05, par.n_params)
    h, dh = par.matrix_and_jacobian(p)
    d, dd = naive.param_delta(model, p)
    left, right = par._frame
    assert_allclose(h, left @ d @ right, rtol=1e-13, atol=1e-13)
    assert_allclose(dh, left @ dd @ right, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("model", list(TransformModel))
def test_params_of_inverts_matrix(model, rng):
    par = Parameterization(model, H0, (300.0, 250.0), 160.0)
    p = rng.normal(0, 0.05, par.n_params)
    assert_allclose(par.params_of(par.matrix(p)), p, atol=1e-9)


def test_inverse_and_compose(rng):
    t = Transform(H0)
    pts = rng.uniform(0, 400, (10, 2))
    assert_allclose(t.inverse().apply(t.apply(pts)), pts, atol=1e-9)
    both = t.compose(t.inverse())
    assert_allclose(both.matrix, np.eye(3), atol=1e-12)


def test_mm_version_scales_by_the_spacings():
    t = Transform(np.diag([2.0, 2.0, 1.0]))
    mm = t.in_mm(moving_spacing_mm=(0.1, 0.1), fixed_spacing_mm=(0.3, 0.3))
    assert_allclose(mm[:2, :2], np.eye(2) * 6.0)


def test_json_round_trip():
    t = Transform(H0, "projective")
    back = Transform.from_dict(t.to_dict())
    assert_allclose(back.matrix, t.matrix)
    assert back.model is TransformModel.PROJECTIVE


def test_degenerate_matrix_is_refused():
    with pytest.raises(RegistrationError, match="degenerate"):
        Transform(np.zeros((3, 3)))

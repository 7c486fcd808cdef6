"""The held-out landmark test catches one mis-click among five, and keeps coarse honest clicks.

With five clicks under affine the other pairs leave two coordinates to estimate the noise
from, and the limit against that estimate alone (2 F(2, 2): 9998 σ²) let a 12 px mis-click
through; pooled with a prior click noise, it is refused (benchmarks/misclick_power.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from hybridfuse.registration import register
from hybridfuse.registration.errors import UnverifiedResultError
from hybridfuse.registration.options import RegistrationOptions
from hybridfuse.registration.start import Landmarks
from hybridfuse.registration.transforms import Transform
from hybridfuse.registration.verify_landmarks import _limit, landmark_check

IMG = np.zeros((400, 400))
MILD = np.array([[0.7, 0.1, 100.0], [-0.1, 0.7, 50.0], [1e-5, -1e-5, 1.0]])
OPTS = RegistrationOptions().with_values(metric=None)


def _clicks(seed: int, n: int, noise_px: float, misclick=None) -> Landmarks:
    """``n`` clicks with ``noise_px`` on both images; ``misclick`` = (pair, px) moves one."""
    rng = np.random.default_rng(seed)
    moving = rng.uniform(40, 360, (n, 2))
    fixed = Transform(MILD).apply(moving) + rng.normal(0, noise_px, (n, 2))
    moving = moving + rng.normal(0, noise_px, (n, 2))
    if misclick is not None:
        k, size = misclick
        fixed[k] += size * np.array([np.cos(1.0), np.sin(1.0)])
    return Landmarks(moving, fixed, tuple(f"p{i}" for i in range(n)))


def test_the_old_limit_is_the_prior_free_case():
    # Without a prior, 4 coordinates over the model leave 2 F(2, 2) at 1 - 1e-3 / 5.
    assert _limit(5, 2.0) == pytest.approx(2.0 * (5 / 1e-3 - 1.0), rel=1e-6)


def test_five_clicks_with_a_12_px_misclick_are_refused():
    clicks = _clicks(0, 5, 0.5, misclick=(3, 12.0))
    with pytest.raises(
        UnverifiedResultError, match="landmark p3 lies .* scatter pooled with 1.5 px"
    ):
        register(IMG, IMG, landmarks=clicks, options=OPTS)
    kept = register(IMG, IMG, landmarks=clicks, options=OPTS.with_values(accept_unverified=True))
    assert kept.quality.model_used == "affine"
    assert kept.quality.verification["loo_worst_pair"] == "p3"
    # Against the other pairs' scatter alone (the test before the prior) it passed.
    old = _check(clicks, 0.7, known=False, noise_prior=(1.5, 0.0))
    assert "unverified" not in old
    assert old["loo_statistic_limit"] == pytest.approx(_limit(5, 2.0))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_honest_coarse_six_clicks_are_accepted(seed):
    result = register(IMG, IMG, landmarks=_clicks(seed, 6, 3.0), options=OPTS)
    check = result.quality.verification
    assert result.quality.verdict == "accepted"
    assert check["loo_statistic_max"] < check["loo_statistic_limit"]


def _check(clicks: Landmarks, sigma_px: float, known: bool, noise_prior=None) -> dict:
    """The held-out check of an affine fit to ``clicks`` with noise ``sigma_px``."""
    a = np.column_stack([clicks.moving_xy, np.ones(len(clicks.moving_xy))])
    sol = np.linalg.lstsq(a, clicks.fixed_xy, rcond=None)[0]
    fit = Transform(np.vstack([sol.T, [0, 0, 1]]), "affine")
    return landmark_check(
        fit, clicks, None, sigma_px, clicks.moving_xy, 0.25, sigma_known=known,
        noise_prior=noise_prior,
    )  # fmt: skip


def test_a_given_click_noise_is_used_as_known():
    # A 7 px mis-click among 0.5 px clicks: the estimate pooled with the 1.5 px prior
    # lets it pass; the user's 0.7 px (both images' noise) does not.
    clicks = _clicks(0, 5, 0.5, misclick=(3, 7.0))
    assert "unverified" not in _check(clicks, 0.7, known=False)
    known = _check(clicks, 0.7, known=True)
    assert "unverified" in known and "0.7 px (given)" in known["unverified"]
    # χ²₂ at 1 - 1e-3 / 5: the tail exp(-x / 2).
    assert known["loo_statistic_limit"] == pytest.approx(-2.0 * np.log(1e-3 / 5), rel=1e-6)
    assert "unverified" not in _check(_clicks(0, 5, 0.5), 0.7, known=True)


def test_register_checks_clicks_against_the_sigma_the_user_gave():
    # The 7 px mis-click above, through register: estimated noise lets it pass, the
    # user's --landmark-sigma-px refuses it; matched structures never take a given σ.
    clicks = _clicks(0, 5, 0.5, misclick=(3, 7.0))
    assert register(IMG, IMG, landmarks=clicks, options=OPTS).quality.verdict == "accepted"
    with pytest.raises(UnverifiedResultError, match=r"0\.7 px \(given\)"):
        register(IMG, IMG, landmarks=clicks, options=OPTS.with_values(landmark_sigma_px=0.7))


def test_held_out_limit_matches_the_chi2_and_f_tails():
    """The closed-form tails equal SciPy's chi2(2) and 2·F(2, ν) inverse survival functions."""
    from scipy.stats import chi2, f

    from hybridfuse.registration.verify_landmarks import FALSE_REFUSAL_RATE, _limit

    for n_tests in (1, 5, 40):
        tail = FALSE_REFUSAL_RATE / n_tests
        assert _limit(n_tests, np.inf) == pytest.approx(chi2.isf(tail, 2), rel=1e-12)
        for dof in (1, 2, 3, 7.5, 40):
            assert _limit(n_tests, dof) == pytest.approx(2 * f.isf(tail, 2, dof), rel=1e-10)

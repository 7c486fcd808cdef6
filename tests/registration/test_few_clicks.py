"""Clicks too few to check each other are refused; five clicks keep a checkable model.

Four clicks leave an affine fit two coordinates of redundancy: a mis-click of 10-20 px
shows in them as little as right clicks' noise does (benchmarks/exact_fit_check.py), so
such a set is refused unless ``accept_unverified``. Five clicks are checkable under
affine (4 coordinates over) but not under projective (2), so affine is chosen for them.
"""

from __future__ import annotations

import numpy as np
import pytest

from hybridfuse.registration import register
from hybridfuse.registration.errors import UnverifiedResultError
from hybridfuse.registration.landmarks import fit_model
from hybridfuse.registration.options import RegistrationOptions
from hybridfuse.registration.start import Landmarks, few_clicks_reason
from hybridfuse.registration.transforms import Transform, TransformModel

IMG = np.zeros((200, 200))
IMG_4 = np.zeros((400, 400))
#: A plane-induced map with clear perspective, so that projective can win on clicks.
STRONG = np.array([[1.2, 0.05, 30.0], [-0.04, 1.15, 20.0], [2e-3, -1.5e-3, 1.0]])
#: Four clicks as on tuning seed 20 (ultrasound px): the first has most of the leverage.
MOVING_4 = np.array([[137.1, 333.0], [136.8, 224.1], [337.9, 347.1], [228.9, 269.7]])
MILD = np.array([[0.7, 0.1, 100.0], [-0.1, 0.7, 50.0], [1e-5, -1e-5, 1.0]])


def _clicks(h, moving, names=None):
    fixed = Transform(h).apply(moving)
    names = names or tuple(f"p{i}" for i in range(len(moving)))
    return Landmarks(np.asarray(moving, float), fixed, names)


@pytest.mark.parametrize(
    ("n_pairs", "model", "refused"),
    [
        (4, "affine", True),  # 2 over: the held-out test cannot run
        (5, "projective", True),
        (3, "similarity", True),
        (5, "affine", False),  # 4 over: the held-out test runs
        (3, "affine", False),  # exact: refused by the held-out check itself
        (2, "similarity", False),
    ],
)
def test_few_clicks_reason_counts_the_coordinates_over_the_model(n_pairs, model, refused):
    reason = few_clicks_reason(n_pairs, TransformModel(model))
    assert (reason is not None) is refused
    if refused:
        assert f"{n_pairs} landmark pairs" in reason and model in reason


def test_matched_beads_are_left_to_their_consensus_check():
    names = tuple(f"auto_bead{k}" for k in range(4))
    assert few_clicks_reason(4, TransformModel.AFFINE, names) is None
    assert few_clicks_reason(4, TransformModel.AFFINE, ("auto_bead0", "p1")) is not None


def _absorbed_misclick(h, moving, size_px):
    """Clicks with one fluoroscopy point moved ``size_px`` where the affine fit hides it most."""
    best = None
    for i in range(len(moving)):
        for angle in np.radians(np.arange(0, 360, 15)):
            lm = _clicks(h, moving)
            fixed = lm.fixed_xy.copy()
            fixed[i] += size_px * np.array([np.cos(angle), np.sin(angle)])
            fit = fit_model("affine", moving, fixed)
            resid = float(np.linalg.norm(Transform(fit).apply(moving) - fixed))
            if best is None or resid < best[0]:
                best = (resid, Landmarks(moving, fixed, lm.names))
    return best


def test_four_clicks_one_misclicked_are_refused_though_their_residuals_are_small():
    resid, clicks = _absorbed_misclick(MILD, MOVING_4, 15.0)
    # The mis-click hides in the fit: 1.1 px of residual, as 0.5 px clicks leave.
    assert resid < 1.5
    opts = RegistrationOptions().with_values(metric=None, model="affine")
    with pytest.raises(UnverifiedResultError, match="4 landmark pairs leave 2 coordinates") as err:
        register(IMG_4, IMG_4, landmarks=clicks, options=opts)
    assert str(err.value).endswith("; give more landmark pairs")
    kept = register(
        IMG_4, IMG_4, landmarks=clicks, options=opts.with_values(accept_unverified=True)
    )
    assert kept.quality.verdict == "refused"
    assert kept.quality.accepted_unverified is True


def test_five_clicks_are_fitted_affine_where_only_affine_can_be_checked():
    rng = np.random.default_rng(7)
    moving = rng.uniform(20, 180, size=(5, 2))
    clicks = _clicks(STRONG, moving)
    clicks = Landmarks(moving, clicks.fixed_xy + rng.normal(0, 0.3, (5, 2)), clicks.names)
    res = register(IMG, IMG, landmarks=clicks, options=RegistrationOptions(metric=None))
    choice = res.quality.model_selection
    # The held-out errors alone would keep projective here: the perspective is strong.
    assert choice["loo_tre_px_median_projective"] < choice["loo_tre_px_median_affine"]
    assert res.quality.model_used == "affine"
    assert res.quality.verdict == "accepted"
    assert "unchecked_clicks" not in choice

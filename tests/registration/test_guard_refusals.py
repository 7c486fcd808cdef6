"""A predicted TRE too wide to trust is refused, and each refusal says what would help."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hybridfuse.registration import Landmarks, RegistrationOptions, register
from hybridfuse.registration.errors import UnverifiedResultError
from hybridfuse.registration.guards import (
    MIN_CLICK_SPAN,
    Quality,
    raise_if_refused,
    refusal_hint,
)

FIELD_MASK = np.zeros((380, 400), bool)
FIELD_MASK[30:331, 40:361] = True  # 321 x 301 px of ultrasound
H_TRUE = np.array([[0.9, 0.12, 300.0], [-0.1, 0.92, 250.0], [2e-5, -1e-5, 1.0]])


def _bunched_clicks(rng, noise_px, n=5, side_px=30.0):
    """``n`` clicks inside a ``side_px`` square of the field (1 % of it), fixed side noisy."""
    moving = np.array([80.0, 70.0]) + rng.uniform(0, side_px, (n, 2))
    fixed = np.c_[moving, np.ones(n)] @ H_TRUE.T
    fixed = fixed[:, :2] / fixed[:, 2:] + rng.normal(0, noise_px, (n, 2))
    return Landmarks(moving, fixed, tuple(f"c{k}" for k in range(n)))


def _register(landmarks, **values):
    return register(
        np.zeros((1024, 1024)),
        np.zeros((380, 400)),
        moving_mask=FIELD_MASK,
        landmarks=landmarks,
        options=RegistrationOptions(metric=None).with_values(**values),
        expected_scale=0.9,
        fixed_spacing_mm=0.2,
    )


def _spread_clicks(rng, noise_px):
    gx, gy = np.meshgrid(np.linspace(60, 340, 3), np.linspace(50, 310, 3))
    moving = np.column_stack([gx.ravel(), gy.ravel()])
    fixed = np.c_[moving, np.ones(9)] @ H_TRUE.T
    fixed = fixed[:, :2] / fixed[:, 2:] + rng.normal(0, noise_px, (9, 2))
    return Landmarks(moving, fixed, tuple(f"c{k}" for k in range(9)))


def test_clicks_bunched_in_a_corner_of_the_field_are_refused():
    clicks = _bunched_clicks(np.random.default_rng(3), noise_px=0.5)
    marked = _register(clicks, accept_unverified=True)
    assert marked.quality.landmark_hull_fraction_of_field < MIN_CLICK_SPAN
    # The ceiling alone would let them through: the span is what refuses them.
    assert marked.quality.predicted_tre_mm < RegistrationOptions().guards.max_predicted_tre_mm
    assert marked.quality.verdict == "refused"
    assert [r for r in marked.quality.reasons if "of the ultrasound field (< 2 %)" in r]
    with pytest.raises(UnverifiedResultError, match="the landmarks span"):
        _register(clicks)


def test_clicks_spread_over_the_field_are_accepted():
    result = _register(_spread_clicks(np.random.default_rng(4), noise_px=2.0))
    assert result.quality.verdict == "accepted"
    assert result.quality.landmark_hull_fraction_of_field > MIN_CLICK_SPAN


def test_two_clicks_are_not_refused_for_spanning_no_area():
    """Two points always span no area; the reason given is what can catch their mis-click."""
    moving = np.array([[80.0, 70.0], [320.0, 290.0]])
    fixed = np.c_[moving, np.ones(2)] @ H_TRUE.T
    clicks = Landmarks(moving, fixed[:, :2] / fixed[:, 2:], ("a", "b"))
    marked = _register(clicks, accept_unverified=True)
    assert marked.quality.model_used == "similarity"
    assert marked.quality.landmark_hull_fraction_of_field == 0.0
    assert marked.quality.verdict == "refused"
    assert not [r for r in marked.quality.reasons if "the landmarks span" in r]
    assert [r for r in marked.quality.reasons if "fit the similarity model exactly" in r]


def test_bunched_clicks_are_refused_under_a_similarity_too():
    marked = _register(
        _bunched_clicks(np.random.default_rng(3), noise_px=0.5),
        accept_unverified=True,
        model="similarity",
    )
    assert marked.quality.model_used == "similarity"
    assert [r for r in marked.quality.reasons if "the landmarks span" in r]


def test_an_answer_predicted_wider_than_the_ceiling_is_refused():
    clicks = _spread_clicks(np.random.default_rng(4), noise_px=2.0)
    predicted = _register(clicks).quality.predicted_tre_mm
    tight = _register(clicks, max_predicted_tre_mm=predicted / 2, accept_unverified=True)
    assert tight.quality.verdict == "refused"
    assert [r for r in tight.quality.reasons if "(> max_predicted_tre_mm" in r]
    with pytest.raises(UnverifiedResultError, match=r"the predicted TRE is .* mm"):
        _register(clicks, max_predicted_tre_mm=predicted / 2)


def _refused(names, verification=None):
    quality = Quality(
        verdict="refused",
        reasons=["a reason"],
        local_scale_min=1.0,
        local_scale_max=1.0,
        edge_on=False,
        verification=verification,
    )
    fit = None if names is None else SimpleNamespace(names=list(names))
    return SimpleNamespace(quality=quality, landmark_fit=fit)


@pytest.mark.parametrize(
    ("names", "verification", "hint"),
    [
        (["a", "b"], None, "give more landmark pairs"),
        (["auto_bead0", "auto_bead1"], None, "(--landmarks) or a starting transform"),
        (["auto_bead0"], {"structures_near_start": {}}, "give landmarks or a closer start"),
        (None, None, "give landmarks or a closer start"),
    ],
)
def test_the_refusal_says_what_the_route_lacked(names, verification, hint):
    result = _refused(names, verification)
    assert hint in refusal_hint(result)
    with pytest.raises(UnverifiedResultError) as err:
        raise_if_refused(result, RegistrationOptions())
    assert str(err.value).endswith(refusal_hint(result))
    if names and names[0].startswith("auto_") and not verification:
        assert "more landmark pairs" not in str(err.value)

"""Fluoroscopy clicks off the beads under them, all the same way (registration.click_offset).

Clicks read off a shifted or resized display agree with each other, so no check of the
pairs sees them; the beads under them do.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hybridfuse.registration.click_offset import off_beads
from hybridfuse.registration.clicks import snap_to_beads
from tests.registration.test_clicks import CENTRES, SPACING_MM, _clicks, _image, _tre_mm

TO_MM = np.asarray(SPACING_MM)[::-1]


def _offset(clicks):
    return snap_to_beads(_clicks(CENTRES, clicks), _image(CENTRES), None, SPACING_MM, 2.0)[1][
        "off_beads"
    ]


@pytest.mark.parametrize(
    "how",
    [lambda c: c + [9.0, -8.0], lambda c: c.mean(0) + 0.85 * (c - c.mean(0))],
    ids=["shifted 12 px", "scaled 0.85"],
)
def test_clicks_all_off_the_same_way_refuse(how):
    clicks = how(CENTRES + np.random.default_rng(3).normal(0, 0.5, CENTRES.shape))
    record = _offset(clicks)
    assert record["clicks_on_beads"] == 5
    assert record["offset_mm"] > 2.0 and record["p_value"] < 1e-6
    assert "off the 5 beads under them, all the same way" in record["refuse"]


@pytest.mark.parametrize("noise_px", [0.5, 3.0])
def test_right_clicks_precise_or_hurried_pass(noise_px):
    for seed in range(5):
        clicks = CENTRES + np.random.default_rng(seed).normal(0, noise_px, CENTRES.shape)
        record = _offset(clicks)
        assert record is not None and "refuse" not in record, (seed, record)


def test_right_clicks_of_a_hurried_hand_are_rarely_refused():
    """3 px clicks on the beads, 1000 sets: 2 refused with both common parts tested at
    half the rate each (1 with one scale alone, 5 with a full affine common part)."""
    refused = 0
    for seed in range(1000):
        rng = np.random.default_rng(seed)
        clicks = CENTRES + rng.normal(0, 3.0, CENTRES.shape)
        moving = CENTRES * 0.5 + rng.normal(0, 0.25, CENTRES.shape)
        record = off_beads(moving, clicks, CENTRES, TO_MM, 6.0)
        refused += bool(record and "refuse" in record)
    assert refused <= 3


def test_one_click_off_is_not_a_common_offset():
    clicks = CENTRES + np.random.default_rng(3).normal(0, 0.5, CENTRES.shape)
    clicks[2] += [12.0, 6.0]  # 3.4 mm: on no bead, nearest its own
    record = off_beads(CENTRES * 0.5, clicks, CENTRES, TO_MM, 6.0)
    assert record["clicks_on_beads"] == 5 and "refuse" not in record, record


def test_fewer_than_three_clicks_on_beads_test_nothing():
    clicks = CENTRES + [12.0, 0.0]
    assert off_beads(CENTRES[:2] * 0.5, clicks[:2], CENTRES, TO_MM, 6.0) is None
    far = clicks.copy()
    far[2:] += 40.0  # 10 mm from every bead
    assert off_beads(CENTRES * 0.5, far, CENTRES, TO_MM, 6.0) is None


def test_a_family_case_clicked_off_a_shifted_display_is_refused(family_case_of):
    """Landmarks alone (no metric): the pairs agree, the predicted TRE is small."""
    from hybridfuse.fusion.coregister import read_landmarks_csv, register_images
    from hybridfuse.fusion.io import read_image
    from hybridfuse.registration.options import RegistrationOptions

    case = family_case_of(61, 512)  # tuning seed: five beads
    truth = json.loads((case / "truth.json").read_text())
    pair = read_image(case / "fluoro.dcm"), read_image(case / "us.dcm")
    opts = RegistrationOptions().with_values(metric=None, accept_unverified=True)
    right = register_images(*pair, landmarks=read_landmarks_csv(case / "landmarks.csv"))
    assert right.quality.verdict == "accepted", right.quality.reasons
    assert "refuse" not in right.quality.clicks_on_beads["off_beads"]
    shifted = read_landmarks_csv(case / "landmarks.csv")
    shifted.fixed_xy[:, :] += [8.0, 6.0]
    wrong = register_images(*pair, landmarks=shifted, options=opts)
    tre = _tre_mm(wrong.transform.matrix, truth)
    assert tre > 2.0  # what it would have accepted
    assert wrong.quality.predicted_tre_mm < tre / 2  # the pairs alone cannot tell
    assert wrong.quality.verdict == "refused"
    (reason,) = wrong.quality.reasons  # nothing else refuses it
    assert "under them, all the same way" in reason
    assert wrong.quality.accepted_unverified


def test_anatomical_clicks_beside_beads_in_any_direction_are_rarely_refused():
    """Right pairs on anatomy 3-4.5 mm from each bead, every way: their displacements
    share no common part. Pooled with the hand's noise alone they read as one (27 of 1000
    such sets refused, the review's finding); the larger of the two scatters: 1 of 1000."""
    refused = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        angle = rng.uniform(0, 2 * np.pi, len(CENTRES))
        anatomy = CENTRES + np.c_[np.cos(angle), np.sin(angle)] * rng.uniform(12, 18, (5, 1))
        clicks = anatomy + rng.normal(0, 0.5, anatomy.shape)
        moving = anatomy * 0.5 + rng.normal(0, 0.5, anatomy.shape)
        record = off_beads(moving, clicks, CENTRES, TO_MM, 6.0)
        refused += bool(record and "refuse" in record)
    assert refused <= 1


# Review of session 20: limits found and left (docs/registration-method.md, *Clicks off
# the beads under them*); strict, so that a fix shows.
KNOWN_LIMIT = pytest.mark.xfail(strict=True, reason="known limit of the offset check")


@KNOWN_LIMIT
def test_a_display_shifted_more_than_the_pairing_radius_is_refused():
    """A 6.4 mm shift pairs no click with its bead: the check says nothing (None), and
    with ``--metric none`` such an answer is accepted although 2.2 and 4.4 mm are refused."""
    clicks = CENTRES + [20.0, 16.0]  # 6.4 mm at 0.25 mm/px; beads are >= 15 mm apart
    record = off_beads(CENTRES * 0.5, clicks, CENTRES, TO_MM, 6.0)
    assert record is not None and "refuse" in record, record


def test_a_display_resized_along_one_axis_is_refused():
    """Columns shown at 0.85 (a 4:3 picture stretched to another shape): outer clicks
    2.6 mm off their beads. With one scale for both axes the rest counted as scatter and
    the test passed it (p 0.23, session 20's review); a second common part scales each
    axis."""
    c = CENTRES + np.random.default_rng(0).normal(0, 0.5, CENTRES.shape)
    clicks = np.c_[c[:, 0].mean() + 0.85 * (c[:, 0] - c[:, 0].mean()), c[:, 1]]
    record = off_beads(CENTRES * 0.5, clicks, CENTRES, TO_MM, 6.0)
    assert "refuse" in record, record


@KNOWN_LIMIT
def test_anatomical_clicks_beside_beads_all_one_way_are_not_refused():
    """Right pairs on anatomy that lies 3 mm beside each bead (the ultrasound clicks on
    the same anatomy): nothing is wrong, yet the fluoroscopy side alone reads as a shift
    (the ultrasound side, whose echoes are found to 0.4 mm, could tell; not looked at)."""
    anatomy = CENTRES + [12.0, 0.0]
    clicks = anatomy + np.random.default_rng(0).normal(0, 0.5, CENTRES.shape)
    record = off_beads(anatomy * 0.5, clicks, CENTRES, TO_MM, 6.0)
    assert record is None or "refuse" not in record, record


def test_anatomical_clicks_beside_three_beads_are_rarely_refused():
    """Three right clicks on anatomy 2.5-4.5 mm from three beads, every way, and two pairs
    away from beads. Five parameters of the common part leave 3 clicks one coordinate of
    scatter, near 0 by chance in 1 set of 10: 21 of 400 refused (session 21 review). One
    scale where 3 clicks are on beads: 1."""
    refused = 0
    for seed in range(400):
        rng = np.random.default_rng(seed)
        angle = rng.uniform(0, 2 * np.pi, 3)
        near = CENTRES[:3] + np.c_[np.cos(angle), np.sin(angle)] * rng.uniform(10, 18, (3, 1))
        true = np.vstack([near, rng.uniform(30, 230, (2, 2))])
        clicks = true + rng.normal(0, 0.5, true.shape)
        moving = true * 0.5 + rng.normal(0, 0.25, true.shape)
        record = off_beads(moving, clicks, CENTRES, TO_MM, 6.0)
        refused += bool(record and "refuse" in record)
    assert refused <= 1

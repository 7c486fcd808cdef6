"""A fluoroscopy click beside a bead no click is on (registration.click_beside).

One wrong click among five pairs is absorbed by the fit, and the held-out test has too few
coordinates over to see it; the bead it was meant for is still there, unclaimed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hybridfuse.registration.click_beside import REACH_MM, beside_beads, refusal
from hybridfuse.registration.clicks import snap_to_beads
from tests.registration.test_clicks import CENTRES, SPACING_MM, _clicks, _image, _tre_mm

TO_MM = np.asarray(SPACING_MM)[::-1]
#: A sixth bead, which no pair is clicked on.
SPARE = np.array([[150.0, 110.0]])


def _record(clicks, true=CENTRES, beads=CENTRES):
    lm = _clicks(true, clicks)
    return snap_to_beads(lm, _image(beads), None, SPACING_MM, 2.0)[1]["beside_bead"]


def _one_off():
    """Five pairs clicked at 0.5 px, the fourth 6.1 mm off its bead, on no other; weighed
    alike (as where the clicks' moves onto the beads were declined)."""
    rng = np.random.default_rng(3)
    clicks = CENTRES + rng.normal(0, 0.5, CENTRES.shape)
    clicks[3] += [20.0, -14.0]
    moving = CENTRES * 0.5 + rng.normal(0, 0.25, CENTRES.shape)
    return beside_beads(moving, clicks, np.ones(5), np.ones(5), np.ones(5, bool), CENTRES, TO_MM)


def test_a_click_beside_its_bead_is_named():
    record = _one_off()
    (rival,) = record["rivals"]
    assert rival["pair"] == 3 and rival["bead_xy"] == pytest.approx(CENTRES[3], abs=0.1)
    assert rival["answers_apart_mm"] >= 1.0 and rival["likelihood_ratio"] > 1.0
    reason = refusal(record, ["b0", "b1", "b2", "b3", "b4"])
    assert reason.startswith("the fluoroscopy click of b3 lies 5.9 mm from a bead no click is on")
    # Which bead, and the side that tells a bead's pair from anatomy ("click it there" alone
    # would move a right anatomical click onto a bead: session 21 review).
    assert f"at ({CENTRES[3][0]:.0f}, {CENTRES[3][1]:.0f}) px" in reason
    assert "If the ultrasound click of b3 is on that bead's echo, click the bead" in reason


@pytest.mark.parametrize("noise_px", [0.5, 2.0])
def test_clicks_on_their_beads_name_none(noise_px):
    for seed in range(5):
        clicks = CENTRES + np.random.default_rng(seed).normal(0, noise_px, CENTRES.shape)
        record = _record(clicks, beads=np.vstack([CENTRES, SPARE]))
        assert record is not None and record["free_beads"] == 1, record
        assert record["rivals"] == [], (seed, record)


def test_right_anatomical_clicks_beside_a_free_bead_are_rarely_named():
    """Five clicks on beads and a sixth, right, on anatomy 2.5-6 mm from a bead no one
    clicked, at a hurried hand's 1.5 px and weighed as a click left in place: the bead
    is named for 0 of 400 such sets (the rule needs the bead likelier than the click)."""
    named = tested = 0
    for seed in range(400):
        rng = np.random.default_rng(seed)
        angle = rng.uniform(0, 2 * np.pi)
        anatomy = SPARE[0] + rng.uniform(10, 24) * np.array([np.cos(angle), np.sin(angle)])
        true = np.vstack([CENTRES, anatomy])
        moving = true * 0.5 + rng.normal(0, 0.25, true.shape)
        clicks = true + np.r_[np.zeros((5, 2)), rng.normal(0, 1.5, (1, 2))]
        weights = np.r_[np.ones(5), 0.2]
        beads = np.vstack([CENTRES, SPARE])
        record = beside_beads(moving, clicks, weights, np.ones(6), np.ones(6, bool), beads, TO_MM)
        tested += record is not None
        named += bool(record and record["rivals"])
    assert tested >= 390 and named == 0


def test_a_right_click_beside_a_free_bead_among_five_is_rarely_named():
    """Harder: five pairs in all (four beads, one anatomical point 2.5-4 mm from a bead
    no one clicked), every click at 1.5 px and weighed alike, so the others predict the
    fifth loosely and the bead is often plausible. Named for 1 of 400 sets; 2 at a
    likelihood ratio over 1, 12 where any plausible bead is a rival."""
    named = tested = 0
    for seed in range(400):
        rng = np.random.default_rng(seed)
        angle = rng.uniform(0, 2 * np.pi)
        anatomy = CENTRES[4] + rng.uniform(10, 16) * np.array([np.cos(angle), np.sin(angle)])
        true = np.vstack([CENTRES[:4], anatomy])
        moving = true * 0.5 + rng.normal(0, 0.25, true.shape)
        clicks = true + rng.normal(0, 1.5, true.shape)
        record = beside_beads(
            moving, clicks, np.ones(5), np.ones(5), np.ones(5, bool), CENTRES, TO_MM
        )
        tested += record is not None
        named += bool(record and record["rivals"])
    assert tested >= 390 and named <= 1


def test_a_pair_the_registration_left_out_refuses_nothing():
    record = _one_off()
    assert refusal(record, ["b0", "b1", "b2", "b3", "b4"], rejected=["b3"]) is None
    assert refusal(record, [], rejected=["1"]).startswith("the fluoroscopy click of 3 ")


def test_fewer_than_five_pairs_or_no_free_bead_test_nothing():
    clicks = CENTRES + np.random.default_rng(3).normal(0, 0.5, CENTRES.shape)
    clicks[3] += [20.0, -14.0]
    assert beside_beads(CENTRES[:4] * 0.5, clicks[:4], np.ones(4), np.ones(4), np.ones(4, bool),
                        CENTRES, TO_MM) is None  # fmt: skip
    assert _record(CENTRES, beads=CENTRES) is None  # every bead claimed


def test_a_family_case_with_one_click_on_a_blob_beside_its_bead_is_refused(family_case_of):
    """Tuning seed 52: bead1's fluoroscopy click on a faint blob 8 mm away. Five pairs
    absorb it; accepted 5.4 mm off at a predicted 2.6 mm before this check."""
    from benchmarks.misclick_files import with_fixed, wrong_sets
    from hybridfuse.fusion.coregister import read_landmarks_csv, register_images
    from hybridfuse.fusion.io import read_image
    from hybridfuse.registration.options import RegistrationOptions

    case = family_case_of(52, 512)
    truth = json.loads((case / "truth.json").read_text())
    pair = read_image(case / "fluoro.dcm"), read_image(case / "us.dcm")
    rows, sets = wrong_sets(case, 52)
    (label, index, xy), *_ = [s for s in sets if s[0].startswith("bead1 on a blob")]
    path = case.parent / "one_wrong_click.csv"
    path.write_text("\n".join(",".join(r) for r in with_fixed(rows, index, xy)) + "\n")
    opts = RegistrationOptions().with_values(accept_unverified=True)
    right = register_images(*pair, landmarks=read_landmarks_csv(case / "landmarks.csv"))
    assert right.quality.verdict == "accepted", right.quality.reasons
    assert not (right.quality.clicks_on_beads["beside_bead"] or {}).get("rivals")
    wrong = register_images(*pair, landmarks=read_landmarks_csv(path), options=opts)
    tre = _tre_mm(wrong.transform.matrix, truth)
    assert tre > 2.0, label  # what it would have accepted
    assert wrong.quality.predicted_tre_mm < tre
    (reason,) = wrong.quality.reasons  # nothing else refuses it
    assert reason.startswith("unverified: the fluoroscopy click of bead1 lies 7.")
    assert wrong.quality.accepted_unverified


def test_the_answers_apart_in_closed_form_equal_two_refits():
    """The rank-one updates (thousands of pairs cost no refit each) against two fits."""
    from hybridfuse.registration.click_beside import _Sums

    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(5, 12))
        src = rng.uniform(0, 300, (n, 2))
        dst = 2 * src + rng.normal(0, 3, (n, 2))
        w = rng.uniform(0.05, 1, n)
        kept = np.arange(n) >= 1  # the first pair rejected by the fit
        i, bead = int(rng.integers(n)), dst[0] + rng.normal(0, 20, 2)
        use = kept.copy()
        use[i] = True
        design = np.c_[src, np.ones(n)][use]
        fits = []
        for target, weight in ((dst, w), (np.where(np.arange(n)[:, None] == i, bead, dst),
                                          np.where(np.arange(n) == i, 1.0, w))):  # fmt: skip
            sw = np.sqrt(weight[use])[:, None]
            fits.append(np.linalg.lstsq(design * sw, target[use] * sw, rcond=None)[0])
        expected = np.sqrt(np.mean(np.sum(((design @ (fits[1] - fits[0])) * TO_MM) ** 2, axis=1)))
        got = _Sums.of(src, dst, w, kept).apart_mm(i, bead, w[i], 1.0, kept[i], TO_MM)
        assert got == pytest.approx(expected, rel=1e-8)


def _count_named(make, n=400, to_mm=TO_MM):
    """How many of ``n`` sets (true, clicks, beads) from ``make(rng)`` name a rival, and the
    farthest one (mm from its click)."""
    named, farthest = 0, 0.0
    for seed in range(n):
        true, clicks, beads = make(np.random.default_rng(seed))
        moving = true * 0.5 + np.random.default_rng([seed, 1]).normal(0, 0.25, true.shape)
        ones = np.ones(len(true))
        record = beside_beads(moving, clicks, ones, ones, ones.astype(bool), beads, to_mm)
        rivals = (record or {}).get("rivals", [])
        named += bool(rivals)
        farthest = max([farthest] + [r["click_to_bead_mm"] for r in rivals])
    return named, farthest


def test_a_bead_far_from_the_click_is_not_named():
    """Five right pairs on anatomy at a hurried hand's 3 px, ten beads no one clicked.
    Where the others predict a pair loosely, beads 10-84 mm from the click were named
    (session 21 review): now 3 of 400 sets, none beyond REACH_MM."""

    def make(rng):
        true = rng.uniform(40, 470, (5, 2))
        return true, true + rng.normal(0, 3.0, true.shape), rng.uniform(20, 490, (10, 2))

    named, farthest = _count_named(make)
    assert farthest <= REACH_MM and named <= 3


def test_clicks_left_on_their_beads_do_not_name_a_bead_beside():
    """Five right clicks on their beads at 1.5 px, left in place (the moves declined), each
    bead with another 3-5 mm away no one clicked, at 0.345 mm per pixel. Measured against
    the free beads only, the on-bead mask skipped nothing: 34 of 400 sets named a
    neighbour (session 21 review)."""

    def make(rng):
        true = CENTRES * 1.8
        angle = rng.uniform(0, 2 * np.pi, 5)
        beside = true + np.c_[np.cos(angle), np.sin(angle)] * rng.uniform(3, 5, (5, 1)) / 0.345
        return true, true + rng.normal(0, 1.5, true.shape), np.vstack([true, beside])

    assert _count_named(make, to_mm=np.array([0.345, 0.345]))[0] == 0


def test_right_anatomical_clicks_beside_beads_nobody_clicked_are_rarely_named():
    """Five right pairs on anatomy 2.5-8 mm beside five beads no one clicked, at 1.5 px and
    0.345 mm per pixel. The best of five beads at a ratio over 1 named one in 25 of 400
    sets (session 21 review; on the family's images, 15 of 190 such sets refused, 14 of
    them right); split over the free beads, 5; over MIN_RATIO per free bead, 1."""

    def make(rng):
        beads = CENTRES * 1.8
        angle = rng.uniform(0, 2 * np.pi, 5)
        true = beads + np.c_[np.cos(angle), np.sin(angle)] * rng.uniform(2.5, 8, (5, 1)) / 0.345
        return true, true + rng.normal(0, 1.5, true.shape), beads

    assert _count_named(make, to_mm=np.array([0.345, 0.345]))[0] <= 1

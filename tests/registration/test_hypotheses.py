"""Placements the images judge: the candidates the beads allow, and the judgement's rule."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from hybridfuse.registration import hypotheses
from hybridfuse.registration.correspond import (
    SAME_POSE_MM,
    AmbiguousMatchError,
    NoFeaturesError,
    match_points,
    placements,
)
from hybridfuse.registration.hypotheses import SCREEN_MARGIN, Candidate
from hybridfuse.registration.options import RegistrationOptions

#: Ultrasound region's corners (mm), over which placements must differ.
EXTENT = np.array([[0.0, 0.0], [40.0, 0.0], [40.0, 50.0], [0.0, 50.0]])


def _similarity(angle_deg: float, shift, mirror: bool = False) -> np.ndarray:
    a = np.radians(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    if mirror:
        rot = rot @ np.diag([-1.0, 1.0])
    out = np.eye(3)
    out[:2, :2], out[:2, 2] = rot, shift
    return out


def _apply(h, pts):
    return pts @ h[:2, :2].T + h[:2, 2]


def _far(h, truth) -> float:
    return float(np.max(np.linalg.norm(_apply(h, EXTENT) - _apply(truth, EXTENT), axis=1)))


def test_two_beads_list_every_placement_the_calibrated_scale_allows():
    truth = _similarity(30.0, (100.0, 80.0))
    moving = np.array([[10.0, 12.0], [28.0, 35.0]])
    # Two fluoroscopy beads are the ultrasound's; a third lies 25 mm from the first.
    fixed = np.vstack([_apply(truth, moving), _apply(truth, moving[:1]) + (25.0, 0.0)])
    with pytest.raises(NoFeaturesError):  # unchanged for callers that do not ask
        match_points(moving, fixed, extent_mm=EXTENT)
    found = placements(moving, fixed, extent_mm=EXTENT)
    # Each ordered pair of the two fixed beads at the moving pair's distance (29.2 mm:
    # only beads 0 and 1), in both handednesses.
    assert len(found) == 4
    assert all(p.items == 2 for p in found)
    assert min(_far(p.matrix, truth) for p in found) < 1e-6
    _assert_distinct(found)


def _assert_distinct(found):
    for i, p in enumerate(found):
        for q in found[i + 1 :]:
            assert _far(p.matrix, q.matrix) > SAME_POSE_MM


def test_a_two_way_match_lists_both_placements_and_still_refuses_for_match_points():
    truth = _similarity(-20.0, (60.0, 40.0))
    # Three beads in a line: their mirror image fits as well.
    moving = np.array([[20.0, 5.0], [20.0, 20.0], [20.0, 41.0]])
    fixed = _apply(truth, moving)
    with pytest.raises(AmbiguousMatchError):
        match_points(moving, fixed, extent_mm=EXTENT)
    found = placements(moving, fixed, extent_mm=EXTENT)
    assert len(found) >= 2 and found[0].items == found[1].items == 3
    assert min(_far(p.matrix, truth) for p in found[:2]) < 1e-6
    assert {np.linalg.det(p.matrix[:2, :2]) > 0 for p in found[:2]} == {True, False}
    _assert_distinct(found)  # the three pairs of the line seed the same pose three times


def test_one_side_with_fewer_than_two_items_lists_none():
    assert placements(np.array([[0.0, 0.0]]), np.array([[1.0, 1.0], [5.0, 9.0]])) == []


# The judgement on stand-in runs: where each candidate's start route ended (a shift, px),
# its verdict and its cost at the common standard.


class _Bench:
    def distance_mm(self, a, b):
        return float(np.linalg.norm(a[:2, 2] - b[:2, 2]))


def _cand(shift, verdict, end_cost, screen_cost=np.inf, items=3) -> Candidate:
    h = np.eye(3)
    h[:2, 2] = shift
    result = SimpleNamespace(
        quality=SimpleNamespace(verdict=verdict), transform=SimpleNamespace(matrix=h)
    )
    return Candidate(h, 2.0, items, screen_cost=screen_cost, result=result, end_cost=end_cost)


def _verdict(kept, dropped=()):
    return hypotheses._verdict(list(kept), list(dropped), _Bench(), RegistrationOptions())


def test_one_accepted_answer_and_the_others_clearly_worse_is_accepted():
    right = _cand((0, 0), "accepted", -0.50)
    others = [_cand((30, 0), "refused", -0.40), _cand((0.5, 0), "refused", -0.49)]
    winner, why = _verdict([others[0], right, others[1]])
    assert winner is right and why is None


def test_a_refused_end_elsewhere_at_a_cost_within_the_gate_refuses():
    # The verification of one run says nothing of another optimum the images hold.
    right = _cand((0, 0), "accepted", -0.50)
    rival = _cand((14, 0), "refused", -0.49)
    winner, why = _verdict([right, rival])
    assert winner is right
    assert "2 of 2 placements" in why and "14.0 mm apart" in why and "a cost 2% worse" in why


def test_two_answers_accepted_apart_refuse_whatever_their_costs():
    right = _cand((0, 0), "accepted", -0.50)
    other = _cand((36, 0), "accepted", -0.30)
    winner, why = _verdict([right, other])
    assert winner is right and "both end verified 36.0 mm apart" in why


def test_the_lower_cost_accepted_answer_is_the_one_judged_against():
    worse = _cand((40, 0), "accepted", -0.30)
    best = _cand((0, 0), "accepted", -0.50)
    same = _cand((0.8, 0), "accepted", -0.49)  # the same answer from another placement
    assert _verdict([worse]) == (worse, None)  # three items: the start route checked them
    winner, why = _verdict([best, same])
    assert winner is best and why is None


def test_a_placement_the_screen_dropped_that_scored_close_refuses():
    right = _cand((0, 0), "accepted", -0.50, screen_cost=-0.40)
    far = _cand((30, 0), "refused", -0.30, screen_cost=-0.30)
    close = _cand((20, 0), "refused", np.inf, screen_cost=-0.40 * (1 - SCREEN_MARGIN / 2))
    assert _verdict([right, far], [_cand((25, 0), "refused", np.inf, -0.1)])[1] is None
    why = _verdict([right, far], [close])[1]
    assert "coarse screen left out" in why


def test_no_accepted_answer_refuses_with_the_best_end():
    a, b = _cand((0, 0), "refused", -0.5), _cand((9, 0), "refused", -0.2)
    winner, why = _verdict([a, b])
    assert winner is a and "none of the 2 placements" in why


# End to end on a family case (tuning seed, 320-px fluoroscopy) whose beads match two ways.
SEED_TWO_WAYS = 78


def test_two_verified_placements_of_a_two_way_match_are_refused_naming_them(tmp_path):
    from hybridfuse.fusion import read_image
    from hybridfuse.fusion.coregister import register_images
    from hybridfuse.testdata.phantom.family import family_case

    case = family_case(SEED_TWO_WAYS, tmp_path / "case", max_detector_px=320)
    truth = json.loads((case / "truth.json").read_text())
    fixed, moving = read_image(case / "fluoro.dcm"), read_image(case / "us.dcm")
    opts = RegistrationOptions().with_values(accept_unverified=True, auto_placements=2)
    result = register_images(fixed, moving, options=opts)
    record = result.quality.verification["placements"]
    assert "match in two different ways" in record["why_tried"]
    run = [c for c in record["candidates"] if c["run"]]
    assert [c["verdict"] for c in run] == ["accepted", "accepted"]
    # The images prefer the right placement (its end costs least), but the other also ends
    # verified, 49 mm away at a cost only 14 % worse: not singled out, so refused.
    assert _tre_mm(result.transform.matrix, truth) < 2.0
    assert result.quality.verdict == "refused"
    assert any("both end verified" in r for r in result.quality.reasons)


#: Tuning seeds (320 px) whose matched structures lie nearly in a line: in the
#: ultrasound (4 points, spread ratio 0.23), in the fluoroscopy (4 structures, 0.24).
SEEDS_IN_A_LINE = {24: "lie nearly in a line", 57: "lie along a line in the fluoroscopy"}


@pytest.mark.parametrize("seed", sorted(SEEDS_IN_A_LINE))
def test_structures_along_a_line_are_judged_among_their_placements(family_case_of, seed):
    # Session 16: refused before whatever the images said ("lie along a line"); the line
    # fixes the map along it, the images the rest, as for a two-way match.
    from hybridfuse.fusion import read_image
    from hybridfuse.fusion.coregister import register_images

    case = family_case_of(seed, 320)
    truth = json.loads((case / "truth.json").read_text())
    fixed, moving = read_image(case / "fluoro.dcm"), read_image(case / "us.dcm")
    result = register_images(fixed, moving)
    record = result.quality.verification["placements"]
    assert SEEDS_IN_A_LINE[seed] in record["why_tried"]
    assert result.quality.verdict == "accepted", result.quality.reasons
    assert _tre_mm(result.transform.matrix, truth) < 2.0


def test_a_lone_placement_along_a_line_is_judged_among_every_placement(family_case_of, monkeypatch):
    # Session 16 attack: structures along a line whose mirror brings too few items leave one
    # placement of 3+, which only the start route's checks vouched for. Tuning seed 22 (full
    # size) with its matched 4-item placement left out of the list: the 3-item one is accepted
    # 32.8 mm off by those checks alone; every placement of 2+ items shows one far lower.
    from hybridfuse.fusion import read_image
    from hybridfuse.fusion.coregister import register_images
    from hybridfuse.registration import RegistrationError

    listed = hypotheses.list_candidates

    def three_item_only(structures, mask, every=False):
        cands = listed(structures, mask, every)
        return cands if every else [c for c in cands if c.items == 3][:1]

    monkeypatch.setattr(hypotheses, "list_candidates", three_item_only)
    case = family_case_of(22, None)
    fixed, moving = read_image(case / "fluoro.dcm"), read_image(case / "us.dcm")
    with pytest.raises(RegistrationError, match="other placements of its 3 structures include"):
        register_images(fixed, moving)


def test_a_lone_right_placement_along_a_line_stays_accepted(family_case_of):
    # Tuning seed 54 (full size): its 3 structures along a line allow one placement.
    from hybridfuse.fusion import read_image
    from hybridfuse.fusion.coregister import register_images

    case = family_case_of(54, None)
    truth = json.loads((case / "truth.json").read_text())
    fixed, moving = read_image(case / "fluoro.dcm"), read_image(case / "us.dcm")
    result = register_images(fixed, moving)
    assert result.quality.verification["placements"]["run"] == 1
    assert result.quality.verdict == "accepted", result.quality.reasons
    assert _tre_mm(result.transform.matrix, truth) < 2.0


def _tre_mm(h, truth) -> float:
    grid = np.asarray(truth["grid_moving"], float)
    est = np.c_[grid, np.ones(len(grid))] @ np.asarray(h, float).T
    d = np.linalg.norm(est[:, :2] / est[:, 2:] - np.asarray(truth["grid_fixed"], float), axis=1)
    return float(np.median(d) * truth["mm_per_fixed_pixel_at_isocenter"])


def test_a_lone_placement_of_two_items_has_nothing_to_check_it_and_refuses():
    lone = _cand((0, 0), "accepted", -0.5, items=2)
    winner, why = _verdict([lone])
    assert winner is lone and "one placement of 2 structures" in why


@pytest.mark.parametrize("how", ["error", "no standard cost"])
def test_a_rival_whose_run_did_not_end_refuses(how):
    # A rival that failed or left the field at the common standard is not ruled out.
    right = _cand((0, 0), "accepted", -0.50)
    rival = _cand((40, 0), "accepted", np.inf)
    if how == "error":
        rival.result, rival.error = None, "left the field"
    winner, why = _verdict([right, rival])
    assert winner is right and "1 of the 2 placements of the structures did not end" in why


def test_a_two_item_placement_scoring_near_the_best_is_judged_beside_the_three_item_ones():
    from hybridfuse.registration.correspond import Placement

    three = [Placement(_similarity(0.0, (0.0, 0.0)), 2.1, 3)]
    rival = Placement(_similarity(0.0, (30.0, 0.0)), 1.9, 2)  # the runner-up, elsewhere
    same = Placement(_similarity(0.0, (0.5, 0.0)), 2.0, 2)  # the three-item pose again
    weak = Placement(_similarity(0.0, (60.0, 0.0)), 1.0, 2)  # a chance pair
    found = hypotheses.judged(three, [same, rival, weak], EXTENT)
    assert found == [three[0], rival]
    assert hypotheses.judged([], [same, rival, weak], EXTENT) == [same, rival, weak]

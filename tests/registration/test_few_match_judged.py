"""A 3-4 item automatic match the images single out among the placements its items allow."""

import numpy as np
import pytest

from hybridfuse.registration import hypotheses
from hybridfuse.registration.hypotheses import Candidate
from hybridfuse.registration.options import RegistrationOptions
from tests.registration.test_few_structures import _case, _tre_mm

# The rule on stand-in runs: where each placement's run ended (mm from the match's answer)
# and its cost at the common standard (lower is better; the answer's is -0.50).

#: The flat basin the route's checks are eased to (``verify_basin_mm``).
BASIN_MM = RegistrationOptions().guards.verify_basin_mm


def _own() -> Candidate:
    own = Candidate(np.eye(3), np.nan, 0)
    own.screen_cost, own.end_cost = -0.70, -0.50
    return own


def _run(distance_mm, end_cost, items=2) -> Candidate:
    c = Candidate(np.eye(3), 1.0, items, screen_cost=-0.65, end_cost=end_cost)
    c.distance_mm = distance_mm
    return c


def _why(run, listed=None):
    listed = len(run) + 5 if listed is None else listed
    return hypotheses._rival_verdict(run, listed, _own(), RegistrationOptions())


def test_rivals_in_the_same_basin_or_clearly_worse_single_the_match_out():
    assert _why([_run(0.7, -0.49, 4), _run(30.0, -0.40), _run(12.0, -0.30)]) is None


def test_an_end_within_the_flat_basin_is_the_same_answer_unless_clearly_lower():
    # Own end cost -0.5: 1.9 mm away and as low (flat) is the same answer; much lower is a
    # slope whose bottom is elsewhere (review wt9: such ends made 2.2 mm errors pass).
    assert _why([_run(BASIN_MM - 0.1, -0.502, 3)]) is None
    assert "optimum is not at the answer" in _why([_run(BASIN_MM - 0.1, -0.80, 3)])
    assert _why([_run(0.9, -0.80, 3)]) is None  # the same point (verify_max_spread_mm)
    # As flat but beyond the basin: 2.0 mm at the same cost let a 2.16 mm error pass.
    assert "ending 1.9 mm" in _why([_run(1.9, -0.50, 4)])
    assert f"ending {BASIN_MM + 0.1:.1f} mm" in _why([_run(BASIN_MM + 0.1, -0.80, 3)])


def test_a_rival_ending_elsewhere_within_the_gate_refuses_naming_it():
    why = _why([_run(0.7, -0.49, 4), _run(23.4, -0.47, 3)])
    assert "one (3 items) ending 23.4 mm from its answer at a cost 6% worse" in why
    why = _why([_run(23.4, -0.60)])  # a better end elsewhere, the more so
    assert "at a cost 20% better" in why


def test_a_close_rival_whose_run_left_the_field_is_not_ruled_out():
    assert "left the field" in _why([_run(None, np.inf)])
    # Ended in the field but not costed at the standard: not "clearly worse" either.
    assert "could not be costed" in _why([_run(30.0, np.inf)])


def test_a_match_with_nothing_else_placed_has_nothing_to_be_judged_against():
    assert "too few" in _why([], listed=1)


def _route(**changes) -> dict:
    route = {
        "distance_mm": 0.6,
        "limit_mm": 1.0,
        "scale_ratio_to_calibration": 1.01,
        "hops": 0,
        "mirrored_relative_cost": 0.49,
        "second_metric_drift_mm": 0.15,
        "distances_mm": [1.1, 0.4, 0.4, 1.1],
        "relative_costs": [0.097, -0.017, -0.016, 0.039],
    }
    return route | changes


@pytest.mark.parametrize(
    "changes, doubt",
    [
        ({}, None),  # restarts 1.1 mm away within the gate: refused by the 1 mm test
        ({"distances_mm": [1.1, 0.4, 0.4, 9.0], "relative_costs": [0.1, 0, 0, 0.3]}, None),
        ({"distances_mm": [1.1, 0.4, 0.4, BASIN_MM + 0.1]}, "beyond the basin"),
        ({"distance_mm": 1.2}, "beyond its limit"),
        ({"mirrored_relative_cost": 0.2}, "mirror"),
        ({"scale_ratio_to_calibration": 1.09}, "magnification"),
        ({"second_metric_drift_mm": BASIN_MM + 0.1}, "second metric"),
        ({"relative_costs": [0.097, -0.017, -0.016]}, "not known"),
        ({"relative_costs": [-0.097, -0.017, -0.016, 0.039]}, "clearly better"),
        (
            {
                "relative_costs": [0.097, -0.017, -0.016, 0.039],
                "distances_mm": [1.1, 1.5, 0.4, 1.1],
            },
            "clearly better",
        ),
    ],
)
def test_the_local_checks_kept_and_eased(changes, doubt):
    got = hypotheses._local_doubt(_route(**changes), RegistrationOptions())
    assert got == doubt if doubt is None else doubt in got


# End to end on family cases (tuning seeds, 320-px fluoroscopy).
#: Few items match; the intensity route's restarts end beyond the 1 mm point-optimum
#: test within the cost gate, so that test alone refuses the right answer.
SEED_SINGLED_OUT = 68
#: Three beads; the test pairs each with another's shadow (a wrong match, far off).
SEED_WRONG_PAIRING = 0


# Without --accept-unverified (the default) register refuses by raising, and the hook
# must take the refused result from the error; with it, the result comes back refused.
@pytest.mark.parametrize("accept_unverified", [False, True])
def test_a_few_item_match_the_images_single_out_is_accepted_and_right(
    family_case_of, accept_unverified
):
    from hybridfuse.fusion.coregister import register_images

    fixed, moving, truth = _case(family_case_of, SEED_SINGLED_OUT)
    opts = RegistrationOptions().with_values(accept_unverified=accept_unverified)
    result = register_images(fixed, moving, options=opts)
    assert result.quality.accepted_unverified is None
    record = result.quality.verification["judged_match"]
    assert record["singled_out"] and record["run"] >= 1 and record["placements"] > 10
    assert "too few matched structures" in record["route_waived"]
    assert result.quality.verdict == "accepted", result.quality.reasons
    assert _tre_mm(result.transform.matrix, truth) < 2.0


def test_a_wrong_three_bead_match_is_beaten_by_a_rival_placement(family_case_of):
    from hybridfuse.fusion.coregister import expected_scale, expected_scale_xy
    from hybridfuse.registration.evidence import detect_structures
    from hybridfuse.registration.guards import scale_range

    fixed, moving, truth = _case(family_case_of, SEED_WRONG_PAIRING)
    beads = [r for r in truth["landmarks_exact"] if r["name"].startswith("bead")]
    moving_xy = np.array([b["moving_xy"] for b in beads])
    fixed_xy = np.array([b["fixed_xy"] for b in beads])[[1, 2, 0]]  # each on another's shadow
    wrong = _affine(moving_xy, fixed_xy)
    assert _tre_mm(wrong, truth) > 10.0
    _, iso_mm = expected_scale(fixed, moving)
    f, m = fixed.gray(0), moving.gray(0)
    found = detect_structures(
        f,
        m,
        fixed_spacing_mm=fixed.xray.isocenter_spacing_mm,
        moving_spacing_mm=moving.pixel_spacing_mm,
        fixed_mask=fixed.mask,
        moving_mask=moving.mask,
    )
    opts = RegistrationOptions()
    expected = scale_range(expected_scale_xy(fixed, moving))
    bench = hypotheses._Bench(f, m, (fixed.mask, moving.mask), opts, expected, iso_mm)
    cands = hypotheses.list_candidates(found, moving.mask, every=True)
    record, why = hypotheses._rivals(cands, wrong, bench, opts, None)
    # The best-screened placements run; one ends far from the wrong answer, far better.
    assert why is not None and "include one (2 items) ending" in why and "better" in why, why
    assert record["run"] >= 1 and record["candidates"][0]["relative_to_answer"] < -0.12


def _affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    a = np.c_[src, np.ones(len(src))]
    sol = np.linalg.lstsq(a, dst, rcond=None)[0]
    return np.vstack([sol.T, [0.0, 0.0, 1.0]])


def _refused(reasons: list[str]):
    from types import SimpleNamespace

    from hybridfuse.registration.guards import Quality

    route_reason = "unverified: too few matched structures to check each other, and ..."
    quality = Quality(
        verdict="refused",
        reasons=[route_reason, *reasons],
        local_scale_min=1.0,
        local_scale_max=1.0,
        edge_on=False,
        verification={"intensity_route": _route(), "unverified": route_reason},
    )
    return SimpleNamespace(quality=quality, transform=SimpleNamespace(matrix=np.eye(3)))


@pytest.mark.parametrize(
    "other, items",
    [
        (None, 3),  # the route's refusal alone, 3-4 items: judged (the stubs single it out)
        ("unverified: none of the 5 detected ultrasound beads ... lands within 1.5 mm", 3),
        ("the predicted TRE is 12.0 mm (> max_predicted_tre_mm 10)", 4),
        (None, 5),  # five items are checked by the consensus: never judged here
    ],
)
def test_only_the_intensity_routes_refusal_of_a_few_item_match_is_judged(monkeypatch, other, items):
    # The rivals stubbed to single the answer out: whatever else refused it must stand.
    monkeypatch.setattr(hypotheses, "list_candidates", lambda *a, **k: [])
    monkeypatch.setattr(hypotheses, "_Bench", lambda *a, **k: None)
    monkeypatch.setattr(hypotheses, "_rivals", lambda *a, **k: ({}, None))
    result = _refused([] if other is None else [other])
    before = result.quality
    hypotheses.judge_few_match(
        result, object(), None, None, (None, None), items=items,
        options=RegistrationOptions(), expected_scale=(1.0, 1.0), px_mm=0.3,
    )  # fmt: skip
    if other is None and items < 5:
        assert result.quality.verdict == "accepted"
    else:
        assert result.quality is before


class _StubBench:
    """Runs keyed by a start's x translation: screened cost, and where (x) and at what cost
    its full run ends; the answer is at x = 0 (screened -0.70, standard cost -0.50)."""

    def __init__(self, runs: dict):
        self.runs = {0.0: (-0.70, 0.0, -0.50), **runs}

    def screen(self, m):
        return self.runs[float(m[0, 2])][0]

    def standard_cost(self, m):
        return self.runs[float(m[0, 2])][2]

    def end(self, m):
        _, x, cost = self.runs[float(m[0, 2])]
        return _at(x), cost

    def distance_mm(self, a, b):
        return abs(float(a[0, 2] - b[0, 2]))


def _at(x: float) -> np.ndarray:
    m = np.eye(3)
    m[0, 2] = x
    return m


def _rivals_why(runs: dict, n_cands=None, progress=None):
    xs = list(runs) if n_cands is None else [float(k) for k in range(1, n_cands + 1)]
    cands = [Candidate(_at(x), 1.0, 2) for x in xs]
    bench = _StubBench(runs or {x: (-0.30, x, -0.20) for x in xs})
    return hypotheses._rivals(cands, _at(0.0), bench, RegistrationOptions(), progress)


def test_rivals_stub_a_clear_field_singles_the_answer_out():
    said = []
    record, why = _rivals_why(
        {5.0: (-0.69, 0.5, -0.50), 40.0: (-0.40, 40.0, -0.30)},
        progress=lambda *a: said.append(a),
    )
    assert why is None and record["run"] == 1
    assert said == [(hypotheses.RIVAL_LEVEL, 1, 1)]  # not announced as the start route's


def test_rivals_more_screening_close_than_may_run_refuse():
    # Every close placement ends in the answer's basin, but more of them than are run.
    n = hypotheses.FEW_MATCH_MAX_RUNS + 1
    runs = {float(k): (-0.69, 0.5, -0.50) for k in range(1, n + 1)}
    record, why = _rivals_why(runs)
    assert record["run"] == hypotheses.FEW_MATCH_MAX_RUNS
    assert why is not None and f"include {n} that score within" in why


def test_rivals_too_many_placements_refuse():
    record, why = _rivals_why({}, n_cands=hypotheses.FEW_MATCH_MAX_PLACEMENTS)
    assert why is not None and "too many for the images to judge" in why and record["run"] == 0


def test_rivals_an_answer_leaving_the_field_at_the_standard_refuses():
    bench = _StubBench({5.0: (-0.40, 5.0, -0.30)})
    bench.runs[0.0] = (-0.70, 0.0, np.inf)
    cands = [Candidate(_at(5.0), 1.0, 2), Candidate(_at(0.0), 1.0, 3)]
    _, why = hypotheses._rivals(cands, _at(0.0), bench, RegistrationOptions(), None)
    assert why is not None and "leaves the field" in why


def _shifted_match(family_case_of, seed: int, shift_mm: float, angle_deg: float):
    """The automatic 3-4 item match with its fluoroscopy side shifted: (result, TRE mm, args).

    A wrong answer a few millimetres off, as a detection bias common to the matched
    fluoroscopy beads would give; ``register`` run from it (refused results returned)."""
    import dataclasses

    from hybridfuse.fusion.coregister import _auto_landmarks, expected_scale, expected_scale_xy
    from hybridfuse.registration import register

    fixed, moving, truth = _case(family_case_of, seed)
    f, m = fixed.gray(0), moving.gray(0)
    found, opts = _auto_landmarks(fixed, moving, f, m, None)
    opts = opts.with_values(accept_unverified=True)
    _, iso = expected_scale(fixed, moving)
    a = np.radians(angle_deg)
    lm = found.landmarks
    shifted = dataclasses.replace(
        lm, fixed_xy=lm.fixed_xy + np.array([np.cos(a), np.sin(a)]) * shift_mm / iso
    )
    scale = expected_scale_xy(fixed, moving)
    result = register(
        f, m, fixed_mask=fixed.mask, moving_mask=moving.mask, landmarks=shifted, options=opts,
        expected_scale=scale, fixed_spacing_mm=iso, source_object_mm=fixed.xray.sod_mm,
    )  # fmt: skip
    judged = dict(
        structures=found.structures, fixed=f, moving=m, masks=(fixed.mask, moving.mask),
        items=found.match.items, options=opts, expected_scale=scale, px_mm=iso,
    )  # fmt: skip
    return result, _tre_mm(result.transform.matrix, truth), judged


# Review wt9: the judgement accepted these 2.16 mm off while the rule counted an end within
# 2 mm as the same answer at any cost (the match's own placement ended 1.9-2.0 mm
# from it, much lower).
# (2.5, 270): the intensity route's own wrong acceptance (the xfail below); the
# judgement, which the pipeline runs after it, refuses it.
@pytest.mark.parametrize("shift_mm, angle_deg", [(2.2, 180.0), (2.2, 270.0), (2.5, 270.0)])
def test_a_match_shifted_over_2_mm_is_not_accepted_by_the_judgement(
    family_case_of, shift_mm, angle_deg
):
    result, tre, judged = _shifted_match(family_case_of, SEED_SINGLED_OUT, shift_mm, angle_deg)
    assert tre >= 2.0  # the premise; the route itself accepts (2.5, 270) (xfail below)
    j = judged
    hypotheses.judge_few_match(
        result, j["structures"], j["fixed"], j["moving"], j["masks"], items=j["items"],
        options=j["options"], expected_scale=j["expected_scale"], px_mm=j["px_mm"],
    )  # fmt: skip
    assert result.quality.verdict == "refused", (tre, result.quality.verification["judged_match"])


@pytest.mark.xfail(
    strict=True,
    reason="review wt9, before this change (session 11's route): a match 2.46 mm off is "
    "accepted by the intensity route alone (seed 68, 320 px, fluoroscopy beads shifted "
    "2.5 mm)",
)
def test_a_match_shifted_over_2_mm_is_not_accepted_by_the_intensity_route(family_case_of):
    result, tre, _ = _shifted_match(family_case_of, SEED_SINGLED_OUT, 2.5, 270.0)
    assert tre >= 2.0
    assert result.quality.verdict == "refused", (tre, result.quality.verification)


def _accepted():
    from types import SimpleNamespace

    from hybridfuse.registration.guards import Quality

    quality = Quality(
        verdict="accepted",
        local_scale_min=1.0,
        local_scale_max=1.0,
        edge_on=False,
        verification={"intensity_route": _route()},
    )
    return SimpleNamespace(quality=quality, transform=SimpleNamespace(matrix=_at(0.0)))


def _judge_confirmed(monkeypatch, runs: dict, **opts):
    """A route-confirmed 3-item match judged among stub placements (``_StubBench``)."""
    placed = [x for x in runs if x != 0.0]  # x = 0: the answer itself, when given
    monkeypatch.setattr(
        hypotheses, "list_candidates", lambda *a, **k: [Candidate(_at(x), 1.0, 2) for x in placed]
    )
    monkeypatch.setattr(hypotheses, "_Bench", lambda *a, **k: _StubBench(runs))
    result = _accepted()
    hypotheses.judge_few_match(
        result, object(), None, None, (None, None), items=3,
        options=RegistrationOptions().with_values(**opts), expected_scale=(1.0, 1.0), px_mm=0.3,
    )  # fmt: skip
    return result.quality


def test_a_confirmed_match_beaten_far_away_is_refused(monkeypatch):
    # Attack (session 15): shadow-on-shadow matches the route accepted 15-88 mm off, while
    # a placement of the same structures ran to a lower end elsewhere.
    q = _judge_confirmed(monkeypatch, {30.0: (-0.69, 30.0, -0.52)})
    assert q.verdict == "refused" and q.accepted_unverified is None
    assert "ending 30.0 mm from its answer at a cost 4% better" in q.reasons[-1]
    assert q.verification["judged_match"]["confirmed_by_route"] is True
    q = _judge_confirmed(monkeypatch, {30.0: (-0.69, 30.0, -0.52)}, accept_unverified=True)
    assert q.verdict == "refused" and q.accepted_unverified is True


@pytest.mark.parametrize(
    "runs",
    [
        {30.0: (-0.69, 30.0, -0.45)},  # ends far away but worse
        {30.0: (-0.69, 30.0, -0.502)},  # far away and as low: the structures decide
        {1.2: (-0.69, 1.2, -0.60)},  # lower, but within the basin: the route's own concern
        {30.0: (-0.20, 30.0, -0.90)},  # lower, but screened far worse: not run
    ],
)
def test_a_confirmed_match_not_beaten_stays_accepted(monkeypatch, runs):
    q = _judge_confirmed(monkeypatch, runs)
    assert q.verdict == "accepted" and q.reasons == []
    assert q.verification["judged_match"]["singled_out"] is True


def test_a_confirmed_match_among_too_many_placements_is_refused(monkeypatch):
    # Attack (session 15): 7 of the 21 wrong 3-4 item matches lay in scenes of 400 or
    # more placements, where none is run; the nine tuning seeds' matches have 33-217.
    n = hypotheses.FEW_MATCH_MAX_PLACEMENTS
    q = _judge_confirmed(monkeypatch, {float(x): (-0.2, float(x), -0.2) for x in range(1, n + 1)})
    assert q.verdict == "refused" and f"are {n} or more" in q.reasons[-1]


@pytest.mark.parametrize(
    "runs, why",
    [
        # 13 screen close, 12 run (all the same answer): the 13th is not ruled out.
        ({float(x): (-0.69, 0.5, -0.50) for x in range(1, 14)}, "more than the 12"),
        # The answer itself leaves the field at the common standard: nothing is compared.
        ({0.0: (-0.70, 0.0, np.inf), 30.0: (-0.69, 30.0, -0.40)}, "leaves the field"),
    ],
)
def test_a_confirmed_match_whose_rivals_cannot_all_be_judged_is_refused(monkeypatch, runs, why):
    # Review (session 15): these were recorded as singled out with the cap unstated.
    q = _judge_confirmed(monkeypatch, runs)
    assert q.verdict == "refused" and why in q.reasons[-1]


def test_a_rival_at_an_unmeasured_distance_is_not_ruled_out():
    assert "left the field" in _why([_run(np.nan, -0.40)])

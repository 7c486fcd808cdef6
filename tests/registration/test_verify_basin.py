"""Restart ends within a basin of the answer are the same answer, loosely pinned.

LC2 on the phantom family has a flat basin a millimetre or two wide: a right answer's
restart can end 1-2 mm away at a cost close to its own. That measures how precisely the
images pin the answer down (it widens ``predicted_tre_mm``); it is no rival.
"""

import json

import numpy as np
import pytest

from benchmarks.family import MODES, median_tre_mm, perturbed_start
from hybridfuse.fusion import read_image
from hybridfuse.fusion.coregister import register_images
from hybridfuse.registration import RegistrationOptions
from hybridfuse.registration._register import AGREEMENT_MAX_MM
from hybridfuse.registration.verify import PREDICTED_TRE_FLOOR_MM, basin_radius_mm
from hybridfuse.testdata.phantom.family import family_case

#: A tuning seed whose ``start`` answer (the family benchmark's start) is 0.80 mm from the
#: truth, one restart ending 1.15 mm from it at a cost 1.7 % worse: refused before the basin.
#: Its detector is 0.15 mm at the isocentre: the basin shows with the pixel scales in the
#: detector's own pixels (``finest_pixel_mm`` none), as when it was chosen; with the default
#: the restarts end apart and the answer is accepted 0.64 mm off (session 19).
SEED_FLAT = 44


@pytest.mark.slow
def test_a_right_answer_in_a_flat_basin_is_accepted_with_a_wider_bound(tmp_path):
    case = family_case(SEED_FLAT, tmp_path / "case")
    truth = json.loads((case / "truth.json").read_text())
    start = perturbed_start(truth, np.random.default_rng([SEED_FLAT, MODES.index("start")]))
    opts = RegistrationOptions().with_values(finest_pixel_mm=None)
    fixed, moving = read_image(case / "fluoro.dcm"), read_image(case / "us.dcm")
    result = register_images(fixed, moving, initial=start, options=opts)
    q, v = result.quality, result.quality.verification
    ends = zip(v["distances_mm"], v["relative_costs"], strict=True)
    flat = [
        d
        for d, c in ends
        if opts.guards.verify_max_spread_mm < d <= v["basin_mm"] and c < opts.grid.search_min_margin
    ]
    assert flat  # the point-optimum test alone would have refused it
    assert q.verdict == "accepted", q.reasons
    assert v["spread_mm"] == pytest.approx(max(flat))
    tre = median_tre_mm(result.transform.matrix, truth)
    assert tre < 2.0
    assert q.predicted_tre_mm >= 2.0 * max(flat) > tre


def test_the_intensity_route_check_keeps_the_point_optimum_test():
    # Few matched structures are confirmed by the intensity route with the limits it was
    # calibrated with: no basin there.
    guards = RegistrationOptions().guards
    assert basin_radius_mm(guards, guards.verify_max_spread_mm) == guards.verify_max_spread_mm
    assert basin_radius_mm(guards) == guards.verify_basin_mm > guards.verify_max_spread_mm
    tight = RegistrationOptions().with_values(verify_basin_mm=0.1).guards
    assert basin_radius_mm(tight) == tight.verify_max_spread_mm


def test_the_basin_keeps_an_end_and_the_metric_bias_within_a_right_answers_tre():
    # An end at the basin's edge, with the metric's own bias (the predicted-TRE floor)
    # added in quadrature, stays within the TRE a right answer must meet.
    basin = RegistrationOptions().guards.verify_basin_mm
    assert np.hypot(basin, PREDICTED_TRE_FLOOR_MM) <= AGREEMENT_MAX_MM
    assert basin == pytest.approx(
        np.sqrt(AGREEMENT_MAX_MM**2 - PREDICTED_TRE_FLOOR_MM**2), abs=0.05
    )


def _judged(d_mm: float, rel_cost: float):
    """The basin's figures, verdict and hop for one restart end (the others came back)."""
    from hybridfuse.registration.metrics import Metric
    from hybridfuse.registration.verify import _basin, _better, _verdict

    opts = RegistrationOptions()
    guards, margin = opts.guards, opts.grid.search_min_margin
    basin = basin_radius_mm(guards)
    distances, rel = [0.1, d_mm], [0.0, rel_cost]
    out = {"distances_mm": distances, "relative_costs": rel, "second_metric_drift_mm": 0.2}
    out.update(_basin(distances, rel, guards, margin, basin), mirrored_relative_cost=0.6)
    runs = [
        {"outcome": object(), "distance_mm": d, "relative_cost": c}
        for d, c in zip(distances, rel, strict=True)
    ]
    hop = _better(runs, None, guards.verify_max_spread_mm)
    return out["spread_mm"], _verdict(out, guards, margin, Metric.MI), hop


@pytest.mark.parametrize(
    ("d_mm", "rel_cost", "spread", "refused", "hops"),
    [
        (1.3, 0.05, 1.3, False, False),  # near and a little worse: the same answer
        (1.3, 0.20, 0.1, False, False),  # much worse: on the slope, says nothing
        (1.8, 0.05, 0.1, True, False),  # beyond the basin within the gate: a rival
        (1.3, -0.10, 0.1, False, True),  # clearly better: a hop (refused), not the same
    ],
)
def test_what_a_restart_end_means_by_distance_and_cost(d_mm, rel_cost, spread, refused, hops):
    got_spread, verdict, hop = _judged(d_mm, rel_cost)
    assert got_spread == pytest.approx(spread)
    assert bool(verdict) == refused
    assert (hop is not None) == hops

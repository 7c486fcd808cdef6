"""Structures matched near a start (landmarks), and the beads left over as evidence."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from hybridfuse.fusion import read_image
from hybridfuse.fusion.coregister import register_images
from hybridfuse.registration.correspond import AmbiguousMatchError, match_near
from hybridfuse.registration.evidence import (
    detect_structures,
    features_agree,
    with_evidence,
)
from hybridfuse.registration.guards import Quality
from hybridfuse.registration.options import RegistrationOptions
from hybridfuse.registration.transforms import Transform
from hybridfuse.testdata.phantom.family import family_case

#: A tuning seed whose 320-px case the intensity alone does not register from the start
#: below (refused 12 mm off), while its five beads match near it.
SEED = 2


def _rotation(deg: float, shift=(0.0, 0.0), mirror: bool = False) -> np.ndarray:
    a = np.radians(deg)
    out = np.eye(3)
    out[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    if mirror:
        out[:2, :2] = out[:2, :2] @ np.diag([-1.0, 1.0])
    out[:2, 2] = shift
    return out


def _apply(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    out = np.c_[pts, np.ones(len(pts))] @ h.T
    return out[:, :2] / out[:, 2:3]


# Three beads in the ultrasound (mm), their fluoroscopy images under TRUE, and a dozen
# decoy blobs in the fluoroscopy, one where the start alone would send the first bead.
BEADS_MM = np.array([[10.0, 12.0], [24.0, 15.0], [16.0, 30.0]])
TRUE = _rotation(30.0, (40.0, 5.0))
START = TRUE @ _rotation(8.0, (6.0, -7.0))  # about 10 mm and 8 degrees off


def _fixed_points() -> np.ndarray:
    rng = np.random.default_rng(0)
    decoys = rng.uniform(-20.0, 90.0, size=(12, 2))
    near_start = _apply(START, BEADS_MM[:1])  # nearest blob to the first bead's prediction
    return np.vstack([decoys, near_start, _apply(TRUE, BEADS_MM)])


def test_match_near_pairs_the_beads_the_start_points_to():
    fixed = _fixed_points()
    centre = BEADS_MM.mean(axis=0)
    m = match_near(BEADS_MM, fixed, START, centre_mm=centre, shift_mm=20.0, turn_deg=20.0)
    assert list(m.fixed_index[np.argsort(m.moving_index)]) == [13, 14, 15]
    assert m.residual_mm.max() < 1e-6
    # Pairing each bead with the nearest blob to where the start puts it is wrong here:
    # what the consensus adds over proximity alone.
    d = np.linalg.norm(_apply(START, BEADS_MM)[:, None] - fixed[None], axis=2)
    assert d.argmin(axis=1)[0] == 12


def test_match_near_keeps_to_the_start_s_range_and_handedness():
    fixed = _fixed_points()
    centre = BEADS_MM.mean(axis=0)
    far = TRUE @ _rotation(0.0, (30.0, 0.0))  # the true placement is 30 mm away
    with pytest.raises(AmbiguousMatchError):
        match_near(BEADS_MM, fixed, far, centre_mm=centre, shift_mm=20.0, turn_deg=20.0)
    flipped = START @ np.diag([-1.0, 1.0, 1.0])
    with pytest.raises(AmbiguousMatchError):
        match_near(BEADS_MM, fixed, flipped, centre_mm=centre, shift_mm=20.0, turn_deg=20.0)


@pytest.fixture(scope="module")
def small_case(tmp_path_factory):
    case = family_case(SEED, tmp_path_factory.mktemp("evid") / "case", max_detector_px=320)
    truth = json.loads((case / "truth.json").read_text())
    return read_image(case / "fluoro.dcm"), read_image(case / "us.dcm"), truth


def _tre_mm(h: np.ndarray, truth: dict) -> float:
    est = _apply(np.asarray(h, float), np.asarray(truth["grid_moving"], float))
    d = np.linalg.norm(est - np.asarray(truth["grid_fixed"], float), axis=1)
    return float(np.median(d) * truth["mm_per_fixed_pixel_at_isocenter"])


def _start_10mm_off(truth: dict) -> np.ndarray:
    true = np.asarray(truth["moving_to_fixed_pixel"], float)
    x0, y0, x1, y1 = truth["us_region"]
    c = _apply(true, np.array([[(x0 + x1) / 2, (y0 + y1) / 2]]))[0]
    pre = _rotation(8.0)
    pre[:2, 2] = (
        c - pre[:2, :2] @ c + np.array([10.0, 0.0]) / truth["mm_per_fixed_pixel_at_isocenter"]
    )
    return pre @ true


@pytest.mark.parametrize("match", [True, False])
def test_a_start_10_mm_off_ends_right_through_the_structures_it_points_to(small_case, match):
    fixed, moving, truth = small_case
    opts = RegistrationOptions().with_values(search_structures=match, accept_unverified=True)
    result = register_images(fixed, moving, initial=_start_10mm_off(truth), options=opts)
    right = result.quality.verdict == "accepted" and _tre_mm(result.transform.matrix, truth) < 2
    if match:
        assert right
        assert all(n.startswith("auto_") for n in result.landmark_fit.names)
        near = result.quality.verification["structures_near_start"]
        assert near["pairs_matched"] + near["needle_tip_matched"] >= 3
    else:  # the intensity alone, from the same start, does not get there on this case
        assert not right


def test_a_wrong_answer_whose_beads_disagree_is_refused(small_case):
    fixed, moving, truth = small_case
    iso = fixed.xray.isocenter_spacing_mm
    structures = detect_structures(
        fixed.gray(0),
        moving.gray(0),
        fixed_spacing_mm=iso,
        moving_spacing_mm=moving.pixel_spacing_mm,
        fixed_mask=fixed.mask,
        moving_mask=moving.mask,
    )
    true = np.asarray(truth["moving_to_fixed_pixel"], float)
    wrong = _rotation(0.0, (6.0 / iso[1], 0.0)) @ true  # 6 mm along x
    quality = Quality(local_scale_min=1.0, local_scale_max=1.0, edge_on=False)
    verdicts = {}
    for name, h in (("true", true), ("wrong", wrong)):
        res = SimpleNamespace(transform=Transform(h), quality=quality, options={})
        verdicts[name] = with_evidence(res, structures, None, fixed.mask).quality
    agree = verdicts["true"].verification["features_agree"]
    assert verdicts["true"].verdict == "accepted" and agree["agree"] >= 2
    refused = verdicts["wrong"]
    assert refused.verdict == "refused"
    assert refused.verification["features_agree"]["agree"] == 0
    assert "lands within 1.5 mm of a fluoroscopy bead" in refused.reasons[-1]


def test_beads_used_as_landmarks_are_not_counted_as_evidence(small_case):
    fixed, moving, truth = small_case
    iso = fixed.xray.isocenter_spacing_mm
    structures = detect_structures(
        fixed.gray(0),
        moving.gray(0),
        fixed_spacing_mm=iso,
        moving_spacing_mm=moving.pixel_spacing_mm,
        fixed_mask=fixed.mask,
        moving_mask=moving.mask,
    )
    true = Transform(np.asarray(truth["moving_to_fixed_pixel"], float))
    every = features_agree(true, structures, fixed.mask)
    left = features_agree(true, structures, fixed.mask, used_moving=np.array([0, 1]))
    assert left["landmarks_left_out"] == 2
    assert left["items"] == every["items"] - 2


def test_the_structures_route_is_declined_when_refused_failing_or_predicting_over_3_mm():
    from hybridfuse.registration.errors import RegistrationError
    from hybridfuse.registration.evidence import near_route

    def result(**q):
        base = Quality(local_scale_min=1.0, local_scale_max=1.0, edge_on=False)
        return SimpleNamespace(quality=base.replace(**q))

    kept, why = near_route(lambda: result(predicted_tre_mm=2.5))
    assert kept is not None and why is None
    for q in ({"predicted_tre_mm": 6.2}, {"verdict": "refused", "reasons": ["x"]}):
        kept, why = near_route(lambda q=q: result(**q))
        assert kept is None and why

    def fails():
        raise RegistrationError("degenerate pairs")

    assert near_route(fails) == (None, "the landmark route stopped: degenerate pairs")

"""The probe's silhouette: found where the family draws the probe, silent where it does not.

Small fluoroscopies (320 px) rendered without files or ultrasound keep these fast; one
slow test runs the whole automatic route on a written case.
"""

from __future__ import annotations

import numpy as np
import pytest

from hybridfuse.registration.geometry import apply_homography
from hybridfuse.registration.silhouette import Face, detect_silhouette, placements
from hybridfuse.testdata.phantom.probe_xray import fluoroscopy_with_probe

#: A linear probe, not mirrored; and a mirrored one (family draws at 320 px).
PLAIN_SEED, MIRRORED_SEED = 8, 4


def _face(case: dict, width_scale: float = 1.0) -> Face:
    return Face(
        case["face_width_mm"] * width_scale,
        case["face_radius_mm"],
        case["face_centre_xy"],
        case["us_spacing_mm"],
    )


def _detect(case: dict, face: Face):
    return detect_silhouette(case["image"], case["mask"], case["iso_mm"], face)


@pytest.fixture(scope="module")
def plain():
    return fluoroscopy_with_probe(PLAIN_SEED)


@pytest.fixture(scope="module")
def mirrored():
    return fluoroscopy_with_probe(MIRRORED_SEED)


def _true_face_mid(case: dict) -> np.ndarray:
    return apply_homography(case["moving_to_fixed"], np.array([case["face_centre_xy"]]))[0]


def test_probe_found_where_drawn(plain):
    sil = _detect(plain, _face(plain))
    assert sil is not None
    err_mm = np.linalg.norm(sil.centre_xy - _true_face_mid(plain)) * plain["iso_mm"]
    assert err_mm < 2.0
    assert abs(sil.width_mm / plain["face_width_mm"] - 1) < 0.1
    # The image's depth (+y) maps towards the body: the true map sends +y along body_xy.
    h = plain["moving_to_fixed"]
    c = np.array(plain["face_centre_xy"])
    depth = apply_homography(h, np.array([c + (0, 10)]))[0] - apply_homography(h, c[None])[0]
    assert depth @ sil.body_xy > 0.9 * np.linalg.norm(depth)


def test_nothing_found_without_probe():
    case = fluoroscopy_with_probe(PLAIN_SEED, probe=False)
    assert case["params"]["mirrored"] is False
    assert _detect(case, _face(case)) is None


def test_width_check_refuses_another_probe(plain):
    # The same bar, but the ultrasound says the face is half as wide: not this probe.
    assert _detect(plain, _face(plain, 0.5)) is None


def test_placements_both_handednesses(mirrored):
    assert mirrored["params"]["mirrored"] is True
    face = _face(mirrored)
    sil = _detect(mirrored, face)
    assert sil is not None
    proper, flipped = placements(sil, face, mirrored["iso_mm"])
    assert np.linalg.det(proper[:2, :2]) > 0 > np.linalg.det(flipped[:2, :2])
    # Over the face, the placement of the truth's handedness lies within a few mm of it.
    x0 = face.centre_xy[0] - face.width_mm / 2 / face.spacing_mm[1]
    ends = np.array([[x0, face.centre_xy[1]], [2 * face.centre_xy[0] - x0, face.centre_xy[1]]])
    true = apply_homography(mirrored["moving_to_fixed"], ends)
    truth_sign = np.sign(np.linalg.det(mirrored["moving_to_fixed"][:2, :2]))
    same = proper if truth_sign > 0 else flipped
    other = flipped if truth_sign > 0 else proper
    err = np.linalg.norm(apply_homography(same, ends) - true, axis=1) * mirrored["iso_mm"]
    off = np.linalg.norm(apply_homography(other, ends) - true, axis=1) * mirrored["iso_mm"]
    assert err.max() < 4.0
    assert off.max() > 20.0  # the other handedness swaps the face's ends


def test_measured_width_refuses_a_wider_face(plain):
    # A face 25 % wider than the bar: the search's zones still fit around the bar, but the
    # bar's measured ends give 0.8 of the face (the body's skin line under an arc template
    # measures so on cases without a probe).
    assert _detect(plain, _face(plain, 1.25)) is None


def test_uniform_field_finds_nothing():
    img = np.random.default_rng(0).normal(100.0, 2.0, (200, 200))
    face = Face(40.0, None, (100.0, 10.0), (0.2, 0.2))
    assert detect_silhouette(img, None, 0.5, face) is None


#: A full-size case whose beads give no answer without their placements judged (measured:
#: the silhouette's placement is accepted 0.73 mm from the truth; off, the beads' route
#: refuses). Since session 16 the beads' three points along a line are judged among their
#: placements and answer themselves (0.76 mm), so the test turns that judgement off.
ROUTE_SEED = 9


@pytest.mark.slow
def test_automatic_route_takes_the_silhouette(tmp_path, monkeypatch):
    from hybridfuse.fusion import coregister, read_image
    from hybridfuse.fusion.coregister import read_truth_json, register_images, truth_tre
    from hybridfuse.fusion.errors import InputError
    from hybridfuse.registration import RegistrationOptions
    from hybridfuse.registration.errors import RegistrationError
    from hybridfuse.testdata.phantom.family import family_case

    case = family_case(ROUTE_SEED, tmp_path / "case", probe_in_fluoro=True)
    fixed, moving = read_image(case / "fluoro.dcm"), read_image(case / "us.dcm")
    truth = read_truth_json(case / "truth.json")

    def beads_not_judged(exc, *args, **kwargs):
        raise exc

    monkeypatch.setattr(coregister, "_judged_placements", beads_not_judged)
    off = RegistrationOptions().with_values(probe_silhouette="off", accept_unverified=True)
    try:  # the beads alone: refused, or no answer at all
        assert register_images(fixed, moving, options=off).quality.verdict == "refused"
    except (RegistrationError, InputError):
        pass
    on = RegistrationOptions().with_values(probe_silhouette="auto")
    result = register_images(fixed, moving, options=on)
    assert result.quality.verdict == "accepted"
    record = result.quality.verification["probe_silhouette"]
    flipped = np.linalg.det(truth["h"][:2, :2]) < 0
    assert record["placement"] == ("mirrored" if flipped else "proper")
    assert abs(record["width_mm"] / record["expected_width_mm"] - 1) < 0.1
    tre = truth_tre(result.transform, truth, fixed, moving, str(case / "fluoro.dcm"), 0, 0)
    assert tre["median_mm"] < 2.0
    assert result.options["probe_silhouette"] == "auto"

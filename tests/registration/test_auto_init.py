"""Automatic correspondences: bead detection, the consensus match, ``--init auto``."""

import dataclasses

import numpy as np
import pytest

from hybridfuse.fusion import read_image
from hybridfuse.fusion.coregister import register_images
from hybridfuse.registration.correspond import (
    AmbiguousMatchError,
    NoFeaturesError,
    match_points,
)
from hybridfuse.registration.errors import RegistrationError
from hybridfuse.registration.features import detect_beads
from hybridfuse.registration.initial import auto_start
from hybridfuse.registration.needle import detect_needle
from hybridfuse.registration.verify import PREDICTED_TRE_FLOOR_MM
from hybridfuse.testdata import sample_case
from hybridfuse.testdata.phantom import load_truth


@pytest.fixture(scope="module")
def case():
    folder = sample_case()
    truth = load_truth(folder)
    fluoro = {f: read_image(folder / f) for f in truth["files"]["fluoro"]}
    pair = next(p for p in truth["pairs"] if not p["edge_on"])
    return pair, fluoro[pair["fluoro_file"]], read_image(folder / "us_clip.dcm")


def _beads(pair, side: str) -> np.ndarray:
    return np.array([lm[side] for lm in pair["landmarks"] if lm["name"].startswith("bead")])


def _nearest_px(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.linalg.norm(found[None, :, :] - truth[:, None, :], axis=2).min(axis=1)


def test_beads_are_found_within_a_pixel_in_both_images(case):
    pair, fl, us = case
    fixed = detect_beads(
        fl.gray(pair["fluoro_frame"]), fl.mask, fl.xray.isocenter_spacing_mm, bright=False
    )
    frame = us.gray(pair["us_frame"])
    needle = detect_needle(frame, us.mask, us.pixel_spacing_mm, bright=True)
    moving = detect_beads(
        frame,
        us.mask,
        us.pixel_spacing_mm,
        bright=True,
        near_wall=True,
        radius_mm=1.0,
        exclude=[(needle.tip_xy, needle.tail_xy, 2.0 / 0.15)],  # the needle's tip echoes too
    )
    # Truth from the generator: where each bead centre projects in either image.
    assert _nearest_px(fixed.xy, _beads(pair, "fixed_xy")).max() < 1.0
    # Ultrasound (0.15 mm px): the four beads are the four strongest (two lie in one
    # column, the lower inside the upper one's comet tail); within 1 px for two, 3.5 px
    # (0.5 mm) for all.
    assert np.all(moving.strength[4:] < 0.7 * moving.strength[3])
    err = _nearest_px(moving.xy[:4], _beads(pair, "moving_xy"))
    assert np.sum(err < 1.0) >= 2
    assert err.max() < 3.5


def _similarity(angle_deg: float, mirror: bool, scale: float, shift) -> np.ndarray:
    t = np.radians(angle_deg)
    rot = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return rot @ (np.diag([-1.0, 1.0]) if mirror else np.eye(2)), np.asarray(shift, float)


@pytest.mark.parametrize(
    "angle_deg, mirror",
    [(0.0, False), (180.0, False), (73.0, True), (180.0, True), (-131.0, False)],
)
def test_the_match_recovers_any_rotation_and_a_mirrored_image(rng, angle_deg, mirror):
    moving = rng.uniform(0.0, 40.0, (5, 2))
    lin, shift = _similarity(angle_deg, mirror, 1.04, (60.0, -20.0))
    fixed = moving @ lin.T + shift + rng.normal(0.0, 0.2, moving.shape)
    # Three decoys in the fluoroscopy (bone corners) and the beads shuffled.
    fixed = rng.permutation(np.vstack([fixed, rng.uniform(0.0, 100.0, (3, 2))]))
    m = match_points(moving, fixed)
    assert m.mirrored is mirror
    assert abs((m.rotation_deg - angle_deg + 180.0) % 360.0 - 180.0) < 2.0
    assert abs(m.scale - 1.04) < 0.02
    assert len(m.moving_index) == 5
    mapped = moving[m.moving_index] @ lin.T + shift
    assert np.linalg.norm(mapped - fixed[m.fixed_index], axis=1).max() < 1.0


def test_a_symmetric_pattern_is_refused_as_ambiguous():
    # A square matches itself turned by 90 degrees as well as by 0.
    square = np.array([[0.0, 0.0], [20.0, 0.0], [20.0, 20.0], [0.0, 20.0]])
    with pytest.raises(AmbiguousMatchError, match="match in two different ways"):
        match_points(square, square + 5.0)


def test_points_that_fit_no_placement_are_refused():
    moving = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 17.0]])
    fixed = np.array([[0.0, 0.0], [30.0, 0.0], [0.0, 5.0]])  # other distances
    with pytest.raises(AmbiguousMatchError, match="no placement brings 3"):
        match_points(moving, fixed)


def _blob_image(points_xy, shape=(120, 160), radius_px=4.0, value=1.0, seed=0, echo=False):
    """Discs (fluoroscopy) or, with ``echo``, the bright near wall of each bead (ultrasound)."""
    yy, xx = np.indices(shape)
    img = np.random.default_rng(seed).normal(0.0, 0.02, shape)
    for x, y in points_xy:
        d = np.hypot(xx - x, yy - y)
        img += value * ((np.abs(d - radius_px) < 1.0) & (yy < y) if echo else d <= radius_px)
    return img


def test_auto_start_turns_drawn_beads_into_landmarks():
    moving_xy = np.array([[30.0, 40.0], [95.0, 30.0], [60.0, 90.0], [125.0, 70.0]])
    lin, shift = _similarity(180.0, True, 1.0, (20.0, 110.0))
    fixed_xy = moving_xy @ lin.T + shift  # spacing 0.25 mm in both: mm map = pixel map
    found = auto_start(
        _blob_image(fixed_xy, value=-1.0),  # dense beads are dark in the fluoroscopy
        _blob_image(moving_xy, seed=1, echo=True),
        fixed_spacing_mm=(0.25, 0.25),
        moving_spacing_mm=(0.25, 0.25),
    )
    assert found.match.mirrored
    lm = found.landmarks
    assert len(lm.moving_xy) == 4
    assert np.abs(lm.moving_xy @ lin.T + shift - lm.fixed_xy).max() < 1.0


def test_without_beads_the_registration_is_refused_with_the_reason(case):
    pair, fl, us = case
    # Smooth images: no bead, no needle, nothing to match.
    flat_f = dataclasses.replace(
        fl, array=np.full((1, *fl.shape), 100.0, np.float32), frame_times_s=None
    )
    flat_u = dataclasses.replace(
        us, array=np.full((1, *us.shape), 40.0, np.float32), frame_times_s=None
    )
    with pytest.raises(NoFeaturesError, match="0 beads detected in the ultrasound") as info:
        register_images(flat_f, flat_u)
    assert isinstance(info.value, RegistrationError)  # the CLI's exit 1


def test_register_without_landmarks_or_start_matches_the_beads(case):
    pair, fl, us = case
    result = register_images(
        fl, us, fixed_frame=pair["fluoro_frame"], moving_frame=pair["us_frame"]
    )
    true = np.asarray(pair["moving_to_fixed_pixel"])
    ys, xs = np.nonzero(us.mask)
    grid = np.column_stack([xs[::97], ys[::97]]).astype(float)
    est = result.transform.apply(grid)
    h = np.column_stack([grid, np.ones(len(grid))]) @ true.T
    err_mm = np.linalg.norm(est - h[:, :2] / h[:, 2:], axis=1) * fl.xray.isocenter_spacing_mm[0]
    assert np.median(err_mm) < 1.0
    assert result.landmark_fit is not None
    # Refined by the images, the answer carries the metric's bias as well as the beads'
    # noise: its bound is at least the intensity route's floor, and holds.
    assert result.quality.predicted_tre_mm >= PREDICTED_TRE_FLOOR_MM
    assert np.median(err_mm) <= result.quality.predicted_tre_mm


def test_beads_in_a_line_cannot_tell_a_mirrored_region_and_are_refused():
    # Three beads on a line match their mirror image across it equally; the region they
    # lie in is placed differently by the two, so the match is ambiguous.
    moving = np.array([[0.0, 0.0], [11.0, 0.2], [26.0, -0.1]])
    fixed = moving + np.array([40.0, 10.0])
    corners = np.array([[-5.0, -20.0], [30.0, -20.0], [30.0, 20.0], [-5.0, 20.0]])
    with pytest.raises(AmbiguousMatchError, match="match in two different ways"):
        match_points(moving, fixed, extent_mm=corners)
    # Judged on the beads alone, the two placements look the same.
    assert len(match_points(moving, fixed).moving_index) == 3


def test_three_matched_beads_in_a_line_are_refused_by_auto_start():
    moving_xy = np.array([[20.0, 40.0], [60.0, 42.0], [130.0, 43.0]])
    fixed_xy = moving_xy + np.array([5.0, 30.0])
    # Refused as a line in either image (the fluoroscopy's is checked first).
    with pytest.raises(AmbiguousMatchError, match="nearly in a line|along a line"):
        auto_start(
            _blob_image(fixed_xy, value=-1.0),
            _blob_image(moving_xy, seed=1, echo=True),
            fixed_spacing_mm=(0.25, 0.25),
            moving_spacing_mm=(0.25, 0.25),
        )


def test_the_cli_refuses_an_edge_on_pair_with_exit_1_and_writes_nothing(tmp_path):
    from click.testing import CliRunner

    from hybridfuse.cli.main import cli

    case = sample_case()
    out = tmp_path / "reg"
    result = CliRunner().invoke(
        cli,
        [
            "register",
            "--fixed",
            str(case / "fluoro_run03_confirm_ap.dcm"),  # the AP run: the plane is edge-on
            "--moving",
            str(case / "us_clip.dcm"),
            "--moving-frame",
            "10",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    # Refused either way: no placement, or placements that tie (beads seen in a line); the
    # placements the images judge (progress lines above) do not single one out either.
    assert "hybridfuse: error:" in lines[-1]
    assert "no placement brings 3" in lines[-1] or "match in two different ways" in lines[-1]
    assert not out.exists()

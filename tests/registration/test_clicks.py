"""Fluoroscopy clicks moved onto the bead each sits on (registration.clicks)."""

import numpy as np
import pytest

from hybridfuse.registration.clicks import snap_to_beads
from hybridfuse.registration.features import detect_beads
from hybridfuse.registration.start import Landmarks

SPACING_MM = (0.25, 0.25)  # row, column at the isocentre
RADIUS_PX = 4.0  # 1 mm beads
FAINT = 0.15  # a blob of 0.06 contrast (beads: 0.4) on noise of 0.02


def _image(centres, size=256, seed=0, line=None):
    """Dark anti-aliased discs (and optionally a dark line ending at ``line[1]``) on noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    img = np.full((size, size), 0.6)
    sub = (np.arange(4) + 0.5) / 4 - 0.5  # 4 x 4 samples per pixel
    for cx, cy in centres:
        cover = np.zeros_like(img)
        for dy in sub:
            for dx in sub:
                cover += np.hypot(xx + dx - cx, yy + dy - cy) <= RADIUS_PX
        img -= 0.4 * cover / 16
    if line is not None:
        (x0, y0), (x1, y1) = line
        t = np.clip(
            ((xx - x0) * (x1 - x0) + (yy - y0) * (y1 - y0)) / ((x1 - x0) ** 2 + (y1 - y0) ** 2),
            0,
            1,
        )
        d = np.hypot(xx - (x0 + t * (x1 - x0)), yy - (y0 + t * (y1 - y0)))
        img -= 0.4 * np.clip(1.5 - d, 0, 1)
    return img + np.random.default_rng(seed).normal(0, 0.02, img.shape)


def _clicks(true_fixed, clicks=None):
    """Pairs whose ultrasound side is exact (half the true fluoroscopy point), clicked."""
    true_fixed = np.asarray(true_fixed, float)
    clicks = true_fixed if clicks is None else np.asarray(clicks, float)
    return Landmarks(moving_xy=true_fixed * 0.5, fixed_xy=clicks)


CENTRES = np.array([[60.3, 70.7], [180.6, 64.2], [120.45, 150.9], [70.8, 200.1], [200.2, 190.55]])


def test_clicks_on_beads_take_the_beads_centres():
    rng = np.random.default_rng(1)
    clicks = CENTRES + rng.normal(0, 2.0, CENTRES.shape)  # a hurried hand: 2 px (0.5 mm)
    assert np.median(np.linalg.norm(clicks - CENTRES, axis=1)) > 1.0
    lm = _clicks(CENTRES, clicks)
    out, record = snap_to_beads(lm, _image(CENTRES), None, SPACING_MM, 2.0)
    after = np.linalg.norm(out.fixed_xy - CENTRES, axis=1)
    assert record["moved"] == 5 and record["of"] == 5, record
    assert record["scatter_px_on_beads"] < record["scatter_px_as_placed"]
    assert after.max() < 0.15, after
    np.testing.assert_array_equal(out.moving_xy, lm.moving_xy)  # as clicked


def test_moves_that_make_the_pairs_agree_worse_are_declined():
    # The ultrasound side agrees with the clicks exactly, not with the beads' centres (as
    # where a detection is pulled off its bead): the clicks stay as placed.
    rng = np.random.default_rng(1)
    clicks = CENTRES + rng.normal(0, 2.0, CENTRES.shape)
    lm = Landmarks(moving_xy=clicks * 0.5, fixed_xy=clicks)
    out, record = snap_to_beads(lm, _image(CENTRES), None, SPACING_MM, 2.0)
    assert out is lm
    assert record["moved"] == 0 and record["declined"] == "the pairs fit worse on the beads"
    # Three pairs fit an affine map exactly: nothing tells whether the beads fit better.
    three = _clicks(CENTRES[:3], clicks[:3])
    out, record = snap_to_beads(three, _image(CENTRES), None, SPACING_MM, 2.0)
    assert out is three and record["declined"] == "too few pairs to compare"


def test_a_click_far_off_the_precise_beads_is_rejected_not_kept_by_declining():
    # Four clicks on beads and one 8 px off a plain point: as placed an affine fit absorbs
    # it; once the beads' precise centres set the fit it lies past the 6 px rejection. The
    # moves stay (the fit then says which pair is off) rather than fall back to coarse clicks.
    from hybridfuse.registration.landmarks import fit_landmarks

    true = np.vstack([CENTRES[:4], [[200.0, 200.0]]])
    clicks = true + np.random.default_rng(4).normal(0, 1.0, true.shape)
    clicks[4] = true[4] + [8.0, 0.0]
    out, record = snap_to_beads(_clicks(true, clicks), _image(CENTRES), None, SPACING_MM, 2.0)
    assert record["moved"] == 4 and "declined" not in record, record
    placed = fit_landmarks(true * 0.5, clicks, "affine", reject_threshold_px=6.0)
    moved = fit_landmarks(out.moving_xy, out.fixed_xy, "affine", weights=out.weights)
    assert placed.inliers.all() and moved.inliers.tolist() == [True] * 4 + [False]


def test_clicks_placed_on_one_line_stay_and_are_left_to_the_fit_to_refuse():
    # The fluoroscopy clicks lie on one row (two on beads, two away from any), the
    # ultrasound ones do not: as placed they fix no affine map, on the beads they would.
    # Nothing to compare: the clicks stay, and the landmark fit refuses them as an input
    # error (this raised TypeError comparing the scatter on the beads with None).
    fixed = np.array([[60.0, 70.0], [180.0, 70.0], [20.0, 70.0], [240.0, 70.0]])
    lm = Landmarks(
        moving_xy=np.array([[30, 35], [90, 32], [10, 100], [120, 110.0]]), fixed_xy=fixed
    )
    out, record = snap_to_beads(lm, _image(CENTRES), None, SPACING_MM, 2.0)
    assert out is lm
    assert record["scatter_px_as_placed"] is None and record["scatter_px_on_beads"] is not None
    assert record["moved"] == 0 and record["declined"] == "too few pairs to compare"


def test_a_click_beside_a_faint_blob_stays_though_the_bead_moves_drop_the_scatter():
    # Eight beads clicked by a coarse hand (3 px) and an anatomical point clicked where it
    # is, a faint dark blob (bone texture, noise) 1.25 mm beside it. Moving all nine
    # lowers the scatter as a whole (the beads' moves outweigh the wrong one), so the
    # guard kept the anatomical click on the blob, 5 px off: only blobs as strong as
    # beads take clicks.
    beads = np.array([[40.3, 50.7], [120.6, 44.2], [200.45, 60.9], [50.8, 130.1],
                      [210.2, 140.55], [45.1, 215.3], [125.7, 210.8], [205.9, 220.2]])  # fmt: skip
    anatomy = np.array([128.0, 128.0])
    truth = np.vstack([beads, anatomy])
    clicks = np.vstack([beads + np.random.default_rng(0).normal(0, 3.0, beads.shape), anatomy])
    blob = _image([anatomy + [5.0, 0.0]], seed=1) - _image([], seed=1)  # its disc alone
    image = _image(beads) + FAINT * blob
    out, record = snap_to_beads(_clicks(truth, clicks), image, None, SPACING_MM, 2.0)
    err = np.linalg.norm(out.fixed_xy - truth, axis=1)
    assert record["moved"] == 8, record
    assert err[-1] == 0.0 and err[:-1].max() < 0.15, err
    # The blob is one the detector finds, one a click would otherwise move onto.
    found = detect_beads(image, None, SPACING_MM, bright=False, max_blobs=64)
    assert np.linalg.norm(found.xy - (anatomy + [5.0, 0.0]), axis=1).min() < 0.5


def test_a_click_between_two_beads_stays_where_it_was_placed():
    pair = np.array([[100.0, 100.0], [112.0, 100.0]])  # two beads 3 mm apart
    centres = np.vstack([pair, CENTRES[[0, 3, 4]]])
    between = np.array([[106.0, 100.5]])  # 1.5 mm from both
    true = np.vstack([between, CENTRES[[0, 3, 4]]])
    clicks = true + np.random.default_rng(2).normal(0, 1.0, true.shape)
    clicks[0] = between[0]
    out, record = snap_to_beads(_clicks(true, clicks), _image(centres), None, SPACING_MM, 2.0)
    np.testing.assert_array_equal(out.fixed_xy[0], between[0])
    assert np.linalg.norm(out.fixed_xy[1:] - true[1:], axis=1).max() < 0.15
    assert record["moved"] == 3


def test_two_clicks_on_one_bead_both_stay():
    true = np.vstack([CENTRES[[0, 0]], CENTRES[2:]])
    clicks = true + np.random.default_rng(3).normal(0, 1.0, true.shape)
    out, record = snap_to_beads(_clicks(true, clicks), _image(CENTRES), None, SPACING_MM, 2.0)
    np.testing.assert_array_equal(out.fixed_xy[:2], clicks[:2])
    assert np.linalg.norm(out.fixed_xy[2:] - true[2:], axis=1).max() < 0.15
    assert record["moved"] == 3


@pytest.mark.parametrize("within_mm", [2.0, 0.5])
def test_clicks_away_from_beads_and_at_a_needle_tip_stay(within_mm):
    centres = np.array([[60.0, 60.0], [210.0, 210.0], [60.0, 120.0]])
    tip = (150.0, 150.0)
    img = _image(centres, line=((230.0, 40.0), tip))
    # Beyond the radius from the bead; on the line's tip; on flat background; two beads.
    true = np.array([[60.0 + 2.2 / 0.25, 60.0], tip, [60.0, 200.0], centres[1], centres[2]])
    clicks = true.copy()
    clicks[3:] += [[0.6, -0.4], [-0.5, 0.3]]
    out, record = snap_to_beads(_clicks(true, clicks), img, None, SPACING_MM, within_mm)
    np.testing.assert_array_equal(out.fixed_xy[:3], clicks[:3])
    assert np.linalg.norm(out.fixed_xy[3:] - true[3:], axis=1).max() < 0.15
    assert record["moved"] == 2


def test_a_click_left_in_place_is_weighed_by_the_hands_noise_and_still_checks():
    from hybridfuse.registration import register
    from hybridfuse.registration.errors import UnverifiedResultError
    from hybridfuse.registration.options import RegistrationOptions
    from hybridfuse.registration.transforms import Transform

    centres = np.array([[60.3, 70.7], [180.6, 64.2], [120.45, 150.9], [70.8, 200.1]])
    plain = np.array([[200.0, 200.0]])  # no bead there: a needle tip, a bone edge
    true_fixed = np.vstack([centres, plain])
    h = np.array([[1.9, 0.2, 10.0], [-0.2, 1.9, 5.0], [0.0, 0.0, 1.0]])
    moving = Transform(np.linalg.inv(h)).apply(true_fixed)
    clicks = true_fixed + np.random.default_rng(4).normal(0, 2.0, true_fixed.shape)
    lm = Landmarks(moving, clicks, tuple(f"p{k}" for k in range(5)))
    out, record = snap_to_beads(lm, _image(centres), None, SPACING_MM, 2.0)
    assert record["moved"] == 4 and 1.0 < record["click_sigma_px"] < 3.0, record
    # The hand's noise, measured by the moves, weighs the click left in place far below the
    # beads' centres; the weights as given still decide what counts as a check.
    assert out.weights[4] < 0.1 * out.weights[:4].min()
    np.testing.assert_array_equal(out.given_weights, np.ones(5))
    # A fluoroscopy larger than the field's image: the registration crops to the field.
    fixed, moving_img = np.zeros((900, 900)), np.zeros((260, 260))
    opts = RegistrationOptions().with_values(metric=None, model="affine")
    result = register(fixed, moving_img, landmarks=out, options=opts)
    assert result.quality.crop_fixed_px_x0_y0_x1_y1 is not None
    assert result.quality.verdict == "accepted", result.quality.reasons
    err = np.linalg.norm(result.transform.apply(moving[:4]) - centres, axis=1)
    assert err.max() < 0.5, err
    # Counted by the down-weighted pair alone, 4 beads + 1 leave too few to check.
    import dataclasses

    with pytest.raises(UnverifiedResultError, match="weighted under"):
        unmarked = dataclasses.replace(out, given_weights=None)
        register(fixed, moving_img, landmarks=unmarked, options=opts)


def _tre_mm(h, truth) -> float:
    grid = np.asarray(truth["grid_moving"], float)
    est = np.c_[grid, np.ones(len(grid))] @ np.asarray(h, float).T
    d = np.linalg.norm(est[:, :2] / est[:, 2:] - np.asarray(truth["grid_fixed"], float), axis=1)
    return float(np.median(d) * truth["mm_per_fixed_pixel_at_isocenter"])


@pytest.mark.parametrize("seed", [61, 2])  # tuning seeds: 5 beads; 5 beads and a needle tip
def test_coarse_clicks_on_a_family_case_end_within_half_a_millimetre(family_case_of, seed):
    import json

    from hybridfuse.fusion.coregister import register_images
    from hybridfuse.fusion.io import read_image
    from hybridfuse.registration.options import RegistrationOptions

    case = family_case_of(seed, 512)
    truth = json.loads((case / "truth.json").read_text())
    exact = truth["landmarks_exact"]
    moving = np.array([r["moving_xy"] for r in exact])
    fixed = np.array([r["fixed_xy"] for r in exact])
    rng = np.random.default_rng(seed)
    # The coarse clicks: 3 px per coordinate on the fluoroscopy (0.5 px on the other).
    lm = Landmarks(
        moving + rng.normal(0, 0.5, moving.shape),
        fixed + rng.normal(0, 3.0, fixed.shape),
        tuple(r["name"] for r in exact),
    )
    pair = read_image(case / "fluoro.dcm"), read_image(case / "us.dcm")
    result = register_images(*pair, landmarks=lm)
    beads = sum(r["name"].startswith("bead") for r in exact)
    assert result.quality.clicks_on_beads["moved"] == beads
    assert result.quality.verdict == "accepted", result.quality.reasons
    assert _tre_mm(result.transform.matrix, truth) < 0.5
    # The same clicks as placed: neither the fit nor the intensity term gets there.
    for metric in ("lc2", None):
        opts = RegistrationOptions().with_values(snap_to_beads_mm=None, metric=metric)
        as_placed = register_images(*pair, landmarks=lm, options=opts)
        assert as_placed.quality.clicks_on_beads is None
        assert _tre_mm(as_placed.transform.matrix, truth) > 0.4


def test_register_says_how_many_clicks_moved_and_records_it(family_case_of, tmp_path):
    import json

    from click.testing import CliRunner

    from hybridfuse.cli.main import cli

    case = family_case_of(61, 512)
    truth = json.loads((case / "truth.json").read_text())
    rng = np.random.default_rng(0)
    rows = ["name,moving_x,moving_y,fixed_x,fixed_y"]
    for r in truth["landmarks_exact"]:
        (mx, my), (fx, fy) = r["moving_xy"], np.asarray(r["fixed_xy"]) + rng.normal(0, 1.0, 2)
        rows.append(f"{r['name']},{mx},{my},{fx},{fy}")
    (tmp_path / "lm.csv").write_text("\n".join(rows) + "\n")
    args = ["register", "--fixed", str(case / "fluoro.dcm"), "--moving", str(case / "us.dcm")]
    args += ["--landmarks", str(tmp_path / "lm.csv"), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "clicks on beads: 5 of 5 moved to a bead's centre" in result.output
    record = json.loads((tmp_path / "out" / "transform.json").read_text())
    assert record["quality"]["clicks_on_beads"]["moved"] == 5
    off = CliRunner().invoke(cli, [*args[:-1], str(tmp_path / "off"), "--snap-to-beads-mm", "none"])
    assert off.exit_code == 0 and "clicks on beads" not in off.output

"""Pixel spacing given by hand: --fixed-spacing-mm (at the detector) and --moving-spacing-mm."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.fusion import SpacingPlane, read_image
from hybridfuse.fusion.pair import with_given_spacing
from hybridfuse.testdata import sample_case
from tests.conftest import REALDATA

REAL_RF = REALDATA / "images" / "orthanc-tests__KarstenHilbertRF.dcm"


def test_fixed_spacing_stands_for_imager_pixel_spacing():
    # The sample fluoroscopy has ImagerPixelSpacing and SID/SOD: the spacing given by
    # hand replaces the detector spacing, and the isocentre spacing follows as from the tag.
    image = read_image(sample_case() / "fluoro_run02_confirm_lateral.dcm", decode=False)
    mag = image.xray.magnification
    given = with_given_spacing(image, (0.5, 0.4), fixed=True)
    assert given.xray.imager_pixel_spacing_mm == (0.5, 0.4)
    assert given.xray.isocenter_spacing_mm == pytest.approx((0.5 / mag, 0.4 / mag))
    assert given.pixel_spacing_mm == (0.5, 0.4)
    assert given.spacing_plane is SpacingPlane.DETECTOR
    assert "--fixed-spacing-mm" in given.spacing_source
    assert any("replaced by --fixed-spacing-mm" in n for n in given.notes)
    assert with_given_spacing(image, None, fixed=True) is image


def test_moving_spacing_is_the_scan_plane():
    image = read_image(sample_case() / "us_clip.dcm", decode=False)
    given = with_given_spacing(image, (0.2, 0.25), fixed=False)
    assert given.pixel_spacing_mm == (0.2, 0.25)
    assert given.spacing_plane is SpacingPlane.ULTRASOUND
    assert given.xray is None


@pytest.mark.skipif(not REAL_RF.is_file(), reason=f"{REAL_RF} is absent (../shared/realdata)")
def test_info_takes_the_fixed_spacing_for_a_real_rf_file_without_one():
    runner = CliRunner()
    bare = json.loads(runner.invoke(cli, ["info", "--json", str(REAL_RF)]).output)[0]
    assert bare["image"]["pixel_spacing_mm_row_col"] is None
    result = runner.invoke(cli, ["info", "--json", "--fixed-spacing-mm", "0.3,0.3", str(REAL_RF)])
    image = json.loads(result.output)[0]["image"]
    assert image["pixel_spacing_mm_row_col"] == [0.3, 0.3]
    assert image["spacing_plane"] == "detector"
    assert image["xray_geometry"]["imager_pixel_spacing_mm_row_col"] == [0.3, 0.3]


def test_the_old_spacing_flag_still_works_and_says_it_is_deprecated():
    runner = CliRunner()
    us = str(sample_case() / "us_clip.dcm")
    result = runner.invoke(cli, ["info", "--json", "--spacing-mm", "0.2", us])
    assert result.exit_code == 0, result.output
    assert "--spacing-mm is deprecated; use --fixed-spacing-mm" in result.stderr
    image = json.loads(result.stdout)[0]["image"]
    assert image["pixel_spacing_mm_row_col"] == [0.2, 0.2]  # one number: square pixels
    both = runner.invoke(cli, ["info", "--spacing-mm", "0.2", "--moving-spacing-mm", "0.1,0.1", us])
    assert both.exit_code == 2 and "give only --moving-spacing-mm" in both.output


def test_an_implausible_spacing_is_refused_naming_the_flag():
    runner = CliRunner()
    us = str(sample_case() / "us_clip.dcm")
    result = runner.invoke(cli, ["info", "--moving-spacing-mm", "0.2,50", us])
    assert result.exit_code == 2
    assert "--moving-spacing-mm" in result.output and "above the maximum" in result.output


def test_register_keeps_us_spacing_mm_as_a_deprecated_moving_spacing(tmp_path):
    case = sample_case()
    args = [
        "register", "--fixed", str(case / "fluoro_run02_confirm_lateral.dcm"),
        "--moving", str(case / "us_clip.dcm"), "--moving-frame", "6", "--metric", "none",
        "--landmarks", str(case / "landmarks" / "run02_confirm_lateral_f00_us06.csv"),
        "--out", str(tmp_path / "reg"), "--json",
    ]  # fmt: skip
    result = CliRunner().invoke(cli, [*args, "--us-spacing-mm", "0.3"])
    assert result.exit_code == 0, result.output
    assert "--us-spacing-mm is deprecated; use --moving-spacing-mm" in result.stderr
    old = json.loads(result.stdout)["moving_to_fixed_mm"]
    new = CliRunner().invoke(cli, [*args, "--moving-spacing-mm", "0.3,0.3", "--overwrite"])
    assert json.loads(new.stdout)["moving_to_fixed_mm"] == old  # the same option, spelled twice
    calibrated = CliRunner().invoke(cli, [*args, "--overwrite"])  # the file's 0.15 mm
    assert json.loads(calibrated.stdout)["moving_to_fixed_mm"] != old
    both = CliRunner().invoke(
        cli, [*args, "--us-spacing-mm", "0.3", "--moving-spacing-mm", "0.3,0.3"]
    )
    assert both.exit_code == 2 and "give only --moving-spacing-mm" in both.output

"""Landmarks outside either image, or outside its imaged area, are refused naming the row."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.fusion import read_image
from hybridfuse.fusion.coregister import check_landmarks_imaged, read_landmarks_csv
from hybridfuse.fusion.errors import InputError
from hybridfuse.testdata import sample_case

FLUORO = "fluoro_run02_confirm_lateral.dcm"
ROWS = (
    "needle_tip,304.794,330.847,269.380,208.238\n"
    "bead0,458.765,145.879,351.765,105.921\n"
    "bead1,274.713,224.234,253.430,150.091\n"
)


def _csv(tmp_path, last_row: str):
    path = tmp_path / "lm.csv"
    path.write_text("name,moving_x,moving_y,fixed_x,fixed_y\n" + ROWS + last_row)
    return path


@pytest.fixture(scope="module")
def pair():
    case = sample_case()
    return read_image(case / FLUORO, decode=False), read_image(case / "us_clip.dcm", decode=False)


def test_the_sample_landmarks_lie_in_both_imaged_areas(pair, tmp_path):
    check_landmarks_imaged(read_landmarks_csv(_csv(tmp_path, "")), *pair)


@pytest.mark.parametrize(
    ("row", "said"),
    [
        # The ultrasound region spans x 160-479: x 100 is the screen to its left.
        ("screen,100,200,250,150\n", "moving (ultrasound) point (100, 200)"),
        # The circular shutter leaves the fluoroscopy's corner dark.
        ("corner,300,200,3,3\n", "fixed (fluoroscopy) point (3, 3)"),
    ],
)
def test_a_point_outside_the_imaged_area_is_refused_naming_its_line(pair, tmp_path, row, said):
    name = row.split(",")[0]
    with pytest.raises(InputError) as err:
        check_landmarks_imaged(read_landmarks_csv(_csv(tmp_path, row)), *pair)
    message = str(err.value)
    assert f"lm.csv: line 5 ({name}): {said} lies outside the imaged area" in message
    assert "1 of 4 pairs do" in message


def test_register_refuses_a_point_beyond_the_image_naming_the_row(tmp_path):
    # Issue #16: x = 700 on a 640-wide ultrasound was accepted with "FRE 0.00 px".
    case = sample_case()
    result = CliRunner().invoke(
        cli,
        [
            "register", "--fixed", str(case / FLUORO), "--moving", str(case / "us_clip.dcm"),
            "--moving-frame", "6", "--metric", "none", "--out", str(tmp_path / "reg"),
            "--landmarks", str(_csv(tmp_path, "far,700,200,250,150\n")),
        ],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "line 5 (far): moving (ultrasound) point (700, 200) lies outside" in result.output
    assert not (tmp_path / "reg").exists()

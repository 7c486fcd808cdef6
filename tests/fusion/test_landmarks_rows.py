"""Landmarks outside either image are refused naming the CSV row (issue #16 item 4)."""

from __future__ import annotations

from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.testdata import sample_case

FLUORO = "fluoro_run02_confirm_lateral.dcm"
ROWS = (
    "needle_tip,304.794,330.847,269.380,208.238\n"
    "bead0,458.765,145.879,351.765,105.921\n"
    "bead1,274.713,224.234,253.430,150.091\n"
)


def test_register_refuses_a_point_beyond_the_image_naming_the_row(tmp_path):
    # Issue #16: x = 700 on a 640-wide ultrasound was accepted with "FRE 0.00 px".
    case = sample_case()
    csv = tmp_path / "lm.csv"
    csv.write_text("name,moving_x,moving_y,fixed_x,fixed_y\n" + ROWS + "far,700,200,250,150\n")
    result = CliRunner().invoke(
        cli,
        [
            "register", "--fixed", str(case / FLUORO), "--moving", str(case / "us_clip.dcm"),
            "--moving-frame", "6", "--metric", "none", "--out", str(tmp_path / "reg"),
            "--landmarks", str(csv),
        ],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert (
        "lm.csv: line 5 (far): moving (ultrasound) point (700, 200) lies outside" in result.output
    )
    assert not (tmp_path / "reg").exists()

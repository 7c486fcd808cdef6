"""``register --init-transform`` with ``--landmarks``: the start is said to be unused, and is."""

from __future__ import annotations

import csv
import json

from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.testdata import sample_case


def test_a_start_given_with_landmarks_is_noted_and_does_not_move_the_crop(tmp_path):
    case = sample_case()
    clicks = case / "landmarks" / "run02_confirm_lateral_f00_us06.csv"
    truth = json.loads((case / "truth.json").read_text())["pairs"][0]["moving_to_fixed_pixel"]
    truth[0][2] += 150.0  # a stale start: 150 px to the right
    start = tmp_path / "start.json"
    record = {"schema": "hybridfuse.transform/1", "moving_to_fixed_pixel": truth}
    start.write_text(json.dumps(record))
    args = ["register", "--fixed", str(case / "fluoro_run02_confirm_lateral.dcm")]
    args += ["--moving", str(case / "us_clip.dcm"), "--moving-frame", "6"]
    args += ["--landmarks", str(clicks), "--metric", "none", "--init-transform", str(start)]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    note = "--init-transform start.json was not used: the landmarks set the start"
    assert f"hybridfuse: note: {note}" in result.stderr
    quality = json.loads(result.stdout)["quality"]
    assert quality["notes"][0].startswith(note)
    # The fluoroscopy was cropped about the landmarks, not about the stale start.
    x0, y0, x1, y1 = quality["crop_fixed_px_x0_y0_x1_y1"]
    with open(clicks, newline="") as fh:
        fixed = [(float(r["fixed_x"]), float(r["fixed_y"])) for r in csv.DictReader(fh)]
    assert all(x0 <= x < x1 and y0 <= y < y1 for x, y in fixed)

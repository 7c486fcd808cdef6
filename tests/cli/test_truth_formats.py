"""``register --truth`` scores against one pair's truth (the validation families' form)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.testdata.phantom.family import family_case


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return family_case(3, tmp_path_factory.mktemp("truth") / "case", max_detector_px=320)


def _register(case, out, truth, *extra):
    args = ["register", "--fixed", str(case / "fluoro.dcm"), "--moving", str(case / "us.dcm")]
    args += ["--landmarks", str(case / "landmarks.csv"), "--metric", "none"]
    args += ["--accept-unverified", "--truth", str(truth), "--out", str(out), *extra]
    return CliRunner().invoke(cli, args)


def test_one_pair_truth_gives_the_tre_over_its_own_grid(case, tmp_path):
    result = _register(case, tmp_path / "r", case / "truth.json")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "r" / "transform.json").read_text())
    truth = json.loads((case / "truth.json").read_text())
    # Independently of the code under test: the truth's own mapped grid, not its matrix.
    grid = np.asarray(truth["grid_moving"], float)
    h = np.asarray(record["moving_to_fixed_pixel"], float)
    est = np.c_[grid, np.ones(len(grid))] @ h.T
    d = np.linalg.norm(est[:, :2] / est[:, 2:] - np.asarray(truth["grid_fixed"], float), axis=1)
    expected = float(np.median(d) * truth["mm_per_fixed_pixel_at_isocenter"])
    assert record["tre"]["median_mm"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert record["tre"]["points"] == len(grid)


@pytest.mark.parametrize(
    "edit, says",
    [
        ({"grid_moving": [[1, 2, 3]]}, "grid_moving"),
        ({"mm_per_fixed_pixel_at_isocenter": -1}, "mm_per_fixed_pixel_at_isocenter"),
        ({"moving_to_fixed_pixel": [[1, 0], [0, 1]]}, "moving_to_fixed_pixel"),
    ],
)
def test_a_bad_one_pair_truth_is_refused_before_the_work(case, tmp_path, edit, says):
    truth = {**json.loads((case / "truth.json").read_text()), **edit}
    bad = tmp_path / "truth.json"
    bad.write_text(json.dumps(truth))
    result = _register(case, tmp_path / "r", bad)
    assert result.exit_code == 2 and str(bad) in result.output and says in result.output
    assert not (tmp_path / "r").exists()


def test_one_pair_truth_refuses_other_frames(case):
    from hybridfuse.fusion import InputError, read_image
    from hybridfuse.fusion.coregister import read_truth_json, truth_tre
    from hybridfuse.registration.transforms import Transform

    fixed, moving = read_image(case / "fluoro.dcm"), read_image(case / "us.dcm")
    truth = read_truth_json(case / "truth.json")
    assert truth_tre(Transform(truth["h"]), truth, fixed, moving, "f", 0, 0)["median_mm"] == 0
    with pytest.raises(InputError, match="one pair of images"):
        truth_tre(Transform(truth["h"]), truth, fixed, moving, "f", 2, 0)

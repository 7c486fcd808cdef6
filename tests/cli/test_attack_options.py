"""Attacks on the option flow (issue #14): junk lists, contradicting options, TOML oddities.

Each is refused before any input is read (exit 2, one line naming the option), or read
the way the help says.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hybridfuse._options import OptionError
from hybridfuse.cli.main import cli
from hybridfuse.fusion.errors import InputError
from hybridfuse.fusion.pipeline import RunConfig
from hybridfuse.registration import RegistrationOptions


def _invoke(*args):
    return CliRunner().invoke(cli, list(args))


def _register(tmp_path, *args):
    # Inputs that do not exist: an option refused first proves it is refused before work.
    return _invoke(
        "register",
        "--fixed",
        str(tmp_path / "nofixed.dcm"),
        "--moving",
        str(tmp_path / "nomoving.dcm"),
        "--out",
        str(tmp_path / "out"),
        *args,
    )


@pytest.mark.parametrize("value", ["16,,8", "16,8,", ",16", "16, ,8"])
def test_a_list_with_an_empty_value_is_refused(tmp_path, value):
    result = _register(tmp_path, "--levels", value)
    assert result.exit_code == 2
    assert "--levels" in result.output and "not a valid value" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, says",
    [
        (["--levels", "16,8"], "levels has 2 value(s) but max_iterations has 5"),
        (["--max-iterations", "5,5"], "levels has 5 value(s) but max_iterations has 2"),
        (["--metric", "none", "--search"], "search = true needs an intensity metric"),
        (["--levels", "1,2,4,8,16"], "levels = 1, 2, 4, 8, 16 is not ordered coarse to fine"),
        (["--shadow-px", "10,2"], "shadow_px = 10, 2: the depth window below an echo"),
    ],
)
def test_contradicting_registration_options_are_refused_before_work(tmp_path, args, says):
    """They validated one by one and then failed (exit 1) or were silently ignored."""
    empty = tmp_path / "emptycase"  # no inputs: refusing the options must come first
    empty.mkdir()
    for command in ("register", "run", "batch"):
        if command == "register":
            result = _register(tmp_path, *args)
        else:
            result = _invoke(command, str(empty), "--out", str(tmp_path / "o"), *args)
        assert result.exit_code == 2, (command, result.output)
        assert says in result.output, (command, result.output)
        assert "nofixed" not in result.output and "emptycase" not in result.output
        assert not (tmp_path / "o").exists() and not (tmp_path / "out").exists()


def test_options_that_agree_are_accepted():
    opts = RegistrationOptions().with_values(levels=(16, 8), max_iterations=(5, 5), fine_levels=2)
    assert opts.pyramid.levels == (16, 8)
    with pytest.raises(OptionError, match="max_iterations has 5"):
        RegistrationOptions().with_values(levels=(16, 8))


def test_the_command_line_may_complete_what_the_config_file_began(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[registration]\nlevels = [16, 8]\n", encoding="utf-8")
    config = RunConfig.from_toml(path, {"max_iterations": (5, 5)})
    assert config.registration.pyramid.max_iterations == (5, 5)
    with pytest.raises(InputError, match=r"c\.toml: levels has 2 value\(s\)"):
        RunConfig.from_toml(path)
    with pytest.raises(InputError, match="c.toml with the command line: levels has 2"):
        RunConfig.from_toml(path, {"max_iterations": (5, 5, 5)})


def test_fine_levels_beyond_the_pyramid_mean_every_level():
    """A cap, not a contradiction: one level and the default fine_levels (2) is plain use."""
    opts = RegistrationOptions().with_values(levels=(2,), max_iterations=(20,))
    assert opts.pyramid.fine_levels == 2


def test_a_config_file_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b'\xef\xbb\xbf[registration]\nmetric = "ncc"\n')
    assert RunConfig.from_toml(path).registration.metric == "ncc"


def test_false_is_not_a_scale_tolerance_of_zero(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[registration]\nscale_tolerance = false\n", encoding="utf-8")
    with pytest.raises(InputError, match="scale_tolerance = False: expected a number"):
        RunConfig.from_toml(path)
    path.write_text("[registration]\nscale_tolerance = 0\n", encoding="utf-8")
    assert RunConfig.from_toml(path).registration.guards.scale_tolerance is None


@pytest.mark.parametrize("key, table", [("procedure", "dose"), ("region", "dose")])
def test_empty_text_is_refused(tmp_path, key, table):
    path = tmp_path / "c.toml"
    path.write_text(f'[{table}]\n{key} = " "\n', encoding="utf-8")
    with pytest.raises(InputError, match=f"{key} = ' ': may not be empty"):
        RunConfig.from_toml(path)


def test_an_unknown_colour_map_is_refused_before_work_in_every_mode(tmp_path):
    """It failed after registration (run, batch) or was accepted unless --mode color."""
    empty = tmp_path / "emptycase"
    empty.mkdir()
    for command in ("run", "batch"):
        result = _invoke(command, str(empty), "--out", str(tmp_path / "o"), "--colormap", "nope")
        assert result.exit_code == 2, result.output
        assert "colormap = 'nope' is not a matplotlib colour map" in result.output
    path = tmp_path / "c.toml"
    path.write_text('[fusion]\ncolormap = "nope"\n', encoding="utf-8")
    with pytest.raises(InputError, match="c.toml: colormap = 'nope'"):
        RunConfig.from_toml(path)
    path.write_text('[fusion]\ncolormap = "viridis"\n', encoding="utf-8")
    assert RunConfig.from_toml(path).fusion.colormap == "viridis"


def _fuse(tmp_path, *args):
    return _invoke(
        "fuse",
        "--fixed",
        str(tmp_path / "nofixed.dcm"),
        "--moving",
        str(tmp_path / "nomoving.dcm"),
        "--transform",
        str(tmp_path / "notransform.json"),
        "--out",
        str(tmp_path / "out"),
        *args,
    )


@pytest.mark.parametrize(
    "args, says",
    [
        (["--colormap", "nope"], "colormap = 'nope' is not a matplotlib colour map"),
        (["--colormap", "nope", "--mode", "color"], "colormap = 'nope'"),
        (["--opacity", "nan"], "opacity = nan: expected a finite number"),
        (["--frames", "0,,1"], "expected comma-separated integers"),
        (["--frames", ""], "expected comma-separated integers"),
    ],
)
def test_fuse_checks_its_options_like_run_before_reading(tmp_path, args, says):
    result = _fuse(tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert "notransform" not in result.output and not (tmp_path / "out").exists()


def test_n_bins_has_a_maximum(tmp_path):
    """A million bins passed the check and ran out of memory (exit 1)."""
    result = _register(tmp_path, "--n-bins", "1000000")
    assert result.exit_code == 2 and "--n-bins" in result.output


def test_dose_report_seed_has_the_range_of_run_and_batch(tmp_path):
    result = _invoke(
        "dose", "report", "--rdsr", str(tmp_path / "no.dcm"), "--out", str(tmp_path / "o"),
        "--seed", str(2**32),
    )  # fmt: skip
    assert result.exit_code == 2 and "--seed" in result.output


def test_a_procedure_given_keeps_the_region_of_the_synthetic_case(tmp_path, synthetic_case):
    """--procedure alone dropped truth.json's region: no effective dose, silently."""
    case, truth = synthetic_case
    out = tmp_path / "run"
    result = _invoke(
        "run", str(case), "--out", str(out), "--metric", "none", "--video", "none",
        "--no-dicom", "--procedure", "my-procedure",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    dose = json.loads((out / "dose" / "dose.json").read_text(encoding="utf-8"))
    assert dose["procedure"] == "my-procedure"
    assert dose["region"] == truth["region"]
    assert dose["effective_dose"].get("delivered_msv") is not None


@pytest.mark.parametrize(
    "args",
    [["--n-bins", "4"], ["--max-samples", "10"]],
)
def test_values_the_metrics_cannot_use_are_refused_before_work(tmp_path, args):
    """--n-bins 4 (mi needs 8) and --max-samples 10 (16 samples needed) failed with exit 1."""
    result = _register(tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert args[0] in result.output and "nofixed" not in result.output


def test_init_moments_with_metric_none_is_bad_input_not_an_internal_error(tmp_path, synthetic_case):
    case, _ = synthetic_case
    result = _invoke(
        "register", "--fixed", str(next(case.glob("fluoro_run02*.dcm"))), "--moving",
        str(case / "us_clip.dcm"), "--moving-frame", "6", "--out", str(tmp_path / "o"),
        "--init", "moments", "--plane-faces-detector", "--metric", "none",
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "internal error" not in result.output
    assert "--init moments is refined by an intensity search: it needs a metric" in result.output
    assert not (tmp_path / "o").exists()


def test_an_option_error_escaping_a_command_is_bad_input():
    from hybridfuse.cli.errors import exit_code_for, is_library_error

    exc = OptionError("options: search = true needs an intensity metric")
    assert exit_code_for(exc) == 2 and is_library_error(exc)


@pytest.mark.parametrize(
    "args",
    [
        ["--search-step-mm", "0.01"],
        ["--search-rotation-deg", "180", "--search-rotation-step-deg", "0.01"],
    ],
)
def test_a_search_grid_too_fine_to_score_is_refused_before_work(tmp_path, args):
    """16 million candidates were accepted and ran for hours or out of memory."""
    result = _register(tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert "the search grid would score" in result.output and "widen the steps" in result.output
    for off in (["--no-search"], ["--metric", "none"]):  # no search runs: nothing to refuse
        opts = RunConfig().with_values(
            {"search_step_mm": 0.01, "search": False if off == ["--no-search"] else None}
            | ({"metric": None} if off[0] == "--metric" else {})
        )
        assert opts.registration.grid.search_step_mm == 0.01


def test_the_default_and_a_wide_moments_search_fit_the_grid_limit():
    from hybridfuse.registration.initial import wide_search_options

    assert RegistrationOptions().search_grid_size() == 2160
    wide = wide_search_options(RegistrationOptions(), 300.0)
    assert wide.search_grid_size() < 1_000_000


@pytest.mark.parametrize("flag", ["--procedure", "--region"])
def test_dose_report_refuses_empty_text_like_run(tmp_path, flag):
    result = _invoke(
        "dose", "report", "--rdsr", str(tmp_path / "no.dcm"), "--out", str(tmp_path / "o"),
        flag, " ",
    )  # fmt: skip
    assert result.exit_code == 2 and flag in result.output and "may not be empty" in result.output


def test_landmarks_with_every_level_skipped_are_refused_not_reported_as_the_metric(
    tmp_path, synthetic_case
):
    """The result was the landmark fit alone while transform.json named lc2."""
    case, _ = synthetic_case
    landmarks = sorted((case / "landmarks").glob("run02_*_f00_*.csv"))[0]
    us_frame = landmarks.stem.rsplit("_us", 1)[1]
    args = [
        "register", "--fixed", str(next(case.glob("fluoro_run02*.dcm"))), "--moving",
        str(case / "us_clip.dcm"), "--moving-frame", str(int(us_frame)), "--landmarks",
        str(landmarks), "--out", str(tmp_path / "o"), "--levels", "16,8",
        "--max-iterations", "5,5",
    ]  # fmt: skip
    result = _invoke(*args)
    assert result.exit_code == 2, result.output
    assert "landmark_start_factor = 4 skips every pyramid level (16, 8)" in result.output
    assert not (tmp_path / "o").exists()
    result = _invoke(*args, "--landmark-start-factor", "8")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "o" / "transform.json").read_text(encoding="utf-8"))
    assert record["metric"] == "lc2" and record["iterations_per_level"]

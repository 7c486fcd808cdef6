"""Options that a command would record but not use are refused, not silently ignored.

(``register`` notes them instead: tests/cli/test_cli.py, the magnification check test.)
"""

from __future__ import annotations

from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.registration import RegistrationOptions
from hybridfuse.testdata import sample_case


def test_unused_by_names_what_register_would_not_use():
    opts = RegistrationOptions().with_values(scale_tolerance=0.05, search_keep=4)
    assert opts.unused_by(with_landmarks=True) == ["scale_tolerance", "search_keep"]
    assert opts.unused_by(with_landmarks=False) == []  # no landmarks: search and check run
    searched = opts.with_values(search=True)
    assert searched.unused_by(with_landmarks=True) == ["scale_tolerance"]
    assert RegistrationOptions().unused_by(with_landmarks=True) == []


def test_scale_tolerance_zero_means_off_in_the_library_too():
    assert RegistrationOptions().with_values(scale_tolerance=0).guards.scale_tolerance is None


def test_run_refuses_options_that_would_do_nothing(tmp_path):
    case = sample_case()
    for flags, named in (
        (["--scale-tolerance", "0.05"], "scale_tolerance"),
        (["--search-keep", "4"], "search_keep"),
    ):
        r = CliRunner().invoke(cli, ["run", str(case), "--out", str(tmp_path / "o"), *flags])
        assert r.exit_code == 2, r.output
        assert named in r.output and "no effect in run and batch" in r.output
        assert not (tmp_path / "o").exists()

"""The registration benchmark's bookkeeping: which sets it runs and how it pairs trials."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.registration import (
    OURS_AUTO,
    OURS_LC2,
    SITK_MI,
    _sets,
    paired_ratios,
)


def test_ratios_pair_each_trial_with_the_peer_from_the_same_start():
    # Ours is twice as slow on one start and ten times as fast on the other: the medians
    # of the two columns alone would hide which start was which.
    rows = {
        OURS_LC2: [(0.5, 2.0, "", "c#0"), (0.5, 0.1, "", "c#1")],
        SITK_MI: [(9.0, 1.0, "", "c#0"), (9.0, 1.0, "", "c#1"), (9.0, 1.0, "", "d#0")],
    }
    assert paired_ratios(rows, OURS_LC2, SITK_MI).tolist() == [2.0, 0.1]


def test_init_auto_runs_once_per_case_and_pairs_with_its_first_start():
    rows = {
        OURS_AUTO: [(0.3, 0.5, "", "c#0")],
        SITK_MI: [(9.0, 2.0, "", "c#0"), (9.0, 4.0, "", "c#1")],
    }
    assert paired_ratios(rows, OURS_AUTO, SITK_MI).tolist() == [0.25]


def test_trials_that_measured_no_registration_are_not_paired():
    # SimpleITK's initialiser raises at once with too few pairs; ours refuses one pair at
    # its input check: neither time is a registration's.
    rows = {
        OURS_LC2: [(0.5, 2.0, "", "c#0"), (None, 1e-4, "InputError: 1 pair", "c#1")],
        SITK_MI: [(None, 1e-4, "RuntimeError: x", "c#0"), (9.0, 1.0, "", "c#1")],
    }
    assert paired_ratios(rows, OURS_LC2, SITK_MI).size == 0
    rows[OURS_LC2].append((None, 3.0, "UnverifiedResultError: refused", "c#2"))
    rows[SITK_MI].append((9.0, 1.5, "", "c#2"))
    assert paired_ratios(rows, OURS_LC2, SITK_MI).tolist() == [2.0]


def test_a_method_that_never_ran_gives_no_ratio():
    rows = {SITK_MI: [(9.0, 2.0, "", "c#0")]}
    assert paired_ratios(rows, OURS_LC2, SITK_MI).size == 0


def test_sets_are_named_from_a_fixed_list():
    assert _sets("family-report, phantom-a") == ["family-report", "phantom-a"]
    with pytest.raises(argparse.ArgumentTypeError, match="family-tunning"):
        _sets("family-tunning")
    with pytest.raises(argparse.ArgumentTypeError):
        _sets(" , ")


def test_family_sets_say_which_seeds_and_whether_tuning_saw_them(monkeypatch, tmp_path):
    import benchmarks.registration as bench

    asked = []
    monkeypatch.setattr(bench, "family_set", lambda which, n, cache: asked.append(which) or [1, 2])
    title, cases = bench.set_cases("family-report", 2, tmp_path, None, tmp_path)
    assert asked == ["report"] and cases == [1, 2]
    assert "report seeds 1000–1001 (never used for tuning)" in title
    title, _ = bench.set_cases("family-tuning", 2, tmp_path, None, tmp_path)
    assert asked[-1] == "tuning" and "tuning seeds 0–1" in title


def test_an_absent_validation_folder_is_skipped_with_the_reason(tmp_path):
    from benchmarks.registration import set_cases

    title, cases = set_cases("phantom-a", 2, tmp_path, None, tmp_path / "absent")
    assert cases is None and "skipped" in title and "absent" in title


def test_a_saved_run_reprints_the_same_tables(tmp_path, capsys):
    import json

    from benchmarks.registration import reprint, table

    rows = {
        OURS_LC2: [(0.5, 2.0, "", "c#0"), (None, 3.0, "UnverifiedResultError: x", "c#1")],
        SITK_MI: [(9.0, 1.0, "", "c#0"), (0.4, 1.0, "", "c#1")],
    }
    table("t", rows)
    printed = capsys.readouterr().out
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({"sets": [{"set": "family-tuning", "title": "t", "rows": rows}]}))
    reprint(saved)
    again = capsys.readouterr().out
    assert again.startswith(printed)
    assert "paired per trial: median 2.500, range 2.000–3.000 (n 2)" in again

"""Plausibility of the timing inputs of the dose-saved estimate: one test per rule."""

from __future__ import annotations

import hashlib
import json

import pydicom
import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.dose import DoseInputError
from hybridfuse.dose.report import build_dose_report
from hybridfuse.dose.saved import saved_against_baseline
from hybridfuse.testdata import sample_case

# The sample case: irradiation from 0 to 200.5 s; guidance taps at 22, 37, 52 and 67 s
# (2.5 s each); the clip runs from 92 s (cut at the confirmation run, 172 s).


@pytest.fixture(scope="module")
def case():
    return sample_case()


def _report(case, **kw):
    return build_dose_report(case / "rdsr.dcm", **kw)


def _label(clip, n=1):
    """How a written flag names the n-th --us clip (its file name only with --include-phi)."""
    return f"clip {n} (sha256 {hashlib.sha256(clip.read_bytes()).hexdigest()[:12]})"


def _clip(case, tmp_path, name="clip.dcm", **changes):
    ds = pydicom.dcmread(case / "us_clip.dcm")
    for key, value in changes.items():
        setattr(ds, key, value)
    path = tmp_path / name
    ds.save_as(path)
    return path


def _timing_flags(rep):
    return rep["saved"]["counterfactual"]["flags"]


def test_the_sample_clip_raises_no_timing_flag(case):
    rep = _report(case, us_clips=[case / "us_clip.dcm"])
    assert rep["flags"] == []


@pytest.mark.parametrize("interval", [(5000.0, 5100.0), (-100.0, -50.0), (-30.0, 0.0)])
def test_an_interval_entirely_outside_the_procedure_is_refused_unless_forced(case, interval):
    with pytest.raises(DoseInputError, match="entirely outside the procedure.*--force"):
        _report(case, us_intervals=[interval])
    rep = _report(case, us_intervals=[interval], force=True)
    assert any("entirely outside" in f and "--force" in f for f in rep["flags"])


def test_an_interval_reaching_far_beyond_the_procedure_is_refused(case):
    with pytest.raises(DoseInputError, match="more than 600 s beyond"):
        _report(case, us_intervals=[(150.0, 1000.0)])


def test_a_negative_start_is_flagged(case):
    rep = _report(case, us_intervals=[(-10.0, 15.0)])
    assert any("starts 10 s before the first irradiation" in f for f in _timing_flags(rep))
    # Within the clock margin: not flagged as outside the procedure.
    assert not any("outside the procedure" in f for f in rep["flags"])


def test_an_interval_beyond_the_margin_is_flagged(case):
    rep = _report(case, us_intervals=[(180.0, 300.0)])
    assert any("extends more than 60 s outside the procedure" in f for f in rep["flags"])
    inside = _report(case, us_intervals=[(180.0, 250.0)])
    assert not any("outside the procedure" in f for f in inside["flags"])


def test_fluoroscopy_inside_an_ultrasound_interval_is_counted_and_named(case):
    rep = _report(case, us_intervals=[(15.0, 80.0)])
    [flag] = [f for f in rep["flags"] if "overlaps" in f]
    assert "4 fluoroscopy event(s)" in flag
    assert "(level 1 guidance, tap 1) at 22.0 s" in flag and "tap 4) at 67.0 s" in flag
    # A tap running into the interval counts too (the tap at 22 s lasts 2.5 s).
    rep = _report(case, us_intervals=[(24.0, 30.0)])
    assert any("overlaps 1 fluoroscopy event(s)" in f for f in rep["flags"])
    assert not any("overlaps" in f for f in _report(case, us_intervals=[(100, 165)])["flags"])


def test_a_clip_on_another_day_is_refused_then_flagged_when_forced(case, tmp_path):
    clip = _clip(
        case,
        tmp_path,
        AcquisitionDateTime="20260116090232.000000",
        AcquisitionDate="20260116",
        ContentDate="20260116",
    )
    with pytest.raises(DoseInputError, match="clip.dcm: .*entirely outside"):
        _report(case, us_clips=[clip])  # an error on the terminal names the file
    rep = _report(case, us_clips=[clip], force=True)
    assert any(f"{_label(clip)}: acquired 1 calendar day(s) after" in f for f in rep["flags"])


def test_a_one_frame_clip_is_flagged(case, tmp_path):
    clip = _clip(case, tmp_path, NumberOfFrames=1, FrameTimeVector=[0.0])
    rep = _report(case, us_clips=[clip])
    assert rep["saved"]["counterfactual"]["point"]["fluoro_time_s"] == 0
    assert any(f"{_label(clip)}: ultrasound interval of 0 s" in f for f in rep["flags"])


def test_a_clip_of_another_patient_or_study_is_flagged_without_its_identifiers(case, tmp_path):
    clip = _clip(case, tmp_path, PatientID="OTHER42", StudyInstanceUID="1.2.3.4.5")
    rep = _report(case, us_clips=[clip])
    assert any("Patient ID differs" in f for f in rep["flags"])
    assert any("Study Instance UID differs" in f for f in rep["flags"])
    assert "OTHER42" not in json.dumps(rep["flags"]) and "1.2.3.4.5" not in str(rep["flags"])


def test_negative_baseline_savings_are_flagged_and_explained():
    delivered = {"dap_total_gy_cm2": 2.0, "ka_r_total_mgy": 12.0, "fluoro_time_s": 20.0}
    hist = {"dap_gy_cm2": [1.0, 1.1, 0.9, 1.2, 1.05], "ka_r_mgy": [20, 25, 30, 22, 21]}
    res = saved_against_baseline(delivered, "lumbar-mbb", registry_values=hist)
    dap = res["by_quantity"]["dap_gy_cm2"]
    assert dap["saved"] < 0 and "delivered more DAP than the baseline" in dap["note"]
    assert any("saved DAP is negative" in f for f in res["flags"])
    assert any("disagree in sign" in f for f in res["flags"])
    assert "note" not in res["by_quantity"]["ka_r_mgy"]


def test_negative_baseline_flags_reach_the_report(case):
    rep = _report(case, procedure="lumbar-mbb", registry_values={"dap_gy_cm2": [0.01] * 5})
    assert rep["saved"]["baseline"]["by_quantity"]["dap_gy_cm2"]["saved"] < 0
    assert any(f.startswith("baseline: saved DAP is negative") for f in rep["flags"])


def test_the_cli_refuses_in_one_line_and_force_computes(case, tmp_path):
    args = ["dose", "report", "--rdsr", str(case / "rdsr.dcm"), "--us-interval", "-100,-50"]
    res = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a")])
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()) == 1 and "--force" in res.output
    assert not (tmp_path / "a").exists()
    res = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "b"), "--force", "--json"])
    assert res.exit_code == 0, res.output
    assert any("entirely outside" in f for f in json.loads(res.output)["flags"])


def test_guided_phase_and_detection_give_one_duty_cycle(case):
    detected = _report(case, us_intervals=[(100.0, 165.0)])["saved"]["counterfactual"]
    # The generator's phase (20-80 s) and the natural first-tap start to last-tap end.
    for phase in ((20.0, 80.0), (22.0, 69.5)):
        given = _report(case, us_intervals=[(100.0, 165.0)], guided_phase=phase)
        cf = given["saved"]["counterfactual"]
        assert cf["guidance_events_s"] == detected["guidance_events_s"]
        assert cf["duty_cycle"] == pytest.approx(detected["duty_cycle"], rel=1e-12)
        assert cf["point"] == pytest.approx(detected["point"], rel=1e-12)
        assert cf["interval_95"] == detected["interval_95"]
    assert detected["duty_cycle"] == pytest.approx(10.0 / 60.0)
    # A phase holding only some of the taps is read: its own taps give its own figure.
    part = _report(case, us_intervals=[(100.0, 165.0)], guided_phase=(20.0, 45.0))
    part = part["saved"]["counterfactual"]
    assert 2 <= len(part["guidance_events_s"]) < len(detected["guidance_events_s"])


def test_a_guided_phase_with_one_tap_is_refused(case):
    with pytest.raises(DoseInputError, match="at least 2 taps"):
        _report(case, us_intervals=[(100.0, 165.0)], guided_phase=(21.0, 30.0))

"""Protocol names that may identify the patient; accumulated totals a unit left at 0."""

from __future__ import annotations

import csv
import json

import pytest

from tests.dose.rdsr_edit import set_numbers, set_protocol

PATIENT = {"PatientName": "Moreau^Anne", "PatientID": "X7731"}


def _dose(*args):
    from click.testing import CliRunner

    from hybridfuse.cli.main import cli

    return CliRunner().invoke(cli, ["dose", *map(str, args)])


def _report(rdsr, out, *extra):
    r = _dose("report", "--rdsr", rdsr, "--out", out, *extra)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "events.csv").read_text().splitlines()))
    return json.loads((out / "dose.json").read_text()), rows


@pytest.mark.parametrize(
    "protocol",
    [
        "MOREAU facet L4",
        "Anne lumbar 7.5 p/s",
        "ID X7731 fluoro",
        "2024-03-05 Abdomen",
        "Abd 05.03.24",
    ],
)
def test_a_protocol_name_naming_the_patient_is_withheld_unless_asked(
    synthetic_case, tmp_path, protocol
):
    from hybridfuse.dose.descriptors import WITHHELD

    case, _ = synthetic_case
    rdsr = set_protocol(case / "rdsr.dcm", tmp_path / "p.dcm", protocol, **PATIENT)
    report, rows = _report(rdsr, tmp_path / "out")
    assert {row["protocol"] for row in rows} == {WITHHELD}
    text = "".join((tmp_path / "out" / n).read_text() for n in ("dose.json", "events.csv"))
    assert protocol not in text and "moreau" not in text.lower()
    assert any("protocol name withheld" in f for f in report["flags"])
    _, shown = _report(rdsr, tmp_path / "phi", "--include-phi")
    assert {row["protocol"] for row in shown} == {protocol}


@pytest.mark.parametrize(
    "protocol", ["Gastro 7.5f/s Middle", "Coronar lag 7.5 b/s (Low)", "CP_Paediatric", "Skelet"]
)
def test_a_units_own_protocol_label_is_kept(synthetic_case, tmp_path, protocol):
    # Labels of the real vendor reports in shared/realdata: a physicist reads events by them.
    case, _ = synthetic_case
    rdsr = set_protocol(case / "rdsr.dcm", tmp_path / "p.dcm", protocol, **PATIENT)
    report, rows = _report(rdsr, tmp_path / "out")
    assert {row["protocol"] for row in rows} == {protocol}
    assert not any("withheld" in f for f in report["flags"])


def test_a_total_left_at_zero_reports_the_events_sum_and_says_so(synthetic_case, tmp_path):
    case, _ = synthetic_case
    before, rows = _report(case / "rdsr.dcm", tmp_path / "before")
    events_dap = sum(float(r["dap_gy_cm2"]) for r in rows)
    assert before["delivered"]["dap_total_gy_cm2"] == pytest.approx(events_dap, rel=0.05)
    rdsr = set_numbers(case / "rdsr.dcm", tmp_path / "zero.dcm", "113722", 0.0)  # DAP total
    rdsr = set_numbers(rdsr, rdsr, "113730", 0.0)  # fluoroscopy time: durations not additive
    report, _ = _report(rdsr, tmp_path / "out")
    assert report["delivered"]["dap_total_gy_cm2"] == pytest.approx(events_dap, rel=1e-9)
    assert "sum of the events" in report["delivered"]["sources"]["dap_total_gy_cm2"]
    assert any("total is 0" in f and "event sum is reported" in f for f in report["flags"])
    assert report["delivered"]["fluoro_time_s"] == 0.0
    assert any("fluoro_time_s" in f and "not additive" in f for f in report["flags"])
    # The other quantities keep the unit's totals.
    assert report["delivered"]["ka_r_total_mgy"] == before["delivered"]["ka_r_total_mgy"]

"""dose.json and events.csv: delivered totals, reconciliation flags, no patient data."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.dose.report import build_dose_report, write_dose_outputs
from tests.conftest import REALDATA, dose_report_of, realdata_rows


@pytest.mark.parametrize("row", realdata_rows("rdsr"))
def test_delivered_equals_the_units_totals_and_checks_are_flagged(row, tmp_path):
    rep = dose_report_of(REALDATA / "rdsr" / row["filename"])
    d = rep["delivered"]
    assert d["dap_total_gy_cm2"] == pytest.approx(float(row["dap_total_Gym2"]) * 1e4, rel=1e-9)
    assert d["ka_r_total_mgy"] == pytest.approx(float(row["rp_dose_total_Gy"]) * 1e3, rel=1e-9)
    assert d["fluoro_time_s"] == pytest.approx(float(row["total_fluoro_time_s"]))
    assert d["sources"]["dap_total_gy_cm2"] == "accumulated totals, summed over planes"
    assert d["n_events"] == int(row["n_events"])
    checks = row["checks"]
    if "sum of event DAP differs" in checks:
        assert any("dap_total_gy_cm2 event sum" in f for f in rep["flags"])
    if "Fluoro Time" in checks:
        assert any("fluoro_time_s event sum" in f for f in rep["flags"])
    if "Fluoro Dose (RP) Total reported 0" in row["notes"]:
        assert any("one is zero and the other not" in f for f in rep["flags"])
    out = write_dose_outputs(rep, tmp_path)
    with open(out[1], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == int(row["n_events"])
    assert "dap_gy_cm2" in rows[0] and "irradiation_duration_s" in rows[0]


def test_synthetic_report_matches_truth_and_has_no_phi(synthetic_case, tmp_path):
    case, truth = synthetic_case
    rep = build_dose_report(case / "rdsr.dcm")
    for key in ("dap_total_gy_cm2", "fluoro_dap_gy_cm2", "ka_r_total_mgy", "fluoro_time_s"):
        assert rep["delivered"][key] == pytest.approx(truth["dose"]["delivered"][key], rel=1e-9)
    assert rep["flags"] == []
    write_dose_outputs(rep, tmp_path)
    text = (tmp_path / "dose.json").read_text() + (tmp_path / "events.csv").read_text()
    assert "PHANTOM" not in text and "SYN0000" not in text
    assert not list(tmp_path.glob(".*partial"))
    with_phi = build_dose_report(case / "rdsr.dcm", include_phi=True)
    assert with_phi["patient"]["id"].startswith("SYN")


def test_dose_report_command(synthetic_case, tmp_path):
    case, truth = synthetic_case
    result = CliRunner().invoke(
        cli,
        [
            "dose",
            "report",
            "--rdsr",
            str(case / "rdsr.dcm"),
            "--out",
            str(tmp_path / "d"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["schema"] == "hybridfuse.dose/1"
    assert record["inputs"][0]["sha256"] and record["inputs"][0]["sop_instance_uid"]
    again = CliRunner().invoke(
        cli, ["dose", "report", "--rdsr", str(case / "rdsr.dcm"), "--out", str(tmp_path / "d")]
    )
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_dose_report_of_an_image_is_bad_input(synthetic_case, tmp_path):
    case, _ = synthetic_case
    result = CliRunner().invoke(
        cli, ["dose", "report", "--rdsr", str(case / "us_clip.dcm"), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "not a structured report" in result.output


def test_images_without_rdsr_sum_known_dap_and_never_report_zero(synthetic_case, tmp_path):
    from hybridfuse.dose.report import build_image_dose_report

    case, truth = synthetic_case
    runs = truth["fluoro_runs"]
    rep = build_image_dose_report([case / r["file"] for r in runs])
    events = {e["uid"]: e["dap_gy_cm2"] for e in truth["dose"]["events"]}
    expected = sum(events[r["irradiation_event_uid"]] for r in runs)
    assert rep["delivered"]["dap_total_gy_cm2"] == pytest.approx(expected, rel=1e-6)
    assert rep["delivered"]["ka_r_total_mgy"] is None
    assert "lower bounds" in rep["assumptions"][0]
    # A file without DAP makes the total unknown, not smaller.
    other = tmp_path / "nodose.dcm"
    import pydicom

    ds = pydicom.dcmread(case / runs[0]["file"])
    del ds.ImageAndFluoroscopyAreaDoseProduct
    ds.save_as(other)
    rep = build_image_dose_report([case / runs[1]["file"], other])
    assert rep["delivered"]["dap_total_gy_cm2"] is None
    assert any("1 of 2 images" in f for f in rep["flags"])


def test_vendor_dose_screen_is_explained(synthetic_case, tmp_path):
    import pydicom

    from hybridfuse.dose import DoseInputError, read_rdsr

    case, truth = synthetic_case
    ds = pydicom.dcmread(case / truth["files"]["fluoro"][0])
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SeriesDescription = "Dose Report"
    path = tmp_path / "screen.dcm"
    ds.save_as(path)
    with pytest.raises(DoseInputError, match="burned into the image"):
        read_rdsr(path)

"""Saved-dose estimates checked against the dose the generator saved by construction."""

from __future__ import annotations

import numpy as np
import pytest

from hybridfuse.dose import DoseInputError, read_rdsr
from hybridfuse.dose.report import build_dose_report, load_coefficients, write_dose_outputs
from hybridfuse.dose.saved import (
    Interval,
    load_baselines,
    saved_against_baseline,
    saved_counterfactual,
)
from hybridfuse.testdata import sample_case
from hybridfuse.testdata.phantom import load_truth

FIGURES = ("fluoro_time_s", "pulses", "dap_gy_cm2", "ka_r_mgy")


@pytest.fixture(scope="module")
def cases(generated_case):
    return [sample_case(), generated_case(5, "cervical-mbb")[0]]


def test_point_within_5_percent_when_assumptions_match(cases):
    for folder in cases:
        truth = load_truth(folder)["dose"]["saved"]
        rec = read_rdsr(folder / "rdsr.dcm")
        res = saved_counterfactual(
            rec,
            [Interval(*truth["us_guided_interval_s"])],
            guided_phase=tuple(truth["fluoro_guided_phase_s"]),
        )
        for q in FIGURES:
            assert res["point"][q] == pytest.approx(truth[q], rel=0.05), q
            lo, hi = res["interval_95"][q]
            assert lo <= truth[q] <= hi, q


def test_guided_phase_is_found_from_the_taps(cases):
    truth_all = load_truth(cases[0])
    truth = truth_all["dose"]["saved"]
    rec = read_rdsr(cases[0] / "rdsr.dcm")
    res = saved_counterfactual(rec, [Interval(*truth["us_guided_interval_s"])])
    g0, g1 = truth["fluoro_guided_phase_s"]
    taps = [
        e["start_s"]
        for e in truth_all["dose"]["events"]
        if e["type"] == "fluoroscopy" and g0 <= e["start_s"] <= g1
    ]
    assert res["guidance_events_s"] == pytest.approx(taps)
    assert res["duty_cycle"] == pytest.approx(truth["observed_duty_cycle"], rel=0.05)


def test_truth_lies_in_the_interval_from_the_clip_alone(cases):
    for folder in cases:
        truth = load_truth(folder)["dose"]["saved"]
        rep = build_dose_report(folder / "rdsr.dcm", us_clips=[folder / "us_clip.dcm"])
        cf = rep["saved"]["counterfactual"]
        for q in FIGURES:
            lo, hi = cf["interval_95"][q]
            assert lo <= truth[q] <= hi, (folder, q)


def test_without_a_guided_phase_the_default_protocol_is_stated(cases):
    rec = read_rdsr(cases[0] / "rdsr.dcm")
    # Keep only the scout and confirmation runs: no intermittent guidance left.
    rec.events = [e for e in rec.events if "tap" not in (e.protocol or "")]
    res = saved_counterfactual(rec, [Interval(100.0, 165.0)])
    assert res["duty_cycle"] == 0.2
    assert any("default protocol" in a for a in res["assumptions"])
    assert res["flags"]


def test_monte_carlo_is_seeded(cases):
    rec = read_rdsr(cases[0] / "rdsr.dcm")
    a = saved_counterfactual(rec, [Interval(100.0, 165.0, 5.0)], seed=3)
    b = saved_counterfactual(rec, [Interval(100.0, 165.0, 5.0)], seed=3)
    assert a["interval_95"] == b["interval_95"]


def test_no_interval_is_a_clear_error(cases):
    with pytest.raises(DoseInputError, match="ultrasound-guided interval"):
        saved_counterfactual(read_rdsr(cases[0] / "rdsr.dcm"), [])


def test_baseline_from_registry_history_and_from_literature():
    delivered = {"dap_total_gy_cm2": 1.0, "ka_r_total_mgy": 12.0, "fluoro_time_s": 20.0}
    hist = {"dap_gy_cm2": [2.0, 2.5, 3.0, 1.8, 2.2, 2.7]}
    res = saved_against_baseline(delivered, "lumbar-mbb", registry_values=hist)
    dap = res["by_quantity"]["dap_gy_cm2"]
    assert dap["baseline"] == pytest.approx(np.median(hist["dap_gy_cm2"]))
    assert dap["saved"] == pytest.approx(dap["baseline"] - 1.0)
    assert "local registry" in dap["source"]
    lit = res["by_quantity"]["ka_r_mgy"]
    assert lit["baseline"] == 66.0 and "doi:10.3390/life14091179" in lit["source"]
    assert res["by_quantity"]["fluoro_time_s"]["saved"] == pytest.approx(8.0)
    unknown = saved_against_baseline(delivered, "cervical-mbb")
    assert unknown["by_quantity"]["dap_gy_cm2"]["saved"] is None
    assert "no baseline" in unknown["by_quantity"]["dap_gy_cm2"]["reason"]


def test_every_shipped_literature_row_is_sourced_and_usable():
    rows = load_baselines()
    assert {r["procedure"] for r in rows} >= {"lumbar-mbb", "si-joint", "lumbar-epidural"}
    for r in rows:
        assert r["source"].strip() and r["statistic"].strip() and r["interval_note"].strip()
        assert 0 < r["low"] <= r["value"] <= r["high"]
        assert r["quantity"] in {"dap_gy_cm2", "ka_r_mgy", "fluoro_time_s"}
    delivered = {"dap_total_gy_cm2": 0.5, "ka_r_total_mgy": None, "fluoro_time_s": None}
    si = saved_against_baseline(delivered, "si-joint")["by_quantity"]["dap_gy_cm2"]
    # Cushman et al. report 1671 mGy.cm2 as the overweight group's median.
    assert si["baseline"] == pytest.approx(1.671)
    assert si["saved"] == pytest.approx(1.171)
    assert "10.1016/j.pmrj.2015.11.008" in si["source"]


def test_effective_dose_needs_a_sourced_coefficient(cases, tmp_path):
    rep = build_dose_report(cases[0] / "rdsr.dcm", region="cervical")
    assert "Not computed" in rep["effective_dose"]["note"]
    assert "lumbar" in rep["effective_dose"]["note"]  # what the shipped table does cover
    shipped = build_dose_report(cases[0] / "rdsr.dcm", region="lumbar")["effective_dose"]
    assert shipped["coefficient_msv_per_gy_cm2"] == 0.33
    assert "Kim S" in shipped["source"] and "ICRP 60" in shipped["source"]
    none = build_dose_report(cases[0] / "rdsr.dcm", region="lumbar", coefficients={})
    assert "Not computed" in none["effective_dose"]["note"]
    coef = tmp_path / "coef.csv"
    coef.write_text("region,coefficient_msv_per_gy_cm2,source\nlumbar,0.2,test value\n")
    rep = build_dose_report(
        cases[0] / "rdsr.dcm", region="lumbar", coefficients=load_coefficients(coef)
    )
    assert rep["effective_dose"]["delivered_msv"] == pytest.approx(
        rep["delivered"]["dap_total_gy_cm2"] * 0.2
    )
    assert "not the dose this patient received" in rep["effective_dose"]["note"]
    bad = tmp_path / "bad.csv"
    bad.write_text("region,coefficient_msv_per_gy_cm2,source\nlumbar,0.2,\n")
    with pytest.raises(DoseInputError, match="no source"):
        load_coefficients(bad)


def test_report_html_is_self_contained(cases, tmp_path):
    rep = build_dose_report(
        cases[0] / "rdsr.dcm", us_clips=[cases[0] / "us_clip.dcm"], procedure="lumbar-mbb"
    )
    write_dose_outputs(rep, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page
    assert "Method 1" in page and "Method 2" in page
    assert "http://" not in page and "https://" not in page


def test_effective_dose_of_the_saved_dap_says_what_its_interval_covers(cases, tmp_path):
    rep = build_dose_report(
        cases[0] / "rdsr.dcm", us_clips=[cases[0] / "us_clip.dcm"], region="lumbar"
    )
    eff = rep["effective_dose"]
    cf = rep["saved"]["counterfactual"]
    assert eff["saved_msv"] == pytest.approx(cf["point"]["dap_gy_cm2"] * 0.33)
    lo, hi = eff["saved_msv_interval_95"]
    assert lo < eff["saved_msv"] < hi
    assert "coefficient's own" in eff["interval_note"]
    write_dose_outputs(rep, tmp_path)
    assert "Saved (method 1)" in (tmp_path / "report.html").read_text()

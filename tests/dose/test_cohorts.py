"""Cohort audit: ultrasound-guided against fluoroscopy-only procedures of the same type."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.dose.cohorts import compare_cohorts

Q = ("dap_total_gy_cm2", "ka_r_total_mgy", "fluoro_time_s")


def _row(dap, us, unit="A", procedure="lumbar-mbb"):
    return {
        "procedure_type": procedure,
        "region": "lumbar",
        "device": unit,
        "us_guided": int(us),
        "dap_total_gy_cm2": dap,
        "ka_r_total_mgy": None,
        "fluoro_time_s": None,
    }


def test_cohorts_compare_medians_with_an_interval_and_a_rank_test():
    fluoro = [2.0, 2.2, 2.5, 3.0, 2.8]
    us = [1.0, 1.1, 0.9, 1.3]
    rows = [_row(v, False) for v in fluoro] + [_row(v, True, unit="B") for v in us]
    rows.append(_row(9.0, False, procedure="si-joint"))  # another type: never pooled
    res = compare_cohorts(rows, Q, drl={("lumbar-mbb", "lumbar"): {"dap_total_gy_cm2": 2.0}})
    [group] = [g for g in res["by_group"] if g["procedure"] == "lumbar-mbb"]
    dap = group["dap_total_gy_cm2"]
    assert (dap["n_fluoro_only"], dap["n_us_guided"]) == (5, 4)
    assert dap["difference"] == pytest.approx(2.5 - 1.05)
    lo, hi = dap["difference_interval_95"]
    assert 0 < lo <= dap["difference"] <= hi
    # Every fluoroscopy-only value exceeds every guided one: U = 5 x 4, exact two-sided
    # p = 2 / C(9, 4).
    assert dap["mann_whitney_u"] == 20
    assert dap["mann_whitney_p"] == pytest.approx(2 / 126)
    assert dap["fluoro_only_median_over_drl"] == pytest.approx(1.25)
    assert dap["us_guided_median_over_drl"] == pytest.approx(1.05 / 2.0)
    assert group["ka_r_total_mgy"]["reason"].startswith("fewer than 3")
    # Per unit, each unit holds one cohort only: no difference is claimed.
    assert all("difference" not in u["dap_total_gy_cm2"] for u in res["by_unit"])
    assert "not controlled" in res["note"]


def test_audit_writes_the_cohort_comparison(synthetic_case, tmp_path):
    case, _ = synthetic_case
    db = tmp_path / "r.sqlite"
    runner = CliRunner()
    args = ["dose", "ingest", str(case / "rdsr.dcm"), "--db", str(db), "--procedure", "p"]
    assert runner.invoke(cli, args).exit_code == 0
    res = runner.invoke(cli, ["dose", "audit", "--db", str(db), "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    audit = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert audit["cohorts"]["by_group"][0]["dap_total_gy_cm2"]["n_fluoro_only"] == 1
    with open(tmp_path / "a" / "cohorts.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["quantity"] for r in rows} == set(Q)
    page = (tmp_path / "a" / "audit.html").read_text()
    assert "Ultrasound-guided against fluoroscopy-only" in page


def test_a_groups_interval_does_not_change_when_another_group_joins():
    rng = np.random.default_rng(7)
    fluoro, us = rng.lognormal(1.0, 0.5, 25), rng.lognormal(0.3, 0.5, 20)
    rows = [_row(float(v), False) for v in fluoro] + [_row(float(v), True) for v in us]
    alone = compare_cohorts(rows, Q)["by_group"][0]["dap_total_gy_cm2"]
    # An earlier-sorting group with enough procedures to draw bootstrap samples itself.
    other = [_row(float(v), i % 2, procedure="caudal") for i, v in enumerate(fluoro)]
    res = compare_cohorts(other + rows, Q)
    [mine] = [g for g in res["by_group"] if g["procedure"] == "lumbar-mbb"]
    assert "difference" in res["by_group"][0]["dap_total_gy_cm2"]
    assert mine["dap_total_gy_cm2"]["difference_interval_95"] == alone["difference_interval_95"]


def test_audit_outputs_show_each_cohorts_median_over_the_drl(synthetic_case, tmp_path):
    case, _ = synthetic_case
    db = tmp_path / "r.sqlite"
    runner = CliRunner()
    args = ["dose", "ingest", str(case / "rdsr.dcm"), "--db", str(db), "--procedure", "p"]
    assert runner.invoke(cli, args).exit_code == 0
    drl = tmp_path / "drl.csv"
    drl.write_text(
        "procedure,region,dap_gy_cm2,ka_r_mgy,fluoro_time_s,source\n"
        "p,unspecified,0.3,,,local 2026\n"
    )
    out = tmp_path / "a"
    res = runner.invoke(
        cli, ["dose", "audit", "--db", str(db), "--out", str(out)] + ["--drl", str(drl)]
    )
    assert res.exit_code == 0, res.output
    audit = json.loads((out / "audit.json").read_text())
    entry = audit["cohorts"]["by_group"][0]["dap_total_gy_cm2"]
    ratio = entry["median_fluoro_only"] / 0.3
    with open(out / "cohorts.csv", newline="") as fh:
        [row] = [
            r
            for r in csv.DictReader(fh)
            if r["quantity"] == "dap_total_gy_cm2" and r["unit"] == "all"
        ]
    assert float(row["fluoro_only_median_over_drl"]) == pytest.approx(ratio, rel=1e-9)
    assert row["us_guided_median_over_drl"] == ""
    assert "median / DRL" in (out / "audit.html").read_text()
    # audit.csv carries numbers to their precision, never float noise like 0.39999999999999997.
    for cell in (out / "audit.csv").read_text().replace("\n", ",").split(","):
        assert len(cell.split(".")[-1]) <= 12 or not cell.replace(".", "").isdigit(), cell

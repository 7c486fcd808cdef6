"""Per-unit corrections (DAP-meter calibration, table transmission) from a TOML file."""

from __future__ import annotations

import hashlib
import json

import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.dose import DoseInputError
from hybridfuse.dose.corrections import load_corrections
from hybridfuse.testdata import sample_case

GOOD = """
[[unit]]
manufacturer = "other"
model = "unit"
dap_calibration = 1.5
source = "not this one"

[[unit]]
manufacturer = "HybridFuse"
model = "synthetic  phantom"
dap_calibration = 0.9
table_transmission = [0.66, 0.76]
source = "QA 2026"
"""


def _run(tmp_path, text, *extra):
    toml = tmp_path / "corr.toml"
    toml.write_text(text, encoding="utf-8")
    case = sample_case()
    args = ["dose", "report", "--rdsr", str(case / "rdsr.dcm"), "--corrections", str(toml)]
    return CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "out"), "--json", *extra])


def test_corrections_are_applied_to_the_matching_unit_and_shown_before_and_after(tmp_path):
    res = _run(tmp_path, GOOD, "--us", str(sample_case() / "us_clip.dcm"))
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    c = rep["corrections"]
    assert c["applied"] and c["source"] == "QA 2026" and c["dap_calibration_factor"] == 0.9
    dap = c["figures"]["dap_total_gy_cm2"]
    assert dap["recorded"] == rep["delivered"]["dap_total_gy_cm2"]  # recorded kept as is
    assert dap["calibrated"] == pytest.approx(0.9 * dap["recorded"])
    assert dap["after_table"] == pytest.approx(
        [0.9 * 0.66 * dap["recorded"], 0.9 * 0.76 * dap["recorded"]]
    )
    saved = rep["saved"]["counterfactual"]["point"]["dap_gy_cm2"]
    assert c["figures"]["saved_dap_gy_cm2"]["calibrated"] == pytest.approx(0.9 * saved)
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert '<section id="corrections"' in page and "recorded (before)" in page
    assert "calibrated (after)" in page and "QA 2026" in page


def test_a_unit_without_an_entry_is_flagged_and_left_uncorrected(tmp_path):
    res = _run(tmp_path, GOOD.split('[[unit]]\nmanufacturer = "HybridFuse"')[0])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    sha = hashlib.sha256((tmp_path / "corr.toml").read_bytes()).hexdigest()
    label = f"corrections (sha256 {sha[:12]})"
    assert rep["corrections"] == {"input": label, "sha256": sha, "applied": False}
    assert f"{label}: no [[unit]] for this X-ray unit" in " ".join(rep["flags"])


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace("0.9", "5"), "dap_calibration must be a number from 0.5 to 2"),
        (GOOD.replace('source = "QA 2026"', ""), "source must be non-empty text"),
        (GOOD.replace("[0.66, 0.76]", "[0.8, 0.7]"), "table_transmission must be"),
        (GOOD + "\nextra = 1\n", "unknown key"),
        ("extra = 1\n" + GOOD, "expected one or more"),
        ("[[unit]\n", "not a readable TOML"),
    ],
)
def test_bad_corrections_are_one_line_errors_naming_the_file(tmp_path, text, message):
    path = tmp_path / "corr.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DoseInputError, match=message):
        load_corrections(path)
    res = _run(tmp_path, text)
    assert res.exit_code == 2 and "corr.toml" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()

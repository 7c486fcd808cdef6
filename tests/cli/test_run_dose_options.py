"""``run`` (and ``batch``) take the dose options of ``dose report``: --corrections, --force."""

from __future__ import annotations

import json
import shutil

import pydicom
import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.fusion.pipeline import RunConfig
from hybridfuse.testdata import sample_case
from tests.dose.rdsr_edit import shift_datetimes

FAST = '[registration]\nmetric = "none"\n[fusion]\nvideo = "gif"\ndicom = false\n'
CORRECTIONS = """[[unit]]
manufacturer = "hybridfuse"
model = "synthetic phantom"
dap_calibration = 0.9
table_transmission = [0.66, 0.76]
source = "test chamber"
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "fast.toml").write_text(FAST)
    (tmp_path / "corrections.toml").write_text(CORRECTIONS)
    return tmp_path


def _run(case, out, files, *extra):
    args = ["-q", "run", str(case), "--out", str(out), "--config", str(files / "fast.toml")]
    return CliRunner().invoke(cli, [*args, *extra])


def test_run_applies_corrections_and_shows_before_and_after(files):
    out = files / "out"
    res = _run(sample_case(), out, files, "--corrections", str(files / "corrections.toml"))
    assert res.exit_code == 0, res.output
    dose = json.loads((out / "dose" / "dose.json").read_text())
    corr = dose["corrections"]
    assert corr["applied"] and corr["dap_calibration_factor"] == 0.9
    dap = corr["figures"]["dap_total_gy_cm2"]
    assert dap["recorded"] == dose["delivered"]["dap_total_gy_cm2"]
    assert dap["calibrated"] == pytest.approx(0.9 * dap["recorded"])
    assert dap["after_table"] == pytest.approx([0.66 * dap["calibrated"], 0.76 * dap["calibrated"]])
    saved = corr["figures"]["saved_dap_gy_cm2"]
    assert saved["calibrated"] == pytest.approx(0.9 * saved["recorded"])
    page = (out / "dose" / "report.html").read_text(encoding="utf-8")
    assert '<section id="corrections"' in page and "test chamber" in page
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["dose"]["corrections"] == str(files / "corrections.toml")


def test_a_bad_corrections_file_is_refused_before_any_work(files):
    bad = files / "bad.toml"
    bad.write_text(CORRECTIONS.replace("0.9", "7"))
    res = _run(sample_case(), files / "out", files, "--corrections", str(bad))
    assert res.exit_code == 2
    assert "bad.toml" in res.output and "dap_calibration" in res.output
    assert not (files / "out").exists()


def test_run_refuses_an_impossible_ultrasound_interval_unless_forced(files):
    case = files / "case"
    shutil.copytree(sample_case(), case)
    ds = pydicom.dcmread(case / "rdsr.dcm")
    shift_datetimes(ds.ContentSequence, 1)  # the irradiation a day after the clip
    ds.save_as(case / "rdsr.dcm")
    res = _run(case, files / "a", files)
    assert res.exit_code == 2
    assert "entirely outside the procedure" in res.output and "--force" in res.output
    assert not (files / "a").exists()
    res = _run(case, files / "b", files, "--force")
    assert res.exit_code == 0, res.output
    flags = json.loads((files / "b" / "dose" / "dose.json").read_text())["flags"]
    assert any("entirely outside" in f and "computed anyway (--force)" in f for f in flags)


def test_the_toml_dose_table_reads_the_same_definitions(files):
    path = files / "c.toml"
    path.write_text(f'[dose]\ncorrections = "{files / "corrections.toml"}"\nforce = true\n')
    config = RunConfig.from_toml(path)
    assert config.dose.force is True
    assert config.dose.corrections == str(files / "corrections.toml")
    assert RunConfig.from_toml(path, {"force": False}).dose.force is False  # the CLI wins


def test_a_changed_corrections_file_changes_the_input_hash_batch_skips_on(files):
    from hybridfuse.fusion.pipeline import case_from_folder, input_hash

    spec = case_from_folder(sample_case())
    config = RunConfig().with_values({"corrections": str(files / "corrections.toml")})
    before = input_hash(spec, config)
    assert input_hash(spec, config) == before
    (files / "corrections.toml").write_text(CORRECTIONS.replace("0.9", "0.8"))
    assert input_hash(spec, config) != before  # same name, new content: not up to date


def test_corrections_without_an_rdsr_in_the_case_are_refused_before_any_work(files):
    case = files / "case"
    shutil.copytree(sample_case(), case)
    (case / "rdsr.dcm").unlink()  # dose would come from the image tags, which name no unit
    res = _run(case, files / "out", files, "--corrections", str(files / "corrections.toml"))
    assert res.exit_code == 2, res.output
    assert "--corrections needs a dose SR" in res.output
    assert not (files / "out").exists()

"""The command line: synth and info end to end, exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from tests.conftest import REALDATA


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert "hybridfuse" in result.output


def test_synth_writes_a_case_and_refuses_to_overwrite(runner, synth_si_joint, tmp_path):
    shared, result = synth_si_joint  # shared with the SI-joint registration tests
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["procedure"] == "si-joint"
    assert {"rdsr.dcm", "truth.json", "us_clip.dcm"} <= set(summary["files"])
    assert summary["well_posed_pairs"] == 4
    # On a copy: a broken guard must not overwrite the case other tests read.
    out = tmp_path / shared.name
    shutil.copytree(shared, out)
    again = runner.invoke(cli, ["synth", "--out", str(out)])
    assert again.exit_code == 2
    assert "exists; pass --overwrite" in again.output
    assert not list(out.parent.glob(".case.partial-*"))


def test_info_describes_images_and_dose_reports(runner, synthetic_case):
    case, truth = synthetic_case
    files = [str(case / f) for f in (*truth["files"]["fluoro"], "us_clip.dcm", "rdsr.dcm")]
    result = runner.invoke(cli, ["info", "--json", *files])
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    assert [d["kind"] for d in described] == ["image"] * 4 + ["structured report"]
    fluoro = described[0]
    assert fluoro["image"]["spacing_source"].startswith("ImagerPixelSpacing (0018,1164)")
    assert fluoro["dose_tags"]["dap_dgy_cm2"] > 0
    us = described[3]["image"]
    assert us["pixel_spacing_mm_row_col"] == [0.15, 0.15]
    assert "SequenceOfUltrasoundRegions" in us["spacing_source"]
    rep = described[4]["dose_report"]
    assert rep["totals"]["dap_total_gy_cm2"] == pytest.approx(
        truth["dose"]["delivered"]["dap_total_gy_cm2"], rel=1e-6
    )


def test_info_text_output_names_tags(runner, synthetic_case):
    case, truth = synthetic_case
    result = runner.invoke(cli, ["info", str(case / truth["files"]["fluoro"][0])])
    assert result.exit_code == 0
    assert "ImagerPixelSpacing (0018,1164)" in result.output
    assert "CenterOfCircularShutter" in result.output


def test_bad_file_gets_one_line_and_exit_2_while_others_are_still_reported(
    runner, tmp_path, synthetic_case
):
    case, _ = synthetic_case
    bad = tmp_path / "junk.dcm"
    bad.write_bytes(b"\x00" * 300)
    result = runner.invoke(cli, ["info", str(bad), str(case / "us_clip.dcm")])
    assert result.exit_code == 2
    errors = [ln for ln in result.output.splitlines() if ln.startswith("hybridfuse: error:")]
    assert len(errors) == 1 and "junk.dcm" in errors[0]
    assert "Traceback" not in result.output
    assert "us_clip.dcm" in result.output  # the good file is still described


def test_missing_file_is_bad_input(runner, tmp_path):
    result = runner.invoke(cli, ["info", str(tmp_path / "none.dcm")])
    assert result.exit_code == 2
    assert "no such file" in result.output


@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata absent")
def test_info_reads_every_real_file(runner):
    files = sorted(str(p) for p in REALDATA.rglob("*.dcm"))
    result = runner.invoke(cli, ["info", "--json", *files])
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    assert len(described) == len(files)
    assert all("error" not in d for d in described)


def _register_args(*extra, landmarks=True):
    """``hybridfuse register`` on the sample case's first lateral pair, plus ``extra``."""
    from hybridfuse.testdata import sample_case

    case = sample_case()
    args = [
        "register",
        "--fixed",
        str(case / "fluoro_run02_confirm_lateral.dcm"),
        "--moving",
        str(case / "us_clip.dcm"),
        "--moving-frame",
        "6",
    ]
    if landmarks:
        args += ["--landmarks", str(case / "landmarks" / "run02_confirm_lateral_f00_us06.csv")]
    return [*args, *extra]


@pytest.mark.parametrize("metric", ["mi", "ngf", "lc2"])
def test_register_writes_a_transform_with_its_tre(runner, tmp_path, metric):
    from hybridfuse.testdata import sample_case

    out = tmp_path / "reg"
    truth = str(sample_case() / "truth.json")
    args = _register_args("--metric", metric, "--truth", truth, "--out", str(out), "--json")
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "transform.json").read_text())
    assert record["metric"] == metric
    assert record["schema"] == "hybridfuse.transform/1"
    # Landmarks pin the answer; the intensity term may refine it but never drag it.
    assert record["tre"]["median_mm"] < 0.5
    assert record["quality"]["intensity_refinement"].startswith(("accepted", "rejected"))


def test_register_from_moments_needs_no_start(runner, tmp_path):
    from hybridfuse.testdata import sample_case

    out = tmp_path / "reg"
    truth = str(sample_case() / "truth.json")
    args = _register_args("--init", "moments", "--truth", truth, "--out", str(out), landmarks=False)
    refused = runner.invoke(cli, args)
    assert refused.exit_code == 2
    assert "--plane-faces-detector" in refused.output.strip().splitlines()[-1]
    assert not out.exists()
    result = runner.invoke(cli, [*args, "--plane-faces-detector"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "transform.json").read_text())
    assert record["tre"]["median_mm"] < 2.0
    assert record["options"]["search_translation_mm"] > 50.0


def test_register_records_the_magnification_check_it_ran_with(runner, tmp_path):
    for value, recorded in (("0.05", 0.05), ("0", None)):
        out = tmp_path / f"reg{value}"
        args = _register_args("--metric", "none", "--scale-tolerance", value, "--out", str(out))
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        # With landmarks the tolerance does nothing, and the command says so.
        assert "scale_tolerance set but not used" in result.output
        record = json.loads((out / "transform.json").read_text())
        assert record["options"]["scale_tolerance"] == recorded
        # With landmarks the ratio is reported, not enforced: the truth's is near 1.
        assert abs(record["quality"]["scale_ratio_to_calibration"] - 1) < 0.08
    bad = runner.invoke(cli, _register_args("--scale-tolerance", "-1", "--out", str(tmp_path)))
    assert bad.exit_code == 2


def test_a_registration_that_cannot_start_names_both_files(runner, tmp_path):
    args = _register_args("--init", "geometry", "--out", str(tmp_path / "reg"), landmarks=False)
    result = runner.invoke(cli, args)
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert "us_clip.dcm (frame 6) onto" in line
    assert "fluoro_run02_confirm_lateral.dcm (frame 0)" in line
    assert "needs a starting transform" in line
    assert not (tmp_path / "reg").exists()


def test_register_names_a_missing_landmark_file(runner, tmp_path):
    from hybridfuse.testdata import sample_case

    case = sample_case()
    missing = tmp_path / "nope.csv"
    result = runner.invoke(
        cli,
        [
            "register",
            "--fixed",
            str(case / "fluoro_run02_confirm_lateral.dcm"),
            "--moving",
            str(case / "us_clip.dcm"),
            "--landmarks",
            str(missing),
            "--out",
            str(tmp_path / "reg"),
        ],
    )
    assert result.exit_code == 2
    assert "nope.csv" in result.output
    assert not (tmp_path / "reg" / "transform.json").exists()


def test_uid_map_written_only_when_asked(runner, tmp_path):
    import csv

    import pydicom

    from hybridfuse.testdata import sample_case

    reg = tmp_path / "reg"
    args = _register_args("--metric", "none", "--model", "affine", "--out", str(reg))
    assert runner.invoke(cli, args).exit_code == 0
    case = sample_case()
    fixed = case / "fluoro_run02_confirm_lateral.dcm"
    fuse = ["fuse", "--fixed", str(fixed), "--moving", str(case / "us_clip.dcm")]
    fuse += ["--transform", str(reg / "transform.json"), "--video", "none", "--frames", "0"]
    plain = runner.invoke(cli, [*fuse, "--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    assert not (tmp_path / "plain" / "uid_map.csv").exists()
    mapped = runner.invoke(
        cli, [*fuse, "--registration-dicom", "--uid-map", "--out", str(tmp_path / "m")]
    )
    assert mapped.exit_code == 0, mapped.output
    with open(tmp_path / "m" / "uid_map.csv", newline="") as fh:
        rows = {r["source_uid"]: r["deidentified_uid"] for r in csv.DictReader(fh)}
    study = pydicom.dcmread(fixed, stop_before_pixels=True).StudyInstanceUID
    sc = pydicom.dcmread(tmp_path / "m" / "fused_sc.dcm", stop_before_pixels=True)
    assert rows[study] == sc.StudyInstanceUID != study
    assert "uid_map.csv" in json.loads((tmp_path / "m" / "fuse.json").read_text())["outputs"]
    with_phi = runner.invoke(
        cli, [*fuse, "--uid-map", "--include-phi", "--out", str(tmp_path / "p")]
    )
    assert with_phi.exit_code == 0, with_phi.output
    assert not (tmp_path / "p" / "uid_map.csv").exists()


def test_run_overwrite_never_replaces_a_synthetic_case(runner, tmp_path, synth_si_joint):
    from hybridfuse.testdata import sample_case

    synth = tmp_path / "S"
    assert synth_si_joint[1].exit_code == 0
    shutil.copytree(synth_si_joint[0], synth)  # what synth wrote, marker and all
    before = sorted(p.name for p in synth.iterdir())
    r = runner.invoke(cli, ["run", str(sample_case()), "--out", str(synth), "--overwrite"])
    assert r.exit_code == 2 and "holds hybridfuse synth data" in r.output
    assert sorted(p.name for p in synth.iterdir()) == before


def test_running_out_of_memory_is_said_plainly(runner, monkeypatch, tmp_path):
    from hybridfuse import fusion

    def exhausted(*_a, **_k):
        raise MemoryError("Unable to allocate 1.86 GiB")

    monkeypatch.setattr(fusion, "read_image", exhausted)
    r = runner.invoke(cli, _register_args("--metric", "none", "--out", str(tmp_path / "r")))
    assert r.exit_code == 1
    assert r.output.splitlines()[-1] == (
        "hybridfuse: error: not enough memory for this input (Unable to allocate 1.86 GiB); "
        "see docs/hardening.md"
    )

"""The fluoroscopy and the ultrasound must belong together (issue #16 item 4).

Each test changes one attribute of a copy of the sample case's ultrasound, so what it
claims (that attribute is checked, said, recorded) is all that differs from the sample
pair, which belongs together.
"""

from __future__ import annotations

import json
import shutil

import pydicom
import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.fusion import read_image
from hybridfuse.fusion.belonging import MismatchError, check_belonging
from hybridfuse.fusion.pair import PairOptions
from hybridfuse.fusion.pipeline import RunConfig, case_from_folder, run_case
from hybridfuse.testdata import sample_case

FLUORO = "fluoro_run02_confirm_lateral.dcm"


@pytest.fixture(scope="module")
def fixed():
    return read_image(sample_case() / FLUORO, decode=False)


def _moving(tmp_path, **changes):
    """A copy of the sample ultrasound with ``changes`` (keyword: value; None deletes)."""
    ds = pydicom.dcmread(sample_case() / "us_clip.dcm")
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    path = tmp_path / "us_changed.dcm"
    ds.save_as(path)
    return path


def test_the_sample_pair_belongs_together(fixed):
    moving = read_image(sample_case() / "us_clip.dcm", decode=False)
    record = check_belonging(fixed, moving).to_dict()
    assert record["checks"] == {
        "patient_id": "same",
        "patient_name": "same",
        "study_instance_uid": "same",
        "acquisition_gap": "within",
    }
    assert record["acquisition_gap_s"] == pytest.approx(80.5)  # 09:02:32 vs 09:03:52.5
    assert record["overridden"] == [] and record["allow_mismatch"] is False


def test_a_name_written_in_other_case_is_the_same_name(fixed, tmp_path):
    # Units differ in case ("Phantom^Synthetic" against "PHANTOM^SYNTHETIC"); refusing
    # them trained users to pass --allow-mismatch, which turns every check off.
    name = str(pydicom.dcmread(sample_case() / "us_clip.dcm").PatientName)
    moving = read_image(_moving(tmp_path, PatientName=name.swapcase()), decode=False)
    assert name.swapcase() != name
    assert check_belonging(fixed, moving).to_dict()["checks"]["patient_name"] == "same"


@pytest.mark.parametrize(
    ("keyword", "value", "said"),
    [
        ("PatientID", "OTHER-42", "PatientID (0010,0020) differs"),
        ("PatientName", "OTHER^PERSON", "PatientName (0010,0010) differs"),
        ("StudyInstanceUID", "1.2.3.4.5", "StudyInstanceUID (0020,000D) differs"),
    ],
)
def test_a_different_patient_or_study_is_refused_without_its_value(
    fixed, tmp_path, keyword, value, said
):
    moving = read_image(_moving(tmp_path, **{keyword: value}), decode=False)
    with pytest.raises(MismatchError) as err:
        check_belonging(fixed, moving)
    message = str(err.value)
    assert said in message and "--allow-mismatch" in message
    assert FLUORO in message and "us_changed.dcm" in message  # names both files
    assert value not in message  # no PHI in the line without --include-phi
    assert "\n" not in message
    with pytest.raises(MismatchError, match=value.replace("^", r"\^")):
        check_belonging(fixed, moving, include_phi=True)


def test_allow_mismatch_goes_on_and_records_what_it_overrode(fixed, tmp_path):
    moving = read_image(_moving(tmp_path, PatientID="OTHER-42"), decode=False)
    record = check_belonging(fixed, moving, PairOptions(allow_mismatch=True)).to_dict()
    assert record["checks"]["patient_id"] == "differs"
    assert record["overridden"] == ["patient_id"] and record["allow_mismatch"] is True


def test_a_missing_value_is_not_checked_not_passed(fixed, tmp_path):
    moving = read_image(_moving(tmp_path, PatientID=None, PatientName=""), decode=False)
    checks = check_belonging(fixed, moving).checks
    assert checks["patient_id"] == "not checked: missing in moving"
    assert checks["patient_name"] == "not checked: missing in moving"
    assert checks["study_instance_uid"] == "same"


def test_acquisitions_further_apart_than_the_gap_are_refused(fixed, tmp_path):
    # Two hours after the fluoroscopy (09:03:52.5): beyond the default hour, within three.
    path = _moving(tmp_path, AcquisitionDateTime="20260115110352.500000")
    moving = read_image(path, decode=False)
    with pytest.raises(MismatchError, match=r"acquired 2 h apart .*--max-acquisition-gap-s 3600"):
        check_belonging(fixed, moving)
    record = check_belonging(fixed, moving, PairOptions(max_acquisition_gap_s=3 * 3600))
    assert record.checks["acquisition_gap"] == "within"
    assert record.acquisition_gap_s == pytest.approx(7200)


def test_no_acquisition_time_is_not_checked(fixed, tmp_path):
    path = _moving(
        tmp_path,
        **{
            k: None
            for k in ("AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime", "ContentDate")
        },
        ContentTime=None,
        SeriesTime=None,
        StudyTime=None,
    )
    record = check_belonging(fixed, read_image(path, decode=False))
    assert record.checks["acquisition_gap"].startswith("not checked")
    assert record.acquisition_gap_s is None


def test_register_refuses_with_exit_2_and_records_an_override(tmp_path):
    runner = CliRunner()
    case = sample_case()
    moving = _moving(tmp_path, PatientID="OTHER-42")
    args = [
        "register",
        "--fixed",
        str(case / FLUORO),
        "--moving",
        str(moving),
        "--moving-frame",
        "6",
        "--landmarks",
        str(case / "landmarks" / "run02_confirm_lateral_f00_us06.csv"),
        "--metric",
        "none",
        "--out",
        str(tmp_path / "reg"),
    ]
    refused = runner.invoke(cli, args)
    assert refused.exit_code == 2, refused.output
    assert "do not belong together: PatientID (0010,0020) differs" in refused.output
    assert not (tmp_path / "reg").exists()  # nothing half-written
    allowed = runner.invoke(cli, [*args, "--allow-mismatch"])
    assert allowed.exit_code == 0, allowed.output
    record = json.loads((tmp_path / "reg" / "transform.json").read_text())
    assert record["belonging"]["overridden"] == ["patient_id"]


def test_run_refuses_a_case_whose_ultrasound_is_of_another_study(tmp_path):
    case = tmp_path / "case"
    shutil.copytree(sample_case(), case)
    ds = pydicom.dcmread(case / "us_clip.dcm")
    ds.StudyInstanceUID = "1.2.3.4.5"
    ds.save_as(case / "us_clip.dcm")
    with pytest.raises(MismatchError, match="StudyInstanceUID .* differs"):
        run_case(case_from_folder(case), tmp_path / "out", RunConfig())
    assert not (tmp_path / "out").exists()


def test_batch_fails_only_the_mismatched_case_and_records_an_allowed_one(tmp_path):
    from hybridfuse.fusion.batch import read_manifest, run_batch

    cases = tmp_path / "cases"
    shutil.copytree(sample_case(), cases / "other")
    ds = pydicom.dcmread(cases / "other" / "us_clip.dcm")
    ds.PatientID = "OTHER-42"
    ds.save_as(cases / "other" / "us_clip.dcm")
    fast = RunConfig().with_values({"metric": None, "video": "none", "dicom": False})
    specs, problems = read_manifest(cases)
    rows = run_batch(specs, tmp_path / "out", fast, problems=problems)
    assert [r["status"] for r in rows] == ["failed"]
    assert "do not belong together: PatientID (0010,0020) differs" in rows[0]["message"]
    allowed = fast.with_values({"allow_mismatch": True})
    rows = run_batch(specs, tmp_path / "out2", allowed, problems=problems)
    assert [r["status"] for r in rows] == ["ok"], rows
    summary = json.loads((tmp_path / "out2" / "other" / "summary.json").read_text())
    assert summary["config"]["pair"]["allow_mismatch"] is True
    assert {tuple(b["overridden"]) for b in summary["belonging"]} == {("patient_id",)}
    fused = json.loads((tmp_path / "out2" / "other" / "fusion" / "fuse.json").read_text())
    assert fused["belonging"]["overridden"] == ["patient_id"]


def test_fuse_refuses_before_writing_and_records_an_allowed_mismatch(tmp_path):
    # The truth transform of the sample's first lateral pair, as a minimal transform.json.
    truth = json.loads((sample_case() / "truth.json").read_text())
    pair = next(p for p in truth["pairs"] if p["fluoro_file"] == FLUORO and not p["edge_on"])
    transform = tmp_path / "transform.json"
    transform.write_text(
        json.dumps(
            {
                "schema": "hybridfuse.transform/1",
                "moving_to_fixed_pixel": pair["moving_to_fixed_pixel"],
                "moving": {"frame": pair["us_frame"]},
            }
        )
    )
    moving = _moving(tmp_path, AcquisitionDateTime="20260116090232")  # the next day
    args = [
        "fuse", "--fixed", str(sample_case() / FLUORO), "--moving", str(moving),
        "--transform", str(transform), "--out", str(tmp_path / "out"),
        "--frames", "0", "--video", "none", "--no-dicom",
    ]  # fmt: skip
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and "acquired 24 h apart" in refused.output
    assert not (tmp_path / "out").exists()
    allowed = CliRunner().invoke(cli, [*args, "--allow-mismatch"])
    assert allowed.exit_code == 0, allowed.output
    record = json.loads((tmp_path / "out" / "fuse.json").read_text())["belonging"]
    assert record["overridden"] == ["acquisition_gap"]
    assert record["checks"]["patient_id"] == "same"

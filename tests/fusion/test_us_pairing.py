"""Each fluoroscopy run paired with the ultrasound file acquired with it (session 20).

One clip (the first concurrent with any run) was taken for every run: runs beside other
clips found no frame within 0.5 s and were skipped, or were fused to a far-off clip.
"""

from __future__ import annotations

import json

import pydicom
import pytest
from click.testing import CliRunner

from hybridfuse._safeio import sha256_file
from hybridfuse.cli.main import cli
from hybridfuse.fusion.belonging import MismatchError
from hybridfuse.fusion.pipeline import (
    RunConfig,
    _read_pair,
    case_from_folder,
    input_records,
    run_case,
)
from tests.sample_rewrite import clip_beside, three_run_case

FAST = {"metric": None, "video": "none", "dicom": False, "include_phi": True}
#: First by name is run03's clip: the one every run used to be paired with.
CLIPS = {
    "us_a.dcm": "run03_confirm_ap",
    "us_b.dcm": "run01_scout_lateral",
    "us_c.dcm": "run02_confirm_lateral",
}


def _pairing(case):
    spec = case_from_folder(case)
    records = input_records(spec, {p: sha256_file(p) for p in spec.files()}, include_phi=True)
    config = RunConfig().with_values({"include_phi": True})
    _, pairing, belonging = _read_pair(spec, config, records)
    return pairing, belonging


def test_each_run_is_paired_with_the_clip_acquired_with_it(tmp_path):
    three_run_case(tmp_path / "case", CLIPS)
    pairing, belonging = _pairing(tmp_path / "case")
    got = [p.ultrasound.rsplit("/", 1)[-1] for p in pairing]
    assert got == ["us_b.dcm", "us_c.dcm", "us_a.dcm"]  # runs 01, 02, 03
    assert [p.frames_within_limit for p in pairing] == [2, 4, 2]
    assert [b["moving_file"] for b in belonging] == got  # each checked with its own clip


def test_a_run_without_a_concurrent_clip_is_reported_not_fused(tmp_path):
    case = tmp_path / "case"
    three_run_case(case, {n: r for n, r in CLIPS.items() if n != "us_b.dcm"})
    config = RunConfig().with_values(FAST)
    summary = run_case(case_from_folder(case), tmp_path / "out", config)
    reg = summary["registration"]
    assert (reg["fluoroscopy"], reg["ultrasound"]) == (
        "fluoro_run02_confirm_lateral.dcm",
        "us_c.dcm",
    )
    assert reg["runs_not_used"] == [
        "fluoro_run01_scout_lateral.dcm: no ultrasound file within 0.5 s of it"
    ]
    first = summary["ultrasound_pairing"][0]
    assert first["ultrasound"] is None and first["nearest_s"] == pytest.approx(217.5)  # to us_c
    transform = json.loads((tmp_path / "out/registration/transform.json").read_text())
    assert transform["moving"]["file"] == "us_c.dcm"
    index = (tmp_path / "out/index.html").read_text(encoding="utf-8")
    assert "No ultrasound file has a frame within 0.5 s of fluoro_run01_scout_lateral.dcm" in index


def test_run_prints_the_run_without_a_clip(tmp_path):
    case = tmp_path / "case"
    three_run_case(case, {"us_c.dcm": "run02_confirm_lateral", "us_d.dcm": "run03_confirm_ap"})
    args = ["run", str(case), "--out", str(tmp_path / "out"), "--metric", "none"]
    res = CliRunner().invoke(cli, [*args, "--video", "none", "--no-dicom"])
    assert res.exit_code == 0, res.output
    assert "(sha256 " in res.output  # named by label: the folder may name the patient
    unpaired = [ln for ln in res.output.splitlines() if "no ultrasound file within 0.5 s" in ln]
    assert len(unpaired) == 1 and unpaired[0].strip().startswith("fluoroscopy 1 (sha256")


def test_a_clip_no_run_is_paired_with_is_still_checked_for_belonging(tmp_path):
    case = tmp_path / "case"
    starts = three_run_case(case, CLIPS)
    other = clip_beside(case, "us_z.dcm", "run02_confirm_lateral", starts["run02_confirm_lateral"])
    ds = pydicom.dcmread(other)
    ds.PatientID = "SOMEONE-ELSE"
    ds.AcquisitionDateTime = "20260115110000"  # beside no run
    ds.save_as(other)
    with pytest.raises(MismatchError, match="PatientID"):
        _pairing(case)


def test_a_batch_row_names_the_runs_without_a_clip():
    from hybridfuse.fusion.batch import _row

    summary = {"ultrasound_pairing": [{"fluoroscopy": "run 1", "ultrasound": None}]}
    assert _row("c1", "ok", 1.0, summary)["message"] == "no ultrasound file within 0.5 s of: run 1"
    assert _row("c1", "ok", 1.0, {})["message"] == ""


def test_files_without_acquisition_times_fall_back_to_the_first_such_file():
    # Without times there is nothing to pair by: the first file without them, as before.
    import datetime as dt
    from types import SimpleNamespace

    import numpy as np

    from hybridfuse.fusion.us_pairing import pair_runs

    def image(when, n=2):
        return SimpleNamespace(acquisition_datetime=when, frame_times_s=np.arange(n), n_frames=n)

    run = image(dt.datetime(2026, 1, 15, 10))
    far = image(dt.datetime(2026, 1, 15, 11))  # timed, an hour away
    heads = {"a.dcm": far, "b.dcm": image(None), "c.dcm": image(None)}
    [pair] = pair_runs(list(heads), [run], heads)
    assert pair.ultrasound == "b.dcm" and "no acquisition times" in pair.how
    [pair] = pair_runs(["a.dcm", "z.dcm"], [run], {"a.dcm": far, "z.dcm": far})
    assert pair.ultrasound is None and pair.nearest_s == pytest.approx(3599.0)

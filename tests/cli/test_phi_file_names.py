"""Inputs named after the patient: register, fuse, run and batch outputs name them by sha256.

Sites name files and folders like ``SMITH_JOHN_20261130``; without --include-phi no byte
these commands write carries that name or date (the inputs are labelled ``fluoroscopy
(sha256 <12 hex>)``); with it the names are there. Records from before labels (inputs
by ``file``) still read back.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil

import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.testdata import sample_case

NAME = "SMITH_JOHN_20261130"
#: Any one of these in an output is patient data.
PHI = (b"SMITH", b"JOHN", b"20261130", b"2026-11-30")
FAST = ["--metric", "none", "--video", "none", "--no-dicom"]
LANDMARKS = "landmarks/run02_confirm_lateral_f00_us06.csv"


def _invoke(*args) -> None:
    res = CliRunner().invoke(cli, [*map(str, args)])
    assert res.exit_code == 0, res.output


def _written(folder) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def _leaks(folder) -> list[bytes]:
    written = _written(folder)
    return [w for w in PHI if w in written]


def _label(path, role: str) -> str:
    return f"{role} (sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:12]})"


@pytest.fixture
def named(tmp_path):
    """The sample's lateral run, clip, RDSR and landmarks in a folder named after a patient."""
    case, folder = sample_case(), tmp_path / NAME
    folder.mkdir()
    files = {
        "fluoro": folder / f"{NAME}_run02.dcm",
        "us": folder / f"{NAME}_us.dcm",
        "rdsr": folder / f"{NAME}.dcm",
        "landmarks": folder / f"{NAME}.csv",  # the case's one CSV: run finds it
    }
    shutil.copy(case / "fluoro_run02_confirm_lateral.dcm", files["fluoro"])
    shutil.copy(case / "us_clip.dcm", files["us"])
    shutil.copy(case / "rdsr.dcm", files["rdsr"])
    shutil.copy(case / LANDMARKS, files["landmarks"])
    files["folder"] = folder
    return files


def _register(named, out, *extra):
    _invoke(
        "register", "--fixed", named["fluoro"], "--moving", named["us"], "--moving-frame", "6",
        "--landmarks", named["landmarks"], "--metric", "none", "--out", out, *extra,
    )  # fmt: skip


@pytest.mark.parametrize("phi", [False, True])
def test_register_names_its_inputs_by_sha256_unless_asked(named, tmp_path, phi):
    out = tmp_path / "reg"
    _register(named, out, *(["--include-phi"] if phi else []))
    record = json.loads((out / "transform.json").read_text(encoding="utf-8"))
    fixed = _label(named["fluoro"], "fluoroscopy")
    assert record["fixed"]["input"] == fixed and record["belonging"]["fixed"] == fixed
    assert record["moving"]["input"] == _label(named["us"], "ultrasound")
    if phi:
        assert record["fixed"]["file"] == named["fluoro"].name
        assert record["belonging"]["moving_file"] == named["us"].name
        assert record["moving"]["path"] == str(named["us"])
    else:
        assert _leaks(out) == []


@pytest.mark.parametrize("phi", [False, True])
def test_fuse_names_its_inputs_and_transform_by_sha256_unless_asked(named, tmp_path, phi):
    _register(named, tmp_path / "reg")
    transform = named["folder"] / f"{NAME}_transform.json"
    shutil.copy(tmp_path / "reg" / "transform.json", transform)
    out = tmp_path / "fused"
    _invoke(
        "fuse", "--fixed", named["fluoro"], "--moving", named["us"], "--transform", transform,
        "--frames", "0", "--video", "none", "--no-dicom", "--out", out,
        *(["--include-phi"] if phi else []),
    )  # fmt: skip
    inputs = json.loads((out / "fuse.json").read_text(encoding="utf-8"))["inputs"]
    assert inputs["transform"]["input"] == _label(transform, "transform")
    assert inputs["fixed"]["input"] == _label(named["fluoro"], "fluoroscopy")
    if phi:
        assert inputs["transform"]["file"] == transform.name
        assert NAME.encode() in (out / "fuse.json").read_bytes()
    else:
        assert _leaks(out) == []  # fuse.json, the viewer and the PNGs


@pytest.mark.parametrize("phi", [False, True])
def test_run_names_its_inputs_and_case_by_sha256_unless_asked(named, tmp_path, phi):
    out = tmp_path / "out"
    _invoke("run", named["folder"], "--out", out, *FAST, *(["--include-phi"] if phi else []))
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    run = _label(named["fluoro"], "fluoroscopy 1")
    assert [i["input"] for i in summary["inputs"]] == [
        run,
        _label(named["us"], "ultrasound 1"),
        _label(named["rdsr"], "RDSR"),
        _label(named["landmarks"], "landmarks"),
    ]
    assert summary["belonging"][0]["fixed"] == run
    index = (out / "index.html").read_text(encoding="utf-8")
    if phi:
        assert summary["case_id"] == NAME and f"Case {NAME}" in index
        assert summary["registration"]["fluoroscopy"] == named["fluoro"].name
        assert summary["inputs"][0]["path"] == str(named["fluoro"])
    else:
        fused = json.loads((out / "fusion" / "fuse.json").read_text(encoding="utf-8"))
        assert summary["case_id"] == fused["case"]  # the study's pseudonym, CASE-<10 hex>
        assert summary["registration"]["fluoroscopy"] == run and run in index
        assert _leaks(out) == []  # summary, index, transform, fusion, dose


@pytest.mark.parametrize("phi", [False, True])
def test_a_run_not_used_is_named_by_its_label_unless_asked(named, tmp_path, monkeypatch, phi):
    """summary.json's runs_not_used names a run by label; the terminal by its file."""
    import hybridfuse.fusion.coregister as coregister

    first = named["folder"] / f"{NAME}_run01.dcm"  # tried first; no clip frame within 0.5 s
    shutil.copy(sample_case() / "fluoro_run01_scout_lateral.dcm", first)
    out = tmp_path / "out"
    _invoke("run", named["folder"], "--out", out, *FAST, *(["--include-phi"] if phi else []))
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    [not_used] = summary["registration"]["runs_not_used"]
    shown = first.name if phi else _label(first, "fluoroscopy 1")
    assert not_used == f"{shown}: no ultrasound frame within 0.5 s"
    assert phi or _leaks(out) == []
    monkeypatch.setattr(coregister, "register_images", _refuse)
    res = CliRunner().invoke(cli, ["run", str(named["folder"]), "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and f"{named['fluoro'].name}: no start found" in res.output


def _refuse(*args, **kw):
    from hybridfuse.registration import RegistrationError

    raise RegistrationError("no start found")


def _manifest(path, named, case_id="c1"):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "fluoro", "ultrasound", "rdsr", "landmarks"])
        w.writerow([case_id, *(named[k] for k in ("fluoro", "us", "rdsr", "landmarks"))])
    return path


@pytest.mark.parametrize("phi", [False, True])
def test_batch_names_the_inputs_by_sha256_unless_asked(named, tmp_path, phi):
    manifest, out = _manifest(tmp_path / "cases.csv", named), tmp_path / "batch"
    _invoke("batch", manifest, "--out", out, *FAST, *(["--include-phi"] if phi else []))
    summary = json.loads((out / "c1" / "summary.json").read_text(encoding="utf-8"))
    assert summary["inputs"][0]["input"] == _label(named["fluoro"], "fluoroscopy 1")
    assert summary["case_id"] == "c1"  # the manifest's own name for it
    if phi:
        assert NAME.encode() in (out / "c1" / "summary.json").read_bytes()
    else:
        assert _leaks(out) == []  # every case's outputs and batch_summary.csv


def test_records_from_before_labels_still_read_back(named, tmp_path):
    """A transform.json naming inputs by ``file`` starts a registration and a fusion; a
    batch whose summary.json named them so is up to date."""
    _register(named, tmp_path / "reg")
    old = json.loads((tmp_path / "reg" / "transform.json").read_text(encoding="utf-8"))
    for side in ("fixed", "moving"):
        old[side]["file"] = old[side].pop("input") and f"{NAME}_{side}.dcm"
    old["belonging"]["fixed_file"] = old["belonging"].pop("fixed") and f"{NAME}.dcm"
    transform = tmp_path / "old.json"
    transform.write_text(json.dumps(old), encoding="utf-8")
    _register(named, tmp_path / "again", "--init-transform", transform)
    _invoke(
        "fuse", "--fixed", named["fluoro"], "--moving", named["us"], "--transform", transform,
        "--frames", "0", "--video", "none", "--no-dicom", "--out", tmp_path / "fused",
    )  # fmt: skip
    manifest, out = _manifest(tmp_path / "cases.csv", named), tmp_path / "batch"
    _invoke("batch", manifest, "--out", out, *FAST)
    path = out / "c1" / "summary.json"
    summary = json.loads(path.read_text(encoding="utf-8"))
    for item in summary["inputs"]:
        item["file"] = item.pop("input") and f"{NAME}.dcm"
    summary["registration"] = {"fluoro_file": f"{NAME}.dcm"}
    path.write_text(json.dumps(summary), encoding="utf-8")
    res = CliRunner().invoke(cli, ["batch", str(manifest), "--out", str(out), *FAST, "--json"])
    assert res.exit_code == 0, res.output
    with open(out / "batch_summary.csv", newline="", encoding="utf-8") as fh:
        assert [r["status"] for r in csv.DictReader(fh)] == ["skipped (up to date)"]

"""Input files named after the patient: written outputs name them by sha256 unless asked.

Sites name files like ``SMITH_JOHN_20261130.dcm``; without --include-phi no byte that
``dose report``, ``dose ingest`` or ``dose audit`` writes carries that name or date.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3

import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.testdata import sample_case

NAME = "SMITH_JOHN_20261130"
#: Any one of these in an output is patient data.
PHI = (b"SMITH", b"JOHN", b"20261130", b"2026-11-30")
#: A unit the sample's X-ray unit is not: its flag names the corrections file.
CORRECTIONS = """
[[unit]]
manufacturer = "other"
model = "unit"
dap_calibration = 1.5
source = "not this one"
"""


def _dose(*args) -> None:
    res = CliRunner().invoke(cli, ["dose", *map(str, args)])
    assert res.exit_code == 0, res.output


def _written(folder) -> bytes:
    """Every byte written under ``folder`` (a registry's pages included)."""
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def _named_inputs(tmp_path):
    """The sample case's RDSR, clip, images and a corrections file, named after a patient."""
    case, inp = sample_case(), tmp_path / "in"
    inp.mkdir()
    files = {"rdsr": inp / f"{NAME}.dcm", "clip": inp / f"{NAME}_us.dcm"}
    shutil.copy(case / "rdsr.dcm", files["rdsr"])
    shutil.copy(case / "us_clip.dcm", files["clip"])
    files["images"] = []
    for n, run in enumerate(sorted(case.glob("fluoro_run0*.dcm")), 1):
        files["images"].append(inp / f"{NAME}_run{n}.dcm")
        shutil.copy(run, files["images"][-1])
    files["corrections"] = inp / f"{NAME}.toml"
    files["corrections"].write_text(CORRECTIONS, encoding="utf-8")
    return files


def _label(path, role: str) -> str:
    return f"{role} (sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:12]})"


def _report(files, out, *extra):
    rdsr, clip, corr = files["rdsr"], files["clip"], files["corrections"]
    _dose("report", "--rdsr", rdsr, "--us", clip, "--corrections", corr, "--out", out, *extra)


@pytest.fixture
def named(tmp_path):
    return _named_inputs(tmp_path)


@pytest.mark.parametrize("phi", [False, True])
def test_a_dose_report_names_its_inputs_by_sha256_unless_asked(named, tmp_path, phi):
    out = tmp_path / "out"
    _report(named, out, *(["--include-phi"] if phi else []))
    written = _written(out)
    dose = json.loads((out / "dose.json").read_text(encoding="utf-8"))
    assert dose["inputs"][0]["input"] == _label(named["rdsr"], "RDSR")
    assert dose["saved"]["counterfactual"]["clips"][0]["input"] == _label(named["clip"], "clip 1")
    assert dose["corrections"]["input"] == _label(named["corrections"], "corrections")
    if phi:  # the name in the inputs, the flags and the intervals' sources
        assert dose["inputs"][0]["file"] == f"{NAME}.dcm"
        assert f"{NAME}.toml: no [[unit]]".encode() in written
        assert f"{NAME}_us.dcm: first frame to last frame".encode() in written
        assert NAME.encode() in (out / "report.html").read_bytes()
    else:
        assert not [w for w in PHI if w in written]
        assert f"{_label(named['corrections'], 'corrections')}: no [[unit]]" in dose["flags"][-1]
        assert _label(named["clip"], "clip 1").encode() in (out / "report.html").read_bytes()


@pytest.mark.parametrize("phi", [False, True])
def test_an_image_dose_report_names_its_images_by_sha256_unless_asked(named, tmp_path, phi):
    out = tmp_path / "out"
    images = [a for p in named["images"] for a in ("--images", p)]
    _dose("report", *images, "--out", out, *(["--include-phi"] if phi else []))
    written = _written(out)
    dose = json.loads((out / "dose.json").read_text(encoding="utf-8"))
    second = _label(named["images"][1], "image 2")
    assert [i["input"] for i in dose["inputs"]][1] == second
    assert dose["delivered"]["per_image"][1]["input"] == second
    if phi:
        assert dose["delivered"]["per_image"][1]["file"] == str(named["images"][1])
        assert f"{NAME}_run2.dcm".encode() in (out / "report.html").read_bytes()
    else:
        assert not [w for w in PHI if w in written]
        assert second.encode() in (out / "report.html").read_bytes()


@pytest.mark.parametrize("phi", [False, True])
def test_the_registry_keeps_an_rdsr_by_sha256_unless_ingested_with_phi(named, tmp_path, phi):
    reg = tmp_path / "reg"
    reg.mkdir()
    args = ["ingest", named["rdsr"], "--db", reg / "r.sqlite", "--procedure", "mbb"]
    _dose(*args, *(["--include-phi"] if phi else []))
    con = sqlite3.connect(reg / "r.sqlite")
    [(source, stored)] = con.execute("SELECT source_path, dose_json FROM procedures").fetchall()
    con.close()
    if phi:
        assert source == f"{NAME}.dcm"
    else:
        assert source == _label(named["rdsr"], "RDSR")
        assert json.loads(stored)["inputs"][0]["input"] == source
        assert not [w for w in PHI if w in _written(reg)]


@pytest.mark.parametrize("phi", [False, True])
def test_a_dose_json_written_with_phi_is_stored_without_names_unless_asked(named, tmp_path, phi):
    out, reg = tmp_path / "out", tmp_path / "reg"
    _report(named, out, "--include-phi")  # names in inputs, flags, sources, corrections
    reg.mkdir()
    _dose(
        "ingest", out / "dose.json", "--db", reg / "r.sqlite", *(["--include-phi"] if phi else [])
    )
    con = sqlite3.connect(reg / "r.sqlite")
    [stored] = con.execute("SELECT dose_json FROM procedures").fetchone()
    con.close()
    if phi:
        assert f"{NAME}.toml: no [[unit]]" in stored and str(named["rdsr"]) not in stored
    else:
        assert not [w for w in PHI if w in _written(reg)]
        record = json.loads(stored)
        assert record["saved"]["counterfactual"]["us_guided_intervals_s"][0]["source"].startswith(
            _label(named["clip"], "clip 1") + ": first frame"
        )
        assert record["flags"][-1].startswith(_label(named["corrections"], "corrections"))


def test_a_dose_json_from_an_earlier_version_is_stored_by_label(named, tmp_path):
    """Earlier dose.json files name inputs by ``file`` only: stored by a label from the sha256."""
    out, reg = tmp_path / "out", tmp_path / "reg"
    _dose("report", "--rdsr", named["rdsr"], "--out", out)
    dose = json.loads((out / "dose.json").read_text(encoding="utf-8"))
    first = dose["inputs"][0]
    first["file"] = first.pop("input") and f"{NAME}.dcm"  # as written before labels
    dose["flags"].append(f"{NAME}.dcm: a flag naming the file")
    (out / "dose.json").write_text(json.dumps(dose), encoding="utf-8")
    shutil.copy(named["rdsr"], out)  # found beside it by its recorded name
    reg.mkdir()
    _dose("ingest", out / "dose.json", "--db", reg / "r.sqlite")
    assert not [w for w in PHI if w in _written(reg)]
    con = sqlite3.connect(reg / "r.sqlite")
    [(source, month)] = con.execute("SELECT source_path, month_relative FROM procedures").fetchall()
    con.close()
    assert source == _label(named["rdsr"], "input 1") and month is not None

"""Attacks on the hardened dose commands (fix round of issue #13): each is refused or flagged."""

from __future__ import annotations

import json
import sqlite3

import pydicom
import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.dose.pseudonym import KEY_ENV


@pytest.fixture(autouse=True)
def _own_key(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "keys" / "pseudonym.key"))


def _dose(*args):
    return CliRunner().invoke(cli, ["dose", *map(str, args)])


def _one_line_exit_2(r, *needles):
    assert r.exit_code == 2, r.output
    assert "internal error" not in r.output
    for needle in needles:
        assert needle in r.output, r.output


@pytest.fixture(scope="module")
def registry(synthetic_case, tmp_path_factory):
    case, _ = synthetic_case
    db = tmp_path_factory.mktemp("reg") / "good.db"
    r = _dose("ingest", "--db", db, case / "rdsr.dcm", "--procedure", "lumbar")
    assert r.exit_code == 0, r.output
    return db


# --- 1. data loss: a user's folder is never replaced, --out never holds an input ---------------


def test_audit_refuses_a_users_folder(registry, tmp_path):
    out = tmp_path / "ua"
    out.mkdir()
    (out / "audit.csv").write_text("MINE")
    r = _dose("audit", "--db", registry, "--out", out)
    _one_line_exit_2(r, "--overwrite")
    r = _dose("audit", "--db", registry, "--out", out, "--overwrite")
    _one_line_exit_2(r, "not an output folder of hybridfuse")
    assert (out / "audit.csv").read_text() == "MINE"
    fresh = tmp_path / "oa"
    assert _dose("audit", "--db", registry, "--out", fresh).exit_code == 0
    r = _dose("audit", "--db", registry, "--out", fresh, "--overwrite")
    assert r.exit_code == 0, r.output
    assert (fresh / ".hybridfuse-output").is_file()


def test_report_overwrite_replaces_only_its_own_folder(synthetic_case, tmp_path):
    case, _ = synthetic_case
    out = tmp_path / "ud"
    out.mkdir()
    (out / "dose.json").write_text("mydose")
    r = _dose("report", "--rdsr", case / "rdsr.dcm", "--out", out, "--overwrite")
    _one_line_exit_2(r, "not an output folder of hybridfuse")
    assert (out / "dose.json").read_text() == "mydose"


def test_out_may_not_hold_an_input(synthetic_case, registry, tmp_path):
    case, _ = synthetic_case
    r = _dose("report", "--rdsr", case / "rdsr.dcm", "--out", case)
    _one_line_exit_2(r, "contains the input")
    r = _dose("audit", "--db", registry, "--out", registry.parent, "--overwrite")
    _one_line_exit_2(r, "contains the input")
    assert not (case / "dose.json").exists() and not (registry.parent / "audit.csv").exists()


# --- 2. terminal escapes -----------------------------------------------------------------------


def test_audit_and_ingest_escape_control_characters(synthetic_case, tmp_path):
    case, _ = synthetic_case
    db = tmp_path / "r.db"
    evil = tmp_path / "e\x1b]0;pwn\x07.dcm"
    evil.write_bytes((case / "rdsr.dcm").read_bytes())
    r = _dose("ingest", "--db", db, evil, "--procedure", "p\x1b[31m$\\frac{$", "--region", "r\x07")
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "\x07" not in r.output
    r = _dose("audit", "--db", db, "--out", tmp_path / "a")
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "\x07" not in r.output and "\\x1b" in r.output


# --- 3. truncated or corrupt RDSR --------------------------------------------------------------


@pytest.mark.parametrize("keep", [0.3, 0.92, 0.97, -1])
def test_truncated_rdsr_is_refused(synthetic_case, tmp_path, keep):
    case, _ = synthetic_case
    data = (case / "rdsr.dcm").read_bytes()
    cut = tmp_path / "rt.dcm"
    cut.write_bytes(data[: int(len(data) * keep)] if keep > 0 else data[:keep])
    r = _dose("report", "--rdsr", cut, "--out", tmp_path / "o")
    _one_line_exit_2(r, "rt.dcm: truncated or corrupt dose report")
    r = _dose("ingest", "--db", tmp_path / "t.db", cut)
    _one_line_exit_2(r, "truncated or corrupt")


def test_error_while_walking_the_tree_is_an_input_error(synthetic_case, tmp_path, monkeypatch):
    import struct

    import hybridfuse.dose.rdsr

    case, _ = synthetic_case

    def broken(*a, **k):
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(hybridfuse.dose.rdsr, "_read_totals", broken)
    r = _dose("report", "--rdsr", case / "rdsr.dcm", "--out", tmp_path / "o")
    _one_line_exit_2(r, "truncated or corrupt dose report (error: unpack")


# --- 4. non-UTF-8 tables -----------------------------------------------------------------------


def test_non_utf8_tables_are_input_errors(synthetic_case, registry, tmp_path):
    case, _ = synthetic_case
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"region,coefficient_msv_per_gy_cm2,source\n\xff\xfe,1,x\n")
    r = _dose("report", "--rdsr", case / "rdsr.dcm", "--out", tmp_path / "o", "--coefficients", bad)
    _one_line_exit_2(r, "bad.csv: cannot read coefficients: not UTF-8")
    r = _dose("audit", "--db", registry, "--out", tmp_path / "a", "--drl", bad)
    _one_line_exit_2(r, "bad.csv: cannot read the DRL table: not UTF-8")
    drl = tmp_path / "drl.csv"
    drl.write_text("procedure,region,dap_gy_cm2,ka_r_mgy,fluoro_time_s,source\np,r,1e308,,,x\n")
    r = _dose("audit", "--db", registry, "--out", tmp_path / "a", "--drl", drl)
    _one_line_exit_2(r, "exceeds the plausible")


# --- 5, 8. ultrasound clips: frame times, kinds, repeats ---------------------------------------


def test_bad_clips_are_refused(synthetic_case, tmp_path):
    case, _ = synthetic_case
    ds = pydicom.dcmread(case / "us_clip.dcm")
    if "FrameTimeVector" in ds:
        del ds.FrameTimeVector
    ds.FrameTime = -1e308
    clip = tmp_path / "ft.dcm"
    ds.save_as(clip)
    rdsr = case / "rdsr.dcm"
    out = tmp_path / "o"
    _one_line_exit_2(_dose("report", "--rdsr", rdsr, "--out", out, "--us", clip), "FrameTime")
    _one_line_exit_2(
        _dose("report", "--rdsr", rdsr, "--out", out, "--us", rdsr), "not an ultrasound image"
    )
    us = case / "us_clip.dcm"
    _one_line_exit_2(
        _dose("report", "--rdsr", rdsr, "--out", out, "--us", us, "--us", us), "given twice"
    )
    _one_line_exit_2(
        _dose("report", "--rdsr", rdsr, "--out", out, "--us-interval", "0,50000"),
        "beyond the procedure",
    )
    _one_line_exit_2(
        _dose(
            "report",
            "--rdsr",
            rdsr,
            "--out",
            out,
            "--us-interval",
            "0,30",
            "--guided-phase",
            "0,50000",
        ),
        "guided phase 0-50000 s lies beyond",
    )
    _one_line_exit_2(
        _dose(
            "report", "--rdsr", rdsr, "--out", out, "--us-interval", "0,30", "--us-interval", "0,30"
        ),
        "counted twice",
    )
    _one_line_exit_2(_dose("report", "--images", us, "--out", out), "not a projection X-ray image")
    img = sorted(case.glob("fluoro_*.dcm"))[0]
    _one_line_exit_2(
        _dose("report", "--images", img, "--images", img, "--out", out), "the same image"
    )
    _one_line_exit_2(
        _dose("report", "--rdsr", rdsr, "--out", out, "--db", rdsr), "--db gives a baseline"
    )
    assert not out.exists()


# --- 6, 7. implausible values: flagged as unknown, refused on ingest, audit survives ----------


def test_absurd_rdsr_values_are_unknown_and_flagged(synthetic_case, tmp_path):
    from hybridfuse.dose.rdsr import _walk

    case, _ = synthetic_case
    ds = pydicom.dcmread(case / "rdsr.dcm")
    n = 0
    for item in _walk(ds):
        seq = item.get("ConceptNameCodeSequence")
        if item.get("ValueType") == "NUM" and seq and seq[0].CodeValue in ("113722", "122130"):
            item.MeasuredValueSequence[0].NumericValue = "-5" if n % 2 else "1e300"
            n += 1
    bad = tmp_path / "neg.dcm"
    ds.save_as(bad)
    out = tmp_path / "o"
    r = _dose("report", "--rdsr", bad, "--out", out)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "dose.json").read_text())
    assert rep["delivered"]["dap_total_gy_cm2"] is None
    assert any("exceeds the plausible" in f for f in rep["flags"])
    assert any("negative" in f for f in rep["flags"])
    r = _dose("ingest", "--db", tmp_path / "n.db", out / "dose.json")
    assert r.exit_code == 0, r.output


def test_absurd_image_dap_is_unknown(synthetic_case, tmp_path):
    case, _ = synthetic_case
    ds = pydicom.dcmread(sorted(case.glob("fluoro_*.dcm"))[0])
    ds.ImageAndFluoroscopyAreaDoseProduct = -1e300
    img = tmp_path / "neg.dcm"
    ds.save_as(img)
    r = _dose("report", "--images", img, "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "o" / "dose.json").read_text())
    assert rep["delivered"]["dap_total_gy_cm2"] is None
    assert any("treated as unknown" in f for f in rep["flags"])


def test_ingest_bounds_and_audit_survives_extreme_stored_values(synthetic_case, registry, tmp_path):
    case, _ = synthetic_case
    out = tmp_path / "o"
    assert _dose("report", "--rdsr", case / "rdsr.dcm", "--out", out).exit_code == 0
    rep = json.loads((out / "dose.json").read_text())
    rep["delivered"]["dap_total_gy_cm2"] = 1e308
    big = tmp_path / "big.json"
    big.write_text(json.dumps(rep))
    r = _dose("ingest", "--db", tmp_path / "b.db", big)
    _one_line_exit_2(r, "exceeds the plausible")
    db = tmp_path / "old.db"
    db.write_bytes(registry.read_bytes())
    con = sqlite3.connect(db)
    con.execute("UPDATE procedures SET dap_total_gy_cm2 = 1e308, ka_r_total_mgy = 1e300")
    con.commit()
    con.close()
    r = _dose("audit", "--db", db, "--out", tmp_path / "a")
    assert r.exit_code == 0, r.output
    audit = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert any("plausible bound" in f for f in audit["flags"])

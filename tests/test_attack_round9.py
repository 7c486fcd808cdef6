"""Round-9 attacks on what landed for issues #17 and #18: each test failed before its fix."""

from __future__ import annotations

import sqlite3
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.testdata import sample_case

# --- dose registry: a file whose header reads but whose pages are damaged ---------------


def _damaged_registry(tmp_path):
    """A registry of the sample RDSR whose procedures table's root page is overwritten."""
    db = tmp_path / "r.sqlite"
    args = ["dose", "ingest", str(sample_case() / "rdsr.dcm"), "--db", str(db)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    con = sqlite3.connect(db)
    page = con.execute("SELECT rootpage FROM sqlite_master WHERE name='procedures'").fetchone()
    size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    data = bytearray(db.read_bytes())
    data[(page[0] - 1) * size : page[0] * size] = b"\xff" * size
    db.write_bytes(bytes(data))
    return db


def test_audit_of_a_damaged_registry_is_one_line_naming_it(tmp_path):
    db = _damaged_registry(tmp_path)
    out = tmp_path / "audit"
    res = CliRunner().invoke(cli, ["dose", "audit", "--db", str(db), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "internal error" not in res.output
    assert f"{db}: the registry cannot be read or written" in res.output
    assert not out.exists()


def test_ingest_into_a_damaged_registry_names_the_registry(tmp_path):
    db = _damaged_registry(tmp_path)
    rdsr = str(sample_case() / "rdsr.dcm")
    res = CliRunner().invoke(cli, ["dose", "ingest", rdsr, "--db", str(db)])
    assert res.exit_code == 2, res.output
    assert f"{db}: the registry cannot be read or written" in res.output


# --- viewer: the predicted-error outline from a hand-edited or hostile quality record ---


def _spread_landmarks():
    """Five landmarks spread over a 300 x 200 ultrasound, fixed = moving + (5, 5)."""
    points = [(10, 10), (250, 20), (30, 180), (260, 170), (150, 100)]
    return [
        {"name": f"b{i}", "x": x + 5.0, "y": y + 5.0, "mx": float(x), "my": float(y)}
        for i, (x, y) in enumerate(points)
    ]


def _shifted():
    from hybridfuse.registration.transforms import Transform

    h = np.eye(3)
    h[:2, 2] = 5.0
    return Transform(h, "projective")


def test_error_outline_with_landmarks_rejected_not_a_list_ignores_it():
    from hybridfuse.fusion.viewer_error import error_model

    mask = np.ones((200, 300), bool)
    for listed in (5, "b0b1", {"b0": 1}):
        model = error_model(_shifted(), _spread_landmarks(), {"landmarks_rejected": listed},
                            (0.2, 0.2), mask)  # fmt: skip
        assert model["kind"] == "landmarks", listed
        assert "5 landmarks" in model["text"]


def test_error_outline_with_an_overflowing_sigma_is_none_with_the_reason():
    from hybridfuse.fusion.viewer_error import error_model

    quality = {"model_selection": {"landmark_sigma_px": 1e300}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning may reach the user either
        model = error_model(_shifted(), _spread_landmarks(), quality, (0.2, 0.2),
                            np.ones((200, 300), bool))  # fmt: skip
    assert model["kind"] == "none"
    assert model["text"].startswith("no error outline: ")
    assert model["segments"] == []


# --- registration: a landmark sigma whose square overflows --------------------------------


@pytest.mark.parametrize("option", ["--landmark-sigma-px", "--intensity-sigma-px"])
def test_landmark_sigma_beyond_any_detector_is_a_usage_error(tmp_path, option):
    case = sample_case()
    args = ["register", "--fixed", str(case / "fluoro_run02_confirm_lateral.dcm")]
    args += ["--moving", str(case / "us_clip.dcm"), "--moving-frame", "6"]
    args += ["--landmarks", str(case / "landmarks" / "run02_confirm_lateral_f00_us06.csv")]
    args += [option, "1e300", "--out", str(tmp_path / "reg")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, res.output
    assert option in res.output and "maximum" in res.output
    assert not (tmp_path / "reg").exists()


# --- dose registry: held by another process past the busy timeout ------------------------


def test_a_locked_registry_is_said_locked_not_foreign(tmp_path, monkeypatch):
    from hybridfuse.dose import registry

    db = tmp_path / "r.sqlite"
    rdsr = str(sample_case() / "rdsr.dcm")
    assert CliRunner().invoke(cli, ["dose", "ingest", rdsr, "--db", str(db)]).exit_code == 0
    monkeypatch.setattr(registry, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing, as far as SQLite can tell
    try:
        for args in (
            ["dose", "audit", "--db", str(db), "--out", str(tmp_path / "audit")],
            ["dose", "ingest", rdsr, "--db", str(db)],
        ):
            res = CliRunner().invoke(cli, args)
            assert res.exit_code == 1, res.output
            assert f"{db}: the registry is locked by another process" in res.output
            assert "not a hybridfuse registry" not in res.output
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not (tmp_path / "audit").exists()


def test_error_outline_refuses_a_negative_or_huge_recorded_error():
    import json

    from hybridfuse.fusion.viewer_error import error_model

    mask = np.ones((120, 160), bool)
    for tre in (-5.0, 1e308, 2e6):
        model = error_model(_shifted(), [], {"predicted_tre_mm": tre}, (0.2, 0.2), mask)
        assert model["kind"] == "none", tre
        assert "predicted error" in model["text"] and "not from 0" in model["text"]
        json.dumps(model, allow_nan=False)  # the page's data stays valid JSON
    model = error_model(_shifted(), [], {"predicted_tre_mm": 3.0}, (0.2, 0.2), mask)
    assert model["kind"] == "uniform" and len(model["segments"]) > 0


# --- dose registry: an event clock in the first years AD ---------------------------------


def _dated(items, year: str) -> None:
    for item in items:
        if item.get("ValueType") == "DATETIME":
            item.DateTime = year + item.DateTime[4:]
        if "ContentSequence" in item:
            _dated(item.ContentSequence, year)


def test_ingest_of_events_dated_year_1_is_bad_input_not_an_overflow(tmp_path):
    import pydicom

    ds = pydicom.dcmread(sample_case() / "rdsr.dcm")
    _dated(ds.ContentSequence, "0001")
    path = tmp_path / "year1.dcm"
    ds.save_as(path)
    db = tmp_path / "r.sqlite"
    res = CliRunner().invoke(cli, ["dose", "ingest", str(path), "--db", str(db)])
    assert res.exit_code == 2, res.output
    assert "too early to be stored shifted" in res.output
    assert "out of range" not in res.output
    # One line, as every other error is written (sweep of session 18: it lacked the prefix).
    assert res.output.startswith(f"hybridfuse: error: {path}: "), res.output
    assert len(res.output.splitlines()) == 1
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM procedures").fetchone()[0] == 0
    con.close()


@pytest.mark.parametrize("year", ["1800", "9999"])
def test_an_implausible_acquisition_year_keeps_no_month_and_says_so(tmp_path, year):
    import json

    import pydicom

    ds = pydicom.dcmread(sample_case() / "rdsr.dcm")
    _dated(ds.ContentSequence, year)
    path = tmp_path / "clock.dcm"
    ds.save_as(path)
    db = tmp_path / "r.sqlite"
    args = ["dose", "ingest", str(path), "--db", str(db), "--include-phi", "--json"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "implausible: no month kept" in json.loads(res.output)[0]["status"]
    con = sqlite3.connect(db)
    row = con.execute("SELECT month_relative, month_real FROM procedures").fetchone()
    con.close()
    assert row == (None, None)

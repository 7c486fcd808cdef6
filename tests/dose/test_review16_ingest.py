"""Review of session 16: dose ingest of a dose.json (its RDSR found beside it; old records)."""

from __future__ import annotations

import json
import shutil
import sqlite3

from click.testing import CliRunner

import hybridfuse._safeio as safeio
from hybridfuse.cli.main import cli
from hybridfuse.testdata import sample_case

NAME = "SMITH_JOHN_20261130"


def _invoke(*args):
    return CliRunner().invoke(cli, [*map(str, args)])


def test_an_unreadable_file_beside_a_dose_json_does_not_stop_its_ingest(tmp_path, monkeypatch):
    """A file beside the dose.json that cannot be read (another user's, or gone between
    listing and hashing) is not its RDSR: the RDSR after it is still found."""
    case, out = sample_case(), tmp_path / "out"
    res = _invoke("dose", "report", "--rdsr", case / "rdsr.dcm", "--out", out)
    assert res.exit_code == 0, res.output
    shutil.copy(case / "rdsr.dcm", out / "zz_rdsr.dcm")  # found beside it by sha256
    (out / "aa_unreadable.dcm").write_bytes(b"x")
    real = safeio.sha256_file

    def hashing(path):
        if str(path).endswith("aa_unreadable.dcm"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(safeio, "sha256_file", hashing)
    res = _invoke("dose", "ingest", out / "dose.json", "--db", tmp_path / "r.db", "--json")
    assert res.exit_code == 0, res.output
    [row] = json.loads(res.output)
    assert row["status"] == "ingested"  # its RDSR found: not "(its RDSR not found ...)"


def test_a_clip_named_in_an_old_dose_json_is_relabelled_in_the_registry(tmp_path):
    """A dose.json from before labels named a --us clip by its file name in its intervals'
    sources and flags (it had no ``clips`` list); ingested without --include-phi the
    registry keeps no such name."""
    case, out = sample_case(), tmp_path / "out"
    clip = tmp_path / f"{NAME}_us.dcm"
    shutil.copy(case / "us_clip.dcm", clip)
    res = _invoke("dose", "report", "--rdsr", case / "rdsr.dcm", "--us", clip, "--out", out,
                  "--include-phi")  # fmt: skip
    assert res.exit_code == 0, res.output
    record = json.loads((out / "dose.json").read_text(encoding="utf-8"))
    cf = record["saved"]["counterfactual"]
    del cf["clips"]  # as written before session 16, with or without --include-phi
    record["flags"].append(f"{clip.name}: acquired 1 calendar day(s) after the first event")
    old = tmp_path / "old.json"
    old.write_text(json.dumps(record), encoding="utf-8")
    assert NAME in cf["us_guided_intervals_s"][0]["source"]
    res = _invoke("dose", "ingest", old, "--db", tmp_path / "r.db")
    assert res.exit_code == 0, res.output
    with sqlite3.connect(tmp_path / "r.db") as db:
        [(stored,)] = db.execute("SELECT dose_json FROM procedures").fetchall()
    assert NAME not in stored
    assert "clip 1: first frame to last frame" in stored


def test_a_flag_naming_an_event_by_uid_is_pseudonymised_in_the_registry(tmp_path):
    """A dose.json written with --include-phi (or before session 16) names an event by
    its UID in a flag; the registry stores event UIDs only as keyed pseudonyms."""
    from tests.dose.test_phi_uids import _twice_recorded_dap

    event_uid, _ = _twice_recorded_dap(tmp_path / "sr.dcm")
    out = tmp_path / "out"
    res = _invoke("dose", "report", "--rdsr", tmp_path / "sr.dcm", "--out", out, "--include-phi")
    assert res.exit_code == 0, res.output
    flags = json.loads((out / "dose.json").read_text(encoding="utf-8"))["flags"]
    assert f"event {event_uid}: dap_gy_cm2 recorded 2 times; first kept" in flags
    db = tmp_path / "r.db"
    res = _invoke("dose", "ingest", out / "dose.json", "--db", db)
    assert res.exit_code == 0, res.output
    with sqlite3.connect(db) as conn:
        [(stored,)] = conn.execute("SELECT dose_json FROM procedures").fetchall()
        events = {uid for (uid,) in conn.execute("SELECT event_uid FROM events")}
    assert event_uid not in stored
    # Named as the registry's events table names it (its RDSR was found at its path).
    flags = json.loads(stored)["flags"]
    [named] = [f.split(":")[0] for f in flags if "recorded 2 times" in f]
    assert named.removeprefix("event ") in events


def test_ingesting_an_rdsr_needs_no_user_key(tmp_path, monkeypatch):
    """The registry pseudonymises with its own secret: an RDSR ingests where the user's
    pseudonym key cannot be read, and what it stores names no UID and no file."""
    from tests.dose.test_phi_uids import _twice_recorded_dap

    rdsr = tmp_path / f"{NAME}.dcm"
    event_uid, sop_uid = _twice_recorded_dap(rdsr)
    monkeypatch.setenv("HYBRIDFUSE_PSEUDONYM_KEY_FILE", str(tmp_path))  # a folder: unusable
    db = tmp_path / "r.db"
    res = _invoke("dose", "ingest", rdsr, "--db", db, "--json")
    assert res.exit_code == 0, res.output
    with sqlite3.connect(db) as conn:
        [(stored, sop, source)] = conn.execute(
            "SELECT dose_json, sop_instance_uid, source_path FROM procedures"
        ).fetchall()
    assert event_uid not in stored and sop_uid not in stored and NAME not in stored + source
    assert json.loads(stored)["inputs"][0]["sop_instance_uid"] == sop  # one pseudonym

"""Hardening of the dose commands: outputs, inputs, registry, de-identification (issue #13)."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import subprocess
import sys

import pytest

from hybridfuse.dose.errors import DoseInputError
from hybridfuse.dose.pseudonym import KEY_ENV, key_path, pseudonym, user_key


@pytest.fixture(autouse=True)
def _own_key(tmp_path, monkeypatch):
    """Every test uses its own pseudonym key file, never the user's."""
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "keys" / "pseudonym.key"))


# --- keyed pseudonyms -----------------------------------------------------------------------


def test_user_key_created_private_and_stable(tmp_path):
    key = user_key()
    path = key_path()
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert user_key() == key
    assert not [p for p in path.parent.iterdir() if p.name != path.name]


def test_pseudonym_is_keyed_not_a_bare_hash():
    uid = "1.2.826.0.1.3680043.8.498.1"
    p = pseudonym(uid)
    assert p == hmac.new(user_key(), uid.encode(), hashlib.sha256).hexdigest()[:16]
    assert p not in hashlib.sha256(uid.encode()).hexdigest()
    assert pseudonym(uid, b"k" * 32) != p
    assert pseudonym(uid, b"k" * 32) == pseudonym(uid, b"k" * 32)


def test_key_location_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert key_path() == tmp_path / "cfg" / "hybridfuse" / "pseudonym.key"
    user_key()
    assert key_path().is_file()


def test_key_file_link_or_garbage_refused(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("a" * 64)
    link = tmp_path / "link.key"
    link.symlink_to(victim)
    monkeypatch.setenv(KEY_ENV, str(link))
    with pytest.raises(DoseInputError, match="link"):
        user_key()
    bad = tmp_path / "bad.key"
    bad.write_text("not hex")
    monkeypatch.setenv(KEY_ENV, str(bad))
    with pytest.raises(DoseInputError, match="not a pseudonym key"):
        user_key()


def test_concurrent_first_use_agrees_on_one_key(tmp_path):
    code = "from hybridfuse.dose.pseudonym import user_key; print(user_key().hex())"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    keys = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(keys) == 1 and len(keys.pop()) == 64


# --- helpers ----------------------------------------------------------------------------------


def _dose(*args):
    from click.testing import CliRunner

    from hybridfuse.cli.main import cli

    return CliRunner().invoke(cli, ["dose", *map(str, args)])


def _rdsr_with_protocol(case, tmp_path, text):
    """The synthetic RDSR with every event's protocol name replaced by ``text``."""
    from tests.dose.rdsr_edit import set_protocol

    return set_protocol(case / "rdsr.dcm", tmp_path / "proto.dcm", text)


# --- item 1: outputs written exclusively, together, or not at all -------------------------------


def test_planted_partial_link_is_never_followed(synthetic_case, tmp_path):
    case, _ = synthetic_case
    out = tmp_path / "out"
    assert _dose("report", "--rdsr", case / "rdsr.dcm", "--out", out).exit_code == 0
    victim = tmp_path / "victim"
    victim.write_text("precious")
    for name in ("dose.json", "events.csv", "report.html"):  # the old predictable names
        (out / f".{name}.partial").symlink_to(victim)
    r = _dose("report", "--rdsr", case / "rdsr.dcm", "--out", out, "--overwrite")
    assert r.exit_code == 0, r.output
    assert victim.read_text() == "precious"
    assert (out / "dose.json").is_file() and not (out / "dose.json").is_symlink()


def test_disk_full_leaves_no_output_and_a_rerun_proceeds(synthetic_case, tmp_path, monkeypatch):
    import errno

    import hybridfuse.dose.report as report

    case, _ = synthetic_case
    out = tmp_path / "out"
    real, calls = report._fill, []

    def fill(tmp, data):
        calls.append(tmp)
        if len(calls) == 3:  # dose.json and events.csv written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tmp, data)

    monkeypatch.setattr(report, "_fill", fill)
    r = _dose("report", "--rdsr", case / "rdsr.dcm", "--out", out)
    assert r.exit_code == 2 and "no space left" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    monkeypatch.setattr(report, "_fill", real)
    r = _dose("report", "--rdsr", case / "rdsr.dcm", "--out", out)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == [
        ".hybridfuse-output",
        "dose.json",
        "events.csv",
        "report.html",
    ]


def test_failed_rename_removes_outputs_already_renamed(tmp_path, monkeypatch):
    import hybridfuse._safeio as safeio
    from hybridfuse.dose.report import write_together

    real, seen = safeio.os.replace, []

    def replace(src, dst):
        seen.append(dst)
        if len(seen) == 2:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(safeio.os, "replace", replace)
    with pytest.raises(ValueError, match="no space left"):
        write_together(tmp_path, [("a.txt", "a"), ("b.txt", "b"), ("c.txt", "c")])
    assert list(tmp_path.iterdir()) == []


def test_read_only_out_is_bad_input(synthetic_case, tmp_path, monkeypatch):
    import errno

    import hybridfuse._safeio as safeio

    case, _ = synthetic_case

    def read_only(*a, **k):  # as a read-only file system answers (root ignores chmod)
        raise OSError(errno.EROFS, "Read-only file system")

    user_key()  # the key lives elsewhere; only --out is read-only
    monkeypatch.setattr(safeio, "_new_file", read_only)
    r = _dose("report", "--rdsr", case / "rdsr.dcm", "--out", tmp_path / "ro")
    assert r.exit_code == 2 and "read-only file system" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_out_that_is_a_file_or_link_is_bad_input(synthetic_case, tmp_path):
    case, _ = synthetic_case
    afile = tmp_path / "file"
    afile.write_text("x")
    r = _dose("report", "--rdsr", case / "rdsr.dcm", "--out", afile)
    assert r.exit_code == 2 and "not a folder" in r.output
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    r = _dose("report", "--rdsr", case / "rdsr.dcm", "--out", tmp_path / "link")
    assert r.exit_code == 2 and "symbolic link" in r.output
    assert list((tmp_path / "real").iterdir()) == []


# --- item 2: every number validated on ingest; JSON always valid --------------------------------


@pytest.fixture
def dose_json(synthetic_case, tmp_path):
    """A dose.json written by 'dose report' for the synthetic case."""
    case, _ = synthetic_case
    out = tmp_path / "rep"
    r = _dose("report", "--rdsr", case / "rdsr.dcm", "--out", out, "--procedure", "mbb")
    assert r.exit_code == 0, r.output
    return out / "dose.json"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ('"abc"', "must be a number"),
        ("NaN", "not a number JSON allows"),
        ("Infinity", "not a number JSON allows"),
        ("1e999", "must be finite"),
        ("-1.5", "must not be negative"),
        ("true", "must be a number"),
    ],
)
def test_ingest_refuses_bad_numbers_naming_file_and_field(dose_json, tmp_path, value, why):
    text = dose_json.read_text()
    key = '"dap_total_gy_cm2": '
    start = text.index(key) + len(key)
    end = text.index(",", start)
    bad = tmp_path / "bad.json"
    bad.write_text(text[:start] + value + text[end:])
    db = tmp_path / "r.sqlite"
    r = _dose("ingest", bad, "--db", db)
    assert r.exit_code == 2, r.output
    assert "bad.json" in r.output and why in r.output
    if why != "not a number JSON allows":
        assert "delivered.dap_total_gy_cm2" in r.output
    assert "ingested" not in r.output


def test_ingest_of_dose_json_then_audit_is_valid_json(dose_json, tmp_path):
    db = tmp_path / "r.sqlite"
    r = _dose("ingest", dose_json, "--db", db)
    assert r.exit_code == 0 and "ingested" in r.output, r.output
    r = _dose("audit", "--db", db, "--out", tmp_path / "a")
    assert r.exit_code == 0, r.output
    import json

    def refuse(name):
        raise AssertionError(name)

    json.loads((tmp_path / "a" / "audit.json").read_text(), parse_constant=refuse)


def test_a_non_finite_value_reaching_output_is_null_and_flagged():
    import json

    from hybridfuse.dose.report import finite_json

    flags = []
    text = finite_json({"a": [1.0, float("inf")], "flags": flags}, flags=flags)
    data = json.loads(text, parse_constant=pytest.fail)
    assert data["a"] == [1.0, None]
    assert any("$.a[1]" in f for f in data["flags"]) and flags


def test_registry_with_old_invalid_values_still_audits(dose_json, tmp_path):
    import json

    from hybridfuse.dose.audit import audit
    from hybridfuse.dose.registry import Registry

    db = tmp_path / "r.sqlite"
    assert _dose("ingest", dose_json, "--db", db).exit_code == 0
    reg = Registry(db)
    reg.db.execute("UPDATE procedures SET dap_total_gy_cm2='abc', ka_r_total_mgy=1e999")
    result = audit(reg)
    reg.close()
    assert result["groups"][0]["dap_total_gy_cm2"] == {"n": 0}
    assert "not a finite number" in result["flags"][0]
    r = _dose("audit", "--db", db, "--out", tmp_path / "a")
    assert r.exit_code == 0, r.output
    json.loads((tmp_path / "a" / "audit.json").read_text(), parse_constant=pytest.fail)


# --- item 3: CSV formula injection --------------------------------------------------------------


def test_csv_cells_are_neutralised_numbers_stay_numbers(synthetic_case, tmp_path):
    import csv

    case, _ = synthetic_case
    rdsr = _rdsr_with_protocol(case, tmp_path, '=HYPERLINK("http://x")')
    out = tmp_path / "out"
    r = _dose("report", "--rdsr", rdsr, "--out", out, "--procedure", "@SUM(A1)")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "events.csv").read_text().splitlines()))
    assert {row["protocol"] for row in rows} == {'\'=HYPERLINK("http://x")'}
    assert all(float(row["dap_gy_cm2"]) > 0 for row in rows)  # numbers untouched
    db = tmp_path / "r.sqlite"
    assert _dose("ingest", rdsr, "--db", db, "--procedure", "-2+3", "--region", "+x").exit_code == 0
    assert _dose("audit", "--db", db, "--out", tmp_path / "a").exit_code == 0
    (row,) = list(csv.DictReader((tmp_path / "a" / "audit.csv").read_text().splitlines()))
    assert row["procedure"] == "'-2+3" and row["region"] == "'+x"
    assert float(row["dap_total_gy_cm2_median"]) > 0


# --- item 5: the registry: empty, foreign, concurrent -------------------------------------------


def test_auditing_an_empty_registry_is_a_clear_bad_input(tmp_path):
    from hybridfuse.dose.registry import Registry

    db = tmp_path / "r.sqlite"
    Registry(db).close()
    r = _dose("audit", "--db", db, "--out", tmp_path / "a")
    assert r.exit_code == 2 and "holds no procedures" in r.output
    assert not (tmp_path / "a").exists()
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    r = _dose("audit", "--db", empty, "--out", tmp_path / "a")
    assert r.exit_code == 2 and "not a hybridfuse registry" in r.output


@pytest.mark.parametrize("command", ["ingest", "audit"])
def test_a_foreign_database_is_refused_unmodified(synthetic_case, tmp_path, command):
    import sqlite3

    case, _ = synthetic_case
    db = tmp_path / "foreign.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    con.execute("INSERT INTO meta VALUES ('owner', 'someone else')")
    con.commit()
    con.close()
    before = db.read_bytes()
    args = ["--db", db, "--out", tmp_path / "a"]
    if command == "ingest":
        args = [case / "rdsr.dcm", "--db", db]
    r = _dose(command, *args)
    assert r.exit_code == 2 and "not a hybridfuse registry" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert db.read_bytes() == before
    text = tmp_path / "notes.txt"
    text.write_text("my notes\n")
    r = _dose("ingest", case / "rdsr.dcm", "--db", text)
    assert r.exit_code == 2 and "not an SQLite file" in r.output
    assert text.read_text() == "my notes\n"


@pytest.mark.slow
def test_concurrent_first_ingests_never_race(synthetic_case, tmp_path):
    import pydicom

    case, _ = synthetic_case
    files = []
    for i in range(4):  # distinct reports, so each must be ingested
        ds = pydicom.dcmread(case / "rdsr.dcm")
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.77{i}"
        files.append(tmp_path / f"r{i}.dcm")
        ds.save_as(files[-1])
    db = tmp_path / "fresh.sqlite"
    env = {**os.environ, KEY_ENV: str(tmp_path / "k.key")}
    # Each process builds its report, then all open the fresh registry at the same instant:
    # 0.3 s after the last one said it was ready (a fixed start 8 s ahead mostly waited).
    ready = tmp_path / "ready"
    ready.mkdir()
    code = (
        "import pathlib, sys, time; from hybridfuse.dose.report import build_dose_report; "
        "from hybridfuse.dose.registry import Registry; rep = build_dose_report(sys.argv[1]); "
        "d = pathlib.Path(sys.argv[3]); (d / sys.argv[4]).touch(); t = time.time() + 100\n"
        "while len(marks := list(d.iterdir())) < 4 and time.time() < t: time.sleep(0.01)\n"
        "at = max(p.stat().st_mtime for p in marks) + 0.3\n"
        "time.sleep(max(0.0, at - time.time())); reg = Registry(sys.argv[2]); "
        "print(reg.ingest(rep, rep['_events'], rep['_patient_id'])['status'])"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(f), str(db), str(ready), f.name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for f in files
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs
    assert [o.strip().splitlines()[-1] for o in outputs] == ["ingested"] * 4
    from hybridfuse.dose.registry import Registry

    reg = Registry(db, create=False)
    assert len(reg.rows()) == 4
    assert dict(reg.db.execute("SELECT key, COUNT(*) FROM meta GROUP BY key")) == {
        "dates": 1,
        "schema": 1,
        "secret": 1,
    }


# --- item 4: bounded depth, bounded memory -----------------------------------------------------


def _deep_rdsr(case, path, depth):
    """The synthetic RDSR with a chain of ``depth`` nested containers appended to its tree.

    Written as raw explicit-VR bytes (undefined lengths): pydicom's writer takes minutes.
    """
    import struct

    import pydicom
    from pydicom.filebase import DicomBytesIO

    ds = pydicom.dcmread(case / "rdsr.dcm")
    top = list(ds.ContentSequence)
    del ds.ContentSequence  # (0040,A730) is the last element, so it can be appended raw
    buf = DicomBytesIO()
    ds.save_as(buf, enforce_file_format=True)
    known = pydicom.Dataset()
    known.ContentSequence = top
    known_buf = DicomBytesIO()
    known_buf.is_little_endian, known_buf.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(known_buf, known)
    body = known_buf.getvalue()
    assert body[:4] == b"\x40\x00\x30\xa7"
    undefined = struct.pack("<I", 0xFFFFFFFF)
    sq = b"\x40\x00\x30\xa7SQ\x00\x00" + undefined
    item = b"\xfe\xff\x00\xe0" + undefined + b"\x40\x00\x40\xa0CS\x0a\x00CONTAINER "
    item_end = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
    sq_end = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    chain = item + (sq + item) * depth + (item_end + sq_end) * depth + item_end
    # The known items, then the chain as one more top-level item, in one undefined-length SQ.
    (length,) = struct.unpack("<I", body[8:12])
    raw_items = body[12:-8] if length == 0xFFFFFFFF else body[12 : 12 + length]
    path.write_bytes(buf.getvalue() + sq + raw_items + chain + sq_end)
    return path


def test_sr_nested_3000_deep_is_refused_naming_the_file(synthetic_case, tmp_path):
    case, _ = synthetic_case
    path = _deep_rdsr(case, tmp_path / "deep.dcm", 3000)
    r = _dose("report", "--rdsr", path, "--out", tmp_path / "out")
    assert r.exit_code == 2, r.output
    # Refused while reading (pydicom's own recursion) or while walking (our depth bound).
    assert "deep.dcm" in r.output
    assert "nested deeper than 64" in r.output or "nested too deeply" in r.output
    assert not (tmp_path / "out").exists()
    # 60 levels is read (and the chain holds no dose data, so the report is unchanged).
    r = _dose(
        "report", "--rdsr", _deep_rdsr(case, tmp_path / "d60.dcm", 60), "--out", tmp_path / "o"
    )
    assert r.exit_code == 0, r.output


def test_bootstrap_sums_are_chunked_paired_and_seeded(monkeypatch):
    import numpy as np

    import hybridfuse.dose.saved as saved

    x = np.array([1.0, 2.0, np.nan, 4.0])
    y = np.array([10.0, 20.0, 30.0, 40.0])
    monkeypatch.setattr(saved, "_CHUNK_ELEMENTS", 8)  # two rows per chunk
    sx, sy = saved._resampled_sums(np.random.default_rng(5), 7, [x, y])
    monkeypatch.setattr(saved, "_CHUNK_ELEMENTS", 1 << 22)
    again = saved._resampled_sums(np.random.default_rng(5), 7, [x, y])
    assert np.array_equal(sx, again[0]) and np.array_equal(sy, again[1])
    # Paired: y = 10 x wherever x is known, so each resample's sums agree up to the NaN slot.
    assert np.all(sy >= 10 * sx - 1e-9) and np.all((sy - 10 * sx) % 30 < 1e-9)
    idx = np.random.default_rng(5).integers(0, 4, size=(2, 4))
    assert sx[0] == pytest.approx(np.nansum(x[idx[0]]))


@pytest.mark.slow
def test_counterfactual_memory_is_not_samples_times_events(synthetic_case):
    import hybridfuse.dose.saved as saved
    from hybridfuse.dose.rdsr import read_rdsr

    case, _ = synthetic_case
    rec = read_rdsr(case / "rdsr.dcm")
    fluoro = [e for e in rec.events if e.event_type == "fluoroscopy"]
    # 4,000 taps, spaced as the originals: the old code built several 20,000 x 4,000 arrays.
    import copy
    import datetime as dt

    events, t = [], fluoro[0].start
    for k in range(4000):
        ev = copy.copy(fluoro[k % len(fluoro)])
        ev.start = t + dt.timedelta(seconds=5 * k)
        events.append(ev)
    rec.events = events
    import tracemalloc

    tracemalloc.start()
    try:
        cf = saved.saved_counterfactual(rec, [saved.Interval(10.0, 400.0)], n_samples=20000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # One 20,000 x 4,000 float array alone is 640 MB; the chunks keep it near 100 MB.
    assert peak < 200e6, peak
    lo, hi = cf["interval_95"]["dap_gy_cm2"]
    assert lo < cf["point"]["dap_gy_cm2"] < hi


# --- item 6: de-identification without --include-phi -------------------------------------------


def test_report_has_no_dates_paths_or_uids_without_phi(synthetic_case, tmp_path):
    import csv

    import pydicom

    case, _ = synthetic_case
    ds = pydicom.dcmread(case / "rdsr.dcm")
    date = str(ds.StudyDate)
    folder = tmp_path / "Doe_John_1950"
    folder.mkdir()
    rdsr = folder / "rdsr.dcm"
    rdsr.write_bytes((case / "rdsr.dcm").read_bytes())
    out = tmp_path / "out"
    assert _dose("report", "--rdsr", rdsr, "--out", out).exit_code == 0
    texts = {p.name: p.read_text() for p in out.iterdir()}
    iso = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    for name, text in texts.items():
        assert "Doe_John" not in text, name
        assert iso not in text and date not in text, name
    rows = list(csv.DictReader(texts["events.csv"].splitlines()))
    assert "start_datetime" not in rows[0] and rows[0]["time_from_first_event_s"] == "0.0"
    assert all(r["event_uid"].startswith("event-") for r in rows)
    sha = hashlib.sha256(rdsr.read_bytes()).hexdigest()
    assert f'"input": "RDSR (sha256 {sha[:12]})"' in texts["dose.json"]
    assert all("rdsr.dcm" not in text for text in texts.values())  # by sha256, not name
    phi = tmp_path / "phi"
    assert _dose("report", "--rdsr", rdsr, "--out", phi, "--include-phi").exit_code == 0
    assert "Doe_John" in (phi / "dose.json").read_text()
    assert iso in (phi / "events.csv").read_text()


def test_registry_keeps_keyed_pseudonyms_and_shifted_dates(synthetic_case, tmp_path):
    import datetime as dt

    import pydicom

    from hybridfuse.dose.rdsr import read_rdsr
    from hybridfuse.dose.registry import Registry

    case, _ = synthetic_case
    ds = pydicom.dcmread(case / "rdsr.dcm")
    folder = tmp_path / "Doe_John_1950"
    folder.mkdir()
    rdsr = folder / "rdsr.dcm"
    rdsr.write_bytes((case / "rdsr.dcm").read_bytes())
    db = tmp_path / "r.sqlite"
    assert _dose("ingest", rdsr, "--db", db).exit_code == 0
    raw = db.read_bytes()
    for secret in (ds.StudyInstanceUID, ds.SOPInstanceUID, ds.PatientID, "Doe_John"):
        assert secret.encode() not in raw, secret
    assert str(ds.StudyDate).encode() not in raw
    reg = Registry(db, create=False)
    (row,) = reg.rows()
    first = min(e.start for e in read_rdsr(rdsr).events if e.start)
    shift = first - dt.datetime.fromisoformat(row["start"])
    assert shift.seconds == 0 and 1 <= shift.days <= 3653  # whole days: times of day kept
    unsalted = hashlib.sha256(ds.PatientID.encode()).hexdigest()
    assert row["pseudonym"] == pseudonym(ds.PatientID, reg._key)
    assert row["pseudonym"] not in unsalted
    # Another registry has another secret: pseudonyms and shifts cannot be linked.
    other = tmp_path / "o.sqlite"
    assert _dose("ingest", rdsr, "--db", other).exit_code == 0
    assert Registry(other, create=False).rows()[0]["pseudonym"] != row["pseudonym"]
    # Intervals within a patient are kept.
    starts = [r[0] for r in reg.db.execute("SELECT start FROM events ORDER BY start")]
    real = sorted(e.start for e in read_rdsr(rdsr).events if e.start)
    assert [dt.datetime.fromisoformat(s) + shift for s in starts] == real


def test_a_registry_of_schema_1_keeps_working(synthetic_case, tmp_path):
    import sqlite3

    from hybridfuse.dose.registry import _SCHEMA, Registry

    case, _ = synthetic_case
    db = tmp_path / "v1.sqlite"
    con = sqlite3.connect(db)
    con.executescript(_SCHEMA)  # the tables of registry/1 are those of registry/2
    con.execute("INSERT INTO meta VALUES ('salt', ?)", ("ab" * 16,))
    con.execute("INSERT INTO meta VALUES ('schema', 'hybridfuse.registry/1')")
    con.commit()
    con.close()
    r = _dose("ingest", case / "rdsr.dcm", "--db", db)
    assert r.exit_code == 0 and "ingested" in r.output, r.output
    reg = Registry(db, create=False)
    assert reg.legacy and len(reg.rows()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--us-interval", "nan,5"],
        ["--us-interval", "1,inf"],
        ["--guided-phase", "5,5", "--us-interval", "1,2"],
        ["--seed", "-1", "--us-interval", "1,2"],
        ["--table-transmission", "0,2", "--us-interval", "1,2"],
    ],
)
def test_bad_report_options_are_usage_errors(synthetic_case, tmp_path, args):
    case, _ = synthetic_case
    r = _dose("report", "--rdsr", case / "rdsr.dcm", "--out", tmp_path / "o", *args)
    assert r.exit_code == 2 and args[0] in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_clip_declaring_absurd_frames_is_refused(synthetic_case, tmp_path):
    import pydicom

    case, _ = synthetic_case
    ds = pydicom.dcmread(case / "us_clip.dcm", stop_before_pixels=True)
    ds.NumberOfFrames = 2**31 - 1
    clip = tmp_path / "clip.dcm"
    ds.save_as(clip)
    r = _dose("report", "--rdsr", case / "rdsr.dcm", "--out", tmp_path / "o", "--us", clip)
    assert r.exit_code == 2 and "clip.dcm: NumberOfFrames" in r.output, r.output

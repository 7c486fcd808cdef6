"""Hardening of the dose commands: outputs, inputs, registry, de-identification (issue #13)."""

from __future__ import annotations

import hashlib
import hmac
import stat
import subprocess
import sys

import pytest

from dose.errors import DoseInputError
from dose.pseudonym import KEY_ENV, key_path, pseudonym, user_key


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
    code = "from dose.pseudonym import user_key; print(user_key().hex())"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    keys = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(keys) == 1 and len(keys.pop()) == 64


# --- helpers ----------------------------------------------------------------------------------


def _dose(*args):
    from click.testing import CliRunner

    from cli.main import cli

    return CliRunner().invoke(cli, ["dose", *map(str, args)])


def _rdsr_with_protocol(case, tmp_path, text):
    """The synthetic RDSR with every event's protocol name replaced by ``text``."""
    import pydicom

    from dose.rdsr import _walk

    ds = pydicom.dcmread(case / "rdsr.dcm")
    for item in _walk(ds):
        seq = item.get("ConceptNameCodeSequence")
        if seq and seq[0].CodeValue == "125203":
            if "TextValue" in item:
                item.TextValue = text
            else:
                item.ConceptCodeSequence[0].CodeMeaning = text
    path = tmp_path / "proto.dcm"
    ds.save_as(path)
    return path


# --- item 1: outputs written exclusively, together, or not at all -------------------------------


def test_planted_partial_link_is_never_followed(synthetic_case, tmp_path):
    case, _ = synthetic_case
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    for name in ("dose.json", "events.csv", "report.html"):
        (out / f".{name}.partial").symlink_to(victim)
    r = _dose("report", "--rdsr", case / "rdsr.dcm", "--out", out)
    assert r.exit_code == 0, r.output
    assert victim.read_text() == "precious"
    assert (out / "dose.json").is_file() and not (out / "dose.json").is_symlink()


def test_disk_full_leaves_no_output_and_a_rerun_proceeds(synthetic_case, tmp_path, monkeypatch):
    import errno

    import dose.report as report

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
    assert list(out.iterdir()) == []
    monkeypatch.setattr(report, "_fill", real)
    r = _dose("report", "--rdsr", case / "rdsr.dcm", "--out", out)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["dose.json", "events.csv", "report.html"]


def test_failed_rename_removes_outputs_already_renamed(tmp_path, monkeypatch):
    import dose._safeio as safeio
    from dose.report import write_together

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

    import dose._safeio as safeio

    case, _ = synthetic_case

    def read_only(*a, **k):  # as a read-only file system answers (root ignores chmod)
        raise OSError(errno.EROFS, "Read-only file system")

    user_key()  # the key lives elsewhere; only --out is read-only
    monkeypatch.setattr(safeio.tempfile, "mkstemp", read_only)
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

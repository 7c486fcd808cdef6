"""Round-9 attacks on what landed for issues #17 and #18: each test failed before its fix."""

from __future__ import annotations

import sqlite3

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
    assert f"{db}: the registry is damaged" in res.output
    assert not out.exists()


def test_ingest_into_a_damaged_registry_names_the_registry(tmp_path):
    db = _damaged_registry(tmp_path)
    rdsr = str(sample_case() / "rdsr.dcm")
    res = CliRunner().invoke(cli, ["dose", "ingest", rdsr, "--db", str(db)])
    assert res.exit_code == 2, res.output
    assert f"{db}: the registry is damaged" in res.output

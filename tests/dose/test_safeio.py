"""The output and escaping primitives every writer goes through."""

from __future__ import annotations

import html.parser
import json
import os
import subprocess
import sys

import pytest

from hybridfuse._safeio import (
    OWNER_MARK,
    UnsafeOutputError,
    atomic_directory,
    case_key,
    check_case_id,
    check_out_separate,
    clean_stale,
    csv_cell,
    script_json,
    terminal_text,
    write_text,
)


def test_atomic_file_never_writes_through_a_planted_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    # Links at every name an older version would have used, and at the target itself.
    (out / ".dose.json.partial").symlink_to(victim)
    write_text(out / "dose.json", "{}")
    assert victim.read_text() == "precious"
    assert (out / "dose.json").read_text() == "{}"
    (out / "link.json").symlink_to(victim)
    with pytest.raises(UnsafeOutputError):
        write_text(out / "link.json", "x")
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == [".dose.json.partial", "dose.json", "link.json"]


def test_atomic_file_leaves_nothing_on_failure(tmp_path, monkeypatch):
    import hybridfuse._safeio as s

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(s.os, "fsync", boom)
    with pytest.raises(UnsafeOutputError, match="no space left"):
        write_text(tmp_path / "a.txt", "x")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["under_a_file", "name_too_long"])
def test_atomic_file_that_cannot_be_made_is_an_output_error(tmp_path, where):
    # The temporary file is never made here, so removing it fails as its making did:
    # that second error must not replace the output error (exit 2, one line).
    (tmp_path / "f").write_text("x")
    path = tmp_path / "f" / "a.json" if where == "under_a_file" else tmp_path / ("n" * 240)
    with pytest.raises(UnsafeOutputError, match="cannot write"):
        write_text(path, "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_overwrite_replaces_only_owned_folders(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "p.jpg").write_text("x")
    with pytest.raises(FileExistsError):
        with atomic_directory(foreign):
            pass
    with pytest.raises(UnsafeOutputError, match="not an output folder"):
        with atomic_directory(foreign, overwrite=True):
            pass
    assert (foreign / "p.jpg").read_text() == "x"

    out = tmp_path / "out"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (out / OWNER_MARK).is_file()
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [OWNER_MARK, "b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos"]


def test_output_folder_link_refused_and_target_untouched(tmp_path):
    target = tmp_path / "elsewhere"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("1")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(UnsafeOutputError, match="symbolic link"):
        with atomic_directory(link, overwrite=True):
            pass
    assert (target / "a.txt").read_text() == "1"


def test_failed_run_leaves_old_outputs(tmp_path):
    out = tmp_path / "out"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_directory(out, overwrite=True) as tmp:
            (tmp / "b.txt").write_text("2")
            raise RuntimeError("mid-run failure")
    assert (out / "a.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_stale_leftovers_of_dead_processes_are_cleaned(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    stale = tmp_path / f".case.partial-hybridfuse-{pid}-0123456789abcdef-xyz"
    stale.mkdir()
    (stale / "f").write_text("x")
    mine = tmp_path / f".other.partial-hybridfuse-{os.getpid()}-0123456789abcdef-xyz"
    mine.mkdir()
    users = [".case.partial-notours", ".photos.old-2023-20240115", f".a.partial-{pid}-0123abcd"]
    users.append(".x.partial-hybridfuse-99999999999999999999-0123456789abcdef")
    for name in users:
        (tmp_path / name).mkdir()
    assert clean_stale(tmp_path) == [stale.name]
    assert mine.exists() and not stale.exists()
    assert all((tmp_path / name).exists() for name in users)


def test_out_may_not_contain_or_equal_an_input(tmp_path):
    case = tmp_path / "B"
    case.mkdir()
    (case / "x.dcm").write_text("x")
    for bad in (case, tmp_path, tmp_path / "B" / ".." / "B"):
        with pytest.raises(UnsafeOutputError, match="contains the input"):
            check_out_separate(bad, [case / "x.dcm"])
    check_out_separate(case / "out", [case / "x.dcm"])  # beside inputs is fine
    check_out_separate(tmp_path / "out", [case])


@pytest.mark.parametrize(
    "cid",
    [
        "..",
        ".",
        "",
        "/abs",
        "../../victim",
        "a/b",
        "a\\b",
        ".hidden",
        "a\x00b",
        "a\nb",
        "x" * 129,
        "c1.",
        " c1",
        "c1 ",
    ],
)
def test_unsafe_case_ids_refused(cid):
    with pytest.raises(UnsafeOutputError, match="not a safe folder name"):
        check_case_id(cid)


def test_safe_case_ids_and_their_collisions():
    for cid in ("c1", "case_001", "Patient-7.b", "fall+winter", "ß1", "Case 01"):
        assert check_case_id(cid) == cid
    assert case_key("Case1") == case_key("case1")
    assert case_key("ﬁle") == case_key("file")  # NFKC: the ligature is the same name


class _Scripts(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts, self.data = 0, []

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"

    def handle_data(self, data):
        self.data.append(data)


def test_script_json_cannot_close_the_script():
    hostile = {"name": "</script><script>alert('LM')</script><!--", "sep": "a\u2028b&c"}
    page = f"<script>const D = {script_json(hostile)};</script>"
    p = _Scripts()
    p.feed(page)
    assert p.scripts == 1
    body = "".join(p.data)
    assert json.loads(body.removeprefix("const D = ").removesuffix(";")) == hostile
    assert not any(c in script_json(hostile) for c in "<>&\u2028\u2029")
    with pytest.raises(ValueError):
        script_json({"x": float("inf")})


def test_csv_cells_neutralised_numbers_kept():
    assert csv_cell('=HYPERLINK("x")') == '\'=HYPERLINK("x")'
    for s in ("+1", "-2+3", "@SUM(A1)"):
        assert csv_cell(s).startswith("'")
    assert csv_cell("\tx") == "\\x09x" and csv_cell("\r=1") == "\\x0d=1"
    assert csv_cell("Lumbar facet") == "Lumbar facet"
    assert csv_cell(-1.5) == -1.5


def test_terminal_text_escapes_controls():
    s = terminal_text("Vendor\x1b[2J\x07\rX\u009b\u202e")
    assert s == "Vendor\\x1b[2J\\x07\\x0dX\\x9b\\u202e"
    assert terminal_text("a\nb", keep_newlines=True) == "a\nb"
    assert terminal_text("Ünïcode ok") == "Ünïcode ok"


def test_a_marked_kind_is_replaced_only_by_its_own_writer(tmp_path):
    from hybridfuse._safeio import owner_kind

    data = tmp_path / "synthetic_case"
    with atomic_directory(data, kind="synth") as tmp:
        (tmp / "fluoro.dcm").write_text("input data")
    assert owner_kind(data) == "synth"
    with pytest.raises(UnsafeOutputError, match="holds hybridfuse synth data"):
        with atomic_directory(data, overwrite=True):
            pass
    assert (data / "fluoro.dcm").read_text() == "input data"
    with atomic_directory(data, overwrite=True, kind="synth") as tmp:
        (tmp / "fluoro.dcm").write_text("regenerated")
    assert (data / "fluoro.dcm").read_text() == "regenerated"

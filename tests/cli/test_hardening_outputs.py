"""Outputs touch only what they own: run, batch and demo against hostile ids and --out paths."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import hybridfuse.fusion.batch
import hybridfuse.fusion.pipeline
from hybridfuse._safeio import OWNER_MARK, case_key, check_case_id
from hybridfuse.cli.main import cli
from hybridfuse.testdata import sample_case
from tests.fusion.test_hardening_batch import fake_run_case

ROOT = Path(__file__).resolve().parents[2]
FAST_TOML = '[registration]\nmetric = "none"\n[fusion]\nvideo = "none"\ndicom = false\n'
REGISTERED = "landmarks/run02_confirm_lateral_f00_us06.csv"
FILES = ("fluoro_run02_confirm_lateral.dcm", "us_clip.dcm", "rdsr.dcm", REGISTERED)


def make_sandbox(root: Path) -> Path:
    """Inputs, a foreign folder, a file and links: what no command may change."""
    shutil.copytree(sample_case(), root / "inputs" / "B")
    (root / "victim").mkdir()
    (root / "victim" / "precious.txt").write_text("mine")
    (root / "afile").write_text("mine too")
    (root / "link").symlink_to(root / "victim")
    (root / "fast.toml").write_text(FAST_TOML)
    return root


@pytest.fixture
def sandbox(tmp_path) -> Path:
    return make_sandbox(tmp_path)


def snapshot(root: Path, skip: Path | None = None) -> dict:
    """Every path under ``root`` (links not followed): kind, size and mtime of files, link target.

    Folders are recorded by existence only: creating ``--out`` adds an entry to its parent.
    """
    skip_real = os.path.realpath(skip) if skip else None
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if skip_real and (str(p) == str(skip) or os.path.realpath(p) == skip_real):
                if name in dirnames and not p.is_symlink():
                    dirnames.remove(name)
                continue
            st_ = p.lstat()
            if p.is_symlink():
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_dir():
                out[str(p)] = ("dir",)
            else:
                out[str(p)] = ("file", st_.st_size, st_.st_mtime_ns)
    return out


def _row(case: Path) -> list[str]:
    return [str(case / f) for f in FILES]


def write_manifest(path: Path, case: Path, ids: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "fluoro", "ultrasound", "rdsr", "landmarks"])
        for cid in ids:
            w.writerow([cid, *_row(case)])
    return path


def summary_rows(out: Path) -> list[dict]:
    with open(out / "batch_summary.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def one_clean_line(output: str) -> None:
    assert "Traceback" not in output and "internal error" not in output, output
    errors = [ln for ln in output.splitlines() if ln.startswith("hybridfuse: error")]
    assert len(errors) == 1, output


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- the reproduced cases of the issue, with the real pipeline ---------------------------------


@pytest.mark.slow
def test_hostile_manifest_rows_change_nothing_outside_out(sandbox):
    p = sandbox / "P"
    (p / "sib").mkdir(parents=True)
    (p / "sib" / "keep.txt").write_text("keep")
    (p / "file").write_text("keep")
    case = sandbox / "inputs" / "B"
    ids = ["..", "good1", ".", "../../victim", str(sandbox / "victim"), "c1", "./c1", "C1"]
    manifest = write_manifest(sandbox / "m.csv", case, ids)
    out = p / "out"
    before = snapshot(sandbox, skip=out)
    args = ["batch", str(manifest), "--out", str(out), "--config", str(sandbox / "fast.toml")]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and "internal error" not in r.output
    assert snapshot(sandbox, skip=out) == before
    ordered = summary_rows(out)
    assert [row["case_id"] for row in ordered] == [*ids[:7], "C1 (line 9)"]  # manifest order
    rows = {row["case_id"]: row for row in ordered}
    assert rows["good1"]["status"] == rows["c1"]["status"] == "ok"
    for bad in ("..", ".", "../../victim", str(sandbox / "victim"), "./c1"):
        assert rows[bad]["status"] == "failed" and "not a safe folder name" in rows[bad]["message"]
    assert "duplicate case_id 'C1'" in rows["C1 (line 9)"]["message"]
    assert sorted(x.name for x in out.iterdir()) == sorted(
        [OWNER_MARK, "batch_summary.csv", "c1", "good1"]
    )
    # A re-run skips what is done and still changes nothing outside.
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1
    assert {r["status"] for r in summary_rows(out) if r["case_id"] in ("good1", "c1")} == {
        "skipped (up to date)"
    }
    assert snapshot(sandbox, skip=out) == before


def test_run_into_its_own_case_folder_is_refused(sandbox):
    case = sandbox / "inputs" / "B"
    before = snapshot(sandbox)
    for out in (case, case.parent, case / "landmarks"):
        r = CliRunner().invoke(cli, ["run", str(case), "--out", str(out), "--overwrite"])
        assert r.exit_code == 2, r.output
        one_clean_line(r.output)
        assert "contains the input" in r.output or "not an output folder" in r.output
    assert snapshot(sandbox) == before


def test_overwrite_of_an_owned_folder_holding_the_inputs_is_refused(sandbox, monkeypatch):
    monkeypatch.setattr(hybridfuse.fusion.pipeline, "run_case", lambda *a, **k: pytest.fail("work"))
    monkeypatch.setattr(hybridfuse.fusion.batch, "run_case", lambda *a, **k: pytest.fail("work"))
    owned = sandbox / "owned"
    owned.mkdir()
    (owned / OWNER_MARK).write_text("{}")  # an earlier output, into which a case was copied
    shutil.copytree(sandbox / "inputs" / "B", owned / "cases" / "B")
    before = snapshot(sandbox)
    for args in (
        ["run", str(owned / "cases" / "B"), "--out", str(owned), "--overwrite"],
        ["batch", str(owned / "cases"), "--out", str(owned)],
    ):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 2, r.output
        one_clean_line(r.output)
        assert "contains the input" in r.output
    assert snapshot(sandbox) == before


def test_batch_into_its_own_inputs_is_refused(sandbox):
    cases = sandbox / "inputs"
    manifest = write_manifest(sandbox / "m.csv", cases / "B", ["k1"])
    before = snapshot(sandbox)
    for src, out in ((cases, cases), (cases, cases / "B"), (manifest, sandbox), (manifest, cases)):
        r = CliRunner().invoke(cli, ["batch", str(src), "--out", str(out)])
        assert r.exit_code == 2, (src, out, r.output)
        one_clean_line(r.output)
        assert "contains the input" in r.output or "not an earlier batch's output" in r.output
    assert snapshot(sandbox) == before


@pytest.mark.parametrize("where", ["afile", "link", "victim", "readonly", "dot", "long", "under"])
@pytest.mark.parametrize("command", ["run", "batch"])
def test_a_bad_out_is_refused_before_any_work(sandbox, monkeypatch, where, command):
    monkeypatch.setattr(
        hybridfuse.fusion.pipeline, "case_from_folder", lambda *a, **k: pytest.fail("work")
    )
    monkeypatch.setattr(
        hybridfuse.fusion.batch, "read_manifest", lambda *a, **k: pytest.fail("work")
    )
    out = sandbox / {"readonly": "ro/out", "dot": "victim/..", "long": "x" * 300}.get(
        where, "afile/out" if where == "under" else where
    )
    if where == "readonly":
        (sandbox / "ro").mkdir()
        real_access = os.access
        monkeypatch.setattr(
            os, "access", lambda p, m, **k: Path(p) != sandbox / "ro" and real_access(p, m, **k)
        )
    case = sandbox / "inputs" / "B"
    src = case if command == "run" else write_manifest(sandbox / "m.csv", case, ["k1"])
    before = snapshot(sandbox)
    args = [command, str(src), "--out", str(out)] + (["--overwrite"] if command == "run" else [])
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2, r.output
    one_clean_line(r.output)
    assert str(out)[:200] in r.output
    assert snapshot(sandbox) == before


@pytest.mark.parametrize("where", ["inputs/B", "inputs", "tdir", "afile", "link", "victim"])
def test_fuse_refuses_a_bad_out_before_reading(sandbox, monkeypatch, where):
    import hybridfuse.fusion.coregister

    fail = lambda *a, **k: pytest.fail("work")  # noqa: E731
    monkeypatch.setattr(hybridfuse.fusion, "read_image", fail)
    monkeypatch.setattr(hybridfuse.fusion.coregister, "read_transform_json", fail)
    (sandbox / "tdir").mkdir()
    (sandbox / "tdir" / "transform.json").write_text("{}")
    case = sandbox / "inputs" / "B"
    before = snapshot(sandbox)
    args = ["fuse", "--fixed", str(case / FILES[0]), "--moving", str(case / FILES[1])]
    args += ["--transform", str(sandbox / "tdir" / "transform.json")]
    r = CliRunner().invoke(cli, [*args, "--out", str(sandbox / where), "--overwrite"])
    assert r.exit_code == 2, r.output
    one_clean_line(r.output)
    assert snapshot(sandbox) == before


def test_synth_overwrite_replaces_only_its_own_folders(sandbox):
    before = snapshot(sandbox)
    for where in ("victim", "link", "inputs"):
        r = CliRunner().invoke(cli, ["synth", "--out", str(sandbox / where), "--overwrite"])
        assert r.exit_code == 2, r.output
        one_clean_line(r.output)
    assert snapshot(sandbox) == before


def test_demo_refuses_an_input_folder_and_a_link(sandbox, monkeypatch):
    monkeypatch.setattr(hybridfuse.fusion.pipeline, "run_case", lambda *a, **k: pytest.fail("work"))
    for out in (sample_case(), sample_case().parent, sandbox / "link", sandbox / ("x" * 300)):
        r = CliRunner().invoke(cli, ["demo", "--out", str(out)])
        assert r.exit_code == 2, r.output
        assert "Traceback" not in r.output and "internal error" not in r.output


def test_case_ids_reach_the_terminal_escaped(sandbox, monkeypatch):
    monkeypatch.setattr(hybridfuse.fusion.batch, "run_case", fake_run_case)
    ids = ["esc\x1b[31mred", "bell\x07", "cr\roverwrite"]
    manifest = write_manifest(sandbox / "m.csv", sandbox / "inputs" / "B", ids)
    r = CliRunner().invoke(cli, ["batch", str(manifest), "--out", str(sandbox / "out")])
    assert r.exit_code == 1, r.output
    failures = [ln for ln in r.output.split("\n") if ln.startswith("hybridfuse: case")]
    assert len(failures) == 3 and not set("".join(failures)) & {"\x1b", "\x07", "\r"}
    assert "esc\\x1b[31mred" in failures[0]


# --- faults ------------------------------------------------------------------------------------


def test_a_dead_runs_leftovers_are_removed_and_reported(sandbox, monkeypatch):
    monkeypatch.setattr(hybridfuse.fusion.pipeline, "run_case", fake_run_case)
    stale = sandbox / f".out.partial-hybridfuse-{dead_pid()}-0123456789abcdef-xyz"
    stale.mkdir()
    (stale / "half.png").write_text("")
    r = CliRunner().invoke(
        cli, ["run", str(sandbox / "inputs" / "B"), "--out", str(sandbox / "out")]
    )
    assert r.exit_code == 0, r.output
    assert "removed 1 leftover(s) of interrupted runs" in r.output and stale.name in r.output
    assert not stale.exists()


@pytest.mark.slow
def test_sigterm_of_run_leaves_nothing_and_the_rerun_proceeds(sandbox):
    out = sandbox / "out"
    args = ["run", str(sandbox / "inputs" / "B"), "--out", str(out)]
    args += ["--config", str(sandbox / "fast.toml")]
    proc = subprocess.Popen(
        [sys.executable, "-c", "from hybridfuse.cli.main import main; main()", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(sandbox.glob(".out.partial-*")):
        time.sleep(0.02)
    assert list(sandbox.glob(".out.partial-*")), "the run never started writing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert b"Traceback" not in err
    assert not list(sandbox.glob(".out*")) and not out.exists()
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert (out / "summary.json").is_file() and not list(sandbox.glob(".out*"))


# --- de-identified paths -----------------------------------------------------------------------


@pytest.mark.slow
def test_summary_and_index_record_inputs_by_label_and_hash(sandbox):
    phi = sandbox / "inputs" / "Doe^Jane"
    shutil.copytree(sandbox / "inputs" / "B", phi)
    config = str(sandbox / "fast.toml")
    r = CliRunner().invoke(cli, ["run", str(phi), "--out", str(sandbox / "o"), "--config", config])
    assert r.exit_code == 0, r.output
    summary = json.loads((sandbox / "o" / "summary.json").read_text())
    labels = {i["input"].split(" (")[0] for i in summary["inputs"]}
    assert "ultrasound 1" in labels and all(len(i["sha256"]) == 64 for i in summary["inputs"])
    assert not any("path" in i or "file" in i for i in summary["inputs"])
    for f in ("summary.json", "index.html"):
        assert str(sandbox) not in (sandbox / "o" / f).read_text(), f
    r = CliRunner().invoke(
        cli, ["run", str(phi), "--out", str(sandbox / "p"), "--config", config, "--include-phi"]
    )
    assert r.exit_code == 0, r.output
    summary = json.loads((sandbox / "p" / "summary.json").read_text())
    assert all(i["path"].startswith(str(phi)) for i in summary["inputs"])
    assert "us_clip.dcm" in {i["file"] for i in summary["inputs"]}


def test_index_html_escapes_every_string():
    from hybridfuse.fusion.pipeline import _index_html

    evil = "</p><script>alert(1)</script>"
    html = _index_html(
        {
            "case_id": evil,
            "software_version": evil,
            "registration": {
                "fluoroscopy": evil,
                "fixed_frame": 0,
                "moving_frame": 1,
                "model": evil,
                "metric": evil,
                "tre": None,
            },
            "dose": {"dap_total_gy_cm2": None, "saved_dap_gy_cm2": None},
            "timings_s": {evil: 1.0},
        }
    )
    assert "<script>" not in html and "&lt;script&gt;" in html


# --- property tests: hostile ids and --out locations --------------------------------------------

HOSTILE_IDS = [
    "..",
    ".",
    "/abs",
    "../x",
    "a/b",
    "a\\b",
    "x/../..",
    "ok",
    "OK",
    "Ok",
    "ﬁle",  # NFKC-folds to "file"
    "file",
    "é",
    "e\u0301",
    "tab\tid",
    "bell\x07",
    "esc\x1b[31m",
    "x" * 300,
    "=1+1",
    "-rf",
    " ",
    "c1.",
]
IDS = st.lists(
    st.one_of(
        st.sampled_from(HOSTILE_IDS),
        st.text(
            st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=8
        ),
    ),
    min_size=1,
    max_size=4,
)
#: --out relative to the sandbox, and whether it is acceptable for a fresh run.
OUTS = {
    "out": True,
    "out/deeper": True,
    "inputs/B/sub": True,  # beside the inputs, containing none of them
    "inputs": False,
    "inputs/B": False,
    "inputs/B/landmarks": False,
    "inputs/B/rdsr.dcm": False,
    "link": False,
    "afile": False,
    "victim": False,
    "victim/..": False,
    ".": False,
}


def _new_top(sandbox: Path, out: Path) -> Path:
    """The highest folder a run into ``out`` creates (``--out`` makes its parents)."""
    top = out
    while not top.parent.exists():
        top = top.parent
    return top


def _fresh_sandbox(tmp_path_factory) -> Path:
    return make_sandbox(tmp_path_factory.mktemp("sandbox"))


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples in every CI run; new ones are found by hand
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ids=IDS, where=st.sampled_from(sorted(OUTS)))
@example(ids=["0\r0", "ok1"], where="out")  # a bare CR once split a summary row in two
def test_batch_never_touches_anything_outside_out(tmp_path_factory, monkeypatch, ids, where):
    monkeypatch.setattr(hybridfuse.fusion.batch, "run_case", fake_run_case)  # about paths only
    sandbox = _fresh_sandbox(tmp_path_factory)
    manifest = write_manifest(sandbox / "m.csv", sandbox / "inputs" / "B", ids)
    out = sandbox / where
    skip = _new_top(sandbox, out) if OUTS[where] else None
    before = snapshot(sandbox, skip=skip)
    r = CliRunner().invoke(cli, ["batch", str(manifest), "--out", str(out)])
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output
    assert not set(r.output) & {"\x1b", "\x07", "\x00"}  # ids reach the terminal escaped
    assert snapshot(sandbox, skip=skip) == before
    if not OUTS[where]:
        assert r.exit_code == 2, r.output
        return
    rows = summary_rows(out)
    assert len(rows) == len(ids)
    assert r.exit_code == (1 if any(row["status"] == "failed" for row in rows) else 0)
    made = [p.name for p in out.iterdir() if p.name not in (OWNER_MARK, "batch_summary.csv")]
    for name in made:
        assert check_case_id(name) and name in [i.strip() for i in ids]
    assert len({case_key(n) for n in made}) == len(made)
    assert len(made) == sum(row["status"] == "ok" for row in rows)


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(where=st.sampled_from(sorted(OUTS)), overwrite=st.booleans())
def test_run_never_touches_anything_outside_out(tmp_path_factory, where, overwrite):
    sandbox = _fresh_sandbox(tmp_path_factory)
    out = sandbox / where
    skip = _new_top(sandbox, out) if OUTS[where] else None
    before = snapshot(sandbox, skip=skip)
    args = ["run", str(sandbox / "inputs" / "B"), "--out", str(out)]
    args += ["--config", str(sandbox / "fast.toml")] + (["--overwrite"] if overwrite else [])
    r = CliRunner().invoke(cli, args)  # the real pipeline
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output
    assert snapshot(sandbox, skip=skip) == before
    assert r.exit_code == (0 if OUTS[where] else 2), r.output
    if OUTS[where]:
        assert (out / OWNER_MARK).is_file() and (out / "summary.json").is_file()


def test_overwrite_keeps_files_a_user_put_into_an_output_folder(tmp_path):
    # A clinician's notes saved beside the outputs were deleted, without a word, with the
    # folder --overwrite replaced: the marker now lists what hybridfuse wrote there.
    out = tmp_path / "dose"
    report = ["dose", "report", "--rdsr", str(sample_case() / "rdsr.dcm"), "--out", str(out)]
    assert CliRunner().invoke(cli, report).exit_code == 0
    (out / "mine").mkdir()
    (out / "mine" / "notes.txt").write_text("mine")
    r = CliRunner().invoke(cli, [*report, "--overwrite"])
    assert r.exit_code == 2, r.output
    one_clean_line(r.output)
    assert "holds 2 file(s) hybridfuse did not write (mine, ...)" in r.output
    assert (out / "mine" / "notes.txt").read_text() == "mine"
    # Without the stranger it is replaced, a killed run's temporaries with it; so is a
    # folder whose marker lists nothing (written before the list existed).
    shutil.rmtree(out / "mine")
    (out / ".dose.json.partial").write_text("a killed run's temporary")  # our debris
    assert CliRunner().invoke(cli, [*report, "--overwrite"]).exit_code == 0
    assert not (out / ".dose.json.partial").exists()
    (out / OWNER_MARK).write_text(json.dumps({"written_by": "hybridfuse"}))
    (out / "old.txt").write_text("from before")
    assert CliRunner().invoke(cli, [*report, "--overwrite"]).exit_code == 0
    assert not (out / "old.txt").exists()

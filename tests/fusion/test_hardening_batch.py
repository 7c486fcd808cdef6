"""Batch hardening: case ids, discovery failures, the appended summary, workers and faults."""

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

import hybridfuse.fusion.batch as batch
from hybridfuse._safeio import OWNER_MARK, atomic_directory
from hybridfuse.fusion.batch import read_manifest, run_batch
from hybridfuse.fusion.pipeline import RunConfig, input_hash
from hybridfuse.testdata import sample_case

ROOT = Path(__file__).resolve().parents[2]
FAST = RunConfig().with_values({"metric": None, "video": "none", "dicom": False})
FAST_TOML = '[registration]\nmetric = "none"\n[fusion]\nvideo = "none"\ndicom = false\n'
REGISTERED = "landmarks/run02_confirm_lateral_f00_us06.csv"


@pytest.fixture
def case(tmp_path) -> Path:
    """A copy of the committed sample case (the inputs a batch must never touch)."""
    dst = tmp_path / "inputs" / "B"
    shutil.copytree(sample_case(), dst)
    return dst


def _row(case: Path) -> str:
    return ",".join(
        str(case / f)
        for f in ("fluoro_run02_confirm_lateral.dcm", "us_clip.dcm", "rdsr.dcm", REGISTERED)
    )


def _manifest(path: Path, case: Path, ids: list[str]) -> Path:
    lines = ["case_id,fluoro,ultrasound,rdsr,landmarks"] + [f"{i},{_row(case)}" for i in ids]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _summary(out: Path) -> list[dict]:
    with open(out / "batch_summary.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def fake_run_case(spec, out_dir, config, *, overwrite=False, progress=None):
    """Writes an owned case folder as run_case does, without the (slow) science."""
    from hybridfuse.fusion.pipeline import check_out

    check_out(out_dir, spec.inputs(), overwrite=overwrite)
    summary = {
        "case_id": spec.case_id,
        "status": "ok",
        "input_hash": input_hash(spec, config),
        "outputs": ["summary.json"],
        "registration": {"tre": None},
        "dose": {"saved_dap_gy_cm2": None},
    }
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        (tmp / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return summary


def test_unsafe_and_repeated_case_ids_are_named_per_row(tmp_path, case):
    ids = [
        *["..", "good1", ".", "../../victim", str(tmp_path), "c1", "./c1", "C1", "a/b", "", "ok2"],
        "ok2",
    ]
    specs, problems = read_manifest(_manifest(tmp_path / "m.csv", case, ids))
    assert [s.case_id for s in specs] == ["good1", "c1", "ok2"]
    messages = {p["case_id"]: p["message"] for p in problems}
    for bad in ("..", ".", "../../victim", str(tmp_path), "./c1", "a/b"):
        assert "is not a safe folder name" in messages[bad], bad
        assert "m.csv:" in messages[bad]
    dup = messages["C1 (line 9)"]
    assert "duplicate case_id 'C1'" in dup and "'c1'" in dup and "ignores case" in dup
    assert "the manifest names it twice" in messages["ok2 (line 13)"]
    assert "empty case_id" in messages["(line 11)"]
    assert all(len(m.splitlines()) == 1 for m in messages.values())


def test_run_batch_checks_ids_it_is_given_directly(tmp_path, case, monkeypatch):
    monkeypatch.setattr(batch, "run_case", fake_run_case)
    specs, _ = read_manifest(_manifest(tmp_path / "m.csv", case, ["x1"]))
    bad = [
        type(specs[0])(**{**specs[0].to_dict(), "case_id": cid, "fluoro": specs[0].fluoro})
        for cid in ("../escape", "X1")
    ]
    rows = run_batch([specs[0], *bad], tmp_path / "out", FAST)
    assert [r["status"] for r in rows] == ["ok", "failed", "failed"]
    assert not (tmp_path / "escape").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        OWNER_MARK,
        "batch_summary.csv",
        "x1",
    ]


def test_a_case_folder_whose_discovery_fails_is_a_failed_row(tmp_path, case, monkeypatch):
    import hybridfuse.fusion.io

    cases = tmp_path / "cases"
    for name in ("k1", "k2", "k3"):
        shutil.copytree(case, cases / name)
    (cases / "k2" / "huge.dcm").write_bytes(b"x")
    real = hybridfuse.fusion.io.read_header

    def read_header(path, *a, **kw):
        if Path(path).name == "huge.dcm":
            raise MemoryError("Unable to allocate 2.0 GiB")  # what a huge declared XA did
        return real(path, *a, **kw)

    monkeypatch.setattr(hybridfuse.fusion.io, "read_header", read_header)
    (cases / "old_out").mkdir()  # an earlier output inside the folder is not a case
    (cases / "old_out" / OWNER_MARK).write_text("{}")
    (cases / "old_out" / "batch_summary.csv").write_text("case_id\n")
    specs, problems = read_manifest(cases)
    assert [s.case_id for s in specs] == ["k1", "k3"]
    assert [p["case_id"] for p in problems] == ["k2"]
    assert "k2" in problems[0]["message"] and "Unable to allocate" in problems[0]["message"]


def test_the_summary_is_appended_per_case_and_ordered_once(tmp_path, case, monkeypatch):
    monkeypatch.setattr(batch, "run_case", fake_run_case)
    writes = []
    real_write = batch.write_text
    monkeypatch.setattr(
        batch, "write_text", lambda p, t: (writes.append(Path(p).name), real_write(p, t))[1]
    )
    n = 30
    specs, problems = read_manifest(
        _manifest(tmp_path / "m.csv", case, [f"k{i}" for i in range(n)])
    )
    seen = []

    def progress(row, done, total):
        seen.append(len(_summary(tmp_path / "out")))  # every finished case is on disk already

    rows = run_batch(specs, tmp_path / "out", FAST, problems=problems, progress=progress)
    assert seen == list(range(1, n + 1))
    assert writes.count("batch_summary.csv") == 2  # created once, ordered once; never per case
    assert [r["case_id"] for r in _summary(tmp_path / "out")] == [r["case_id"] for r in rows]


def test_summary_cells_are_neutralised_and_never_written_through_a_link(tmp_path, case):
    out = tmp_path / "out"
    out.mkdir()
    (out / OWNER_MARK).write_text("{}")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / ".batch_summary.csv.partial").symlink_to(victim)  # the old predictable name
    specs, problems = read_manifest(_manifest(tmp_path / "m.csv", case, ["=HYPERLINK(1)"]))
    run_batch(specs, out, FAST, problems=problems)
    assert victim.read_text() == "precious"
    (row,) = _summary(out)
    assert row["case_id"] == "'=HYPERLINK(1)" and row["status"] == "failed"


@pytest.mark.parametrize("kind", ["foreign", "file", "link", "input"])
def test_an_unsafe_out_root_is_refused_before_any_case(tmp_path, case, monkeypatch, kind):
    from hybridfuse._safeio import UnsafeOutputError

    monkeypatch.setattr(batch, "run_case", lambda *a, **k: pytest.fail("a case ran"))
    out = {"input": case.parent, "foreign": tmp_path / "f", "file": tmp_path / "x"}.get(
        kind, tmp_path / "l"
    )
    if kind == "foreign":
        out.mkdir()
        (out / "mine.txt").write_text("mine")
    elif kind == "file":
        out.write_text("mine")
    elif kind == "link":
        (tmp_path / "target").mkdir()
        out.symlink_to(tmp_path / "target")
    specs, _ = read_manifest(_manifest(tmp_path / "m.csv", case, ["k1"]))
    with pytest.raises(UnsafeOutputError):
        run_batch(specs, out, FAST)
    assert not (tmp_path / "target").exists() or not any((tmp_path / "target").iterdir())


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead; only its exit status waits to be collected


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_killed_parent_and_the_rerun_cleans_up(tmp_path, case, monkeypatch):
    from click.testing import CliRunner

    from hybridfuse.cli.main import cli

    manifest = _manifest(tmp_path / "m.csv", case, ["k1", "k2", "k3"])
    (tmp_path / "fast.toml").write_text(FAST_TOML)
    out = tmp_path / "out"
    args = ["batch", str(manifest), "--out", str(out), "--config", str(tmp_path / "fast.toml")]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from hybridfuse.cli.main import main; main()",
            *args,
            "--workers",
            "2",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".k*.partial-*")):
        time.sleep(0.05)  # a worker is writing a case
    kids = _children(proc.pid)
    assert len(kids) >= 2 and list(out.glob(".k*.partial-*"))
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.1)
    assert not [k for k in kids if _alive(k)], "worker processes outlived their parent"
    while time.time() < deadline and any(Path(f"/proc/{k}").exists() for k in kids):
        time.sleep(0.1)  # init collects the zombies; until then their pids look in use
    partial = sorted(p.name for p in out.glob(".k*.partial-*"))
    assert partial  # what the killed workers left, for the re-run to clean
    monkeypatch.setattr(batch, "run_case", fake_run_case)  # the re-run is about the folders
    rerun = CliRunner().invoke(cli, args)
    assert rerun.exit_code == 0, rerun.output
    assert "leftover(s) of interrupted runs" in rerun.output and partial[0] in rerun.output
    assert not list(out.glob(".*partial*"))
    assert [r["status"] for r in _summary(out)] == ["ok"] * 3


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_the_workers_and_leaves_no_partial_folder(tmp_path, case):
    manifest = _manifest(tmp_path / "m.csv", case, [f"k{i}" for i in range(6)])
    (tmp_path / "fast.toml").write_text(FAST_TOML)
    out = tmp_path / "out"
    args = ["batch", str(manifest), "--out", str(out), "--config", str(tmp_path / "fast.toml")]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from hybridfuse.cli.main import main; main()",
            *args,
            "--workers",
            "2",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".k*.partial-*")):
        time.sleep(0.05)
    kids = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    t0 = time.time()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and b"Traceback" not in err, err
    assert time.time() - t0 < 10  # queued cases are cancelled, not run to the end
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.1)
    assert not [k for k in kids if _alive(k)]
    assert not list(out.glob(".*partial*"))  # each worker removed its temporary folder
    assert len([p for p in out.iterdir() if p.name.startswith("k")]) < 6


def test_the_worker_watcher_ends_an_orphan(monkeypatch):
    """The fallback where PR_SET_PDEATHSIG is not available: a parent change ends the worker."""
    ppids = iter([100, 100, 1])
    monkeypatch.setattr(os, "getppid", lambda: next(ppids))
    monkeypatch.setattr(batch.time, "sleep", lambda s: None)
    exits = []

    def fake_exit(code):
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", fake_exit)
    with pytest.raises(SystemExit):
        batch._watch_parent(100)
    assert exits == [1]


def test_sigterm_in_a_worker_unwinds_the_case_then_ends_the_worker(tmp_path, case, monkeypatch):
    def terminated_mid_case(spec, out_dir, config, **kw):
        with atomic_directory(out_dir, overwrite=True) as tmp:
            (tmp / "half.png").write_text("")
            batch._unwind(signal.SIGTERM, None)

    monkeypatch.setattr(batch, "run_case", terminated_mid_case)
    exits = []

    def fake_exit(code):
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", fake_exit)
    specs, _ = read_manifest(_manifest(tmp_path / "m.csv", case, ["k1"]))
    with pytest.raises(SystemExit):
        batch.run_one(specs[0].to_dict(), str(tmp_path / "out"), FAST.to_dict())
    assert exits == [128 + signal.SIGTERM]  # not a failed row and on to the next case
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --- export: frames and videos through exclusive temporary names ------------------------------


@pytest.mark.parametrize("kind", ["png", "gif", "mp4"])
def test_exports_never_write_through_a_link_and_leave_nothing_on_failure(
    tmp_path, monkeypatch, kind
):
    import numpy as np

    from hybridfuse._safeio import UnsafeOutputError
    from hybridfuse.fusion.errors import FusionError
    from hybridfuse.fusion.export import write_gif, write_mp4, write_png

    frames = [np.full((20, 30, 3), v, np.uint8) for v in (0, 128, 255)]
    write = {
        "png": lambda p, f: write_png(p, f[0]),
        "gif": lambda p, f: write_gif(p, f, 5.0),
        "mp4": lambda p, f: write_mp4(p, f, 5.0),
    }[kind]
    victim = tmp_path / "victim"
    victim.write_text("precious")
    for old in (f".fused.{kind}.partial", f".fused.{kind}.partial.{kind}"):  # the old names
        (tmp_path / old).symlink_to(victim)
    write(tmp_path / f"fused.{kind}", frames)
    assert (tmp_path / f"fused.{kind}").stat().st_size > 50
    (tmp_path / f"link.{kind}").symlink_to(victim)
    with pytest.raises(UnsafeOutputError):
        write(tmp_path / f"link.{kind}", frames)
    assert victim.read_text() == "precious"
    if kind == "mp4":  # the encoder fails half-way: no file, no leftover
        import imageio_ffmpeg

        def failing_writer(path, *a, **k):
            Path(path).write_bytes(b"half a video")
            yield
            raise RuntimeError("ffmpeg died")

        monkeypatch.setattr(imageio_ffmpeg, "write_frames", failing_writer)
        with pytest.raises(FusionError, match="video encoding failed"):
            write(tmp_path / "bad.mp4", frames)
        assert not list(tmp_path.glob("*bad*")) and not list(tmp_path.glob(".bad*"))
    assert not list(tmp_path.glob(".*.partial-*"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals")
def test_sigterm_to_an_idle_worker_exits_quietly():
    """A worker waiting for its next case has nothing to unwind: exit 143, no traceback."""
    code = (
        "import os, signal, time\n"
        "from hybridfuse.fusion import batch\n"
        "signal.signal(signal.SIGTERM, batch._unwind)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, timeout=60
    )
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert proc.stderr == b""

"""End to end: run, demo and batch (local processes, a real dask cluster, a killed run)."""

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

from hybridfuse.cli.main import cli

CONFIG = '[registration]\nmetric = "none"\n[fusion]\nvideo = "gif"\ndicom = false\n'


@pytest.fixture(scope="session")
def cases(tmp_path_factory, generated_case):
    root = tmp_path_factory.mktemp("cases")
    for seed, proc in ((21, "lumbar-mbb"), (22, "cervical-mbb"), (23, "lumbar-facet")):
        shutil.copytree(generated_case(seed, proc)[0], root / f"case{seed}")
    return root


def _manifest(root: Path, cases: Path) -> Path:
    good = []
    for c in sorted(cases.iterdir()):
        fl = ";".join(str(p) for p in sorted(c.glob("fluoro_*.dcm")))
        lm = c / "landmarks" / "run02_confirm_lateral_f00_us06.csv"  # the registered pair
        good.append((c.name, fl, str(c / "us_clip.dcm"), str(c / "rdsr.dcm"), str(lm)))
    corrupt = root / "corrupt_fluoro.dcm"
    data = (cases / "case21" / "fluoro_run02_confirm_lateral.dcm").read_bytes()
    corrupt.write_bytes(data[: len(data) // 3])
    rows = good + [
        ("broken", "corrupt_fluoro.dcm", str(cases / "case21" / "us_clip.dcm"), "", ""),
        ("missing", str(root / "nope.dcm"), str(cases / "case21" / "us_clip.dcm"), "", ""),
        (good[0][0], good[0][1], good[0][2], "", ""),  # duplicate case id
    ]
    path = root / "manifest.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "fluoro", "ultrasound", "rdsr", "landmarks", "note"])
        for r in rows:
            w.writerow([*r, "extra column ignored"])
    (root / "config.toml").write_text(CONFIG)
    return path


def _rows(out: Path) -> dict[str, dict]:
    with open(out / "batch_summary.csv", newline="") as fh:
        return {r["case_id"]: r for r in csv.DictReader(fh)}


def test_batch_reports_bad_cases_and_resumes(cases, tmp_path):
    manifest = _manifest(tmp_path, cases)
    out = tmp_path / "out"
    args = [
        "-q",
        "batch",
        str(manifest),
        "--out",
        str(out),
        "--workers",
        "2",
        "--config",
        str(tmp_path / "config.toml"),
    ]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 1, first.output  # some cases failed
    rows = _rows(out)
    for c in ("case21", "case22", "case23"):
        assert rows[c]["status"] == "ok", rows[c]
        summary = json.loads((out / c / "summary.json").read_text())
        assert all((out / c / o).is_file() for o in summary["outputs"])
        assert summary["config"]["registration"]["metric"] is None  # the TOML file was used
    # The CSV names the input by role (no file names without --include-phi), the
    # terminal by the path the user gave.
    broken = rows["broken"]
    assert broken["status"] == "failed" and "fluoroscopy 1: truncated" in broken["message"]
    assert "corrupt_fluoro.dcm" not in broken["message"]
    assert "corrupt_fluoro.dcm" in first.output
    assert rows["missing"]["status"] == "failed" and "no such file" in rows["missing"]["message"]
    assert any("duplicate case_id" in r["message"] for r in rows.values())
    assert len(rows) == 6
    assert not (out / "broken").exists() and not list(out.glob(".*partial*"))

    mtimes = {c: (out / c / "summary.json").stat().st_mtime for c in ("case21", "case22")}
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 1
    rows = _rows(out)
    assert rows["case21"]["status"] == "skipped (up to date)"
    assert {c: (out / c / "summary.json").stat().st_mtime for c in mtimes} == mtimes


def test_batch_on_a_dask_cluster_equals_the_local_run(cases, tmp_path):
    distributed = pytest.importorskip("distributed")
    manifest_dir = cases  # a folder of case folders is a manifest too
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    local = tmp_path / "local"
    r = CliRunner().invoke(
        cli, ["-q", "batch", str(manifest_dir), "--out", str(local), "--config", str(config)]
    )
    assert r.exit_code == 0, r.output
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        remote = tmp_path / "remote"
        r = CliRunner().invoke(
            cli,
            [
                "-q",
                "batch",
                str(manifest_dir),
                "--out",
                str(remote),
                "--config",
                str(config),
                "--scheduler",
                cluster.scheduler_address,
            ],
        )
        assert r.exit_code == 0, r.output
    local_rows = _rows(local)
    assert all(float(r["tre_median_mm"]) < 0.5 for r in local_rows.values())  # truth known
    for case in ("case21", "case22", "case23"):
        a = json.loads((local / case / "registration" / "transform.json").read_text())
        b = json.loads((remote / case / "registration" / "transform.json").read_text())
        assert a["moving_to_fixed_pixel"] == b["moving_to_fixed_pixel"]


def test_a_killed_batch_leaves_no_false_finish_and_the_rerun_completes(cases, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-c",
        "from hybridfuse.cli.main import main; main()",
        "-q",
        "batch",
        str(cases),
        "--out",
        str(out),
        "--config",
        str(config),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "batch_summary.csv").is_file() and any(
            r["status"] == "ok" for r in _rows(out).values()
        ):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    for case_dir in (p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        summary = json.loads((case_dir / "summary.json").read_text())
        assert all((case_dir / o).is_file() for o in summary["outputs"]), case_dir
    rerun = CliRunner().invoke(
        cli, ["-q", "batch", str(cases), "--out", str(out), "--config", str(config)]
    )
    assert rerun.exit_code == 0, rerun.output
    statuses = {r["status"] for r in _rows(out).values()}
    assert statuses <= {"ok", "skipped (up to date)"} and "skipped (up to date)" in statuses


def test_run_and_demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["-q", "demo"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "hybridfuse-demo" / "index.html").is_file()
    assert "open first" in r.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    r = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "other")])
    assert r.exit_code == 2 and "not a previous demo" in r.output


@pytest.mark.parametrize(
    "line, expected",
    [
        ('[registration]\nmetric = "bogus"', "metric = 'bogus': expected one of"),
        ('[fusion]\nmode = "sepia"', "mode = 'sepia': expected one of"),
        ('[fusion]\nopacity = "half"', "opacity = 'half': expected a number"),
        ('[fusion]\ncolour = "red"', "unknown option(s) 'colour'"),
        ('[run]\nmetric = "none"', "the old [run] table is gone"),
    ],
)
def test_a_bad_configuration_is_named_before_any_work(tmp_path, line, expected):
    from hybridfuse.testdata import sample_case

    config = tmp_path / "bad.toml"
    config.write_text(f"{line}\n")
    out = tmp_path / "out"
    r = CliRunner().invoke(
        cli, ["run", str(sample_case()), "--out", str(out), "--config", str(config)]
    )
    assert r.exit_code == 2, r.output
    assert "bad.toml" in r.output and expected in r.output
    assert not out.exists()

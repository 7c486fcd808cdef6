"""Fix round: the CLI and pipeline attacks found after the hardening, each reproduced."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import hybridfuse.cli.run as cli_run
import hybridfuse.fusion.batch
from hybridfuse._safeio import UnsafeOutputError
from hybridfuse.cli.main import cli
from hybridfuse.fusion.batch import check_scheduler_address, read_manifest
from hybridfuse.fusion.errors import InputError
from hybridfuse.fusion.fuse import _check_frames
from hybridfuse.fusion.pipeline import (
    RunConfig,
    _check_inputs,
    case_from_folder,
    claim_out,
    run_case,
)
from hybridfuse.testdata import sample_case

LANDMARKS = "landmarks/run02_confirm_lateral_f00_us06.csv"


def _invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_line_exit_2(r, *words):
    assert r.exit_code == 2, r.output
    assert "internal error" not in r.output
    for w in words:
        assert w in r.output, r.output


# 1. --config: a TOML string "false" is truthy; every key is type-checked.
@pytest.mark.parametrize(
    "toml, words",
    [
        ('[fusion]\ninclude_phi = "false"\n', ["include_phi", "true or false"]),
        ('[fusion]\nuid_map = "no"\n', ["uid_map", "true or false"]),
        ("[dose]\nprocedure = 5\n", ["procedure", "expected text"]),
        ("[dose]\nseed = true\n", ["seed", "a whole number"]),
        ("fusion = 3\n", ["fusion = 3", "table"]),
        ('[run]\nmetric = "mi"\n', ["'run'", "[registration], [fusion], [dose]", "[run]"]),
        ('metric = "mi"\n', ["'metric'", "[registration], [fusion], [dose]"]),
        ('[registration]\nvideo = "gif"\n', ["unknown option(s) 'video'"]),
    ],
)
def test_config_types_refused(tmp_path, toml, words):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    with pytest.raises(InputError) as exc:
        RunConfig.from_toml(cfg)
    assert str(cfg) in str(exc.value) and all(w in str(exc.value) for w in words)


def test_config_not_utf8_is_exit_2(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(b"\xff\xfe[fusion]\n")
    r = _invoke(["run", sample_case(), "--out", tmp_path / "o", "--config", cfg])
    _one_line_exit_2(r, "not UTF-8")
    assert RunConfig.from_toml(_write(tmp_path / "ok.toml", "[fusion]\ninclude_phi = false\n"))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# 2. register --out: a user's transform.json, a link, the inputs' folder.
def _register(out, *extra, fixed="fluoro_run02_confirm_lateral.dcm", moving="us_clip.dcm"):
    case = sample_case()
    return _invoke(
        ["register", "--fixed", case / fixed, "--moving", case / moving, "--moving-frame", "6"]
        + ["--metric", "none", "--landmarks", case / LANDMARKS, "--out", out, *extra]
    )


def test_register_overwrite_keeps_a_users_transform_json(tmp_path):
    (tmp_path / "D").mkdir()
    mine = tmp_path / "D" / "transform.json"
    mine.write_text('{"mine": 1}')
    _one_line_exit_2(_register(tmp_path / "D", "--overwrite"), "hybridfuse.transform/1")
    assert mine.read_text() == '{"mine": 1}'


def test_register_out_link_and_input_folder_refused(tmp_path):
    (tmp_path / "T").mkdir()
    (tmp_path / "L").symlink_to(tmp_path / "T")
    _one_line_exit_2(_register(tmp_path / "L"), "symbolic link")
    assert not any((tmp_path / "T").iterdir())
    case = tmp_path / "B"
    shutil.copytree(sample_case(), case)
    r = _invoke(
        ["register", "--fixed", case / "fluoro_run02_confirm_lateral.dcm", "--moving"]
        + [case / "us_clip.dcm", "--metric", "none", "--landmarks", case / LANDMARKS]
        + ["--moving-frame", "6", "--out", case]
    )
    _one_line_exit_2(r, "contains the input")
    assert not (case / "transform.json").exists()


# 9. register refuses swapped files, as fuse does.
def test_register_swapped_pair_refused(tmp_path):
    r = _register(tmp_path / "S", fixed="us_clip.dcm", moving="fluoro_run02_confirm_lateral.dcm")
    _one_line_exit_2(r, "must be fluoroscopy")
    assert not (tmp_path / "S").exists()


# 3. fuse --frames: repeats would multiply every output.
def test_repeated_frames_refused():
    with pytest.raises(InputError, match="more than once"):
        _check_frames([0] * 1000, 4, "fluoroscopy")
    assert _check_frames([2, 0], 4, "fluoroscopy") == [2, 0]


# 4. batch --workers: capped at the CPUs, in one line.
def test_batch_workers_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(cli_run, "_cpus", lambda: 1)
    seen = {}

    def fake_run_batch(specs, out, config, *, workers, **kw):
        seen["workers"] = workers
        return []

    monkeypatch.setattr(hybridfuse.fusion.batch, "run_batch", fake_run_batch)
    manifest = _write(tmp_path / "m.csv", "case_id,fluoro,ultrasound\nc1,a.dcm,b.dcm\n")
    r = _invoke(["batch", manifest, "--out", tmp_path / "o", "--workers", "24"])
    assert r.exit_code == 0, r.output
    assert seen["workers"] == 1 and "capped at 1" in r.output
    r = _invoke(["batch", manifest, "--out", tmp_path / "o", "--workers", "100000"])
    assert r.exit_code == 2


# 5. a bad truth.json in a case folder: one line, exit 2, before any work.
@pytest.mark.parametrize("text", ['{"frame_pairs":[{"a":NaN}]}', "[" * 100000 + "]" * 100000])
def test_bad_truth_json_is_input_error(tmp_path, text):
    case = tmp_path / "case"
    shutil.copytree(sample_case(), case)
    (case / "truth.json").write_text(text)
    with pytest.raises(InputError, match="truth.json"):
        run_case(case_from_folder(case), tmp_path / "out")
    assert not (tmp_path / "out").exists()


# 6. manifests: NUL byte, BOM, header only, a device as a cell.
def test_manifest_nul_bom_header_only_device(tmp_path):
    nul = _write(tmp_path / "nul.csv", "case_id,fluoro,ultrasound\nc1,a\x00b,c\nc2,a,b\n")
    specs, problems = read_manifest(nul)
    assert [s.case_id for s in specs] == ["c2"]
    assert "nul.csv:2" in problems[0]["message"] and "NUL" in problems[0]["message"]
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfcase_id,fluoro,ultrasound\nc1,a.dcm,b.dcm\n")
    assert [s.case_id for s in read_manifest(bom)[0]] == ["c1"]
    with pytest.raises(InputError, match="no cases"):
        read_manifest(_write(tmp_path / "h.csv", "case_id,fluoro,ultrasound\n"))
    dev = _write(tmp_path / "d.csv", f"case_id,fluoro,ultrasound\nc1,/dev/zero,{tmp_path}/b\n")
    with pytest.raises(InputError, match="/dev/zero: not a regular file"):
        _check_inputs(read_manifest(dev)[0][0])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        read_manifest(fifo)


# 7. --scheduler: a malformed or unreachable address is a one-line error.
def test_scheduler_address(tmp_path):
    for bad in ("garbage", "tcp://host", "tcp://h:99999"):
        with pytest.raises(InputError, match="dask scheduler address"):
            check_scheduler_address(bad)
    check_scheduler_address("tcp://127.0.0.1:8786")

    class Unreachable:
        def __init__(self, address, timeout):
            assert timeout <= 10
            raise TimeoutError(f"Timed out trying to connect to {address} after {timeout} s")

    with pytest.raises(InputError, match="cannot reach the dask scheduler tcp://127.0.0.1:1"):
        hybridfuse.fusion.batch._connect(Unreachable, "tcp://127.0.0.1:1")
    manifest = _write(tmp_path / "m.csv", "case_id,fluoro,ultrasound\nc1,a.dcm,b.dcm\n")
    r = _invoke(["batch", manifest, "--out", tmp_path / "o", "--scheduler", "garbage"])
    _one_line_exit_2(r, "expected a dask scheduler address")
    assert not (tmp_path / "o").exists()


# 8. messages name what run/batch accept; a concurrent run's folder is named as such.
def test_run_without_landmarks_starts_from_the_beads(tmp_path):
    case = tmp_path / "case"
    shutil.copytree(sample_case(), case)
    shutil.rmtree(case / "landmarks")
    summary = run_case(case_from_folder(case), tmp_path / "out")
    quality = summary["registration"]["quality"]
    assert quality["verdict"] == "accepted"
    assert summary["registration"]["tre"]["median_mm"] < 2.0


def test_run_with_no_usable_pair_names_what_run_accepts(tmp_path):
    import pydicom

    case = tmp_path / "case"
    shutil.copytree(sample_case(), case)
    shutil.rmtree(case / "landmarks")
    (case / "truth.json").unlink()
    clip = pydicom.dcmread(case / "us_clip.dcm")
    clip.AcquisitionDateTime = "20260115092232.000000"  # 20 min after the fluoroscopy
    clip.AcquisitionTime = clip.ContentTime = clip.SeriesTime = "092232.000000"
    clip.save_as(case / "us_clip.dcm")
    with pytest.raises(InputError) as exc:  # not an internal error
        run_case(case_from_folder(case), tmp_path / "out")
    text = str(exc.value)
    assert "no ultrasound frame within 0.5 s" in text
    assert "--init-transform" not in text and "--landmarks" not in text


def test_concurrent_run_into_same_new_out(tmp_path):
    out = tmp_path / "X"
    with pytest.raises(UnsafeOutputError, match="appeared while this run worked"):
        with claim_out(out, overwrite=False) as tmp:
            (tmp / "a").write_text("mine")
            out.mkdir()  # the other run finished first
            (out / "summary.json").write_text(json.dumps({"other": 1}))
    assert json.loads((out / "summary.json").read_text()) == {"other": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["X"]


def test_fuse_cli_refuses_repeated_frames_before_any_output(tmp_path):
    assert _register(tmp_path / "R").exit_code == 0
    case = sample_case()
    r = _invoke(
        ["fuse", "--fixed", case / "fluoro_run02_confirm_lateral.dcm", "--moving"]
        + [case / "us_clip.dcm", "--transform", tmp_path / "R" / "transform.json"]
        + ["--out", tmp_path / "F", "--video", "gif", "--frames", ",".join(["0"] * 3000)]
    )
    _one_line_exit_2(r, "given more than once")
    assert "fusing" not in r.output and not (tmp_path / "F").exists()

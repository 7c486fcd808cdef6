"""Hostile inputs, round 18: each test is a defect found by the helper wt18-hostile."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pydicom
from click.testing import CliRunner

from hybridfuse import _safeio
from hybridfuse.cli import fuse as fuse_cli
from hybridfuse.cli.main import cli
from hybridfuse.dose.rdsr import read_rdsr
from hybridfuse.testdata import sample_case

MARK = '{"written_by": "hybridfuse"}\n'


def _marked_out_with_config(tmp_path, text):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".hybridfuse-output").write_text(MARK)
    cfg = out / "my-settings.toml"
    cfg.write_text(text)
    return out, cfg


def test_run_refuses_a_config_inside_the_out_folder_it_would_replace(tmp_path):
    # `run --overwrite` replaced the marked folder and deleted the user's --config with it.
    out, cfg = _marked_out_with_config(tmp_path, '[fusion]\nvideo = "none"\n')
    args = ["-q", "run", str(sample_case()), "--out", str(out), "--overwrite"]
    r = CliRunner().invoke(cli, [*args, "--config", str(cfg)])
    assert r.exit_code == 2, r.output
    assert "contains the input" in r.output
    assert cfg.read_text() == '[fusion]\nvideo = "none"\n'


def test_batch_refuses_a_config_inside_the_out_folder(tmp_path):
    out = tmp_path / "bout"
    out.mkdir()
    cfg = out / "settings.toml"
    cfg.write_text('[fusion]\nvideo = "none"\n')
    manifest = tmp_path / "cases"
    manifest.mkdir()
    r = CliRunner().invoke(
        cli, ["-q", "batch", str(manifest), "--out", str(out), "--config", str(cfg)]
    )
    assert r.exit_code == 2, r.output
    assert "contains the input" in r.output


def _cn(item):
    seq = item.get("ConceptNameCodeSequence")
    return seq[0].CodeMeaning if seq else ""


def test_a_repeated_irradiation_event_is_counted_once(tmp_path):
    # The same event (same Irradiation Event UID) twice was summed twice: the dose saved
    # by ultrasound went from 0.442 to 0.740 Gy.cm2 with only a totals-mismatch flag.
    ds = pydicom.dcmread(sample_case() / "rdsr.dcm")
    events = [it for it in ds.ContentSequence if _cn(it) == "Irradiation Event X-Ray Data"]
    ds.ContentSequence.append(copy.deepcopy(events[1]))
    path = tmp_path / "dup.dcm"
    ds.save_as(path)
    rec = read_rdsr(path)
    assert len(rec.events) == len(events)
    assert any("recorded twice" in f or "repeat" in f for f in rec.flags), rec.flags
    assert json.dumps(rec.flags)  # flags stay plain strings


def test_a_newline_in_a_file_name_does_not_cut_the_reason_off(tmp_path):
    # The one-line error kept the text before the first newline: for "nl\nname.dcm" it
    # said "hybridfuse: error: nl\x0aname.dcm: nl", the reason lost.
    bad = tmp_path / "nl\nname.dcm"
    bad.write_bytes(b"")
    r = CliRunner().invoke(cli, ["info", str(bad)])
    assert r.exit_code == 2
    assert "not a DICOM file" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    lm = sample_case() / "landmarks" / "run02_confirm_lateral_f00_us06.csv"
    args = ["register", "--fixed", str(bad), "--moving", str(sample_case() / "us_clip.dcm")]
    r = CliRunner().invoke(cli, [*args, "--landmarks", str(lm), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "not a DICOM file" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def _fifo(tmp_path):
    import os

    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def test_a_config_corrections_or_coefficients_that_is_not_a_regular_file_is_refused(tmp_path):
    # --config, --corrections and --coefficients read a FIFO forever (the command hung)
    # and /dev/zero until the memory was gone (killed); other inputs refuse both.
    import signal

    def hung(*_):
        raise TimeoutError("a settings file read blocked")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)  # a hang fails the test instead of the suite
    try:
        case = sample_case()
        lm = case / "landmarks" / "run02_confirm_lateral_f00_us06.csv"
        reg = ["register", "--fixed", str(case / "fluoro_run02_confirm_lateral.dcm")]
        reg += ["--moving", str(case / "us_clip.dcm"), "--landmarks", str(lm)]
        dose = ["dose", "report", "--rdsr", str(case / "rdsr.dcm")]
        for bad in (_fifo(tmp_path), "/dev/zero"):
            for i, args in enumerate(
                [
                    [*reg, "--config", str(bad)],
                    ["run", str(case), "--config", str(bad)],
                    [*dose, "--corrections", str(bad)],
                    [*dose, "--coefficients", str(bad)],
                ]
            ):
                r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / f"o{i}")])
                assert r.exit_code == 2, (args, r.output)
                assert "not a regular file" in r.output, (args, r.output)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_a_fifo_among_a_cases_landmarks_is_refused_not_waited_on(tmp_path):
    import os
    import shutil
    import signal

    case = tmp_path / "case"
    shutil.copytree(sample_case(), case)
    os.mkfifo(case / "landmarks" / "zz.csv")

    def hung(*_):
        raise TimeoutError("the run blocked on a FIFO")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        r = CliRunner().invoke(cli, ["-q", "run", str(case), "--out", str(tmp_path / "o")])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert r.exit_code == 2, r.output
    assert "not a regular file" in r.output


def test_a_frame_time_vector_of_nan_says_so_not_that_its_count_is_wrong():
    # "FrameTimeVector has 4 entries for 4 frames; ignored" for a vector of NaN.
    import warnings

    from hybridfuse.dicom import frame_times

    ds = pydicom.Dataset()
    with warnings.catch_warnings():  # pydicom warns of the invalid DS, as a file would
        warnings.simplefilter("ignore")
        ds.FrameTimeVector = ["NaN"] * 4
    notes = " ".join(frame_times(ds, 4).notes)
    assert "not a number" in notes, notes
    assert "4 entries for 4 frames" not in notes


def test_fuse_refuses_a_transform_registered_on_another_fluoroscopy_file(tmp_path, monkeypatch):
    # A transform registered on the lateral run was fused onto the AP run: exit 0, no
    # word, the overlay placed by the wrong view's geometry.
    case = sample_case()
    lm = case / "landmarks" / "run02_confirm_lateral_f00_us06.csv"
    us = ["--moving", str(case / "us_clip.dcm")]
    r = CliRunner().invoke(
        cli,
        ["-q", "register", "--fixed", str(case / "fluoro_run02_confirm_lateral.dcm"), *us]
        + ["--moving-frame", "6", "--landmarks", str(lm), "--out", str(tmp_path / "reg")],
    )
    assert r.exit_code == 0, r.output
    fuse = ["-q", "fuse", *us, "--transform", str(tmp_path / "reg" / "transform.json")]
    fuse += ["--video", "none", "--no-dicom"]
    ap = ["--fixed", str(case / "fluoro_run03_confirm_ap.dcm")]
    r = CliRunner().invoke(cli, [*fuse, *ap, "--out", str(tmp_path / "f1")])
    assert r.exit_code == 2, r.output
    assert "registered on another fluoroscopy file" in r.output
    assert not (tmp_path / "f1").exists()
    r = CliRunner().invoke(cli, [*fuse, *ap, "--out", str(tmp_path / "f2"), "--allow-mismatch"])
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / "f2" / "fuse.json").read_text())
    assert record["belonging"]["transform_registered_on_other"] == ["fluoroscopy"]
    lateral = ["--fixed", str(case / "fluoro_run02_confirm_lateral.dcm")]
    hashed = []
    real_sha256 = _safeio.sha256_file
    for module in (_safeio, fuse_cli):
        monkeypatch.setattr(module, "sha256_file", lambda p: hashed.append(p) or real_sha256(p))
    r = CliRunner().invoke(cli, [*fuse, *lateral, "--out", str(tmp_path / "f3")])
    assert r.exit_code == 0, r.output
    assert "fusing" not in r.output, r.output  # -q: not even the progress bar's label
    # Each input is hashed once: the check's digest is the one fuse.json records.
    names = sorted(Path(p).name for p in hashed)
    assert names == ["fluoro_run02_confirm_lateral.dcm", "transform.json", "us_clip.dcm"], names
    record = json.loads((tmp_path / "f3" / "fuse.json").read_text())
    fixed_bytes = (case / "fluoro_run02_confirm_lateral.dcm").read_bytes()
    assert record["inputs"]["fixed"]["sha256"] == hashlib.sha256(fixed_bytes).hexdigest()


def _event_datetime_items(ds):
    events = [it for it in ds.ContentSequence if _cn(it) == "Irradiation Event X-Ray Data"]
    return [c for e in events for c in e.ContentSequence if _cn(c) == "DateTime Started"]


def test_an_unreadable_or_far_off_event_time_is_flagged(tmp_path):
    # One event's DateTime Started unreadable, or dated 2099 in a 2026 procedure, changed
    # the guided phase and the dose saved with no flag naming it.
    import warnings

    for value, expected in (("2026999999", "not a date and time"), ("20990101000000", "span")):
        ds = pydicom.dcmread(sample_case() / "rdsr.dcm")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _event_datetime_items(ds)[3].DateTime = value
        path = tmp_path / "t.dcm"
        ds.save_as(path)
        flags = read_rdsr(path).flags
        assert any(expected in f for f in flags), (value, flags)
    assert not read_rdsr(sample_case() / "rdsr.dcm").flags


def test_a_usage_error_is_one_line_too(tmp_path):
    # click printed four lines (Usage, Try, blank, Error) for bad input such as an
    # existing synth --out or a registry that does not exist.
    (tmp_path / "d").mkdir()
    for args in (
        ["synth", "--out", str(tmp_path / "d")],
        ["dose", "audit", "--db", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "a")],
        ["register", "--fixed", "x.dcm"],
    ):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 2, r.output
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hybridfuse: error: "), r.output


def test_a_manifest_problem_names_the_files_line_despite_blank_lines(tmp_path):
    # With blank lines the repeated case on line 5 was reported as "m.csv:3".
    from hybridfuse.fusion.batch import read_manifest

    m = tmp_path / "m.csv"
    m.write_text("case_id,fluoro,ultrasound\n\na,f.dcm,u.dcm\n\na,f.dcm,u.dcm\n")
    _, problems = read_manifest(m)
    assert [p["message"].split(": ")[0] for p in problems] == [f"{m}:5"]

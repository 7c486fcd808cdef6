"""Findings of the review of the hardening: each reproduced, each refused."""

from __future__ import annotations

import csv
import io
import json

from click.testing import CliRunner

from hybridfuse._safeio import csv_cell
from hybridfuse.cli.main import cli


def _register(tmp_path):
    from hybridfuse.testdata import sample_case

    case = sample_case()
    fixed, us = case / "fluoro_run02_confirm_lateral.dcm", case / "us_clip.dcm"
    lms = case / "landmarks" / "run02_confirm_lateral_f00_us06.csv"
    args = ["register", "--fixed", str(fixed), "--moving", str(us), "--moving-frame", "6"]
    args += ["--landmarks", str(lms), "--metric", "none", "--out", str(tmp_path / "r")]
    assert CliRunner().invoke(cli, args).exit_code == 0
    return fixed, us, tmp_path / "r" / "transform.json"


def test_a_users_dot_folders_beside_out_survive(tmp_path):
    fixed, us, tj = _register(tmp_path)
    # A user's own folder whose name has the shape of a leftover, with a dead pid.
    mine = tmp_path / ".photos.old-hybridfuse-999999-0123456789abcdef"
    mine.mkdir()
    (mine / "a.jpg").write_text("precious")
    args = ["fuse", "--fixed", str(fixed), "--moving", str(us), "--transform", str(tj)]
    r = CliRunner().invoke(cli, [*args, "--video", "none", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert (mine / "a.jpg").read_text() == "precious"


def test_bad_registered_frames_in_transform_json_are_input_errors(tmp_path):
    fixed, us, tj = _register(tmp_path)
    record = json.loads(tj.read_text())
    args = ["fuse", "--fixed", str(fixed), "--moving", str(us), "--video", "none"]
    for bad, said in (
        ({"fixed": "x"}, "fixed.frame must be a frame number"),
        ({"moving": {"frame": "abc"}}, "moving.frame must be a frame number"),
        ({"moving": {"frame": 10**6}}, "registered on moving frame 1000000"),
    ):
        path = tmp_path / "t.json"
        path.write_text(json.dumps({**record, **bad}))
        r = CliRunner().invoke(cli, [*args, "--transform", str(path), "--out", str(tmp_path / "o")])
        assert r.exit_code == 2 and said in r.output, r.output
        assert "internal error" not in r.output and not (tmp_path / "o").exists()


def test_a_broken_key_is_refused_before_any_work(tmp_path, monkeypatch):
    import hybridfuse.fusion.fuse

    fixed, us, tj = _register(tmp_path)
    monkeypatch.setenv("HYBRIDFUSE_PSEUDONYM_KEY_FILE", str(tmp_path))  # a folder

    def never(*_a, **_k):
        raise AssertionError("fused before the key was checked")

    monkeypatch.setattr(hybridfuse.fusion.fuse, "fuse_images", never)
    args = ["fuse", "--fixed", str(fixed), "--moving", str(us), "--transform", str(tj)]
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    assert "the pseudonym key is not a regular file" in r.output


def test_csv_cells_cannot_start_a_row():
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_cell('x\r=HYPERLINK("http://evil")'), csv_cell("a\nb"), 1.5])
    rows = list(csv.reader(io.StringIO(buf.getvalue())))
    assert len(rows) == 1 and rows[0][0].startswith("x\\x0d=")

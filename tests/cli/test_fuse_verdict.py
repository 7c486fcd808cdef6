"""``fuse`` refuses a transform whose registration was refused, unless told to accept it."""

from __future__ import annotations

import json

from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.testdata import sample_case

from .test_cli import _register_args


def _refused_transform(tmp_path):
    reg = tmp_path / "reg"
    args = _register_args("--metric", "none", "--model", "affine", "--out", str(reg))
    assert CliRunner().invoke(cli, args).exit_code == 0
    data = json.loads((reg / "transform.json").read_text())
    assert data["quality"]["verdict"] == "accepted"
    # As `register --accept-unverified` writes a refused answer.
    data["quality"].update(verdict="refused", reasons=["a restart ends 9 mm away"])
    data["quality"]["accepted_unverified"] = True
    path = tmp_path / "refused.json"
    path.write_text(json.dumps(data))
    return path


def _fuse(transform, out, *extra):
    case = sample_case()
    args = ["fuse", "--fixed", str(case / "fluoro_run02_confirm_lateral.dcm")]
    args += ["--moving", str(case / "us_clip.dcm"), "--transform", str(transform)]
    args += ["--video", "none", "--frames", "0", "--out", str(out), *extra]
    return CliRunner().invoke(cli, args)


def test_a_refused_registration_is_not_fused_silently(tmp_path):
    transform = _refused_transform(tmp_path)
    result = _fuse(transform, tmp_path / "no")
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert "refused.json: its registration was refused (a restart ends 9 mm away)" in line
    assert "--accept-unverified" in line
    assert not (tmp_path / "no").exists()

    result = _fuse(transform, tmp_path / "yes", "--accept-unverified")
    assert result.exit_code == 0, result.output
    assert "warning: fusing an unverified registration" in result.output
    record = json.loads((tmp_path / "yes" / "fuse.json").read_text())
    assert record["registration_verdict"] == {
        "verdict": "refused",
        "reasons": ["a restart ends 9 mm away"],
        "accepted_unverified": True,
    }

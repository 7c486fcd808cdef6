"""A registration whose frames would take more working memory than the limit is refused."""

from __future__ import annotations

from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.fusion.coregister import MAX_REGISTER_ENV, REGISTER_BYTES_PER_PIXEL
from hybridfuse.testdata import sample_case


def _register(tmp_path):
    case = sample_case()
    lm = case / "landmarks" / "run02_confirm_lateral_f00_us06.csv"
    args = ["register", "--fixed", str(case / "fluoro_run02_confirm_lateral.dcm")]
    args += ["--moving", str(case / "us_clip.dcm"), "--moving-frame", "6", "--landmarks", str(lm)]
    return CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "reg")])


def test_frames_over_the_working_memory_limit_are_refused_before_any_work(tmp_path, monkeypatch):
    # The sample's 512² fluoroscopy and its ultrasound frame need ~60 MB; a limit just
    # under what they need stands in for a 6144² frame (5.7 GB in the sweep of session 18).
    from hybridfuse.fusion import coregister

    calls = []
    monkeypatch.setattr(coregister, "_register_frames", lambda *a, **k: calls.append(1))
    monkeypatch.setenv(MAX_REGISTER_ENV, str(REGISTER_BYTES_PER_PIXEL * 512 * 512))
    r = _register(tmp_path)
    assert r.exit_code == 2, r.output
    assert "fluoro_run02_confirm_lateral.dcm: frames of 512 x 512 (fluoroscopy)" in r.output
    assert f"GiB limit ({MAX_REGISTER_ENV} raises it)" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not calls
    assert not (tmp_path / "reg").exists()


def test_a_bad_limit_in_the_environment_is_bad_input(tmp_path, monkeypatch):
    monkeypatch.setenv(MAX_REGISTER_ENV, "lots")
    r = _register(tmp_path)
    assert r.exit_code == 2 and f"{MAX_REGISTER_ENV}='lots'" in r.output, r.output

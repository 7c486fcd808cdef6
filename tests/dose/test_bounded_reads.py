"""Every DICOM file the dose commands read is bounded: bombs, FIFOs and huge SRs refused."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from tests.fusion.test_hardening_io import _deflate_bomb


def _dose(*args):
    return CliRunner().invoke(cli, ["dose", *map(str, args)])


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setenv("HYBRIDFUSE_MAX_DECODED_BYTES", str(2**20))


def test_deflate_bomb_refused_as_rdsr_clip_and_image(synthetic_case, tmp_path, small_limit):
    case, _ = synthetic_case
    bomb = _deflate_bomb(tmp_path / "bomb.dcm", rows=1024, cols=1024, frames=4)
    for args in (
        ["--rdsr", bomb],
        ["--rdsr", case / "rdsr.dcm", "--us", bomb],
        ["--images", bomb],
    ):
        r = _dose("report", *args, "--out", tmp_path / "out")
        assert r.exit_code == 2, r.output
        assert "bomb.dcm: deflated data set inflates to more than 1048576 bytes" in r.output
        assert not (tmp_path / "out").exists()


def test_fifo_is_refused_not_waited_on(synthetic_case, tmp_path):
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)
    r = _dose("report", "--rdsr", fifo, "--out", tmp_path / "out")
    assert r.exit_code == 2 and "pipe.dcm: not a regular file" in r.output


def test_oversized_sr_refused_before_parsing(synthetic_case, tmp_path, monkeypatch):
    import hybridfuse.dose.rdsr

    case, _ = synthetic_case
    monkeypatch.setattr(hybridfuse.dose.rdsr, "MAX_SR_BYTES", 1000)
    r = _dose("report", "--rdsr", case / "rdsr.dcm", "--out", tmp_path / "out")
    assert r.exit_code == 2
    assert "is larger than a dose report can be read" in r.output

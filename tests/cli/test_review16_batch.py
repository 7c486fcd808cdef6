"""Review of session 16: a failed case's message in batch_summary.csv names no input file."""

from __future__ import annotations

import csv
import shutil

import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.testdata import sample_case

NAME = "SMITH_JOHN_20261130"
FAST = ["--metric", "none", "--video", "none", "--no-dicom"]


@pytest.mark.parametrize("phi", [False, True])
def test_a_failed_case_names_its_inputs_by_role_in_batch_summary(tmp_path, phi):
    """The run tried has no ultrasound frame within 0.5 s: the case fails, and the message
    written to batch_summary.csv names the run by its role, its file only with PHI."""
    folder = tmp_path / NAME
    folder.mkdir()
    fluoro, us = folder / f"{NAME}_run01.dcm", folder / f"{NAME}_us.dcm"
    shutil.copy(sample_case() / "fluoro_run01_scout_lateral.dcm", fluoro)
    shutil.copy(sample_case() / "us_clip.dcm", us)
    manifest, out = tmp_path / "cases.csv", tmp_path / "batch"
    manifest.write_text(f"case_id,fluoro,ultrasound\nc1,{fluoro},{us}\n", encoding="utf-8")
    res = CliRunner().invoke(
        cli, ["batch", str(manifest), "--out", str(out), *FAST, *(["--include-phi"] * phi)]
    )
    assert res.exit_code != 0 and fluoro.name in res.output  # the terminal names the file
    with open(out / "batch_summary.csv", newline="", encoding="utf-8") as fh:
        [row] = list(csv.DictReader(fh))
    assert row["status"] == "failed"
    assert "no ultrasound frame within 0.5 s" in row["message"]
    assert (NAME in row["message"]) == phi
    assert phi or "fluoroscopy 1: no ultrasound frame" in row["message"]

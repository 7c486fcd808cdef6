"""Shared fixtures: seeded RNG, a synthetic case generated once, the real vendor files."""

from __future__ import annotations

import hybridfuse  # noqa: F401  (first: it chooses the CPU code paths before NumPy loads)

# isort: split
import copy
import csv
import functools
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"


@pytest.fixture(scope="session", autouse=True)
def _pseudonym_key(tmp_path_factory):
    """Tests never create or read the pseudonym key in the user's home folder."""
    from hybridfuse.dose.pseudonym import KEY_ENV

    before = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = str(tmp_path_factory.mktemp("key") / "pseudonym.key")
    yield
    if before is None:
        os.environ.pop(KEY_ENV, None)
    else:
        os.environ[KEY_ENV] = before


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261123)


@pytest.fixture(scope="session")
def generated_case(tmp_path_factory):
    """``get(seed, procedure)``: a synthetic case's folder and truth, each written once per session.

    Generating a case takes seconds, and several test files use the same ones. The folder
    is shared, so a test only reads it (copy it to change it); the truth is a fresh copy.
    """
    from hybridfuse.testdata.phantom import generate_procedure

    made: dict[tuple[int, str], tuple[Path, dict]] = {}

    def get(seed: int, procedure: str) -> tuple[Path, dict]:
        if (seed, procedure) not in made:
            out = tmp_path_factory.mktemp(f"gen-{procedure}-{seed}") / "case"
            made[seed, procedure] = out, generate_procedure(out, seed=seed, procedure=procedure)
        out, truth = made[seed, procedure]
        return out, copy.deepcopy(truth)

    return get


@pytest.fixture(scope="session")
def family_case_of(tmp_path_factory):
    """``get(seed, max_detector_px)``: a phantom-family case's folder, written once per session.

    Shared: a test only reads it. Several tests use the same seeds.
    """
    from hybridfuse.testdata.phantom.family import family_case

    made: dict[tuple[int, int | None], Path] = {}

    def get(seed: int, max_detector_px: int | None) -> Path:
        if (seed, max_detector_px) not in made:
            out = tmp_path_factory.mktemp(f"family-{seed}") / f"case{seed}"
            made[seed, max_detector_px] = family_case(seed, out, max_detector_px=max_detector_px)
        return made[seed, max_detector_px]

    return get


@pytest.fixture(scope="session")
def synth_si_joint(tmp_path_factory):
    """``hybridfuse synth --seed 11 --procedure si-joint --json``: its folder and result.

    Run once per session: the synth command's tests read its result, the SI-joint
    registration tests its case.
    """
    from click.testing import CliRunner

    from hybridfuse.cli.main import cli

    out = tmp_path_factory.mktemp("synth") / "case"
    args = ["-q", "synth", "--out", str(out), "--seed", "11", "--procedure", "si-joint", "--json"]
    return out, CliRunner().invoke(cli, args)


@pytest.fixture(scope="session")
def synthetic_case(generated_case) -> tuple[Path, dict]:
    """A lumbar MBB case (seed 7) written once per test session."""
    return generated_case(7, "lumbar-mbb")


@functools.cache
def _built_dose_report(path: Path) -> dict:
    from hybridfuse.dose.report import build_dose_report

    return build_dose_report(path)


def dose_report_of(path: Path) -> dict:
    """``build_dose_report(path)`` with its defaults, built once per session (a copy each call).

    Several test files read the same real dose reports; Canon's rotational one takes ~2 s.
    """
    return copy.deepcopy(_built_dose_report(Path(path)))


def _manifest(kind: str) -> list[dict]:
    path = REALDATA / kind / "manifest.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def realdata_rows(kind: str):
    """Manifest rows as pytest params; one explicit skip when ../shared/realdata is absent."""
    rows = _manifest(kind)
    if not rows:
        return [
            pytest.param(
                None,
                marks=pytest.mark.skip(
                    reason=f"{REALDATA / kind} is absent: real vendor files are read from ../shared"
                ),
            )
        ]
    return [pytest.param(r, id=r["filename"]) for r in rows]

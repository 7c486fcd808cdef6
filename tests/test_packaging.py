"""The wheel holds one import package, hybridfuse, with its data; the product needs no test data."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import hybridfuse

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("hybridfuse", "cli", "dose", "fusion", "registration", "testdata")
PRODUCT = ("cli", "dose", "fusion", "registration")
#: The only functions of the product that may import the sample data and phantom generator.
MAY_IMPORT_TESTDATA = {("cli/synth.py", "synth"), ("cli/run.py", "demo")}


@pytest.mark.slow
def test_the_wheel_installs_one_package_with_its_data(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    out = tmp_path / "wheel"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*cmd, "-q", "-w", str(out), str(src)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("hybridfuse-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    dist_info = {t for t in top if t.startswith("hybridfuse-") and t.endswith(".dist-info")}
    assert len(dist_info) == 1 and top - dist_info == {"hybridfuse"}, sorted(top)
    assert any(
        n.startswith("hybridfuse/testdata/sample/") and n.endswith("/us_clip.dcm") for n in names
    )
    tables = {n for n in names if n.startswith("hybridfuse/dose/tables/") and n.endswith(".csv")}
    assert {Path(n).name for n in tables} >= {"baselines.csv", "effective_dose_coefficients.csv"}


def _testdata_imports(path: Path) -> list[tuple[str, int]]:
    """(enclosing function, line) of each import of hybridfuse.testdata in ``path``."""
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name if function == "<module>" else function)
                continue
            modules = []
            if isinstance(child, ast.Import):
                modules = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                modules = [base] if not child.level else [f"..{base}"]
                if not child.level and base == "hybridfuse":
                    modules = [f"hybridfuse.{a.name}" for a in child.names]
            if any(_is_testdata(m) for m in modules):
                found.append((function, child.lineno))
            visit(child, function)

    visit(ast.parse(path.read_text(encoding="utf-8")), "<module>")
    return found


def _is_testdata(module: str) -> bool:
    parts = module.lstrip(".").split(".")
    return parts[0] == "testdata" or parts[:2] == ["hybridfuse", "testdata"]


def test_the_product_imports_test_data_only_in_synth_and_demo():
    allowed, refused = set(), []
    for folder in PRODUCT:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for function, line in _testdata_imports(path):
                if (rel, function) in MAY_IMPORT_TESTDATA:
                    allowed.add((rel, function))
                else:
                    refused.append(f"{rel}:{line} ({function})")
    assert not refused, f"product code importing hybridfuse.testdata: {refused}"
    assert allowed == MAY_IMPORT_TESTDATA  # the scan sees the two that do


def test_version_flag_prints_the_package_version():
    from click.testing import CliRunner

    from hybridfuse.cli.main import cli

    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"hybridfuse, version {hybridfuse.__version__}"

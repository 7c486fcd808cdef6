"""One options flow: the CLI flags, the TOML file and the defaults come from one definition."""

from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from hybridfuse._options import flat, specs
from hybridfuse.cli.main import cli
from hybridfuse.cli.options import definition_options, given_values
from hybridfuse.dose.options import DoseOptions
from hybridfuse.fusion.errors import InputError
from hybridfuse.fusion.options import FusionOptions
from hybridfuse.fusion.pipeline import RunConfig
from hybridfuse.registration import RegistrationOptions

CLI_DIR = Path(__file__).resolve().parents[2] / "cli"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli-options.md"


def _flags(command: click.Command) -> set[str]:
    return {opt for p in command.params for opt in p.opts if opt.startswith("--")}


def _definition_flags(cls) -> set[str]:
    return {s.flag for s in specs(cls)}


def test_register_run_and_batch_expose_the_same_registration_flags():
    want = _definition_flags(RegistrationOptions)
    others = _definition_flags(FusionOptions) | _definition_flags(DoseOptions)
    own = {"register": set(), "run": set(), "batch": set()}
    for name in own:
        flags = _flags(cli.commands[name])
        assert want <= flags, sorted(want - flags)
        own[name] = flags - others - {f"--no-{f[2:]}" for f in want | others}
    assert own["register"] & want == own["run"] & want == own["batch"] & want == want
    for name in ("run", "batch"):
        assert others <= _flags(cli.commands[name])


def _parse(cls, *args: str) -> dict:
    """What ``given_values`` makes of ``args`` on a command carrying ``cls``'s options."""
    seen = {}

    @click.command()
    @definition_options(cls)
    def probe(**kwargs):
        seen.update(given_values(kwargs, cls))
        assert not kwargs  # every keyword was an option of cls

    result = CliRunner().invoke(probe, list(args))
    if result.exit_code:
        return {"exit": result.exit_code, "output": result.output}
    return seen


def test_flags_parse_to_definition_values():
    assert _parse(RegistrationOptions) == {}  # nothing given: the TOML file or defaults rule
    assert _parse(RegistrationOptions, "--metric", "none") == {"metric": None}
    assert _parse(RegistrationOptions, "--no-search") == {"search": False}
    assert _parse(RegistrationOptions, "--search-scales", "0.9,1.1") == {
        "search_scales": (0.9, 1.1)
    }
    assert _parse(RegistrationOptions, "--shadow-px", "none") == {"shadow_px": None}
    assert _parse(FusionOptions, "--opacity", "0.25", "--uid-map") == {
        "opacity": 0.25,
        "uid_map": True,
    }
    assert _parse(DoseOptions, "--procedure", "lumbar-mbb") == {"procedure": "lumbar-mbb"}


@pytest.mark.parametrize(
    ("cls", "args", "said"),
    [
        (RegistrationOptions, ["--model", "bspline"], "--model"),
        (RegistrationOptions, ["--scale-tolerance", "-1"], "--scale-tolerance"),
        (RegistrationOptions, ["--shadow-px", "1"], "expected 2 values"),
        (RegistrationOptions, ["--levels", "4,x"], "--levels"),
        (FusionOptions, ["--opacity", "2"], "--opacity"),
        (DoseOptions, ["--seed", "-3"], "--seed"),
    ],
)
def test_bad_flags_are_usage_errors(cls, args, said):
    result = _parse(cls, *args)
    assert result.get("exit") == 2 and said in result["output"], result


def test_command_line_wins_over_the_file_which_wins_over_the_default(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[registration]\nmetric = "none"\nsearch = "auto"\nscale_tolerance = 0.05\n'
        '[fusion]\nopacity = 0.3\nvideo = "gif"\n[dose]\nseed = 7\n'
    )
    config = RunConfig.from_toml(cfg, {"opacity": 0.7, "scale_tolerance": 0})
    assert config.fusion.opacity == 0.7 and config.fusion.video == "gif"  # flag, then file
    assert config.fusion.mode == "alpha" and config.registration.model == "projective"
    reg = flat(config.registration)
    assert reg["metric"] is None and reg["search"] is None
    assert reg["scale_tolerance"] is None  # 0 turns the check off
    assert config.dose.seed == 7
    assert RunConfig.from_dict(config.to_dict()) == config
    assert set(config.to_dict()) == {"registration", "fusion", "dose", "pair"}


def test_register_reads_the_registration_table(tmp_path, monkeypatch):
    """``register --config``: the [registration] table reaches the registration options."""
    import hybridfuse.fusion.coregister as coregister

    seen = {}

    def fake(*_args, options, **_kw):
        seen["options"] = options
        raise InputError("stop here")

    monkeypatch.setattr(coregister, "register_images", fake)
    from hybridfuse.testdata import sample_case

    case = Path(sample_case())
    cfg = tmp_path / "c.toml"
    cfg.write_text('[registration]\nmodel = "affine"\nsearch = false\n[fusion]\nvideo = "gif"\n')
    args = ["register", "--fixed", str(next(case.glob("fluoro_*.dcm"))), "--moving"]
    args += [str(case / "us_clip.dcm"), "--out", str(tmp_path / "o"), "--config", str(cfg)]
    result = CliRunner().invoke(cli, [*args, "--metric", "mi"])
    assert result.exit_code == 2 and "stop here" in result.output, result.output
    options = seen["options"]
    reg = flat(options)
    assert (reg["model"], reg["metric"], reg["search"]) == ("affine", "mi", False)
    cfg.write_text('[fusion]\nvideo = "avi"\n')  # another table is checked, not ignored
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "c.toml: video = 'avi'" in result.output, result.output


def test_no_cli_module_imports_main():
    offenders = []
    for path in sorted(CLI_DIR.glob("*.py")):
        if path.name == "main.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                module = ("." * node.level) + (node.module or "")
                names = {a.name for a in node.names}
                if module in (".main", "hybridfuse.cli.main", "cli.main") or (
                    module in (".", "hybridfuse.cli") and "main" in names
                ):
                    offenders.append(f"{path.name}:{node.lineno}")
            elif isinstance(node, ast.Import):
                if any(a.name in ("hybridfuse.cli.main", "cli.main") for a in node.names):
                    offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"cli modules importing cli/main.py (an import circle): {offenders}"


def test_exit_codes_live_beside_the_options():
    from hybridfuse.cli import options
    from hybridfuse.registration.errors import ConvergenceError, IllPosedGeometryError

    assert (options.EXIT_OK, options.EXIT_FAILURE, options.EXIT_BAD_INPUT) == (0, 1, 2)
    assert options.exit_code_for(IllPosedGeometryError("edge-on")) == 2
    assert options.exit_code_for(ConvergenceError("no")) == 1


def test_the_options_reference_is_up_to_date():
    from hybridfuse.cli.reference import render_options_markdown

    assert DOCS.read_text(encoding="utf-8") == render_options_markdown(), (
        "docs/cli-options.md is stale; regenerate it with "
        "`python -m hybridfuse.cli.reference docs/cli-options.md`"
    )

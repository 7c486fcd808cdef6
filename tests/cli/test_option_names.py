"""Every ``--option`` that a message, help text or docstring names is an option of the CLI.

An error that recommends a flag the commands do not have leaves the user with no way
forward (issue #16: ``--spacing-mm`` was recommended by ``register`` and ``fuse``, which had
no such option), so every string constant of the product's source is scanned.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import click

from hybridfuse.cli.main import cli
from hybridfuse.cli.options import DEPRECATED_FLAGS

ROOT = Path(__file__).resolve().parents[2]
#: The product's source folders (tests, benchmarks and testdata may name what they like).
SOURCE = ("cli", "fusion", "registration", "dose", "hybridfuse")
#: A flag: two dashes and a lower-case name, not inside a longer word or flag.
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9](?![\w-])")
#: Flags named on purpose that are not options of ours: {flag: why}.
NOT_OURS = {
    flag: "the shape of a generated flag, in the docstrings of the option machinery"
    for flag in ("--name", "--no-name", "--name-with-dashes")
}


def cli_flags(command: click.Command) -> set[str]:
    """Every flag of ``command`` and its subcommands (primary and secondary spellings).

    Deprecated aliases (kept hidden for old scripts) do not count: a message that
    recommends one is as wrong as one that recommends nothing.
    """
    flags = set()
    for param in command.get_params(click.Context(command)):  # --help too
        if (param.name or "").startswith("deprecated_"):
            continue
        flags.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            flags |= cli_flags(sub)
    return flags


def named_flags(root: Path = ROOT, folders=SOURCE) -> list[tuple[str, str, int]]:
    """(flag, file, line) of every flag named in a string constant under ``root/folders``.

    f-strings are walked too: their literal parts are string constants. A constant that
    is exactly a deprecated flag is the alias's declaration and is skipped; a message
    that recommends one is not.
    """
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    if node.value in DEPRECATED_FLAGS:  # the alias's own name, not advice
                        continue
                    for flag in FLAG.findall(node.value):
                        found.append((flag, str(path.relative_to(root)), node.lineno))
    return found


def unknown_flags(found, flags) -> list[str]:
    """``file:line: flag`` of each flag named but not an option (nor listed in NOT_OURS)."""
    return [
        f"{file}:{line}: {flag}" for flag, file, line in found if flag not in flags | set(NOT_OURS)
    ]


@functools.cache
def source_flags() -> tuple:
    """:func:`named_flags` of the product's source, scanned once per session."""
    return tuple(named_flags())


def test_the_scan_finds_the_flags_of_the_source():
    # The scan itself must see what it guards: known flags named in messages and help.
    flags = {f for f, _, _ in source_flags()}
    assert {"--fixed-spacing-mm", "--moving-spacing-mm", "--allow-mismatch"} <= flags
    assert {"--include-phi", "--overwrite"} <= flags


def test_the_walk_finds_nested_commands():
    flags = cli_flags(cli)
    assert "--rdsr" in flags  # dose report: a subcommand of the dose group
    assert "--no-allow-mismatch" in flags  # the off spelling of a yes/no option
    assert "--us-spacing-mm" not in flags and "--spacing-mm" not in flags  # deprecated


def test_every_flag_named_in_the_source_exists():
    missing = unknown_flags(source_flags(), cli_flags(cli))
    assert not missing, "flags named but not options of any command:\n" + "\n".join(missing)


def test_a_message_naming_a_missing_flag_is_caught(tmp_path):
    # The break-to-fail check, kept: an error (in an f-string) naming --no-such-option.
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "bad.py").write_text(
        'def f(p):\n    raise ValueError(f"{p}: give it with --no-such-option ROW,COL")\n'
        'OLD = "--us-spacing-mm"  # an alias declared: fine\n'
        'HINT = "or with --us-spacing-mm"  # a deprecated flag recommended: not fine\n'
    )
    missing = unknown_flags(named_flags(tmp_path, ("cli",)), cli_flags(cli))
    assert sorted(missing) == ["cli/bad.py:2: --no-such-option", "cli/bad.py:4: --us-spacing-mm"]

"""Options shared by several commands, and the options generated from their definitions.

Option names: ``--fixed``/``--moving`` (fluoroscopy and ultrasound inputs), ``--json``
(machine-readable output on stdout), ``--overwrite`` (replace existing outputs; refused
otherwise), ``-v/--verbose`` and ``-q/--quiet`` (on the group: log level, tracebacks,
progress). The registration, fusion and dose options come from their dataclasses
(:func:`definition_options`), so every command spells them, defaults them and checks them
the same way as the TOML configuration does. Exit codes: :mod:`hybridfuse.cli.errors`.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from pathlib import Path

import click

from hybridfuse._options import OptionError, OptionSpec, check, parse_text, specs
from hybridfuse.fusion.options import FusionOptions
from hybridfuse.fusion.pair import PairOptions

from .errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, exit_code_for

__all__ = [
    "DEPRECATED_FLAGS",
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "EXIT_OK",
    "NONE_GIVEN",
    "UID_MAP_HELP",
    "SPACING_NAMES",
    "check_pseudonym_key",
    "click_option",
    "config_option",
    "deprecated_spacing",
    "default_text",
    "definition_options",
    "exit_code_for",
    "fixed_option",
    "given_values",
    "json_option",
    "merge_deprecated",
    "moving_option",
    "overwrite_option",
    "pair_options",
    "report_stale",
    "run_config",
    "say_stale",
    "spacing_options",
    "spacing_type",
    "uid_map_option",
]

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout."
)
fixed_option = click.option(
    "--fixed",
    "fixed_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Fluoroscopy file (DICOM XA/RF, or an image with --fixed-spacing-mm).",
)
moving_option = click.option(
    "--moving",
    "moving_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Ultrasound file (DICOM US, or an image with --moving-spacing-mm).",
)
UID_MAP_HELP = next(s.help for s in specs(FusionOptions) if s.name == "uid_map")
uid_map_option = click.option("--uid-map", "uid_map", is_flag=True, help=UID_MAP_HELP)
overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Replace existing outputs (refused otherwise)."
)


def spacing_type(value: str | None) -> tuple[float, float] | None:
    """Parse ``ROW_MM,COL_MM`` (or one number for square pixels)."""
    if value is None:
        return None
    parts = [p for p in value.replace("x", ",").split(",") if p.strip()]
    try:
        nums = [float(p) for p in parts]
    except ValueError as exc:
        raise click.BadParameter(f"expected ROW_MM,COL_MM, got {value!r}") from exc
    if len(nums) == 1:
        nums = nums * 2
    if len(nums) != 2 or min(nums) <= 0:
        raise click.BadParameter(f"expected two positive numbers ROW_MM,COL_MM, got {value!r}")
    return (nums[0], nums[1])


#: The pixel spacing options given by hand (the rest of :class:`PairOptions` are checks).
SPACING_NAMES = ("fixed_spacing_mm", "moving_spacing_mm")


def pair_options(func):
    """``--fixed-spacing-mm``, ``--moving-spacing-mm`` and the belonging-together options."""
    return definition_options(PairOptions)(func)


def spacing_options(func):
    """``--fixed-spacing-mm`` and ``--moving-spacing-mm`` only (for ``info``)."""
    return definition_options(PairOptions, only=SPACING_NAMES)(func)


def deprecated_spacing(old: str, name: str):
    """A hidden ``old`` flag kept for scripts: read like before, said to be deprecated.

    The value goes to the keyword ``name`` (``deprecated_...``); :func:`merge_deprecated`
    moves it to the option that replaced it.
    """

    def note(ctx, param, value):
        if value is not None:
            click.echo(
                f"hybridfuse: note: {old} is deprecated; use {DEPRECATED_FLAGS[old]} instead",
                err=True,
            )
        return spacing_type(value)

    return click.option(old, name, default=None, hidden=True, callback=note)


#: The deprecated (hidden) flags and the flag(s) that replaced them.
DEPRECATED_FLAGS = {
    "--us-spacing-mm": "--moving-spacing-mm",
    "--spacing-mm": "--fixed-spacing-mm (fluoroscopy) and --moving-spacing-mm (others)",
}


def merge_deprecated(given: dict, old: str, value, names: tuple[str, ...]) -> dict:
    """``given`` with a deprecated flag's ``value`` set for ``names``; both given refused."""
    if value is None:
        return given
    for name in names:
        if given.get(name) is not None:
            flag = "--" + name.replace("_", "-")
            raise click.UsageError(f"{old} and {flag} both given; give only {flag}")
        given = {**given, name: value}
    return given


def report_stale(out_dir: Path) -> list[str]:
    """Remove what runs that died left beside ``out_dir`` under its name; say so on stderr.

    Only ``out_dir``'s own leftovers: the folder around it belongs to the user.
    """
    from hybridfuse._safeio import clean_stale

    removed = clean_stale(out_dir.parent, name=out_dir.name)
    say_stale(out_dir.parent, removed)
    return removed


def say_stale(folder: Path, removed: list[str]) -> None:
    """One line on stderr naming the leftovers of interrupted runs that were removed."""
    from hybridfuse._safeio import terminal_text

    if removed:
        click.echo(
            terminal_text(
                f"hybridfuse: removed {len(removed)} leftover(s) of interrupted runs in "
                f"{folder}: {', '.join(removed)}"
            ),
            err=True,
        )


def check_pseudonym_key(include_phi: bool) -> None:
    """Read (or create) the pseudonym key before any work when outputs are de-identified.

    A broken key file is then refused at once, not after a whole run.
    """
    if not include_phi:
        from hybridfuse.dose.pseudonym import user_key

        user_key()


class _NoneValue:
    """What an option given as ``none``/``auto`` parses to: None, but given."""

    def __repr__(self) -> str:
        return "none"


#: ``--metric none``: the option was given, and its value is None (not "not given").
NONE_GIVEN = _NoneValue()


class _DefinitionType(click.ParamType):
    """A value parsed with :func:`hybridfuse._options.parse_text` and checked by its spec.

    For lists (``a,b``) and for options that may be ``none``; plain choices and numbers
    use click's own types, which show their choices and ranges in ``--help``.
    """

    def __init__(self, spec: OptionSpec):
        self.spec = spec
        self.name = _metavar(spec)

    def get_metavar(self, param, ctx=None) -> str:
        """The value's shape in ``--help``: ``[a|b|none]``, ``FLOAT|none``, ``A,B``."""
        return self.name

    def convert(self, value, param, ctx):
        """The checked value, or :data:`NONE_GIVEN` for ``none``/``auto``."""
        if value is NONE_GIVEN or not isinstance(value, str):
            return value
        try:
            parsed = parse_text(self.spec, value)
            if parsed is None:
                return NONE_GIVEN
            return check(self.spec, parsed, "command line")
        except OptionError as exc:
            self.fail(f"{value!r}: {str(exc).split(': ', 2)[-1]}", param, ctx)


def _metavar(spec: OptionSpec) -> str:
    base = spec.base
    if spec.choices is not None:
        words = [str(c) for c in spec.choices] + (["none"] if spec.optional else [])
        return "[" + "|".join(words) + "]"
    if typing.get_origin(base) is tuple:
        args = typing.get_args(base)
        item = (args[0] if args else float).__name__.upper()
        shape = ",".join([item] * len(args)) if args and args[-1] is not Ellipsis else item + ",..."
    else:
        shape = getattr(base, "__name__", "TEXT").upper().replace("STR", "TEXT")
    return shape + ("|none" if spec.optional else "")


def _click_type(spec: OptionSpec):
    base = spec.base
    if spec.optional or typing.get_origin(base) is tuple:
        return _DefinitionType(spec)
    if spec.choices is not None:
        return click.Choice([str(c) for c in spec.choices])
    limited = spec.minimum is not None or spec.maximum is not None
    if base is int:
        return click.IntRange(min=spec.minimum, max=spec.maximum) if limited else click.INT
    if base is float:
        return click.FloatRange(min=spec.minimum, max=spec.maximum) if limited else click.FLOAT
    return _DefinitionType(spec)


def default_text(spec: OptionSpec) -> str:
    """The default as the command line writes it (`auto`, `none`, `on`, `a,b`)."""
    value = spec.default
    if value is None:
        return "auto" if spec.base is bool else "none"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def click_option(spec: OptionSpec):
    """The click option of one spec: ``--name`` (``--name/--no-name`` for yes/no options).

    Its default is None ("not given") so that the command line wins over a TOML file,
    which wins over the definition's default (shown in ``--help``).
    """
    flag = spec.flag
    default = f"[default: {default_text(spec)}]"
    common = {
        "default": None,
        "help": f"{spec.help}  {default}" if spec.help else default,
        "hidden": spec.advanced,
    }
    if spec.base is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", spec.name, **common)
    return click.option(flag, spec.name, type=_click_type(spec), **common)


def definition_options(cls, only: tuple[str, ...] | None = None):
    """Decorator adding one click option per option of ``cls`` (in declaration order).

    ``only`` names a subset, for commands that take part of a group. The command receives
    each as a keyword argument named like the option; read them back with
    :func:`given_values` and :func:`built`.
    """

    def decorate(func):
        for spec in reversed(_specs(cls)):
            if only is None or spec.name in only:
                func = click_option(spec)(func)
        return func

    return decorate


def built(cls, kwargs: dict):
    """An instance of ``cls`` from the options given on the command line (the rest default)."""
    from hybridfuse._options import build

    try:
        return build(cls, given_values(kwargs, cls), source="command line")
    except OptionError as exc:  # the flags are checked one by one; this is a safety net
        raise click.UsageError(str(exc)) from exc


def _specs(cls) -> list[OptionSpec]:
    from hybridfuse._options import specs

    return list(specs(cls))


def given_values(kwargs: dict, *classes) -> dict:
    """The options of ``classes`` given on the command line, as flat ``{name: value}``.

    Options not given (None) are left out; ``none``/``auto`` become None. The names are
    removed from ``kwargs``, so what remains are the command's own arguments.
    """
    out = {}
    for cls in classes:
        for spec in _specs(cls):
            value = kwargs.pop(spec.name, None)
            if value is None:
                continue
            out[spec.name] = None if value is NONE_GIVEN else value
    return out


def config_option(tables: str):
    """``--config FILE.toml``: options read from a file, below those given on the command."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        help=f"TOML file of options: {tables}, keyed by option name (with underscores). "
        "Options given on the command line win over it.",
    )


def run_config(config_path: Path | None, given: Mapping):
    """The run configuration: definition defaults, then the TOML file, then ``given``."""
    from hybridfuse.fusion.pipeline import RunConfig

    if config_path is not None:
        return RunConfig.from_toml(config_path, given)
    try:
        return RunConfig().with_values(given, source="command line")
    except OptionError as exc:  # the flags are checked one by one; this is a safety net
        raise click.UsageError(str(exc)) from exc

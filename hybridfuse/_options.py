"""Options defined once: each is a field of a frozen dataclass with its help and limits.

The command line, the TOML configuration and the library read the same definition, so an
option's name, default, choices and help cannot drift apart between them. A field whose
default is itself an options dataclass is a group (``RegistrationOptions.search``); the
options inside keep flat names that are unique across groups, and those flat names are the
CLI flags (``--search-step-mm``), the TOML keys and the JSON keys.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = [
    "OptionError",
    "OptionSpec",
    "build",
    "check_consistent",
    "flat",
    "option",
    "parse_text",
    "specs",
]

#: Largest whole number an option may take (a C long): the counts and seeds are far below it,
#: and beyond a C long numpy refuses it mid-registration.
MAX_WHOLE = 2**63 - 1


class OptionError(ValueError):
    """An option value or name that the definition does not allow."""


def option(
    default,
    help: str,  # noqa: A002 - the word every option library uses
    *,
    choices: tuple | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    advanced: bool = False,
):
    """A dataclass field carrying what a user needs: help, choices, limits.

    ``advanced`` options are hidden from ``--help`` (listed in ``docs/cli-options.md``):
    they exist for experiments, not for daily use.
    """
    meta = {
        "help": help,
        "choices": choices,
        "minimum": minimum,
        "maximum": maximum,
        "advanced": advanced,
    }
    return dataclasses.field(default=default, metadata=meta)


def group(cls):
    """A dataclass field holding a group of options (defaults of ``cls``)."""
    return dataclasses.field(default_factory=cls)


@dataclass(frozen=True)
class OptionSpec:
    """One option as the command line, TOML and JSON see it."""

    name: str
    path: tuple[str, ...]
    default: object
    hint: object
    help: str
    choices: tuple | None
    minimum: float | None
    maximum: float | None
    advanced: bool

    @property
    def flag(self) -> str:
        """The command-line flag, ``--name-with-dashes``."""
        return "--" + self.name.replace("_", "-")

    @property
    def optional(self) -> bool:
        """True when ``None`` is a value (it means "off" or "automatic")."""
        return type(None) in _union_args(self.hint)

    @property
    def base(self) -> object:
        """The type hint without ``None``."""
        args = [a for a in _union_args(self.hint) if a is not type(None)]
        return args[0] if len(args) == 1 else self.hint


def _union_args(hint) -> tuple:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


@functools.cache
def _hints(cls) -> dict:
    # Options classes are fixed at import; resolving their annotations cost 1.3 ms per
    # tracked frame when done on every to_dict().
    return typing.get_type_hints(cls)


def _is_group(hint) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def specs(cls, _path: tuple[str, ...] = ()) -> Iterator[OptionSpec]:
    """Every option of ``cls`` (groups walked in declaration order)."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if _is_group(hint):
            yield from specs(hint, (*_path, f.name))
            continue
        m = f.metadata
        yield OptionSpec(
            name=f.name,
            path=(*_path, f.name),
            default=f.default,
            hint=hint,
            help=m.get("help", ""),
            choices=m.get("choices"),
            minimum=m.get("minimum"),
            maximum=m.get("maximum"),
            advanced=m.get("advanced", False),
        )


def flat(obj) -> dict:
    """JSON-ready ``{flat name: value}`` of an options object (tuples become lists)."""
    out = {}
    for name, path in _paths(type(obj)):
        value = obj
        for part in path:
            value = getattr(value, part)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


@functools.cache
def _paths(cls) -> tuple[tuple[str, tuple[str, ...]], ...]:
    # Every registration writes its options into its result: walking the specs each time
    # was a third of a millisecond per tracked frame.
    return tuple((spec.name, spec.path) for spec in specs(cls))


def build(
    cls,
    values: Mapping | None = None,
    *,
    base=None,
    source: str = "options",
    consistent: bool = True,
):
    """An instance of ``cls`` from flat ``values`` over ``base`` (default: the defaults).

    Unknown names and values outside the definition raise :class:`OptionError` naming
    ``source`` (a file, or "options"), so a typo in a configuration is never ignored.
    With ``consistent``, options that are each valid but contradict each other (see
    :func:`check_consistent`) are refused too; pass False while building up values that
    later sources complete, and check the result once.
    """
    known = {s.name: s for s in specs(cls)}
    values = dict(values or {})
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise OptionError(
            f"{source}: unknown option(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )
    checked = {name: check(known[name], value, source) for name, value in values.items()}
    result = _assemble(cls, base if base is not None else cls(), checked)
    if consistent:
        check_consistent(result, source)
    return result


def check_consistent(obj, source: str = "options") -> None:
    """Refuse options that are each valid but contradict each other.

    An options class lists such contradictions in a ``contradictions()`` method (one
    sentence each, naming the options); none means consistent.
    """
    find = getattr(obj, "contradictions", None)
    problems = list(find()) if callable(find) else []
    if problems:
        raise OptionError(f"{source}: {'; '.join(problems)}")


def _assemble(cls, base, checked: dict):
    hints = _hints(cls)
    changes = {}
    for f in dataclasses.fields(cls):
        if _is_group(hints[f.name]):
            changes[f.name] = _assemble(hints[f.name], getattr(base, f.name), checked)
        elif f.name in checked:
            changes[f.name] = checked[f.name]
    return dataclasses.replace(base, **changes)


def check(spec: OptionSpec, value, source: str = "options"):
    """``value`` converted to the option's type and checked against its limits."""
    where = f"{source}: {spec.name}"
    if value is None:
        if spec.optional:
            return None
        raise OptionError(f"{where} may not be empty")
    base = spec.base
    origin = typing.get_origin(base)
    if origin is tuple:
        value = _tuple(spec, value, where)
    elif base is bool:
        if not isinstance(value, bool):
            raise OptionError(f"{where} = {value!r}: expected true or false")
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError(f"{where} = {value!r}: expected a whole number")
        if abs(value) > MAX_WHOLE:  # 10**23 line-search steps: an internal error (C long)
            raise OptionError(f"{where}: a whole number beyond {MAX_WHOLE:,}; not a usable value")
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionError(f"{where} = {value!r}: expected a number")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond float range: was an internal error
            raise OptionError(
                f"{where}: a number beyond float range; expected a finite number"
            ) from None
        if value != value or value in (float("inf"), float("-inf")):
            raise OptionError(f"{where} = {value!r}: expected a finite number")
    elif base is str:
        if not isinstance(value, str):
            raise OptionError(f"{where} = {value!r}: expected text")
        if not value.strip():
            raise OptionError(f"{where} = {value!r}: may not be empty")
    if spec.choices is not None and value not in spec.choices:
        raise OptionError(
            f"{where} = {value!r}: expected one of {', '.join(map(str, spec.choices))}"
        )
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if spec.minimum is not None and v < spec.minimum:
                raise OptionError(f"{where} = {value!r}: below the minimum {spec.minimum}")
            if spec.maximum is not None and v > spec.maximum:
                raise OptionError(f"{where} = {value!r}: above the maximum {spec.maximum}")
    return value


def _tuple(spec: OptionSpec, value, where: str) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise OptionError(f"{where} = {value!r}: expected a list")
    args = typing.get_args(spec.base)
    item = args[0] if args else float
    fixed = len(args) if args and args[-1] is not Ellipsis else None
    if fixed is not None and len(value) != fixed:
        raise OptionError(f"{where} = {value!r}: expected {fixed} values")
    if not value:
        raise OptionError(f"{where}: expected at least one value")
    item_spec = dataclasses.replace(spec, hint=item, choices=None, minimum=None, maximum=None)
    return tuple(check(item_spec, v, where.split(": ")[0]) for v in value)


def parse_text(spec: OptionSpec, text: str):
    """The value of a command-line string: ``none``/``auto`` for ``None``, ``a,b`` lists."""
    where = f"{spec.flag} {text!r}"
    if spec.optional and text.strip().lower() in ("none", "auto"):
        return None
    base = spec.base
    try:
        if typing.get_origin(base) is tuple:
            args = typing.get_args(base)
            item = args[0] if args else float
            parts = text.split(",")
            if len(parts) > 1 and any(not p.strip() for p in parts):
                raise ValueError(f"an empty value between commas in {text!r}")
            return tuple(item(p) for p in parts if p.strip())
        if base is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "on", "off", "yes", "no", "1", "0"):
                raise ValueError(text)
            return lowered in ("true", "on", "yes", "1")
        if base in (int, float):
            return base(text)
    except ValueError as exc:
        raise OptionError(f"{where}: not a valid value") from exc
    return text

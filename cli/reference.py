"""``docs/cli-options.md``, rendered from the option definitions.

Regenerate after changing an option: ``python -m hybridfuse.cli.reference docs/cli-options.md``
(a test fails while the committed file differs from the rendering).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hybridfuse._options import OptionSpec

from .options import default_text

__all__ = ["render_options_markdown"]

_INTRO = """\
# Options of `register`, `run` and `batch`

Generated from the option definitions by `python -m hybridfuse.cli.reference
docs/cli-options.md`; do not edit by hand.

Every option is a command-line flag and a key of the TOML file given with `--config`
(the flag's name with underscores, in the table of its group). The command line wins
over the file, which wins over the default. `register` takes the `[registration]`
options, `run` and `batch` all three groups. Options marked *advanced* are hidden
from `--help`: they exist for experiments. Lists are written `a,b` on the command line
and `[a, b]` in TOML; `none` (or `auto`) clears an option that may be empty.

```toml
[registration]
metric = "none"   # landmarks only

[fusion]
video = "gif"

[dose]
procedure = "lumbar-mbb"   # a procedure of dose/tables/baselines.csv
```
"""


def render_options_markdown() -> str:
    """The Markdown reference: one table per option group (flag, default, limits, help)."""
    from hybridfuse._options import specs
    from hybridfuse.fusion.pipeline import GROUPS

    parts = [_INTRO]
    for table, cls in GROUPS.items():
        parts.append(f"\n## `[{table}]`\n")
        by_group: dict[str, list[OptionSpec]] = {}
        for spec in list(specs(cls)):
            by_group.setdefault(" / ".join(spec.path[:-1]), []).append(spec)
        for group, group_specs in by_group.items():
            if group:
                parts.append(f"\n### {group}\n")
            parts.append("\n" + _table(group_specs))
    return "".join(parts)


def _table(specs: list[OptionSpec]) -> str:
    rows = ["| flag | default | allowed | what it does |", "|---|---|---|---|"]
    for spec in specs:
        flag = f"`{spec.flag}`"
        if spec.base is bool:
            flag = f"`{spec.flag}` / `--no-{spec.flag[2:]}`"
        text = spec.help or ""
        if spec.advanced:
            text = f"*advanced.* {text}"
        rows.append(f"| {flag} | `{default_text(spec)}` | {_allowed(spec)} | {_cell(text)} |")
    return "\n".join(rows) + "\n"


def _allowed(spec: OptionSpec) -> str:
    words = []
    if spec.choices is not None:
        words.append(", ".join(f"`{c}`" for c in spec.choices))
    elif spec.base is str:
        words.append("text")
    if spec.minimum is not None:
        words.append(f"≥ {_number(spec.minimum)}")
    if spec.maximum is not None:
        words.append(f"≤ {_number(spec.maximum)}")
    if spec.optional:
        words.append("`none`" if spec.base is not bool else "`auto`")
    return _cell("; ".join(words))


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: list[str] | None = None) -> None:
    """Write the reference to the file named on the command line (stdout without one)."""
    argv = sys.argv[1:] if argv is None else argv
    text = render_options_markdown()
    if argv:
        Path(argv[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()

"""Options shared by several commands, and the exit codes every command uses.

=============  ====================================================================
exit code      meaning
=============  ====================================================================
0              success
1              processing failure (the input was usable but the work failed)
2              usage error or bad input (unreadable file, wrong kind of file, ...)
=============  ====================================================================

Option names: ``--fixed``/``--moving`` (fluoroscopy and ultrasound inputs), ``--json``
(machine-readable output on stdout), ``--overwrite`` (replace existing outputs; refused
otherwise), ``-v/--verbose`` and ``-q/--quiet`` (on the group: log level, tracebacks,
progress).
"""

from __future__ import annotations

from pathlib import Path

import click

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout."
)
fixed_option = click.option(
    "--fixed",
    "fixed_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Fluoroscopy file (DICOM XA/RF, or an image with --spacing-mm).",
)
moving_option = click.option(
    "--moving",
    "moving_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Ultrasound file (DICOM US, or an image).",
)
UID_MAP_HELP = (
    "Also write uid_map.csv: each source UID and the new UID that replaced it in the DICOM "
    "outputs (it re-identifies them; keep it apart). Ignored with --include-phi."
)
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

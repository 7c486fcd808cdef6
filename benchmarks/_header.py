"""The date, machine and command line a benchmark prints before its table.

``benchmarks/RESULTS.md`` records every table with these three facts, so each benchmark
prints them where its table can be pasted from.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys


def _cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    """Physical memory in GiB, or None where ``sysconf`` cannot tell."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def header_lines(argv: list[str] | None = None) -> list[str]:
    """Three Markdown lines: UTC date and time, machine, and the command that was run."""
    argv = sys.argv if argv is None else argv
    mem = _memory_gib()
    machine = f"{_cpu_model()}, {os.cpu_count()} CPUs" + (f", {mem:.0f} GiB" if mem else "")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load is not None:
        machine += f", load {load:.1f}"
    # Run as ``python -m benchmarks.NAME``, argv[0] is the file's path.
    command = [argv[0]]
    if argv[0].endswith(".py") and os.path.basename(os.path.dirname(argv[0])) == "benchmarks":
        command = ["-m", "benchmarks." + os.path.basename(argv[0])[:-3]]
    return [
        f"- date: {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine}; Python {platform.python_version()}, {platform.system()}",
        f"- command: `python {shlex.join([*command, *argv[1:]])}`",
    ]


def print_header(argv: list[str] | None = None) -> None:
    """Print :func:`header_lines` and a blank line."""
    print("\n".join(header_lines(argv)) + "\n", flush=True)

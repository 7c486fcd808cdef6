"""The same numbers on every x86-64 CPU with AVX2: the AVX2 code paths chosen before NumPy loads.

OpenBLAS and NumPy choose their code by CPU when they load. Their AVX-512 paths (OpenBLAS's
Skylake-X kernels, NumPy's ``X86_V4``/``AVX512_*`` loops) round differently in the last
bit from the AVX2 ones, and an optimiser run from a far start (a verification's mirror
image, a restart, a tracked jump) can carry that to another local optimum: the same files
gave different verdicts on an AVX-512 CPU (docs/registration-method.md, *The same answer
on every CPU*). Where the CPU has AVX2 and FMA, OpenBLAS's ``Haswell`` kernels and, with
NumPy 2.4 or newer (whose names these are), NumPy's loops up to AVX2 are chosen; a
variable the caller set is kept; elsewhere nothing changes. It takes effect only before
NumPy is first imported: the command line (and the local processes it starts, which
inherit the variables), the tests and the benchmarks import ``hybridfuse`` first; a
program that imported NumPy earlier, or a remote dask worker whose environment does not
set them, keeps what it got.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

__all__ = ["BLAS_KERNEL", "NUMPY_DISABLED", "pin_cpu_paths"]

#: OpenBLAS's name for its AVX2/FMA kernels (``OPENBLAS_CORETYPE``).
BLAS_KERNEL = "Haswell"
#: NumPy's (2.4+) dispatch targets above AVX2 (``NPY_DISABLE_CPU_FEATURES``).
NUMPY_DISABLED = "X86_V4 AVX512_ICL AVX512_SPR"
_NEEDS = frozenset({"avx2", "fma"})


def pin_cpu_paths() -> dict[str, str]:
    """Set the variables that choose the AVX2 paths where they apply; those set."""
    if _numpy_loaded():
        return {}  # too late to matter
    if platform.machine().lower() not in {"x86_64", "amd64"} or not _NEEDS <= _cpu_flags():
        return {}
    wanted = {"OPENBLAS_CORETYPE": BLAS_KERNEL}
    if _numpy_at_least(2, 4):
        wanted["NPY_DISABLE_CPU_FEATURES"] = NUMPY_DISABLED
    done = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(done)
    return done


def _numpy_loaded() -> bool:
    return "numpy" in sys.modules


def _numpy_at_least(major: int, minor: int) -> bool:
    """Whether the installed NumPy (read from its metadata, not imported) is that new."""
    try:
        parts = version("numpy").split(".")[:2]
        return (int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)) >= (
            major,
            minor,
        )
    except (PackageNotFoundError, ValueError, IndexError):
        return False


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux); empty where unreadable."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()

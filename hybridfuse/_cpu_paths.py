"""The same numbers on every x86-64 Linux CPU with AVX2: AVX2 code paths chosen before NumPy loads.

OpenBLAS and NumPy choose their code by CPU when they load. Their AVX-512 paths (OpenBLAS's
Skylake-X kernels, NumPy's ``X86_V4``/``AVX512_*`` loops) round differently in the last bit
from the AVX2 ones, and an optimiser run from a far start (a verification's mirror image, a
restart, a tracked jump) can carry that to another local optimum: the same files gave
different verdicts on an AVX-512 CPU (docs/registration-method.md, *The same answer on every
CPU*). Where the CPU has AVX2 and FMA (read from ``/proc/cpuinfo``: Linux), OpenBLAS's
``Haswell`` kernels and, with NumPy 2.4 (whose names these are), NumPy's loops up to AVX2
are chosen; a variable the caller set is kept, ``HYBRIDFUSE_NATIVE_CPU`` keeps the CPU's own
paths, and elsewhere nothing changes. The variables are set in ``os.environ``, so child
processes (another Python, another NumPy) inherit them. It takes effect only before NumPy is
first imported: the command line (and the local processes it starts, which inherit the
variables), the tests and the benchmarks import ``hybridfuse`` first; a program that
imported NumPy earlier, or a remote dask worker whose environment does not set them, keeps
what it got.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

__all__ = ["BLAS_KERNEL", "NUMPY_DISABLED", "OPT_OUT", "PINNED", "pin_cpu_paths"]

#: OpenBLAS's name for its AVX2/FMA kernels (``OPENBLAS_CORETYPE``).
BLAS_KERNEL = "Haswell"
#: NumPy's (2.4+) dispatch targets above AVX2 (``NPY_DISABLE_CPU_FEATURES``).
NUMPY_DISABLED = "X86_V4 AVX512_ICL AVX512_SPR"
_NEEDS = frozenset({"avx2", "fma"})


#: Set (to anything) to keep the CPU's own code paths.
OPT_OUT = "HYBRIDFUSE_NATIVE_CPU"
#: What this process set in ``os.environ`` (the rest, if any, the caller set).
PINNED: dict[str, str] = {}


def pin_cpu_paths(environ=None) -> dict[str, str]:
    """Set the variables that choose the AVX2 paths where they apply; those set.

    ``environ``: where to set them (``os.environ``, which child processes inherit).
    """
    environ = os.environ if environ is None else environ
    if OPT_OUT in environ or _numpy_loaded():
        return {}  # the caller's choice, or too late to matter
    if platform.machine().lower() not in {"x86_64", "amd64"} or not _NEEDS <= _cpu_flags():
        return {}
    wanted = {"OPENBLAS_CORETYPE": BLAS_KERNEL}
    if _numpy_names_known():
        wanted["NPY_DISABLE_CPU_FEATURES"] = NUMPY_DISABLED
    done = {k: v for k, v in wanted.items() if k not in environ}
    environ.update(done)
    if environ is os.environ:
        PINNED.update(done)
    return done


def _numpy_loaded() -> bool:
    return "numpy" in sys.modules


#: NumPy releases whose dispatch targets are :data:`NUMPY_DISABLED` (checked on 2.4.6); a
#: name another build does not dispatch makes NumPy warn, or fail where it is its baseline.
NUMPY_CHECKED = ((2, 4), (2, 5))


def _numpy_names_known() -> bool:
    """Whether the installed NumPy (read from its metadata, not imported) is one checked."""
    try:
        major, minor = version("numpy").split(".")[:2]
        v = (int(major), int("".join(c for c in minor if c.isdigit()) or 0))
    except (PackageNotFoundError, ValueError):
        return False
    return NUMPY_CHECKED[0] <= v < NUMPY_CHECKED[1]


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

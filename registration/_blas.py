"""One BLAS thread while the registration optimises: :func:`one_blas_thread`.

SciPy's L-BFGS-B calls BLAS on vectors and matrices of a few dozen numbers through the
OpenBLAS SciPy bundles; with more than one OpenBLAS thread a worker thread takes part and
spins between calls, taking a core from the optimiser and the metric kernels, which made
a tracked frame several times slower on a loaded machine (measured in
docs/registration-method.md, *Sequence tracking*). Problems this small gain nothing from
threads.

The limit is set through ``openblas_set_num_threads_local`` (recent OpenBLAS) of every
OpenBLAS library the process has loaded, and restored on leaving. The setting is
process-wide, so nested and concurrent users (dask runs several registrations in one
process) share it: the first to enter sets it, the last to leave restores it. Where no
such library is found (another BLAS, a platform without ``/proc/self/maps``, an older
OpenBLAS), nothing changes: slower, never different.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from contextlib import contextmanager

__all__ = ["blas_thread_counts", "one_blas_thread"]

_LOCK = threading.Lock()
_STATE = {"depth": 0, "saved": []}  # users inside, and (setter, previous count) pairs


@functools.cache
def _openblas_setters() -> tuple:
    """``openblas_set_num_threads_local`` of each OpenBLAS loaded in this process (once)."""
    found = []
    for path in _loaded_openblas_paths():
        try:
            setter = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue  # an OpenBLAS without it, or not loadable by path
        setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
        found.append(setter)
    return tuple(found)


def _loaded_openblas_paths() -> list[str]:
    """Files of the OpenBLAS libraries mapped into this process (Linux; else none)."""
    import scipy.optimize  # noqa: F401  (loads SciPy's OpenBLAS, the one that matters)

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return []
    paths = {line.split(maxsplit=5)[-1] for line in lines if len(line.split()) >= 6}
    return sorted(p for p in paths if "openblas" in p.rsplit("/", 1)[-1].lower())


def blas_thread_counts() -> list[int]:
    """The current thread count of each OpenBLAS found (empty when none is)."""
    counts = []
    with _LOCK:
        for setter in _openblas_setters():
            old = setter(1)
            setter(old)
            counts.append(int(old))
    return counts


@contextmanager
def one_blas_thread():
    """Run the block with every loaded OpenBLAS on one thread; restore on leaving."""
    with _LOCK:
        if _STATE["depth"] == 0:
            _STATE["saved"] = [(s, s(1)) for s in _openblas_setters()]
        _STATE["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _STATE["depth"] -= 1
            if _STATE["depth"] == 0:
                for setter, previous in _STATE["saved"]:
                    setter(previous)
                _STATE["saved"] = []

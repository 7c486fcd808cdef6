"""The AVX2 code paths are chosen before NumPy loads, so verdicts do not depend on the CPU."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from hybridfuse import _cpu_paths
from hybridfuse.registration._blas import _loaded_openblas_paths

ROOT = Path(__file__).resolve().parents[1]
PINNABLE = (
    platform.machine().lower() in {"x86_64", "amd64"}
    and {"avx2", "fma"} <= _cpu_paths._cpu_flags()
    and _cpu_paths._numpy_names_known()
)
_VARS = ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES")
#: The caller chose the paths for this test run (its own values or the opt-out).
CALLERS = _cpu_paths.OPT_OUT in os.environ or any(
    k in os.environ and k not in _cpu_paths.PINNED for k in _VARS
)
needs_pin = pytest.mark.skipif(
    not PINNABLE or CALLERS,
    reason="the paths are chosen only on x86-64 Linux CPUs with AVX2 and FMA, with the NumPy "
    "releases checked, where the caller has not chosen them",
)

#: The corename getter under the names plain and SciPy-bundled OpenBLAS builds give it.
_GETTERS = (
    "openblas_get_corename",
    "scipy_openblas_get_corename",
    "scipy_openblas_get_corename64_",
)


def corenames() -> list[str]:
    """The kernel name of every OpenBLAS loaded in this process, lower case."""
    names = []
    for path in _loaded_openblas_paths():
        lib = ctypes.CDLL(path)
        get = next(getattr(lib, n) for n in _GETTERS if hasattr(lib, n))
        get.restype = ctypes.c_char_p
        names.append(get().decode().lower())
    return names


def numpy_avx512_loops() -> bool:
    """Whether NumPy dispatches to any of its loops above AVX2 in this process."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    above = set(_cpu_paths.NUMPY_DISABLED.split())
    return any(__cpu_features__.get(f, False) for f in above & set(__cpu_dispatch__))


_REPORT = """
import hybridfuse, numpy, scipy.optimize
from tests.test_cpu_paths import corenames, numpy_avx512_loops
print(*corenames(), numpy_avx512_loops())
"""


def _fresh(env: dict) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _REPORT],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


@needs_pin
def test_the_test_process_runs_the_avx2_paths():
    names = corenames()
    assert names and set(names) == {_cpu_paths.BLAS_KERNEL.lower()}, names
    assert not numpy_avx512_loops()


@needs_pin
def test_importing_hybridfuse_first_chooses_them_in_a_fresh_process():
    *names, loops = _fresh({k: v for k, v in os.environ.items() if k not in _VARS})
    assert names and set(names) == {_cpu_paths.BLAS_KERNEL.lower()}
    assert loops == "False"


@needs_pin
def test_the_opt_out_keeps_the_cpus_own_paths():
    env = {k: v for k, v in os.environ.items() if k not in _VARS}
    code = f"import hybridfuse, os; print([os.environ.get(k) for k in {_VARS!r}])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, _cpu_paths.OPT_OUT: "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[None, None]"


@needs_pin
def test_a_callers_own_kernel_is_kept():
    *names, _ = _fresh({**os.environ, "OPENBLAS_CORETYPE": "Sandybridge"})
    assert names and set(names) == {"sandybridge"}


def test_nothing_is_forced_on_a_cpu_without_avx2(monkeypatch):
    monkeypatch.setattr(_cpu_paths, "_numpy_loaded", lambda: False)
    monkeypatch.setattr(_cpu_paths.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(_cpu_paths, "_cpu_flags", lambda: {"sse2", "fma"})
    env = {}  # never os.environ: the test session's own must not change
    assert _cpu_paths.pin_cpu_paths(env) == {} and env == {}
    monkeypatch.setattr(_cpu_paths, "_cpu_flags", lambda: {"avx2", "fma"})
    assert _cpu_paths.pin_cpu_paths(env)["OPENBLAS_CORETYPE"] == _cpu_paths.BLAS_KERNEL
    assert _cpu_paths.pin_cpu_paths({_cpu_paths.OPT_OUT: "1"}) == {}

"""The one place that sets how Numba compiles the project's kernels.

- ``cache=True``: compiled code is kept on disk, so a fresh process does not recompile.
- ``error_model="numpy"``: division by zero gives inf/nan as in NumPy instead of raising,
  which lets kernels test for it cheaply.
- ``fastmath`` is off everywhere: results must not depend on reassociation, and the
  metric values are compared against NumPy and SimpleITK.
- OpenMP threads wait passively between kernels (``OMP_WAIT_POLICY=PASSIVE``).
- Reductions in parallel kernels are split into fixed-size blocks that are summed in
  order afterwards, so a result does not depend on the number of threads.
"""

from __future__ import annotations

import os

# Numba's OpenMP threads otherwise spin after every parallel kernel and starve the main
# thread (the optimiser, NumPy) of its core: on 2 cores that made registration ~3x
# slower. libgomp reads this when it loads, at the first parallel kernel, so setting it
# here is early enough; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402

__all__ = ["jit", "jit_parallel", "prange", "BLOCK"]

#: Samples per reduction block in parallel kernels (independent of the thread count).
BLOCK = 2048

jit = numba.njit(cache=True, error_model="numpy", nogil=True)
prange = numba.prange


def jit_parallel(func):
    """Compile a kernel whose outer ``prange`` loop runs on all threads."""
    return numba.njit(cache=True, error_model="numpy", nogil=True, parallel=True)(func)

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
import types

# Numba's OpenMP threads otherwise spin after every parallel kernel and starve the main
# thread (the optimiser, NumPy) of its core: on 2 cores that made registration ~3x
# slower. libgomp reads this when it loads, at the first parallel kernel, so setting it
# here is early enough; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402

__all__ = ["jit", "jit_parallel", "for_size", "prange", "BLOCK", "PARALLEL_MIN_ITEMS"]

#: Samples per reduction block in parallel kernels (independent of the thread count).
BLOCK = 2048

jit = numba.njit(cache=True, error_model="numpy", nogil=True)
prange = numba.prange


#: Work items (samples, pixels) below which a kernel's serial twin is faster. Waking
#: the passive OpenMP threads costs about 50 us per parallel region on this class of
#: machine: with LC2 at 400 samples the serial twin took 0.02 ms and the parallel
#: kernel 0.49 ms, at 10 000 samples 0.40 against 0.60 ms; at 40 000 the parallel
#: one wins (1.27 against 1.46 ms, 2 threads).
PARALLEL_MIN_ITEMS = 16384


def jit_parallel(func):
    """Compile a kernel whose outer ``prange`` loop runs on all threads.

    The returned dispatcher carries a serial twin as ``.serial`` (the same code with
    ``prange`` as a plain loop; see :func:`for_size`). Kernels reduce in fixed blocks,
    so both give bit-identical results.
    """
    kernel = numba.njit(cache=True, error_model="numpy", nogil=True, parallel=True)(func)
    # A renamed copy: Numba's on-disk cache is keyed by the function's qualified name,
    # so the twin must not share it with the parallel build.
    twin = types.FunctionType(
        func.__code__, func.__globals__, func.__name__ + "_serial", func.__defaults__
    )
    twin.__qualname__ = func.__qualname__ + "_serial"
    twin.__doc__ = func.__doc__
    twin.__module__ = func.__module__
    kernel.serial = jit(twin)
    return kernel


def for_size(kernel, n_items: int):
    """The parallel ``kernel`` for large inputs, its serial twin for small ones."""
    return kernel if n_items >= PARALLEL_MIN_ITEMS else kernel.serial

"""Sequence tracking: register an ultrasound clip to a fluoroscopy run frame by frame.

Each frame pair starts from the previous pair's transform moved on by the last
frame-to-frame motion (a warm, predicted start), skips the global search and optimises
one fine pyramid level on a capped number of samples: between consecutive frames the
probe's motion changes little, so the prediction is well inside the capture range.
"""

from __future__ import annotations

import time

import numpy as np

from ._blas import one_blas_thread
from ._register import RegistrationOptions, RegistrationResult, register
from .transforms import Transform, TransformModel

__all__ = ["predict", "track_sequence"]


def track_sequence(
    fixed_frames,
    moving_frames,
    pairs,
    initial: Transform | np.ndarray,
    *,
    fixed_mask=None,
    moving_mask=None,
    options: RegistrationOptions | None = None,
    levels: tuple[int, ...] = (2,),
    max_iterations: tuple[int, ...] = (8,),
    max_samples: int = 4000,
    update_model: str | None = "affine",
    progress=None,
) -> tuple[list[RegistrationResult], float]:
    """Register ``moving_frames[j]`` onto ``fixed_frames[i]`` for each (i, j) in ``pairs``.

    Parameters
    ----------
    fixed_frames, moving_frames : indexable by frame number (lists, dicts of 2D arrays).
    pairs : list of (fixed index, moving index), in time order.
    initial : the transform of the first pair (e.g. from a landmark registration).
    levels, max_iterations : pyramid factors and iteration caps used for every frame.
    max_samples : ultrasound samples per frame (a warm start needs few).
    update_model : the per-frame update composed onto the previous homography
        (``None``: the options' model). The default, ``affine``, carries the first pair's
        perspective along and refines the rest: between frames the plane's tilt hardly
        changes, and its two perspective terms are the ones one frame pins down worst
        (docs/registration-method.md, *Sequence tracking*).

    Returns
    -------
    results : one RegistrationResult per pair.
    frames_per_second : pairs registered per second of wall time.
    """
    base = options or RegistrationOptions()
    opts = _frame_options(base, update_model, levels, max_iterations, max_samples)
    current = initial.matrix if isinstance(initial, Transform) else np.asarray(initial, float)
    previous = None
    results = []
    t0 = time.perf_counter()
    with one_blas_thread():  # the optimiser's tiny BLAS calls: threads only cost (_blas)
        for k, (i, j) in enumerate(pairs):
            res = register(
                fixed_frames[i],
                moving_frames[j],
                fixed_mask=fixed_mask,
                moving_mask=moving_mask,
                initial=current if previous is None else predict(previous, current),
                options=opts,
            )
            previous, current = current, res.transform.matrix
            res.transform = Transform(current, base.model)
            res.model = TransformModel(base.model).value
            results.append(res)
            if progress is not None:
                progress(k + 1, len(pairs))
    elapsed = time.perf_counter() - t0
    return results, (len(pairs) / elapsed if elapsed > 0 else float("inf"))


def _frame_options(base, update_model, levels, max_iterations, max_samples):
    """The options of one frame's registration: no search, few levels, few samples."""
    return base.with_values(
        model=update_model or base.model,
        levels=tuple(levels),
        max_iterations=tuple(max_iterations),
        search=False,
        verify_restarts=0,
        fine_levels=len(levels),
        max_samples=max_samples,
    )


def predict(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The next frame's start: the last frame-to-frame motion applied once more.

    A hand moves the probe smoothly, so the motion between frames changes little from one
    frame to the next; starting from the extrapolation leaves the optimiser the change in
    motion to find rather than the motion itself.
    """
    step = np.linalg.solve(previous, current)  # moving-side motion: current = previous @ step
    h = current @ step
    return h / h[2, 2]

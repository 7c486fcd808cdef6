"""Variants of a read phantom image that the generator does not draw itself."""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["mirrored_ultrasound"]


def mirrored_ultrasound(us, true):
    """The ultrasound mirrored left-right, its true transform, and a start with no right answer.

    The start is the unmirrored truth shifted onto the mirrored region (a flipped probe
    marker seen as if it were not).

    A start near the last has no right answer within reach, so it tests whether a
    registration refuses rather than answers wrongly.
    """
    width = us.array.shape[2]
    flip = dataclasses.replace(
        us, array=np.ascontiguousarray(us.array[:, :, ::-1]), mask=us.mask[:, ::-1].copy()
    )
    f = np.array([[-1.0, 0, width - 1], [0, 1, 0], [0, 0, 1]])
    xs = np.nonzero(us.mask)[1]
    shift = np.array([[1.0, 0, (xs.min() + xs.max()) - (width - 1)], [0, 1, 0], [0, 0, 1]])
    return flip, true @ f, true @ shift

"""Numba kernel of the transform parameterisation: parameters to homography and dH/dp.

Only :mod:`registration.transforms` calls it.
"""

from __future__ import annotations

import numpy as np

from ._numba import jit

# --------------------------------------------------------------------------------------
# Transform parameters → homography
# --------------------------------------------------------------------------------------


@jit
def param_homography(model, p, left, right):
    """H = left · D(p) · right and dH/dp (K, 3, 3) for the centred parameterisation.

    ``model``: 0 rigid (θ, tx, ty), 1 similarity (log s, θ, tx, ty), 2 affine
    (a, b, c, e, tx, ty: D = [[1+a, b, tx], [c, 1+e, ty], [0, 0, 1]]), 3 projective
    (affine plus the bottom row's g, h). The optimiser asks for this at every cost
    evaluation; in NumPy its small matrix products took as long as a coarse level's
    metric.
    """
    k = p.shape[0]
    d = np.eye(3)
    dd = np.zeros((k, 3, 3))
    if model <= 1:
        off = model
        s = np.exp(p[0]) if model == 1 else 1.0
        c = np.cos(p[off])
        sn = np.sin(p[off])
        d[0, 0] = s * c
        d[0, 1] = -s * sn
        d[1, 0] = s * sn
        d[1, 1] = s * c
        d[0, 2] = p[off + 1]
        d[1, 2] = p[off + 2]
        if model == 1:
            for i in range(2):
                for j in range(2):
                    dd[0, i, j] = d[i, j]  # d/d(log s)
        dd[off, 0, 0] = -s * sn
        dd[off, 0, 1] = -s * c
        dd[off, 1, 0] = s * c
        dd[off, 1, 1] = -s * sn
        dd[off + 1, 0, 2] = 1.0
        dd[off + 2, 1, 2] = 1.0
    else:
        d[0, 0] += p[0]
        d[0, 1] = p[1]
        d[1, 0] = p[2]
        d[1, 1] += p[3]
        d[0, 2] = p[4]
        d[1, 2] = p[5]
        dd[0, 0, 0] = 1.0
        dd[1, 0, 1] = 1.0
        dd[2, 1, 0] = 1.0
        dd[3, 1, 1] = 1.0
        dd[4, 0, 2] = 1.0
        dd[5, 1, 2] = 1.0
        if model == 3:
            d[2, 0] = p[6]
            d[2, 1] = p[7]
            dd[6, 2, 0] = 1.0
            dd[7, 2, 1] = 1.0
    h = left @ d @ right
    dh = np.empty((k, 3, 3))
    for m in range(k):
        dh[m] = left @ dd[m] @ right
    return h, dh

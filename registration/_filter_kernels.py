"""Numba kernel of the ultrasound preprocessing filter (acoustic-shadow weighting).

Only :mod:`registration.preprocess` calls it.
"""

from __future__ import annotations

import numpy as np

from ._numba import jit

# --------------------------------------------------------------------------------------
# Ultrasound preprocessing
# --------------------------------------------------------------------------------------


@jit
def shadow_ratio(smoothed, mask, background, lo, hi, out):
    """Brightness below each pixel over its background (see ``preprocess.shadow_weight``).

    Mean of ``smoothed`` over rows y+lo..y+hi of the column (inside ``mask``), over
    ``background`` at the pixel, clipped to [0, 1]; 1 where under half the window is in
    the mask or the background is not positive. A running window per column, all columns
    advanced together row by row: each column's sums are the same additions in the same
    order as one column at a time, and the rows are read along memory.
    """
    rows, cols = smoothed.shape
    need = 0.5 * (hi - lo + 1)
    total = np.zeros(cols)
    count = np.zeros(cols)
    # Window of row y is [y + lo, y + hi]; start with y = 0.
    for r in range(min(lo, rows), min(hi + 1, rows)):
        for x in range(cols):
            if mask[r, x]:
                total[x] += smoothed[r, x]
                count[x] += 1.0
    for y in range(rows):
        for x in range(cols):
            bg = background[y, x]
            if count[x] >= need and bg > 1e-12:
                ratio = total[x] / count[x] / bg
                out[y, x] = min(max(ratio, 0.0), 1.0)
            else:
                out[y, x] = 1.0
        # Slide: drop row y + lo, add row y + hi + 1.
        r_out = y + lo
        if r_out < rows:
            for x in range(cols):
                if mask[r_out, x]:
                    total[x] -= smoothed[r_out, x]
                    count[x] -= 1.0
        r_in = y + hi + 1
        if r_in < rows:
            for x in range(cols):
                if mask[r_in, x]:
                    total[x] += smoothed[r_in, x]
                    count[x] += 1.0

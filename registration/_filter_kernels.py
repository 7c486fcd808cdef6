"""Numba kernel of the ultrasound preprocessing filter (acoustic-shadow weighting).

Only :mod:`registration.preprocess` calls it.
"""

from __future__ import annotations

from ._numba import jit_parallel, prange

# --------------------------------------------------------------------------------------
# Ultrasound preprocessing
# --------------------------------------------------------------------------------------


@jit_parallel
def shadow_ratio(smoothed, mask, background, lo, hi, out):
    """Brightness below each pixel over its background (see ``preprocess.shadow_weight``).

    Mean of ``smoothed`` over rows y+lo..y+hi of the column (inside ``mask``), over
    ``background`` at the pixel, clipped to [0, 1]; 1 where under half the window is in
    the mask or the background is not positive. A running window per column.
    """
    rows, cols = smoothed.shape
    need = 0.5 * (hi - lo + 1)
    for x in prange(cols):
        total = 0.0
        count = 0.0
        # Window of row y is [y + lo, y + hi]; start with y = 0.
        for r in range(min(lo, rows), min(hi + 1, rows)):
            if mask[r, x]:
                total += smoothed[r, x]
                count += 1.0
        for y in range(rows):
            bg = background[y, x]
            if count >= need and bg > 1e-12:
                ratio = total / count / bg
                out[y, x] = min(max(ratio, 0.0), 1.0)
            else:
                out[y, x] = 1.0
            # Slide: drop row y + lo, add row y + hi + 1.
            r_out = y + lo
            if r_out < rows and mask[r_out, x]:
                total -= smoothed[r_out, x]
                count -= 1.0
            r_in = y + hi + 1
            if r_in < rows and mask[r_in, x]:
                total += smoothed[r_in, x]
                count += 1.0

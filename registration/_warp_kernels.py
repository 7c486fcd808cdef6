"""Numba kernel of display resampling: a moving image warped into the fixed pixel grid.

Only :mod:`registration.warp` calls it.
"""

from __future__ import annotations

import numpy as np

from ._numba import jit, jit_parallel, prange

# --------------------------------------------------------------------------------------
# Resampling a moving image into the fixed frame (fusion overlays)
# --------------------------------------------------------------------------------------


@jit
def _cubic_weight(t):
    """Keys cubic convolution kernel (a = -0.5)."""
    at = abs(t)
    if at < 1.0:
        return (1.5 * at - 2.5) * at * at + 1.0
    if at < 2.0:
        return ((-0.5 * at + 2.5) * at - 4.0) * at + 2.0
    return 0.0


@jit_parallel
def warp_homography(img, mask, hinv, out_rows, out_cols, order, out, valid):
    """Resample ``img`` (channels, rows, cols) onto an (out_rows, out_cols) grid.

    ``hinv`` maps output (fixed) pixels to input (moving) pixels. ``order``: 0 nearest,
    1 bilinear, 3 cubic. An output pixel is valid when its source lies inside the image
    and the nearest source pixel is inside ``mask``.
    """
    n_ch, rows, cols = img.shape
    for r in prange(out_rows):
        for c in range(out_cols):
            u0 = hinv[0, 0] * c + hinv[0, 1] * r + hinv[0, 2]
            u1 = hinv[1, 0] * c + hinv[1, 1] * r + hinv[1, 2]
            u2 = hinv[2, 0] * c + hinv[2, 1] * r + hinv[2, 2]
            valid[r, c] = False
            for ch in range(n_ch):
                out[ch, r, c] = 0.0
            if u2 <= 0.0:
                continue
            x = u0 / u2
            y = u1 / u2
            if not (x >= -0.5 and y >= -0.5 and x <= cols - 0.5 and y <= rows - 0.5):
                continue
            xn = min(max(int(np.floor(x + 0.5)), 0), cols - 1)
            yn = min(max(int(np.floor(y + 0.5)), 0), rows - 1)
            if mask[yn, xn] == 0:
                continue
            valid[r, c] = True
            if order == 0:
                for ch in range(n_ch):
                    out[ch, r, c] = img[ch, yn, xn]
            elif order == 1:
                xc = min(max(x, 0.0), cols - 1.0)
                yc = min(max(y, 0.0), rows - 1.0)
                x0 = min(int(xc), cols - 2) if cols > 1 else 0
                y0 = min(int(yc), rows - 2) if rows > 1 else 0
                fx = xc - x0
                fy = yc - y0
                x1 = min(x0 + 1, cols - 1)
                y1 = min(y0 + 1, rows - 1)
                for ch in range(n_ch):
                    out[ch, r, c] = (img[ch, y0, x0] * (1 - fx) + img[ch, y0, x1] * fx) * (
                        1 - fy
                    ) + (img[ch, y1, x0] * (1 - fx) + img[ch, y1, x1] * fx) * fy
            else:
                xf = int(np.floor(x))
                yf = int(np.floor(y))
                for ch in range(n_ch):
                    acc = 0.0
                    for j in range(-1, 3):
                        yy = min(max(yf + j, 0), rows - 1)
                        wy = _cubic_weight(y - (yf + j))
                        for i in range(-1, 3):
                            xx = min(max(xf + i, 0), cols - 1)
                            acc += wy * _cubic_weight(x - (xf + i)) * img[ch, yy, xx]
                    out[ch, r, c] = acc

"""Numba kernels of the separable smoothing filters, bit for bit as SciPy computes them.

:func:`registration.preprocess.masked_smooth` smooths every frame of a tracked clip
several times; SciPy's ``ndimage`` copies each line of the image into a buffer first,
which along the columns reads memory with a stride of a whole row. These kernels sweep
whole rows instead, and do each output pixel's arithmetic in SciPy's order (the
symmetric correlation of ``NI_Correlate1D``, the running sum of ``NI_UniformFilter1D``,
``mode="nearest"``), so the results are identical, not merely close
(``tests/registration/test_blur_kernels.py``). Serial: a frame's images are small, and
tracking runs on one thread (``registration/_numba.py``).
"""

from __future__ import annotations

import numpy as np

from ._numba import jit

__all__ = ["box_nearest_f32", "gaussian_nearest", "gaussian_weights"]


@jit
def _gaussian_2d(img, w, out):
    """Correlate ``img`` with the symmetric ``w`` along axis 0, then along axis 1.

    Row by row: the column pass of row y into a line extended by its edge values, then
    the row pass of that line; each value is summed as SciPy sums it (the centre tap,
    then the pairs of taps from the outermost in).
    """
    rows, cols = img.shape
    r = len(w) // 2
    w0 = w[r]
    line = np.empty(cols + 2 * r)
    mid = line[r : r + cols]  # the row itself; the r values either side extend it
    for y in range(rows):
        row = img[y]
        for x in range(cols):
            mid[x] = row[x] * w0
        for j in range(r, 0, -1):
            above = img[max(y - j, 0)]
            below = img[min(y + j, rows - 1)]
            wj = w[r - j]
            for x in range(cols):
                mid[x] += (above[x] + below[x]) * wj
        for i in range(r):
            line[i] = line[r]
            line[cols + r + i] = line[cols + r - 1]
        dst = out[y]
        for x in range(cols):
            dst[x] = line[x + r] * w0
        for j in range(r, 0, -1):
            wj = w[r - j]
            left = line[r - j : r - j + cols]
            right = line[r + j : r + j + cols]
            for x in range(cols):
                dst[x] += (left[x] + right[x]) * wj


@jit
def _box_rows_f32(img, size, out):
    """SciPy's running-mean filter of ``size`` along axis 0, float32 in and out."""
    rows, cols = img.shape
    s1 = size // 2
    s2 = size - s1 - 1
    fsize = float(size)
    tmp = np.zeros(cols)  # the window's running sum (SciPy divides each output by size)
    for k in range(size):
        row = img[min(max(k - s1, 0), rows - 1)]
        for x in range(cols):
            tmp[x] += np.float64(row[x])
    dst = out[0]
    for x in range(cols):
        dst[x] = np.float32(tmp[x] / fsize)
    for y in range(1, rows):
        enter = img[min(y + s2, rows - 1)]
        leave = img[max(y - s1 - 1, 0)]
        dst = out[y]
        for x in range(cols):
            tmp[x] += np.float64(enter[x]) - np.float64(leave[x])
            dst[x] = np.float32(tmp[x] / fsize)


def gaussian_weights(sigma: float, truncate: float) -> np.ndarray:
    """SciPy's order-0 Gaussian kernel for ``sigma`` cut at ``truncate`` sigmas."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    return phi / phi.sum()


def gaussian_nearest(img: np.ndarray, sigma: float, truncate: float = 3.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(img, sigma, mode="nearest", truncate=truncate)``.

    For a 2D float64 image and one positive ``sigma``: the same bits without SciPy's line copies.
    """
    img = np.ascontiguousarray(img, dtype=np.float64)
    w = gaussian_weights(sigma, truncate)
    out = np.empty_like(img)
    _gaussian_2d(img, w, out)
    return out


def box_nearest_f32(img: np.ndarray, widths, axis: int) -> np.ndarray:
    """``uniform_filter1d(img, w, axis, mode="nearest")`` for each w of ``widths`` in turn.

    ``img`` float32 (2D); every pass is rounded to float32, as SciPy's output is. Along
    axis 1 the passes run on the transpose: a running sum along a row is one long chain
    of dependent additions, down the columns a row of independent ones.
    """
    out = np.asarray(img, dtype=np.float32)
    if axis == 1:
        out = out.T
    out = np.ascontiguousarray(out)
    for w in widths:
        nxt = np.empty_like(out)
        _box_rows_f32(out, int(w), nxt)
        out = nxt
    return np.ascontiguousarray(out.T) if axis == 1 else out

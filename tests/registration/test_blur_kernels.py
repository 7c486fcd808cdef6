"""The smoothing kernels give SciPy's results bit for bit (registration._blur_kernels).

Tracking's speed-up from them is only allowed because no answer changes: every test
compares with ``np.array_equal``, not a tolerance.
"""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, uniform_filter1d

from hybridfuse.registration import preprocess
from hybridfuse.registration._blur_kernels import box_nearest_f32, gaussian_nearest

SHAPES = [(1, 1), (1, 9), (9, 1), (3, 40), (40, 3), (37, 52), (120, 96)]


def _image(shape, seed):
    rng = np.random.default_rng(seed)
    img = rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3)
    img[rng.random(shape) < 0.2] = 0.0  # masked-out pixels, as masked_smooth passes them
    return img


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sigma", [0.3, 0.7, 1.27, 1.82, 3.9, 9.0])
def test_gaussian_is_scipys(shape, sigma):
    img = _image(shape, 1)
    want = gaussian_filter(img, sigma, mode="nearest", truncate=3.0)
    assert np.array_equal(gaussian_nearest(img, sigma), want)  # radius may exceed the image


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("widths", [(1,), (3, 3, 5), (7, 7, 9), (21, 23, 23), (4, 6)])
@pytest.mark.parametrize("axis", [0, 1])
def test_box_is_scipys(shape, widths, axis):
    img = _image(shape, 2).astype(np.float32)
    want = img
    for w in widths:
        want = uniform_filter1d(want, w, axis=axis, mode="nearest")
    got = box_nearest_f32(img, widths, axis)
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_masked_smooth_is_unchanged_under_a_collimator():
    """preprocess's blurs (Gaussian below 4 px, boxes above) against SciPy's, in place."""
    rng = np.random.default_rng(3)
    frame = 800.0 + 40.0 * rng.standard_normal((200, 210))
    yy, xx = np.mgrid[:200, :210]
    mask = (xx - 120.0) ** 2 + (yy - 90.0) ** 2 < 110.0**2  # a disc cut by the edges
    for sigma in (0.7, 1.0, 6.0):
        masked = np.where(mask, frame, 0.0)
        if sigma < preprocess.BOX_FROM_SIGMA_PX:
            num = gaussian_filter(masked, sigma, mode="nearest", truncate=3.0)
            den = gaussian_filter(mask.astype(np.float64), sigma, mode="nearest", truncate=3.0)
        else:
            num, den = _scipy_boxes(masked, sigma), _scipy_boxes(mask.astype(np.float64), sigma)
        want = np.divide(num, den, out=np.zeros_like(num), where=mask & (den > 1e-6))
        assert np.array_equal(preprocess.masked_smooth(frame, mask, sigma), want)


def _scipy_boxes(img, sigma):
    """preprocess._blur's box recipe, through SciPy."""
    n = 3
    wl = int(np.floor(np.sqrt(12.0 * sigma * sigma / n + 1.0)))
    wl -= 1 - wl % 2
    m = int(round((12.0 * sigma * sigma - n * wl * wl - 4 * n * wl - 3 * n) / (-4.0 * wl - 4.0)))
    out = np.asarray(img, np.float32)
    for axis in (0, 1):
        for w in [wl] * m + [wl + 2] * (n - m):
            out = uniform_filter1d(out, w, axis=axis, mode="nearest")
    return out.astype(np.float64)

"""Preprocessing: the smoothing every level and feature image is built on."""

import numpy as np
import pytest

from hybridfuse.registration.preprocess import (
    _blur,
    decimated_smooth,
    mask_extent,
    masked_smooth,
    preprocess_pair,
    quantised_scale,
    shadow_weight,
)
from tests.registration import naive


@pytest.mark.parametrize("sigma", [1.0, 2.5, 3.5, 4.0, 5.0, 8.0, 12.0])
def test_blur_has_the_variance_of_its_gaussian(sigma):
    img = np.zeros((161, 161))
    img[80, 80] = 1.0
    out = _blur(img, sigma)
    assert out.sum() == pytest.approx(1.0, rel=1e-6)  # the box passes run in float32
    yy, xx = np.mgrid[0:161, 0:161]
    var_x = float((out * (xx - 80.0) ** 2).sum())
    var_y = float((out * (yy - 80.0) ** 2).sum())
    # Exact Gaussian below 4 px (truncated at 3 sigma); stacked boxes above, whose odd
    # widths make the variance a step function of sigma (at most 9 % off from 4 px up).
    assert var_x == pytest.approx(sigma**2, rel=0.09)
    assert var_y == pytest.approx(var_x, rel=1e-6)  # isotropic
    assert np.unravel_index(out.argmax(), out.shape) == (80, 80)  # no half-pixel shift


@pytest.mark.parametrize("sigma", [1.5, 6.0])
def test_masked_smooth_ignores_what_lies_outside_the_mask(sigma):
    rng = np.random.default_rng(0)
    mask = np.zeros((80, 90), bool)
    mask[10:70, 20:80] = True
    img = np.where(mask, 7.0, rng.normal(0, 1000, mask.shape))
    out = masked_smooth(img, mask, sigma)
    assert np.allclose(out[mask], 7.0)
    assert np.all(out[~mask] == 0.0)
    again = masked_smooth(img, mask, sigma)  # the mask's weights now come from the cache
    assert np.array_equal(out, again)


@pytest.mark.parametrize("sigma", [1.5, 6.0])
def test_a_full_mask_smooths_like_the_normalised_convolution(sigma):
    # A full mask takes a shortcut (its weights are 1); it must not show.
    from hybridfuse.registration.preprocess import _blur

    rng = np.random.default_rng(1)
    img = rng.normal(0, 10, (50, 60))
    full = np.ones(img.shape, bool)
    expected = _blur(img, sigma) / _blur(full.astype(float), sigma)
    assert np.allclose(masked_smooth(img, full, sigma), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("sigma", "factor"), [(8.0, 4), (4.0, 2), (3.0, 3)])
def test_decimated_smooth_is_the_gaussian_of_the_image_at_block_centres(sigma, factor):
    # A Gaussian blob smoothed by a Gaussian is a wider Gaussian: analytic truth,
    # sampled where each coarse pixel's block is centred.
    rows, cols, width = 101, 118, 5.0
    cy, cx = 47.3, 61.8
    yy, xx = np.mgrid[0:rows, 0:cols]
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * width**2))
    out, valid = decimated_smooth(blob, np.ones(blob.shape, bool), sigma, factor)
    assert out.shape == valid.shape == (-(-rows // factor), -(-cols // factor))
    # Blocks cut by the image's edge are valid when at least half of them is there.
    assert valid[: rows // factor, : cols // factor].all()
    last_row, last_col = rows % factor, cols % factor
    assert valid[-1, 0] == (last_row == 0 or 2 * last_row >= factor)
    assert valid[0, -1] == (last_col == 0 or 2 * last_col >= factor)
    var = width**2 + sigma**2
    v, u = np.mgrid[0 : out.shape[0], 0 : out.shape[1]]
    x, y = factor * u + (factor - 1) / 2, factor * v + (factor - 1) / 2
    truth = width**2 / var * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * var))
    inner = (np.abs(x - cx) < 30) & (np.abs(y - cy) < 30)  # away from the edge clamping
    assert np.abs(out - truth)[inner].max() < 0.01 * truth.max()


def test_decimated_smooth_ignores_what_lies_outside_the_mask_and_marks_half_blocks():
    rng = np.random.default_rng(1)
    mask = np.zeros((64, 66), bool)
    mask[8:56, 10:50] = True
    img = np.where(mask, 3.0, rng.normal(0, 1000, mask.shape))
    out, valid = decimated_smooth(img, mask, 8.0, 4)
    assert np.allclose(out[valid], 3.0)
    assert np.all(out[~valid] == 0.0)
    # Coarse pixels whose 4×4 block is at least half inside the mask: rows 8..55 and
    # columns 10..49 cover blocks 2..13 fully; block column 12 (48..51) is half in.
    expected = np.zeros((16, 17), bool)
    expected[2:14, 2:13] = True
    assert np.array_equal(valid, expected)


def test_mask_extent_is_the_box_centre_and_count_of_the_mask():
    mask = np.zeros((40, 50), bool)
    mask[5:20, 7:31] = True
    mask[30, 45] = True
    ys, xs = np.nonzero(mask)
    want = [7, 45, 5, 30, xs.mean(), ys.mean(), len(xs)]
    np.testing.assert_allclose(mask_extent(mask), want)
    mask[30, 45] = False  # same array, new content: not served from the cache
    assert mask_extent(mask)[1] == 30


@pytest.mark.parametrize("scale", [0.0123, 0.54, 0.995, 1.0, 1.004, 3.7])
def test_quantised_scale_is_within_half_a_step_and_stable(scale):
    q = quantised_scale(scale)
    assert abs(np.log(q / scale)) <= 0.005 + 1e-12
    assert quantised_scale(q) == q


def test_shadow_weight_agrees_with_its_numpy_twin():
    rng = np.random.default_rng(3)
    smoothed = rng.random((70, 40))
    mask = rng.random((70, 40)) > 0.25
    mask[50:, :10] = False  # windows that leave the region: weight 1
    background = rng.random((70, 40)) + 0.2
    background[5, 5] = 0.0
    got = shadow_weight(smoothed, mask, background, 3, 11)
    np.testing.assert_allclose(got, naive.shadow_weight(smoothed, mask, background, 3, 11))


def test_echoes_that_cast_a_shadow_drop_out_of_the_ultrasound_features():
    # Speckle-like background with three echoes: a bone surface (dark below it), a
    # needle (the image carries on below) and a bead (a bright comet tail below).
    rng = np.random.default_rng(4)
    us = 40.0 + 5.0 * rng.random((160, 150))
    us[60:63, 10:60] = 200.0  # bone surface
    us[63:, 10:60] = 2.0  # its acoustic shadow
    us[80:83, 70:110] = 200.0  # needle seen across
    us[40:44, 125:129] = 200.0  # bead
    us[44:90, 126:128] = 120.0  # its comet tail
    mask = np.ones(us.shape, bool)
    fixed = np.full((100, 100), 50.0)
    fmask = np.ones(fixed.shape, bool)
    # Ultrasound pixels half the fluoroscopy's (as on the phantom): the window below
    # is 4 to 20 ultrasound rows deep.
    _, kept = preprocess_pair(fixed, fmask, us, mask, "structures", scale=0.5)
    _, every = preprocess_pair(fixed, fmask, us, mask, "structures", scale=0.5, shadow_px=None)

    def mass(img, rows, cols):
        return img[rows, cols].sum()

    bone = (slice(56, 66), slice(12, 58))
    needle = (slice(76, 87), slice(72, 108))
    bead = (slice(36, 48), slice(121, 133))
    # The local background includes the echo itself, so even an echo with ordinary
    # speckle below it loses a little (the needle keeps 82 % here).
    assert mass(kept, *bone) < 0.2 * mass(every, *bone)
    assert mass(kept, *needle) > 0.7 * mass(every, *needle)
    assert mass(kept, *bead) > 0.9 * mass(every, *bead)

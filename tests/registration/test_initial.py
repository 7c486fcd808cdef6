"""Starting transforms from image moments and the calibrated scale."""

import numpy as np
import pytest

from hybridfuse.registration import RegistrationError, RegistrationOptions, Transform
from hybridfuse.registration.initial import (
    WIDE_SEARCH_KEEP,
    WIDE_SEARCH_SEPARATION_MM,
    moments_start,
    wide_search_options,
)

BLOBS = ((20.0, 15.0, 1.0), (70.0, 40.0, 0.6), (45.0, 60.0, 0.8))  # moving (x, y, height)


def _blobs(shape, h, width_moving_px=3.0):
    """The moving blobs drawn where ``h`` (a scaled shift) puts them, at its scale."""
    s = h[0, 0]
    yy, xx = np.indices(shape)
    img = np.zeros(shape)
    for x, y, amp in BLOBS:
        fx, fy = (h @ np.array([x, y, 1.0]))[:2]
        w = width_moving_px * s
        img += amp * np.exp(-((xx - fx) ** 2 + (yy - fy) ** 2) / (2 * w * w))
    return img


def test_moments_start_lines_up_the_centroids_at_the_calibrated_scale():
    moving = _blobs((80, 100), np.eye(3)) + 5.0  # a background the moments must ignore
    true = np.array([[1.6, 0.0, 37.0], [0.0, 1.6, 21.0], [0.0, 0.0, 1.0]])
    fixed = _blobs((200, 230), true)
    start = moments_start(fixed, moving, (1.6, 1.6), preprocess="none")
    # A scaled shift carries the centroid of the blobs onto the centroid of their image.
    assert start.matrix[0, 0] == start.matrix[1, 1] == 1.6
    assert start.matrix[0, 1] == start.matrix[1, 0] == 0.0
    probe = np.array([[0.0, 0.0], [50.0, 40.0], [99.0, 79.0]])
    assert np.abs(Transform(start.matrix).apply(probe) - Transform(true).apply(probe)).max() < 0.05


def test_moments_start_keeps_anisotropic_axis_scales():
    moving = _blobs((80, 100), np.eye(3))
    start = moments_start(_blobs((200, 230), np.diag([1.5, 1.5, 1.0])), moving, (1.7, 1.3))
    assert (start.matrix[0, 0], start.matrix[1, 1]) == (1.7, 1.3)


def test_moments_reach_covers_every_pixel_of_the_fixed_field():
    moving = _blobs((80, 100), np.eye(3))
    fixed = _blobs((200, 230), np.array([[1.6, 0, 37.0], [0, 1.6, 21.0], [0, 0, 1]]))
    field = np.zeros(fixed.shape, bool)
    field[10:190, 30:220] = True
    start = moments_start(fixed, moving, (1.6, 1.6), fixed_mask=field, preprocess="none")
    centre = Transform(start.matrix).apply(np.array([[49.5, 39.5]]))[0]  # the region's centre
    ys, xs = np.nonzero(field)
    cheb = np.maximum(np.abs(xs - centre[0]), np.abs(ys - centre[1]))
    assert start.reach_px == pytest.approx(cheb.max())


@pytest.mark.parametrize("scale", [(0.0, 1.0), (np.nan, 1.0), (-1.0, -1.0)])
def test_moments_start_needs_a_positive_scale(scale):
    img = _blobs((80, 100), np.eye(3))
    with pytest.raises(RegistrationError, match="positive scale"):
        moments_start(img, img, scale, preprocess="none")


def test_moments_of_a_featureless_image_are_refused():
    moving = _blobs((80, 100), np.eye(3))
    with pytest.raises(RegistrationError, match="fixed image has no features"):
        moments_start(np.full((120, 120), 3.0), moving, (1.0, 1.0), preprocess="none")


def test_a_wide_search_reaches_as_far_as_asked_and_never_narrows():
    opts = wide_search_options(RegistrationOptions(), 75.0)
    assert opts.grid.search is True
    assert opts.grid.search_translation_mm == 75.0
    assert opts.grid.search_keep == WIDE_SEARCH_KEEP
    assert opts.grid.search_separation_mm == WIDE_SEARCH_SEPARATION_MM
    wider = RegistrationOptions().with_values(search_translation_mm=90.0, search_keep=50)
    kept = wide_search_options(wider, 75.0).grid
    assert (kept.search_translation_mm, kept.search_keep) == (90.0, 50)
    with pytest.raises(RegistrationError):
        wide_search_options(opts, 0.0)

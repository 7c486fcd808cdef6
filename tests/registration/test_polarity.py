"""The fluoroscopy's display polarity is read from its quantum noise (registration.polarity)."""

import numpy as np
import pytest

from hybridfuse.registration.polarity import (
    DENSE_BRIGHT_MIN_LOG_RATIO,
    dense_is_bright,
    noise_polarity,
)
from hybridfuse.registration.preprocess import preprocess_pair

BEAD_XY = (120, 70)


def _projection(seed: int) -> np.ndarray:
    """A log-displayed projection, dense dark: a soft-tissue ramp, a bone block, a bead.

    Poisson counts behind the attenuation, then the logarithm, as a detector's display.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:200, 0:200]
    mu = 0.5 + 2.5 * xx / 200.0  # thicker tissue to the right: fewer photons
    mu = mu + 1.0 * ((abs(xx - 60) < 20) & (abs(yy - 130) < 40))  # bone
    mu = mu + 2.0 * (np.hypot(xx - BEAD_XY[0], yy - BEAD_XY[1]) < 3)  # metal bead
    counts = rng.poisson(400.0 * np.exp(-mu)).astype(float)
    return np.log(np.maximum(counts, 0.5))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_reads_which_way_dense_matter_is_shown(seed):
    dark = _projection(seed)
    bright = dark.max() - dark  # the same exposure shown the radiograph way
    assert noise_polarity(dark) < -DENSE_BRIGHT_MIN_LOG_RATIO
    assert noise_polarity(bright) > DENSE_BRIGHT_MIN_LOG_RATIO


def test_structures_keep_the_bead_in_either_polarity():
    # Broken once (the flip in preprocess_pair removed): the dense-bright image's bead
    # had no feature at all (the dark top-hat of a bright dot is 0) and this failed.
    dark = _projection(3)
    mask = np.ones(dark.shape, bool)
    moving, mmask = np.zeros((50, 50)), np.ones((50, 50), bool)
    for img in (dark, dark.max() - dark):
        feat, _ = preprocess_pair(img, mask, moving, mmask, "structures", fluoro_dense="auto")
        x, y = BEAD_XY
        bead = feat[y - 2 : y + 3, x - 2 : x + 3].max()
        assert bead > 5 * np.percentile(feat, 99)


def test_a_noise_free_image_is_not_read_as_dense_bright():
    yy, xx = np.mgrid[0:100, 0:100]
    ramp = xx + 0.5 * yy.astype(float)
    assert not dense_is_bright(ramp)
    assert not dense_is_bright(ramp.max() - ramp)


def test_the_header_convention_is_the_default():
    """Without ``auto`` the dense-bright image keeps the dark top-hat: the bead is lost."""
    bright = _projection(3)
    bright = bright.max() - bright
    mask = np.ones(bright.shape, bool)
    moving, mmask = np.zeros((50, 50)), np.ones((50, 50), bool)
    kept = {}
    for dense in ("dark", "bright"):
        feat, _ = preprocess_pair(bright, mask, moving, mmask, "structures", fluoro_dense=dense)
        x, y = BEAD_XY
        kept[dense] = feat[y - 2 : y + 3, x - 2 : x + 3].max() > 5 * np.percentile(feat, 99)
    assert kept == {"dark": False, "bright": True}

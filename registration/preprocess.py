"""Image preprocessing suited to ultrasound ↔ X-ray registration.

The two modalities share few intensities: ultrasound shows echoes (bright bone
surfaces, needle and beads, with shadows behind them) while fluoroscopy shows
attenuation integrals (bone, needle and beads dark in MONOCHROME2 sense). What both show
are compact, high-contrast structures: the needle, the beads and bone cortices.

==============  ========================================================================
mode            what it does
==============  ========================================================================
``none``        raw intensities (masked smoothing by the pyramid only)
``structures``  fluoroscopy: dark-structure top-hat ``max(0, G_bg * F - F)`` (the
                bright one with ``fluoro_dense`` "bright", or "auto" where the noise
                reads dense-bright, :mod:`registration.polarity`);
                ultrasound: speckle smoothing, then bright-structure top-hat
                ``max(0, U_s - G_bg * U_s)``, weighed down where the echo casts an
                acoustic shadow (see below); background scales are matched
                physically through the expected scale (fixed px per moving px)
``gradient``    gradient magnitude of both after smoothing (edges of bone, needle)
==============  ========================================================================

Acoustic shadows. A bone surface reflects nearly all of the ultrasound, so the image is
dark below it; the needle and the beads are thin, and below them the image carries on
(beads even ring: comet tails). The bone surface the ultrasound plane cuts has no
counterpart in a projection, whose bone edges are where the X-rays graze the cortex,
and a metric would lay that arc on some projected bone rim. So each ultrasound echo is
weighed by how bright the image stays just below it: the mean of the smoothed image over
2 to 10 fixed pixels deeper (down the image: the transducer is at the top), over the
local background, clipped to [0, 1]. Where that window leaves the calibrated region
nothing is known and the weight is 1. The evidence: docs/registration-method.md.
"""

from __future__ import annotations

import threading
from enum import Enum

import numpy as np

from ._blur_kernels import box_nearest_f32, gaussian_nearest

__all__ = [
    "Preprocess",
    "decimated_smooth",
    "mask_extent",
    "masked_smooth",
    "preprocess_pair",
    "quantised_scale",
    "shadow_weight",
]


class Preprocess(str, Enum):
    """Preprocessing modes."""

    NONE = "none"
    STRUCTURES = "structures"
    GRADIENT = "gradient"


def masked_smooth(img: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing that ignores pixels outside ``mask`` (normalised convolution).

    See :func:`_blur` for the filter (exact Gaussian below 4 px, stacked boxes above).
    """
    img = np.asarray(img, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if sigma <= 0:
        return np.where(mask, img, 0.0)
    if mask.all():
        # The weights of a full mask are 1 (the filters are normalised and extend the
        # edges): a rectangular ultrasound region cropped to its box needs no second blur.
        return _blur(img, float(sigma))
    num = _blur(np.where(mask, img, 0.0), float(sigma))
    den = _mask_weight(mask, float(sigma))
    return np.divide(num, den, out=np.zeros_like(img), where=mask & (den > 1e-6))


def decimated_smooth(
    img: np.ndarray, mask: np.ndarray, sigma: float, factor: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`masked_smooth` at ``sigma`` px, returned on a grid ``factor`` times coarser.

    Pixel (u, v) of the result is centred on input pixel
    (``factor`` · u + (``factor`` − 1)/2, likewise v). The image is first averaged over
    ``factor`` × ``factor`` blocks (pixels outside ``mask`` left out), then smoothed by
    a Gaussian of the remaining width, sqrt(sigma² − (factor² − 1)/12) / ``factor``
    coarse pixels, since a block average already has variance (factor² − 1)/12 px²
    per axis; the normalised convolution's weights go through the same two steps.
    A coarse pixel is valid where at least half its block lies in ``mask``. The coarse
    pyramid levels need a low-pass image, not one sampled finer than its width: this
    costs a sixteenth of the full-resolution filter at ``factor`` 4.

    Returns
    -------
    image, valid : ndarray (ceil(rows / factor), ceil(cols / factor))
        Smoothed image (0 outside ``valid``) and the coarse mask.
    """
    img = np.asarray(img, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    factor = int(factor)
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    rows, cols = img.shape
    r_out, c_out = -(-rows // factor), -(-cols // factor)
    pad = ((0, r_out * factor - rows), (0, c_out * factor - cols))
    shape4 = (r_out, factor, c_out, factor)
    # Padding carries zero weight, so partial blocks at the far edges stay unbiased.
    num = np.pad(np.where(mask, img, 0.0), pad).reshape(shape4).mean(axis=(1, 3))

    def weights():
        frac = np.pad(mask.astype(np.float64), pad).reshape(shape4).mean(axis=(1, 3))
        return np.stack([frac, _smooth_coarse(frac, sigma, factor)])

    frac, den = _cached(_mask_key(mask, "decimate", factor, sigma), weights)
    valid = frac >= 0.5
    num = _smooth_coarse(num, sigma, factor)
    out = np.divide(num, den, out=np.zeros_like(num), where=valid & (den > 1e-6))
    return out, valid


def _smooth_coarse(block_mean: np.ndarray, sigma: float, factor: int) -> np.ndarray:
    rest = np.sqrt(max(sigma * sigma - (factor * factor - 1) / 12.0, 0.0)) / factor
    if rest <= 0:
        return block_mean
    return _gaussian(block_mean, rest)


#: How a fluoroscopy may show dense matter (the ``fluoro_dense`` option's choices).
FLUORO_DENSE = ("dark", "bright", "auto")
_WEIGHTS: dict = {}  # mask-derived arrays (weights, erosions), oldest first
_CACHE_ENTRIES = 64
_POLARITY: dict = {}  # each fluoroscopy image's polarity (registration.polarity), by content
_WEIGHTS_LOCK = threading.Lock()  # dask may run several registrations in one process


def _mask_key(mask: np.ndarray, *extra) -> tuple:
    import hashlib

    digest = hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).digest()
    return (mask.shape, *extra, digest)


def _cached(key, compute, store: dict | None = None):
    store = _WEIGHTS if store is None else store
    with _WEIGHTS_LOCK:
        hit = store.get(key)
    if hit is None:
        hit = compute()
        if isinstance(hit, np.ndarray):
            hit.setflags(write=False)
        with _WEIGHTS_LOCK:
            while len(store) >= _CACHE_ENTRIES:
                store.pop(next(iter(store)))
            store[key] = hit
    return hit


def eroded(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``mask`` eroded by a 3×3 square ``iterations`` times (cached, read-only)."""
    from scipy.ndimage import binary_erosion

    mask = np.asarray(mask, dtype=bool)
    return _cached(
        _mask_key(mask, "erode", iterations),
        lambda: binary_erosion(mask, np.ones((3, 3), bool), iterations),
    )


def mask_extent(mask: np.ndarray) -> np.ndarray:
    """``[x_min, x_max, y_min, y_max, x_mean, y_mean, count]`` of a mask's pixels (cached).

    Every frame of a clip asks for the same ultrasound region's box and centre several
    times; scanning the mask each time was a tenth of a tracked frame.
    """
    mask = np.asarray(mask, dtype=bool)

    def compute():
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            return np.full(7, np.nan)
        return np.array(
            [xs.min(), xs.max(), ys.min(), ys.max(), xs.mean(), ys.mean(), len(xs)], float
        )

    return _cached(_mask_key(mask, "extent"), compute)


def quantised_scale(scale: float, step: float = 0.01) -> float:
    """``scale`` rounded to a ``step`` relative grid (1 %).

    Preprocessing and pyramid smoothing of the ultrasound use sigmas in ultrasound pixels
    derived from the current transform's scale. Along a clip that scale changes by
    fractions of a percent, and unrounded it made every frame miss the cache of mask
    weights; a smoothing width known to 1 % is as good as an exact one.
    """
    if not (np.isfinite(scale) and scale > 0):
        return scale
    return float(np.exp(step * np.round(np.log(scale) / step)))


def _mask_weight(mask: np.ndarray, sigma: float) -> np.ndarray:
    """The smoothed mask (the normalisation of :func:`masked_smooth`), cached.

    Frame after frame of a clip, and level after level of a pyramid, reuse the same
    masks; their weights are computed once (a small cache, keyed by the mask's bytes).
    """
    return _cached(_mask_key(mask, "blur", sigma), lambda: _blur(mask.astype(np.float64), sigma))


def preprocess_pair(
    fixed,
    fixed_mask,
    moving,
    moving_mask,
    mode: Preprocess | str,
    scale: float = 1.0,
    background_px: float = 6.0,
    shadow_px: tuple[float, float] | None = (2.0, 10.0),
    fluoro_dense: str = "dark",
    grain: float = 1.0,
):
    """Feature images (fixed, moving) for the metric.

    Parameters
    ----------
    scale : float
        Expected fixed pixels per moving pixel, so that background and speckle scales
        are the same in millimetres in both images.
    background_px : float
        Background scale (Gaussian sigma) in fixed pixels: larger than a needle or bead.
    shadow_px : (float, float) or None
        ``structures`` only: the depth window below an ultrasound echo, in fixed pixels,
        whose darkness marks a bone surface (module notes); ``None`` keeps every echo.
    fluoro_dense : {"dark", "bright", "auto"}
        ``structures`` only: how the fixed image shows dense matter; ``auto`` reads it
        from the quantum noise (:mod:`registration.polarity`).
    grain : float
        Fixed pixels per pixel of every scale above and of the fixed smoothing
        (:func:`registration.optimise.grain`): the same millimetres on a finer detector.
    """
    mode = Preprocess(mode)
    background_px = background_px * grain
    if shadow_px is not None:
        shadow_px = (shadow_px[0] * grain, shadow_px[1] * grain)
    if fluoro_dense not in FLUORO_DENSE:
        raise ValueError(f"fluoro_dense {fluoro_dense!r}: one of {', '.join(FLUORO_DENSE)}")
    if mode is Preprocess.NONE:
        return fixed, moving
    bg_m = background_px / max(scale, 1e-6)
    if mode is Preprocess.STRUCTURES:
        f_s = masked_smooth(fixed, fixed_mask, 0.7 * grain)
        f_feat = masked_smooth(fixed, fixed_mask, background_px) - f_s
        bright = fluoro_dense == "bright"
        if fluoro_dense == "auto":
            bright = _dense_bright(fixed, fixed_mask)
        if bright:  # the radiograph look: dense matter is bright
            f_feat = -f_feat
        f_feat = np.clip(f_feat, 0.0, None)
        m_s = masked_smooth(moving, moving_mask, 0.7 * grain / max(scale, 1e-6))
        m_bg = masked_smooth(moving, moving_mask, bg_m)
        m_feat = np.clip(m_s - m_bg, 0.0, None)
        if shadow_px is not None:
            lo, hi = (max(1, int(round(d / max(scale, 1e-6)))) for d in shadow_px)
            m_feat = m_feat * shadow_weight(m_s, moving_mask, m_bg, lo, hi)
        return np.where(fixed_mask, f_feat, 0.0), np.where(moving_mask, m_feat, 0.0)
    f_s = masked_smooth(fixed, fixed_mask, grain)
    m_s = masked_smooth(moving, moving_mask, grain / max(scale, 1e-6))
    f_feat = np.hypot(*np.gradient(f_s))
    m_feat = np.hypot(*np.gradient(m_s))
    return np.where(fixed_mask, f_feat, 0.0), np.where(moving_mask, m_feat, 0.0)


def _dense_bright(fixed: np.ndarray, fixed_mask) -> bool:
    """:func:`registration.polarity.dense_is_bright`, once per image (a clip's frames repeat)."""
    from .polarity import dense_is_bright

    fixed = np.ascontiguousarray(fixed)
    mask = np.ones(fixed.shape, bool) if fixed_mask is None else np.asarray(fixed_mask, bool)
    key = (*_mask_key(mask, "polarity"), _image_digest(fixed))
    return _cached(key, lambda: dense_is_bright(fixed, mask), _POLARITY)


def _image_digest(img: np.ndarray) -> bytes:
    import hashlib

    return hashlib.blake2b(img.tobytes(), digest_size=16).digest()


def shadow_weight(
    smoothed: np.ndarray, mask: np.ndarray, background: np.ndarray, lo: int, hi: int
) -> np.ndarray:
    """How bright the image stays ``lo``..``hi`` rows below each pixel, over ``background``.

    The mean of ``smoothed`` over rows ``y + lo`` to ``y + hi`` of the same column (inside
    ``mask``), divided by ``background`` at the pixel, clipped to [0, 1]: near 0 under an
    echo that casts an acoustic shadow, 1 where the image carries on. Where fewer than
    half of the window's pixels lie in the mask, 1 (nothing is known).
    """
    from . import _filter_kernels as K

    out = np.empty(np.shape(smoothed))
    K.shadow_ratio(
        np.ascontiguousarray(smoothed, dtype=np.float64),
        np.ascontiguousarray(mask, dtype=np.bool_),
        np.ascontiguousarray(background, dtype=np.float64),
        int(lo),
        int(hi),
        out,
    )
    return out


BOX_FROM_SIGMA_PX = 4.0


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; from ``BOX_FROM_SIGMA_PX`` up, three stacked box filters.

    The boxes have odd widths wl and wl + 2 in the mix whose variance
    Σ (w² − 1)/12 is closest to σ² (Kovesi's "averaging filters" recipe), so the kernel
    is centred, near-Gaussian and costs the same whatever σ. The large scales here
    (backgrounds, coarse pyramid levels) need a low-pass of the right width, not an
    exact Gaussian, and these filters were most of the time a tracked frame took.
    """
    if sigma < BOX_FROM_SIGMA_PX:
        return _gaussian(img, sigma)
    n = 3
    wl = int(np.floor(np.sqrt(12.0 * sigma * sigma / n + 1.0)))
    wl -= 1 - wl % 2  # odd
    m = int(round((12.0 * sigma * sigma - n * wl * wl - 4 * n * wl - 3 * n) / (-4.0 * wl - 4.0)))
    widths = [wl] * m + [wl + 2] * (n - m)
    # Single precision halves the memory traffic of the six passes; a low-pass of a
    # feature image needs no more than its 7 digits.
    out = np.asarray(img, dtype=np.float32)
    if out.ndim == 2 and out.size:
        # The same passes as SciPy's, bit for bit, without its per-line copies.
        out = box_nearest_f32(box_nearest_f32(out, widths, 0), widths, 1)
        return out.astype(np.float64)
    from scipy.ndimage import uniform_filter1d

    for axis in (0, 1):
        for w in widths:
            out = uniform_filter1d(out, w, axis=axis, mode="nearest")
    return out.astype(np.float64)


def _gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    """``gaussian_filter(img, sigma, mode="nearest", truncate=3.0)``, bit for bit.

    A 2D float64 image goes through :func:`registration._blur_kernels.gaussian_nearest`
    (the same sums, about a quarter of SciPy's time on a tracked frame's images); anything
    else to SciPy.
    """
    if img.ndim == 2 and img.dtype == np.float64 and img.size and sigma > 1e-15:
        return gaussian_nearest(img, float(sigma))
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma, mode="nearest", truncate=3.0)

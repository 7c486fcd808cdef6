"""Blend a registered ultrasound layer over a fluoroscopy frame.

Inputs are display values in 0-255 (fixed: greyscale fluoroscopy; moving: the
ultrasound resampled into the fixed grid) and the ``valid`` mask of the resampled layer.
Outside ``valid`` the output is the fluoroscopy alone: screen borders and burned-in text
of the ultrasound never reach an overlay.

=================  ==============================================================
mode               output (RGB uint8)
=================  ==============================================================
``alpha``          (1 − a·v)·F + a·v·M, greyscale
``color``          fluoroscopy in grey, ultrasound through a colour map at opacity a
``checkerboard``   squares of ``tile_px`` alternate F and M (M only where valid)
``edges``          fluoroscopy with the ultrasound's strong edges drawn in colour
``side-by-side``   [F | F with the ultrasound alpha-blended], twice as wide
=================  ==============================================================
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from .errors import InputError

__all__ = ["BlendMode", "blend", "display_range"]


class BlendMode(str, Enum):
    """Ways to show the two layers together."""

    ALPHA = "alpha"
    COLOR = "color"
    CHECKERBOARD = "checkerboard"
    EDGES = "edges"
    SIDE_BY_SIDE = "side-by-side"


def display_range(
    img: np.ndarray, mask: np.ndarray | None = None, percentiles=(0.5, 99.5)
) -> np.ndarray:
    """Window an image to 0-255 by percentiles inside ``mask`` (float32 out)."""
    vals = img[mask] if mask is not None and mask.any() else img.ravel()
    lo, hi = np.percentile(vals, percentiles)
    if hi <= lo:
        hi = lo + 1.0
    out = np.clip((img.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255)
    if mask is not None:
        out = np.where(mask, out, 0.0)
    return out.astype(np.float32)


def _colormap(name: str) -> np.ndarray:
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError as exc:
        raise InputError(f"unknown colour map {name!r} (matplotlib names, e.g. 'hot')") from exc
    return (cmap(np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)


def blend(
    fixed: np.ndarray,
    moving: np.ndarray,
    valid: np.ndarray,
    mode: BlendMode | str,
    opacity: float = 0.5,
    colormap: str = "hot",
    tile_px: int = 32,
) -> np.ndarray:
    """Fuse one frame; returns RGB uint8 (rows, cols, 3), or twice as wide for side-by-side."""
    mode = BlendMode(mode)
    if not 0.0 <= opacity <= 1.0:
        raise InputError(f"opacity must be within 0..1, got {opacity}")
    if fixed.shape != moving.shape[:2] or fixed.shape != valid.shape:
        raise InputError("fixed, moving and valid must have the same (rows, cols)")
    f = fixed.astype(np.float32)
    m = moving.astype(np.float32)
    if m.ndim == 3:
        m = m @ np.array([0.299, 0.587, 0.114], np.float32)
    v = valid.astype(np.float32)
    grey = np.repeat(f[..., None], 3, axis=2)
    if mode is BlendMode.ALPHA or mode is BlendMode.SIDE_BY_SIDE:
        a = opacity * v
        mixed = ((1 - a) * f + a * m)[..., None]  # greyscale: blend once, then broadcast
        out = np.broadcast_to(mixed, grey.shape)
        if mode is BlendMode.SIDE_BY_SIDE:
            out = np.concatenate([grey, out], axis=1)
    elif mode is BlendMode.COLOR:
        lut = _colormap(colormap)
        colour = lut[np.clip(m, 0, 255).astype(np.uint8)]
        a = (opacity * v)[..., None]
        out = (1 - a) * grey + a * colour
    elif mode is BlendMode.CHECKERBOARD:
        if tile_px < 1:
            raise InputError(f"tile_px must be >= 1, got {tile_px}")
        yy, xx = np.indices(f.shape)
        use_m = (((yy // tile_px) + (xx // tile_px)) % 2 == 1) & valid
        out = np.where(use_m[..., None], np.repeat(m[..., None], 3, axis=2), grey)
    else:  # edges
        gy, gx = np.gradient(m)
        mag = np.hypot(gx, gy) * v
        threshold = np.percentile(mag[valid], 90) if valid.any() else np.inf
        # ">=" so that few distinct gradient values (sharp, clean edges) still count.
        strong = (mag >= threshold) & (mag > 1e-6)
        out = grey.copy()
        out[strong] = (1 - opacity) * out[strong] + opacity * np.array([255.0, 200.0, 0.0])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)

"""Resample a moving image into the fixed image's pixel grid under a homography."""

from __future__ import annotations

import numpy as np

from . import _warp_kernels as K
from .errors import RegistrationError

__all__ = ["warp_to_fixed", "ORDERS"]

ORDERS = {"nearest": 0, "linear": 1, "cubic": 3}


def warp_to_fixed(
    moving: np.ndarray,
    moving_to_fixed: np.ndarray,
    fixed_shape,
    moving_mask: np.ndarray | None = None,
    order: str = "linear",
):
    """Moving image resampled onto the fixed grid.

    Parameters
    ----------
    moving : ndarray (rows, cols) or (rows, cols, channels)
    moving_to_fixed : (3, 3) homography, moving pixels → fixed pixels (x, y).
    fixed_shape : (rows, cols) of the output.
    moving_mask : bool (rows, cols), optional
        Source pixels that may appear (e.g. the calibrated ultrasound region: screen
        borders and burned-in text never reach the output).
    order : "nearest", "linear" (default) or "cubic".

    Returns
    -------
    warped : float32 array (fixed rows, fixed cols[, channels])
    valid : bool array (fixed rows, fixed cols)
    """
    if order not in ORDERS:
        raise RegistrationError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    img = np.asarray(moving, dtype=np.float32)
    colour = img.ndim == 3
    if img.ndim not in (2, 3):
        raise RegistrationError(f"moving must be 2D or 2D+channels, got shape {img.shape}")
    chans = np.ascontiguousarray(np.moveaxis(img, -1, 0) if colour else img[None])
    mask = (
        np.ones(chans.shape[1:], np.uint8)
        if moving_mask is None
        else np.ascontiguousarray(moving_mask, dtype=np.uint8)
    )
    if mask.shape != chans.shape[1:]:
        raise RegistrationError("moving_mask shape differs from the moving image")
    hinv = np.linalg.inv(np.asarray(moving_to_fixed, dtype=np.float64))
    rows, cols = (int(v) for v in fixed_shape)
    out = np.empty((chans.shape[0], rows, cols), np.float32)
    valid = np.empty((rows, cols), np.bool_)
    K.warp_homography(
        chans, mask, np.ascontiguousarray(hinv), rows, cols, ORDERS[order], out, valid
    )
    return (np.moveaxis(out, 0, -1) if colour else out[0]), valid

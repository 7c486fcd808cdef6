"""Beads found in both modalities at the calibrated millimetre scale.

Metal or glass beads show in the fluoroscopy as dense (dark, in MONOCHROME2 sense after
:mod:`fusion` has inverted MONOCHROME1) discs, and in the ultrasound as a bright echo
from the bead's near wall with a reverberation tail beneath. Both are looked for with a
scale-normalised Laplacian of Gaussian whose width follows the bead radius in each image's
own pixel spacing, so a bead of radius r mm is sought at r mm in both. Ridges (needle,
bone surfaces) also answer a Laplacian; the Hessian's eigenvalue ratio keeps only round
blobs. The ultrasound echo comes from the wall nearest the probe, so its centre lies one
radius deeper than the brightest point of the echo along the beam (image +y for a linear
probe, the display convention in which depth grows downwards).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BEAD_RADIUS_MM", "Blobs", "detect_beads"]

#: Bead radius assumed when none is given: fiducial beads of 2 mm diameter.
BEAD_RADIUS_MM = 1.0
#: Least peak response, in robust standard deviations of the response inside the mask.
MIN_SNR = 6.0
#: Least ratio of the smaller to the larger Hessian eigenvalue: 1 is a disc, 0 a ridge.
MIN_ROUNDNESS = 0.35
#: Most blobs kept per image, strongest first (the matcher is quadratic in each count).
MAX_BLOBS = 12


@dataclass(frozen=True)
class Blobs:
    """Blob centres (x, y) in pixels and their strength (peak response / noise)."""

    xy: np.ndarray
    strength: np.ndarray

    def __len__(self) -> int:
        return len(self.xy)


def detect_beads(
    image: np.ndarray,
    mask: np.ndarray | None,
    spacing_mm: tuple[float, float],
    *,
    bright: bool,
    radius_mm: float = BEAD_RADIUS_MM,
    near_wall: bool = False,
    min_snr: float = MIN_SNR,
    max_blobs: int = MAX_BLOBS,
) -> Blobs:
    """Bead centres in ``image``: round blobs of radius ``radius_mm``.

    Parameters
    ----------
    image : ndarray (rows, cols)
        Greyscale frame, higher = brighter.
    mask : ndarray of bool or None
        Valid pixels (collimator field, calibrated ultrasound region).
    spacing_mm : (float, float)
        Row and column spacing in mm (fluoroscopy: at the isocentre).
    bright : bool
        True for bright blobs (ultrasound), False for dark ones (fluoroscopy).
    radius_mm : float
        Bead radius in mm.
    near_wall : bool
        Ultrasound: move each centre from the echo's brightest point to one radius deeper.
    min_snr, max_blobs : float, int
        Least strength kept, most blobs returned.

    Returns
    -------
    Blobs
        Strongest first.
    """
    from scipy.ndimage import binary_erosion, gaussian_filter, maximum_filter

    img = np.asarray(image, np.float64)
    valid = np.ones(img.shape, bool) if mask is None else np.asarray(mask, bool)
    # Derivatives need 3 pixels on a side (a 1-pixel-wide image holds no blob anyway).
    if img.ndim != 2 or min(img.shape) < 3 or not valid.any():
        return Blobs(np.zeros((0, 2)), np.zeros(0))
    radius_px = radius_mm / np.asarray(spacing_mm, float)  # (rows, cols)
    # A disc of radius r answers a Laplacian of width r/sqrt(2) most; the ultrasound echo
    # is an arc as wide as the bead with its two ends brightest, merged into one blob at r.
    sigma = radius_px if near_wall else radius_px / np.sqrt(2.0)
    # Outside the mask the median: the mask's border must not read as an edge.
    filled = np.where(valid, img, np.median(img[valid]))
    sign = -1.0 if bright else 1.0
    h = _hessian(gaussian_filter(filled, sigma), sigma)
    response = sign * (h[0] + h[2])  # -LoG for bright blobs, +LoG for dark ones
    # The mask's edge answers up to about 2 sigma inside; a bead nearer than that is lost.
    inner = binary_erosion(valid, iterations=max(1, int(np.ceil(2 * sigma.max()))))
    if not inner.any():
        return Blobs(np.zeros((0, 2)), np.zeros(0))
    vals = response[inner]
    noise = 1.4826 * np.median(np.abs(vals - np.median(vals)))
    if not noise > 0:
        return Blobs(np.zeros((0, 2)), np.zeros(0))
    size = tuple(int(2 * np.ceil(r) + 1) for r in radius_px * 2)
    peaks = inner & (response == maximum_filter(response, size=size)) & (response > 0)
    snr = response / noise
    rows, cols = np.nonzero(peaks & (snr >= min_snr))
    keep = [
        (r, c) for r, c in zip(rows, cols, strict=True) if _round(h, r, c, sign) >= MIN_ROUNDNESS
    ]
    keep.sort(key=lambda rc: -snr[rc])
    keep = keep[:max_blobs]
    xy = np.array([_subpixel(response, r, c) for r, c in keep]).reshape(-1, 2)
    if near_wall and len(xy):
        xy = _near_wall_to_centre(filled, xy, radius_px)
    return Blobs(xy, np.array([snr[rc] for rc in keep], float))


def _hessian(smooth: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale-normalised second derivatives (d_yy, d_xy, d_xx) of a smoothed image."""
    gy, gx = np.gradient(smooth)
    dyy, dyx = np.gradient(gy)
    _, dxx = np.gradient(gx)
    s2 = float(sigma[0] * sigma[1])
    return dyy * s2, dyx * s2, dxx * s2


def _round(h, r: int, c: int, sign: float) -> float:
    """Smaller over larger eigenvalue of ``sign`` × Hessian at (r, c); < 0 for saddles."""
    a, b, d = (sign * h[0][r, c], sign * h[1][r, c], sign * h[2][r, c])
    half_tr, det = 0.5 * (a + d), a * d - b * b
    disc = np.sqrt(max(half_tr * half_tr - det, 0.0))
    big, small = half_tr + disc, half_tr - disc
    return float(small / big) if big > 0 else -1.0


def _subpixel(response: np.ndarray, r: int, c: int) -> tuple[float, float]:
    """Peak (x, y) refined by a parabola through the 3 samples along each axis."""
    rows, cols = response.shape

    def offset(m1: float, p0: float, p1: float) -> float:
        den = m1 - 2 * p0 + p1
        return float(np.clip(0.5 * (m1 - p1) / den, -0.5, 0.5)) if den < 0 else 0.0

    dx = offset(response[r, c - 1], response[r, c], response[r, c + 1]) if 0 < c < cols - 1 else 0
    dy = offset(response[r - 1, c], response[r, c], response[r + 1, c]) if 0 < r < rows - 1 else 0
    return c + dx, r + dy


def _near_wall_to_centre(img: np.ndarray, xy: np.ndarray, radius_px: np.ndarray) -> np.ndarray:
    """Centres one radius below the brightest point of each echo along its column (+y)."""
    from scipy.ndimage import gaussian_filter1d

    # Light smoothing across the beam only: the wall echo is one pulse thick along it.
    smooth = gaussian_filter1d(img, max(radius_px[1] / 3.0, 0.5), axis=1)
    out = xy.copy()
    rows = img.shape[0]
    for i, (x, y) in enumerate(xy):
        c = int(round(x))
        lo, hi = int(max(0, np.floor(y - 2 * radius_px[0]))), int(min(rows, np.ceil(y) + 1))
        if hi - lo < 3:
            continue
        profile = smooth[lo:hi, c]
        k = int(np.argmax(profile))
        wall = lo + k
        if 0 < k < len(profile) - 1:
            den = profile[k - 1] - 2 * profile[k] + profile[k + 1]
            if den < 0:
                wall += float(np.clip(0.5 * (profile[k - 1] - profile[k + 1]) / den, -0.5, 0.5))
        out[i, 1] = wall + radius_px[0]
    return out

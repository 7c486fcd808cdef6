"""Image preprocessing suited to ultrasound ↔ X-ray registration.

The two modalities share few intensities: ultrasound shows echoes (bright bone
surfaces, needle and beads, with shadows behind them) while fluoroscopy shows
attenuation integrals (bone, needle and beads dark in MONOCHROME2 sense). What both show
are compact, high-contrast structures: the needle, the beads and bone cortices.

==============  ========================================================================
mode            what it does
==============  ========================================================================
``none``        raw intensities (masked smoothing by the pyramid only)
``structures``  fluoroscopy: dark-structure top-hat ``max(0, G_bg * F - F)``;
                ultrasound: speckle smoothing, then bright-structure top-hat
                ``max(0, U_s - G_bg * U_s)``; background scales are matched physically
                through the expected scale (fixed px per moving px)
``gradient``    gradient magnitude of both after smoothing (edges of bone, needle)
==============  ========================================================================
"""

from __future__ import annotations

from enum import Enum

import numpy as np

__all__ = ["Preprocess", "masked_smooth", "preprocess_pair"]


class Preprocess(str, Enum):
    """Preprocessing modes."""

    NONE = "none"
    STRUCTURES = "structures"
    GRADIENT = "gradient"
    LINES = "lines"


def masked_smooth(img: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing that ignores pixels outside ``mask`` (normalised convolution)."""
    from scipy.ndimage import gaussian_filter

    img = np.asarray(img, dtype=np.float64)
    if sigma <= 0:
        return np.where(mask, img, 0.0)
    m = mask.astype(np.float64)
    num = gaussian_filter(img * m, sigma, mode="nearest", truncate=3.0)
    den = gaussian_filter(m, sigma, mode="nearest", truncate=3.0)
    out = np.zeros_like(img)
    ok = mask & (den > 1e-6)
    out[ok] = num[ok] / den[ok]
    return out


def preprocess_pair(
    fixed,
    fixed_mask,
    moving,
    moving_mask,
    mode: Preprocess | str,
    scale: float = 1.0,
    background_px: float = 6.0,
):
    """Feature images (fixed, moving) for the metric.

    Parameters
    ----------
    scale : float
        Expected fixed pixels per moving pixel, so that background and speckle scales
        are the same in millimetres in both images.
    background_px : float
        Background scale (Gaussian sigma) in fixed pixels: larger than a needle or bead.
    """
    mode = Preprocess(mode)
    if mode is Preprocess.NONE:
        return fixed, moving
    bg_m = background_px / max(scale, 1e-6)
    if mode is Preprocess.STRUCTURES:
        f_s = masked_smooth(fixed, fixed_mask, 0.7)
        f_feat = np.clip(masked_smooth(fixed, fixed_mask, background_px) - f_s, 0.0, None)
        m_s = masked_smooth(moving, moving_mask, 0.7 / max(scale, 1e-6))
        m_feat = np.clip(m_s - masked_smooth(moving, moving_mask, bg_m), 0.0, None)
        return np.where(fixed_mask, f_feat, 0.0), np.where(moving_mask, m_feat, 0.0)
    if mode is Preprocess.LINES:
        sig_f = (1.0, 2.0, 3.0)
        sig_m = tuple(s / max(scale, 1e-6) for s in sig_f)
        f_in = np.where(fixed_mask, fixed, 0.0)
        m_in = masked_smooth(moving, moving_mask, 0.7 / max(scale, 1e-6))
        f_feat = ridge_response(f_in, fixed_mask, sig_f, bright=False)
        m_feat = ridge_response(m_in, moving_mask, sig_m, bright=True)
        return _erode_edge(f_feat, fixed_mask, 3.0 * max(sig_f)), _erode_edge(
            m_feat, moving_mask, 3.0 * max(sig_m)
        )
    f_s = masked_smooth(fixed, fixed_mask, 1.0)
    m_s = masked_smooth(moving, moving_mask, 1.0 / max(scale, 1e-6))
    f_feat = np.hypot(*np.gradient(f_s))
    m_feat = np.hypot(*np.gradient(m_s))
    return np.where(fixed_mask, f_feat, 0.0), np.where(moving_mask, m_feat, 0.0)


def ridge_response(img, mask, sigmas, bright: bool) -> np.ndarray:
    """Multi-scale line/blob strength with step edges suppressed.

    At each scale s: the principal curvature across a ridge (s²·λ, from the Hessian of
    the masked-smoothed image) minus the gradient magnitude (s·|∇|). A thin line or a
    blob has curvature and no gradient at its centre; a step edge (the silhouette of a
    bone in a projection) has both in equal measure and cancels. ``bright``: bright
    structures (echoes) rather than dark ones (attenuation in MONOCHROME2).
    """
    out = np.zeros(np.shape(img))
    for s in sigmas:
        sm = masked_smooth(img, mask, s)
        gy, gx = np.gradient(sm)
        gyy, gyx = np.gradient(gy)
        gxy, gxx = np.gradient(gx)
        half_trace = 0.5 * (gxx + gyy)
        root = np.sqrt(0.25 * (gxx - gyy) ** 2 + 0.25 * (gxy + gyx) ** 2)
        curv = -(half_trace - root) if bright else half_trace + root
        resp = s * s * curv - s * np.hypot(gx, gy)
        np.maximum(out, resp, out=out)
    return np.where(mask, out, 0.0)


def _erode_edge(feat, mask, width):
    """Zero a band of ``width`` pixels inside the mask edge, where filters see the border."""
    from scipy.ndimage import distance_transform_edt

    return np.where(distance_transform_edt(mask) > width, feat, 0.0)

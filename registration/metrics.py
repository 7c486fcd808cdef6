"""Intensity metrics between ultrasound samples and the fluoroscopy image they map onto.

The ultrasound pixels inside its mask are the sample domain (they need no interpolation);
each sample is mapped through the moving-to-fixed homography and the fluoroscopy image is
interpolated there (bilinear). In ITK's words the ultrasound is the *fixed* image of the
metric and the fluoroscopy the *moving* one. Every metric returns a cost to minimise and
its analytic gradient with respect to the transform parameters.

=========  ==================================================================
name       cost
=========  ==================================================================
``ncc``    −(normalised cross-correlation)
``mi``     −(Mattes mutual information): zero-order bins on the ultrasound,
           cubic B-spline Parzen window on the fluoroscopy, ITK's binning
``nmi``    −(normalised mutual information, (H(F) + H(M)) / H(F, M)), on the same
           Parzen histogram
``ngf``    −mean over samples of cos²(∇M, ∇(F∘T)) with ε-regularised gradient
           norms (normalised gradient fields, Haber & Modersitzki 2006): edges
           that line up count whatever their polarity
``lc2``    −LC2 (Wein et al. 2008, made for ultrasound): in each patch of the
           ultrasound the echoes are fitted as c1·F + c2·|∇F| + γ by least squares;
           the cost is the variance-weighted mean R² of the fits
=========  ==================================================================

NGF needs the ultrasound gradients at the samples (``a_grad``) and LC2 a patch index
per sample (``patch``); :meth:`MetricContext.from_images` computes both. Gradients of the
fluoroscopy are central differences, interpolated bilinearly, and are used only where
their stencil lies inside the fluoroscopy mask (eroded by 2 pixels), so the collimator
edge is not mistaken for anatomy. LC2 uses non-overlapping square patches of the sample
grid rather than Wein's patch around every pixel: the same statistic at a fraction of
the cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from . import _metric_kernels as K
from ._numba import for_size
from .errors import RegistrationError
from .preprocess import eroded

__all__ = ["Metric", "MetricContext", "batch_mi_cost", "metric_cost"]

_NO_DATA = "metric {0} needs {1}: build the context with MetricContext.from_images"


class Metric(str, Enum):
    """Intensity metrics."""

    NCC = "ncc"
    MI = "mi"
    NMI = "nmi"
    NGF = "ngf"
    LC2 = "lc2"


@dataclass
class MetricContext:
    """Everything a metric needs that does not change while the transform does.

    Parameters
    ----------
    fixed : ndarray (rows, cols)
        The image that is interpolated (fluoroscopy), float64.
    fixed_mask : ndarray of bool, or None
        Where ``fixed`` is valid (e.g. the collimator disc).
    xs, ys : ndarray
        Sample positions (moving pixels).
    a : ndarray
        Moving (ultrasound) intensities at the samples.
    n_bins : int
        Histogram bins for MI.
    a_grad : ndarray (N, 2), optional
        Moving-image gradient (d/dx, d/dy) at the samples, for NGF; zero where the
        gradient stencil leaves the moving mask (:meth:`from_images` computes it when
        NGF first asks).
    patch : ndarray of int (N,), optional
        LC2 patch index of each sample.
    scale : float
        Expected fixed pixels per moving pixel (sets NGF's ε for the warped gradient).
    ngf_eta : float
        NGF's ε as a fraction of each image's mean gradient magnitude in its mask.
    lc2_ridge : float
        LC2's ridge on the fit coefficients, relative to each regressor's variance.
    lc2_min_samples : int
        Patches with fewer valid samples are left out of LC2.
    fixed_pixel_map : ndarray (3, 3), optional
        Maps the fixed pixels the homographies given to :func:`metric_cost` point to
        onto pixels of ``fixed``, when ``fixed`` is a coarser grid of that image (a
        decimated pyramid level, see :func:`registration.preprocess.decimated_smooth`);
        None: the same grid. ``scale`` is then per pixel of ``fixed``.
    """

    fixed: np.ndarray
    fixed_mask: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    a: np.ndarray
    n_bins: int = 32
    a_grad: np.ndarray | None = None
    patch: np.ndarray | None = None
    scale: float = 1.0
    ngf_eta: float = 0.2
    lc2_ridge: float = 1e-3
    lc2_min_samples: int = 8
    fixed_pixel_map: np.ndarray | None = None

    @classmethod
    def from_images(
        cls,
        fixed: np.ndarray,
        fixed_mask: np.ndarray | None,
        moving: np.ndarray,
        moving_mask: np.ndarray | None,
        *,
        stride: int = 1,
        patch_samples: int = 7,
        **kwargs,
    ) -> MetricContext:
        """Context sampling ``moving`` on a strided grid inside ``moving_mask``.

        Parameters
        ----------
        fixed, moving : ndarray (rows, cols)
            Fluoroscopy (interpolated) and ultrasound (sampled) images.
        fixed_mask, moving_mask : ndarray of bool, optional
            Valid pixels of each.
        stride : int
            Sample every ``stride``-th moving pixel along x and y.
        patch_samples : int
            LC2 patch side, in samples (so ``patch_samples × stride`` moving pixels).
        **kwargs
            Other :class:`MetricContext` fields (``n_bins``, ``scale`` …).
        """
        moving = np.asarray(moving, dtype=np.float64)
        mmask = np.ones(moving.shape, bool) if moving_mask is None else np.asarray(moving_mask)
        if mmask.shape != moving.shape:
            raise RegistrationError("moving_mask shape differs from the moving image")
        if stride < 1 or patch_samples < 2:
            raise RegistrationError("stride must be >= 1 and patch_samples >= 2")
        yy, xx = np.nonzero(mmask[::stride, ::stride])  # the grid's samples, row by row
        yy, xx = yy * stride, xx * stride
        cols = (moving.shape[1] + stride - 1) // stride // patch_samples + 1
        patch = (yy // stride // patch_samples) * cols + (xx // stride // patch_samples)
        ctx = cls(
            fixed,
            fixed_mask,
            xx.astype(float),
            yy.astype(float),
            moving[yy, xx],
            patch=patch,
            **kwargs,
        )
        # The ultrasound gradients only NGF needs: computed on its first use.
        ctx._derived["moving"] = (moving, mmask, yy, xx)
        return ctx

    def _moving_gradients(self) -> np.ndarray | None:
        """``a_grad``, or the gradients of the image :meth:`from_images` sampled."""
        if self.a_grad is None and "moving" in self._derived:
            moving, mmask, yy, xx = self._derived.pop("moving")
            gy, gx = np.gradient(moving)
            inner = eroded(mmask, 1)
            self.a_grad = np.column_stack([gx[yy, xx], gy[yy, xx]]) * inner[yy, xx, None]
        return self.a_grad

    def __post_init__(self) -> None:
        self.fixed = np.ascontiguousarray(self.fixed, dtype=np.float64)
        if self.fixed.ndim != 2:
            raise RegistrationError(f"fixed image must be 2D, got shape {self.fixed.shape}")
        mask = np.ones(self.fixed.shape, bool) if self.fixed_mask is None else self.fixed_mask
        if mask.shape != self.fixed.shape:
            raise RegistrationError("fixed_mask shape differs from the fixed image")
        self.fixed_mask = np.ascontiguousarray(mask, dtype=np.uint8)
        self.xs = np.ascontiguousarray(self.xs, dtype=np.float64)
        self.ys = np.ascontiguousarray(self.ys, dtype=np.float64)
        self.a = np.ascontiguousarray(self.a, dtype=np.float64)
        if not (self.xs.shape == self.ys.shape == self.a.shape):
            raise RegistrationError("sample arrays xs, ys, a must have equal shapes")
        if len(self.a) < 16:
            raise RegistrationError(f"only {len(self.a)} samples: the moving mask is too small")
        if self.n_bins < 8:
            raise RegistrationError(f"n_bins must be >= 8, got {self.n_bins}")
        # ITK's Mattes binning: range over each image's mask, 2 bins of padding.
        pad = 2
        a_min, a_max = float(self.a.min()), float(self.a.max())
        inside = self.fixed[self.fixed_mask.astype(bool)]
        b_min, b_max = float(inside.min()), float(inside.max())
        if a_max <= a_min or b_max <= b_min:
            raise RegistrationError("an image is constant inside its mask: nothing to register")
        self.a_bin_size = (a_max - a_min) / (self.n_bins - 2 * pad)
        self.a_norm_min = a_min / self.a_bin_size - pad
        self.b_bin_size = (b_max - b_min) / (self.n_bins - 2 * pad)
        self.b_norm_min = b_min / self.b_bin_size - pad
        term = self.a / self.a_bin_size - self.a_norm_min
        self.fixed_bin = np.clip(np.floor(term), pad, self.n_bins - pad - 1).astype(np.int64)
        if self.a_grad is not None:
            self.a_grad = np.ascontiguousarray(self.a_grad, dtype=np.float64)
            if self.a_grad.shape != (len(self.a), 2):
                raise RegistrationError("a_grad must have shape (N, 2)")
        if self.patch is not None:
            self.patch = np.asarray(self.patch, dtype=np.int64)
            if self.patch.shape != self.a.shape:
                raise RegistrationError("patch must hold one index per sample")
        if self.fixed_pixel_map is not None:
            self.fixed_pixel_map = np.asarray(self.fixed_pixel_map, dtype=np.float64)
            if self.fixed_pixel_map.shape != (3, 3):
                raise RegistrationError("fixed_pixel_map must be a 3x3 matrix")
        self._derived: dict = {}

    def _fixed_gradients(self):
        """Central-difference gradients of ``fixed`` and the mask where they are valid."""
        if "grad" not in self._derived:
            gy, gx = np.gradient(self.fixed)
            inner = eroded(self.fixed_mask.astype(bool), 2)
            if not inner.any():
                raise RegistrationError("the fixed mask is too small for gradient metrics")
            self._derived["grad"] = (
                np.ascontiguousarray(gx),
                np.ascontiguousarray(gy),
                np.ascontiguousarray(inner, dtype=np.uint8),
            )
        return self._derived["grad"]

    def _ngf_terms(self):
        """Normalised moving gradients and the fixed side's ε."""
        if "ngf" not in self._derived:
            a_grad = self._moving_gradients()
            if a_grad is None:
                raise RegistrationError(_NO_DATA.format("ngf", "the moving gradients a_grad"))
            gx, gy, inner = self._fixed_gradients()
            mag_f = np.hypot(gx, gy)[inner.astype(bool)]
            mag_m = np.hypot(a_grad[:, 0], a_grad[:, 1])
            eps_m = self.ngf_eta * float(mag_m.mean()) + 1e-12
            eps_f = self.ngf_eta * float(mag_f.mean()) * self.scale + 1e-12
            nm = a_grad / np.sqrt(mag_m**2 + eps_m**2)[:, None]
            self._derived["ngf"] = (np.ascontiguousarray(nm), eps_f)
        return self._derived["ngf"]

    def _lc2_terms(self):
        """Gradient-magnitude image, patch order and offsets, ridge constants."""
        if "lc2" not in self._derived:
            if self.patch is None:
                raise RegistrationError(_NO_DATA.format("lc2", "a patch index per sample"))
            gx, gy, inner = self._fixed_gradients()
            mag = np.ascontiguousarray(np.hypot(gx, gy))
            ok = inner.astype(bool)
            _, dense = np.unique(self.patch, return_inverse=True)
            order = np.argsort(dense, kind="stable").astype(np.int64)
            start = np.concatenate([[0], np.cumsum(np.bincount(dense))]).astype(np.int64)
            ridge_b = self.lc2_ridge * float(self.fixed[ok].var()) + 1e-300
            ridge_g = self.lc2_ridge * float(mag[ok].var()) + 1e-300
            self._derived["lc2"] = (mag, order, start, ridge_b, ridge_g)
        return self._derived["lc2"]

    def warp(self, h: np.ndarray, dh: np.ndarray):
        """Warped samples b, their parameter derivatives db (N, K), and validity."""
        n = len(self.xs)
        k = dh.shape[0]
        b = np.empty(n)
        db = np.empty((n, k))
        valid = np.empty(n, dtype=np.bool_)
        for_size(K.warp_points, n)(
            self.fixed,
            self.fixed_mask,
            np.ascontiguousarray(h, np.float64),
            np.ascontiguousarray(dh, np.float64),
            self.xs,
            self.ys,
            b,
            db,
            valid,
        )
        return b, db, valid


def metric_cost(metric: Metric | str, ctx: MetricContext, h: np.ndarray, dh: np.ndarray):
    """Cost, gradient (K,) and number of valid samples at homography ``h``.

    ``dh`` (K, 3, 3) is dH/dp of the same (unnormalised) ``h``; both map moving pixels
    to full-resolution fixed pixels (``ctx.fixed_pixel_map`` takes them on to a coarser
    ``ctx.fixed``).
    """
    metric = Metric(metric)
    if ctx.fixed_pixel_map is not None:
        h = ctx.fixed_pixel_map @ h
        dh = ctx.fixed_pixel_map @ dh
    h = np.ascontiguousarray(h, np.float64)
    dh = np.ascontiguousarray(dh, np.float64)
    if metric is Metric.NGF:
        cost, grad, count = _ngf(ctx, h, dh)
    elif metric is Metric.LC2:
        cost, grad, count = _lc2(ctx, h, dh)
    else:
        b, db, valid = ctx.warp(h, dh)
        cost, grad, count = _COSTS[metric](ctx, b, db, valid)
    return float(cost), np.asarray(grad), int(count)


def batch_mi_cost(ctx: MetricContext, hs: np.ndarray, step: int = 1) -> np.ndarray:
    """Mattes MI cost of many homographies ``hs`` (n, 3, 3) at once, without gradients.

    The fixed image is read on every ``step``-th pixel (enough for a well-smoothed level,
    and the smaller copy stays in cache); ``hs`` map moving pixels to full-resolution
    fixed pixels, as in :func:`metric_cost`. Each value equals the ``mi`` cost of that
    homography (one logarithm per bin instead of per sample): the global search scores
    its grid with it.
    """
    pixel_map = np.eye(3) if ctx.fixed_pixel_map is None else ctx.fixed_pixel_map
    to_grid = np.diag([1.0 / step, 1.0 / step, 1.0]) @ pixel_map
    return K.batch_mattes_cost(
        np.ascontiguousarray(ctx.fixed[::step, ::step]),
        np.ascontiguousarray(ctx.fixed_mask[::step, ::step]),
        np.ascontiguousarray(to_grid @ hs),
        ctx.xs,
        ctx.ys,
        ctx.fixed_bin,
        ctx.n_bins,
        ctx.b_norm_min,
        ctx.b_bin_size,
        0.5,
    )


def _ngf(ctx, h, dh):
    gx, gy, inner = ctx._fixed_gradients()
    nm, eps_f = ctx._ngf_terms()
    n, k = len(ctx.xs), dh.shape[0]
    g = np.empty((n, 2))
    dg = np.empty((n, k, 2))
    valid = np.empty(n, dtype=np.bool_)
    for_size(K.warp_gradient, n)(gx, gy, inner, h, dh, ctx.xs, ctx.ys, g, dg, valid)
    return for_size(K.ngf_cost, n)(nm, g, dg, valid, eps_f)


def _lc2(ctx, h, dh):
    _, _, inner = ctx._fixed_gradients()
    mag, order, start, ridge_b, ridge_g = ctx._lc2_terms()
    n = len(ctx.xs)
    vals = np.empty((n, 9))
    valid = np.empty(n, dtype=np.bool_)
    for_size(K.warp_values_pair, n)(ctx.fixed, mag, inner, h, ctx.xs, ctx.ys, vals, valid)
    cost, grad_h, count = for_size(K.lc2_cost, n)(
        ctx.a,
        vals,
        valid,
        ctx.xs,
        ctx.ys,
        order,
        start,
        ridge_b,
        ridge_g,
        float(ctx.lc2_min_samples),
    )
    # d cost/dp_k = Σ_ij dH_ij/dp_k · d cost/dH_ij
    return cost, dh.reshape(len(dh), 9) @ grad_h.reshape(9), count


def _ncc(ctx, b, db, valid):
    return for_size(K.ncc_cost, len(b))(ctx.a, b, db, valid)


def _mi(ctx, b, db, valid):
    return for_size(K.mattes_cost, len(b))(
        ctx.fixed_bin, b, db, valid, ctx.n_bins, ctx.b_norm_min, ctx.b_bin_size
    )


def _nmi(ctx, b, db, valid):
    return for_size(K.nmi_cost, len(b))(
        ctx.fixed_bin, b, db, valid, ctx.n_bins, ctx.b_norm_min, ctx.b_bin_size
    )


_COSTS = {Metric.NCC: _ncc, Metric.MI: _mi, Metric.NMI: _nmi}

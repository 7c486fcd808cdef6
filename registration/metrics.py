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
=========  ==================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from . import _kernels as K
from .errors import RegistrationError

__all__ = ["Metric", "MetricContext", "metric_cost"]


class Metric(str, Enum):
    """Intensity metrics."""

    NCC = "ncc"
    MI = "mi"
    NMI = "nmi"


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
    """

    fixed: np.ndarray
    fixed_mask: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    a: np.ndarray
    n_bins: int = 32

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

    def warp(self, h: np.ndarray, dh: np.ndarray):
        """Warped samples b, their parameter derivatives db (N, K), and validity."""
        n = len(self.xs)
        k = dh.shape[0]
        b = np.empty(n)
        db = np.empty((n, k))
        valid = np.empty(n, dtype=np.bool_)
        K.warp_points(
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

    ``dh`` (K, 3, 3) is dH/dp of the same (unnormalised) ``h``.
    """
    b, db, valid = ctx.warp(h, dh)
    fn = _COSTS[Metric(metric)]
    cost, grad, count = fn(ctx, b, db, valid)
    return float(cost), np.asarray(grad), int(count)


def _ncc(ctx, b, db, valid):
    return K.ncc_cost(ctx.a, b, db, valid)


def _mi(ctx, b, db, valid):
    return K.mattes_cost(ctx.fixed_bin, b, db, valid, ctx.n_bins, ctx.b_norm_min, ctx.b_bin_size)


def _nmi(ctx, b, db, valid):
    return K.nmi_cost(ctx.fixed_bin, b, db, valid, ctx.n_bins, ctx.b_norm_min, ctx.b_bin_size)


_COSTS = {Metric.NCC: _ncc, Metric.MI: _mi, Metric.NMI: _nmi}

"""Cone-beam fluoroscopy of the phantom: Beer-Lambert, Poisson noise, log display."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridfuse.registration.geometry import ConeBeamGeometry

from .anatomy import MU_STEEL, Phantom, _chord_culled


@dataclass(frozen=True)
class Collimator:
    """Circular collimator: exposed field is the disc of ``radius_px`` about the centre."""

    center_px_xy: tuple[float, float]
    radius_px: float

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Boolean (rows, cols) exposed field."""
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        cx, cy = self.center_px_xy
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= self.radius_px**2


def pixel_grid(shape: tuple[int, int]) -> np.ndarray:
    """All pixel centres (rows*cols, 2) as (x, y), row-major."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.column_stack([xx.ravel(), yy.ravel()]).astype(float)


class FluoroRenderer:
    """Projects one phantom through one C-arm pose; the static anatomy is traced once."""

    def __init__(self, geometry: ConeBeamGeometry, phantom: Phantom):
        self.geometry = geometry
        self.phantom = phantom
        self.shape = geometry.detector_shape
        self._origin, self._dirs = geometry.pixel_rays(pixel_grid(self.shape))
        self._static = phantom.line_integrals(self._origin, self._dirs).reshape(self.shape)

    def line_integrals(self, tip_mm: np.ndarray | None) -> np.ndarray:
        """∫mu dl (rows, cols) for the needle tip at ``tip_mm`` (None: no needle)."""
        if tip_mm is None:
            return self._static.copy()
        needle = _chord_culled(self.phantom.needle.solid(tip_mm), self._origin, self._dirs)
        return self._static + MU_STEEL * needle.reshape(self.shape)

    @staticmethod
    def expose(
        line_integrals: np.ndarray,
        photons_per_pixel: float,
        exposed: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Detected photon counts: Poisson(N0 · exp(-∫mu dl)) inside the exposed field."""
        expected = photons_per_pixel * np.exp(-line_integrals)
        counts = rng.poisson(np.where(exposed, expected, 0.0)).astype(float)
        return counts

    @staticmethod
    def display(
        counts: np.ndarray,
        photons_per_pixel: float,
        window: tuple[float, float],
        exposed: np.ndarray,
    ) -> np.ndarray:
        """MONOCHROME1 8-bit display: value ∝ estimated attenuation -ln(counts/N0).

        Stored high values mean strong attenuation, shown dark by a MONOCHROME1
        viewer; outside the collimator nothing arrives, which shows black (255).
        """
        lo, hi = window
        atten = -np.log(np.maximum(counts, 0.5) / photons_per_pixel)
        value = np.clip((atten - lo) / (hi - lo), 0.0, 1.0) * 255.0
        value[~exposed] = 255.0
        return np.rint(value).astype(np.uint8)


@dataclass(frozen=True)
class RectangularCollimator:
    """Rectangular collimator: exposed field between four edges (0-based pixels, inclusive)."""

    left_px: int
    right_px: int
    upper_px: int
    lower_px: int

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Boolean (rows, cols) exposed field."""
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        return (
            (xx >= self.left_px)
            & (xx <= self.right_px)
            & (yy >= self.upper_px)
            & (yy <= self.lower_px)
        )

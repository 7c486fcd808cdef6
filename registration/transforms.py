"""Planar transforms between moving (ultrasound) and fixed (fluoroscopy) pixels.

Every model is a 3×3 homography ``H`` mapping homogeneous moving pixels (x, y, 1) to fixed
pixels. The optimiser sees a *centred, scaled* delta around an initial transform:

    H(p) = H0 · N⁻¹ · D(p) · N

where ``N`` maps moving pixels to normalised coordinates (centred on the moving domain,
divided by its half size ``L``) and ``D(p)`` is the model's delta, the identity at p = 0.
Every parameter is then dimensionless and of order 0.1 for a meaningful change, which
keeps the problem well conditioned for L-BFGS.

=============  ===========================  ====================================
model          parameters p                 D(p)
=============  ===========================  ====================================
rigid          θ, tx, ty                    R(θ) + t
similarity     log s, θ, tx, ty             s R(θ) + t
affine         a, b, c, d, tx, ty           [[1+a, b, tx], [c, 1+d, ty]]
projective     a, b, c, d, tx, ty, g, h     [[1+a, b, tx], [c, 1+d, ty], [g, h, 1]]
=============  ===========================  ====================================

"rigid" keeps the scale of ``H0`` (rigid in millimetres when H0 carries the calibrated
scale); "projective" is the physically exact model of a planar image seen by a cone beam.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from functools import cached_property

import numpy as np

from ._transform_kernels import param_homography
from .errors import RegistrationError

__all__ = [
    "TransformModel",
    "Parameterization",
    "Transform",
    "N_PARAMS",
]


class TransformModel(str, Enum):
    """Transform families, from fewest to most degrees of freedom."""

    RIGID = "rigid"
    SIMILARITY = "similarity"
    AFFINE = "affine"
    PROJECTIVE = "projective"


N_PARAMS = {
    TransformModel.RIGID: 3,
    TransformModel.SIMILARITY: 4,
    TransformModel.AFFINE: 6,
    TransformModel.PROJECTIVE: 8,
}


# The kernel's model codes.
_MODEL_CODE = {
    TransformModel.RIGID: 0,
    TransformModel.SIMILARITY: 1,
    TransformModel.AFFINE: 2,
    TransformModel.PROJECTIVE: 3,
}


@dataclass(frozen=True)
class Parameterization:
    """Maps optimiser parameters to homographies around an initial transform.

    Parameters
    ----------
    model : TransformModel
    initial : ndarray, shape (3, 3)
        H0, moving pixels → fixed pixels at p = 0.
    center_px : tuple of float
        Centre (x, y) of the moving domain (e.g. the ultrasound region).
    half_size_px : float
        Normalising length L (half the moving domain's extent).
    """

    model: TransformModel
    initial: np.ndarray
    center_px: tuple[float, float]
    half_size_px: float

    @property
    def n_params(self) -> int:
        """Number of parameters."""
        return N_PARAMS[TransformModel(self.model)]

    def _norm(self) -> tuple[np.ndarray, np.ndarray]:
        cx, cy = self.center_px
        inv_l = 1.0 / self.half_size_px
        n = np.array([[inv_l, 0, -cx * inv_l], [0, inv_l, -cy * inv_l], [0, 0, 1.0]])
        n_inv = np.array([[self.half_size_px, 0, cx], [0, self.half_size_px, cy], [0, 0, 1.0]])
        return n, n_inv

    @cached_property
    def _frame(self) -> tuple[np.ndarray, np.ndarray]:
        """H0·N⁻¹ and N: constant per parameterisation, used at every evaluation."""
        n, n_inv = self._norm()
        return np.asarray(self.initial, float) @ n_inv, n

    def matrix(self, p: np.ndarray) -> np.ndarray:
        """H(p), normalised so that H[2, 2] = 1."""
        return self.matrix_and_jacobian(p)[0]

    def matrix_and_jacobian(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """H(p) and dH/dp as (K, 3, 3), both *unnormalised* (consistent pair)."""
        p = np.asarray(p, dtype=float)
        if p.shape != (self.n_params,):
            raise ValueError(f"{self.model} takes {self.n_params} parameters, got {p.shape}")
        left, n = self._frame
        return param_homography(_MODEL_CODE[TransformModel(self.model)], p, left, n)

    def params_of(self, matrix: np.ndarray) -> np.ndarray:
        """Parameters whose H(p) equals ``matrix`` (projective/affine exactly; others by fit)."""
        n, n_inv = self._norm()
        d = np.linalg.solve(np.asarray(self.initial, float) @ n_inv, np.asarray(matrix) @ n_inv)
        d = d / d[2, 2]
        model = TransformModel(self.model)
        if model is TransformModel.PROJECTIVE:
            return np.array(
                [d[0, 0] - 1, d[0, 1], d[1, 0], d[1, 1] - 1, d[0, 2], d[1, 2], d[2, 0], d[2, 1]]
            )
        if model is TransformModel.AFFINE:
            return np.array([d[0, 0] - 1, d[0, 1], d[1, 0], d[1, 1] - 1, d[0, 2], d[1, 2]])
        theta = np.arctan2(d[1, 0] - d[0, 1], d[0, 0] + d[1, 1])
        if model is TransformModel.SIMILARITY:
            scale = np.sqrt(abs(np.linalg.det(d[:2, :2])))
            return np.array([np.log(scale), theta, d[0, 2], d[1, 2]])
        return np.array([theta, d[0, 2], d[1, 2]])


def _normalise(h: np.ndarray) -> np.ndarray:
    h = np.asarray(h, dtype=float)
    if h.shape != (3, 3) or not np.all(np.isfinite(h)):
        raise RegistrationError(f"a transform must be a finite 3x3 matrix, got shape {h.shape}")
    if abs(h[2, 2]) < 1e-12:
        raise RegistrationError("degenerate homography (H[2,2] = 0)")
    return h / h[2, 2]


@dataclass(frozen=True)
class Transform:
    """A moving-to-fixed pixel homography with the model it was estimated under.

    Parameters
    ----------
    matrix : ndarray, shape (3, 3)
        Maps homogeneous moving pixels (x = column, y = row, 1) to fixed pixels.
    model : TransformModel
    """

    matrix: np.ndarray
    model: TransformModel = TransformModel.PROJECTIVE

    def __post_init__(self) -> None:
        object.__setattr__(self, "matrix", _normalise(self.matrix))
        object.__setattr__(self, "model", TransformModel(self.model))

    def apply(self, xy: np.ndarray) -> np.ndarray:
        """Map moving pixels (N, 2) to fixed pixels (N, 2)."""
        xy = np.atleast_2d(np.asarray(xy, dtype=float))
        out = np.hstack([xy, np.ones((len(xy), 1))]) @ self.matrix.T
        return out[:, :2] / out[:, 2:3]

    def inverse(self) -> Transform:
        """Fixed-to-moving transform."""
        return Transform(np.linalg.inv(self.matrix), self.model)

    def compose(self, first: Transform) -> Transform:
        """``self ∘ first``: apply ``first``, then ``self``."""
        models = list(TransformModel)
        model = max(self.model, first.model, key=models.index)
        return Transform(self.matrix @ first.matrix, model)

    def in_mm(self, moving_spacing_mm, fixed_spacing_mm) -> np.ndarray:
        """The same map between millimetres: moving plane mm → fixed (isocentre) mm.

        Spacings are (row, column); the origin of each is the centre of pixel (0, 0).
        """
        sm = np.diag([moving_spacing_mm[1], moving_spacing_mm[0], 1.0])
        sf = np.diag([fixed_spacing_mm[1], fixed_spacing_mm[0], 1.0])
        return _normalise(sf @ self.matrix @ np.linalg.inv(sm))

    def local_scales(self, at_xy: np.ndarray) -> np.ndarray:
        """Singular values (N, 2) of the map's Jacobian at moving pixels: local stretch."""
        xy = np.atleast_2d(np.asarray(at_xy, float))
        h = self.matrix
        out = np.empty((len(xy), 2))
        for i, (x, y) in enumerate(xy):
            u = h @ np.array([x, y, 1.0])
            fx, fy = u[0] / u[2], u[1] / u[2]
            jac = (
                np.array(
                    [
                        [h[0, 0] - fx * h[2, 0], h[0, 1] - fx * h[2, 1]],
                        [h[1, 0] - fy * h[2, 0], h[1, 1] - fy * h[2, 1]],
                    ]
                )
                / u[2]
            )
            out[i] = np.linalg.svd(jac, compute_uv=False)
        return out

    def to_dict(self) -> dict:
        """JSON-ready form (row-major 3×3)."""
        return {"model": self.model.value, "moving_to_fixed_pixel": self.matrix.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> Transform:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                np.asarray(data["moving_to_fixed_pixel"], float),
                TransformModel(data.get("model", "projective")),
            )
        except (KeyError, ValueError) as exc:
            raise RegistrationError(f"not a transform: {exc}") from exc

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict())

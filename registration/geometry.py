"""Cone-beam C-arm projection and the homography a planar image induces through it.

Conventions
-----------
World frame: any right-handed frame in millimetres (the phantom uses x = patient
left, y = posterior to anterior, z = caudal to cranial). A C-arm pose is a rotation
``world_to_carm`` whose rows are, in world coordinates, the detector column axis
``u`` (increasing image x), the detector row axis ``v`` (increasing image y) and the
beam direction ``w = u × v`` (source towards detector). The isocentre is the world
origin; the source sits at ``-sod_mm * w`` and the detector plane at ``(sid_mm -
sod_mm) * w``.

Pixels follow the project convention: (x, y) = (column, row), 0-based, pixel centres
at integer coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import IllPosedGeometryError

__all__ = [
    "ConeBeamGeometry",
    "ImagePlane",
    "plane_homography",
    "plane_obliquity_deg",
    "check_not_edge_on",
    "apply_homography",
    "rotation_from_axes",
]

#: Below this angle (degrees) between the X-ray rays and the image plane, a planar image
#: is treated as seen edge-on: the plane-induced homography is nearly singular and a
#: 2D-2D registration cannot recover the out-of-plane direction.
EDGE_ON_THRESHOLD_DEG = 10.0

#: Plausible C-arm geometry. The magnification SID/SOD exceeds 1 because the isocentre
#: lies between source and detector, and stays below 3 on any clinical C-arm (about
#: 1.2-2.0 in practice); detector pixels are 0.01-5 mm; a fluoroscopy smaller than
#: 32 x 32 pixels cannot hold an anatomy to register.
MAGNIFICATION_RANGE = (1.0, 3.0)
DETECTOR_SPACING_RANGE_MM = (0.01, 5.0)
MIN_DETECTOR_PX = 32


def rotation_from_axes(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Build a world-to-C-arm rotation from the detector column and row axes.

    Parameters
    ----------
    u, v : array_like, shape (3,)
        World directions of increasing detector column (x) and row (y). They are
        orthonormalised (``v`` is made orthogonal to ``u``).

    Returns
    -------
    ndarray, shape (3, 3)
        Rows ``u``, ``v``, ``w = u × v`` (the beam direction).
    """
    u = np.asarray(u, dtype=float)
    v = np.asarray(v, dtype=float)
    if u.shape != (3,) or v.shape != (3,):
        raise ValueError(f"u and v must be 3-vectors, got shapes {u.shape} and {v.shape}")
    u = u / np.linalg.norm(u)
    v = v - u * (u @ v)
    norm_v = np.linalg.norm(v)
    if norm_v < 1e-9:
        raise ValueError("u and v are parallel; they cannot span a detector plane")
    v = v / norm_v
    return np.vstack([u, v, np.cross(u, v)])


@dataclass(frozen=True)
class ConeBeamGeometry:
    """A C-arm with a point source and a flat detector.

    Parameters
    ----------
    sid_mm : float
        Source-to-image (detector) distance, DICOM (0018,1110)
        *Distance Source to Detector*.
    sod_mm : float
        Source-to-isocentre distance, DICOM (0018,1111) *Distance Source to Patient*.
    detector_spacing_mm : tuple of float
        Pixel spacing at the detector plane as (row, column), DICOM (0018,1164)
        *Imager Pixel Spacing*.
    detector_shape : tuple of int
        Detector size as (rows, columns).
    world_to_carm : ndarray, shape (3, 3)
        Rotation whose rows are the detector u (column), v (row) and beam axes in
        world coordinates. Identity by default.
    principal_point_px : tuple of float, optional
        Pixel (x, y) where the central ray (through the isocentre) meets the
        detector. Defaults to the detector centre ``((cols-1)/2, (rows-1)/2)``.

    Raises
    ------
    IllPosedGeometryError
        A value outside :data:`MAGNIFICATION_RANGE`, :data:`DETECTOR_SPACING_RANGE_MM`
        or :data:`MIN_DETECTOR_PX`, or not a rotation: such a geometry would mirror or
        blow up every millimetre it maps.
    """

    sid_mm: float
    sod_mm: float
    detector_spacing_mm: tuple[float, float]
    detector_shape: tuple[int, int]
    world_to_carm: np.ndarray = field(default_factory=lambda: np.eye(3))
    principal_point_px: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        self._check_distances()
        dy, dx = (float(s) for s in self.detector_spacing_mm)
        lo, hi = DETECTOR_SPACING_RANGE_MM
        if not (lo <= dy <= hi and lo <= dx <= hi):
            raise IllPosedGeometryError(
                f"detector_spacing_mm must be finite and within {lo:g}..{hi:g} mm, got {(dy, dx)}"
            )
        shape = tuple(int(n) for n in self.detector_shape)
        if len(shape) != 2 or min(shape) < MIN_DETECTOR_PX:
            raise IllPosedGeometryError(
                f"detector_shape {shape} too small: at least {MIN_DETECTOR_PX} x "
                f"{MIN_DETECTOR_PX} pixels are needed"
            )
        rot = np.asarray(self.world_to_carm, dtype=float)
        if rot.shape != (3, 3) or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-6):
            raise IllPosedGeometryError("world_to_carm must be a 3x3 rotation matrix")
        if np.linalg.det(rot) < 0:
            raise IllPosedGeometryError("world_to_carm must be a proper rotation (det = +1)")
        object.__setattr__(self, "world_to_carm", rot)
        object.__setattr__(self, "detector_spacing_mm", (dy, dx))
        object.__setattr__(self, "detector_shape", shape)

    def _check_distances(self) -> None:
        """SID and SOD positive, SOD < SID, SID/SOD within :data:`MAGNIFICATION_RANGE`."""
        for name in ("sid_mm", "sod_mm"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise IllPosedGeometryError(f"{name} must be finite and > 0, got {value!r}")
        if self.sod_mm >= self.sid_mm:
            raise IllPosedGeometryError(
                f"sod_mm ({self.sod_mm}) must be smaller than sid_mm ({self.sid_mm}): "
                "the isocentre lies between source and detector"
            )
        lo, hi = MAGNIFICATION_RANGE
        if self.sid_mm / self.sod_mm > hi:
            raise IllPosedGeometryError(
                f"magnification sid_mm/sod_mm = {self.sid_mm / self.sod_mm:.3g} is outside "
                f"the plausible {lo:g}..{hi:g} of a C-arm"
            )

    @property
    def magnification(self) -> float:
        """Geometric magnification at the isocentre, ``sid_mm / sod_mm``."""
        return self.sid_mm / self.sod_mm

    @property
    def isocenter_spacing_mm(self) -> tuple[float, float]:
        """Pixel spacing (row, column) projected back to the isocentre plane, mm."""
        dy, dx = self.detector_spacing_mm
        return (dy / self.magnification, dx / self.magnification)

    @property
    def principal_point(self) -> tuple[float, float]:
        """Pixel (x, y) of the central ray on the detector."""
        if self.principal_point_px is not None:
            return (float(self.principal_point_px[0]), float(self.principal_point_px[1]))
        rows, cols = self.detector_shape
        return ((cols - 1) / 2.0, (rows - 1) / 2.0)

    @property
    def beam_direction(self) -> np.ndarray:
        """Unit vector from source towards detector, world coordinates."""
        return self.world_to_carm[2].copy()

    @property
    def source_position_mm(self) -> np.ndarray:
        """World position of the focal spot."""
        return -self.sod_mm * self.world_to_carm[2]

    def intrinsic_matrix(self) -> np.ndarray:
        """3×3 matrix mapping C-arm coordinates (origin at the source) to pixels."""
        dy, dx = self.detector_spacing_mm
        cx, cy = self.principal_point
        return np.array([[self.sid_mm / dx, 0.0, cx], [0.0, self.sid_mm / dy, cy], [0.0, 0.0, 1.0]])

    def projection_matrix(self) -> np.ndarray:
        """3×4 matrix P with ``[x, y, 1] ~ P @ [X, Y, Z, 1]`` (world mm to pixels)."""
        extrinsic = np.hstack([self.world_to_carm, np.array([[0.0], [0.0], [self.sod_mm]])])
        return self.intrinsic_matrix() @ extrinsic

    def project(self, points_mm: np.ndarray) -> np.ndarray:
        """Project world points (N, 3) to detector pixels (N, 2) as (x, y)."""
        pts = np.atleast_2d(np.asarray(points_mm, dtype=float))
        homog = np.hstack([pts, np.ones((len(pts), 1))]) @ self.projection_matrix().T
        if np.any(homog[:, 2] <= 0):
            raise IllPosedGeometryError("a point lies behind the X-ray source")
        return homog[:, :2] / homog[:, 2:3]

    def pixel_rays(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rays from the source through detector pixels.

        Parameters
        ----------
        xy : ndarray, shape (N, 2)
            Pixel positions (x, y).

        Returns
        -------
        origin : ndarray, shape (3,)
            The source position (world mm).
        directions : ndarray, shape (N, 3)
            Unit ray directions (world).
        """
        xy = np.atleast_2d(np.asarray(xy, dtype=float))
        dy, dx = self.detector_spacing_mm
        cx, cy = self.principal_point
        local = np.column_stack(
            [(xy[:, 0] - cx) * dx, (xy[:, 1] - cy) * dy, np.full(len(xy), self.sid_mm)]
        )
        dirs = local @ self.world_to_carm  # carm -> world is the transpose
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        return self.source_position_mm, dirs

    def to_dict(self) -> dict:
        """JSON-ready description (lists, mm, pixels)."""
        return {
            "sid_mm": self.sid_mm,
            "sod_mm": self.sod_mm,
            "detector_spacing_mm_row_col": list(self.detector_spacing_mm),
            "detector_shape_rows_cols": list(self.detector_shape),
            "world_to_carm": self.world_to_carm.tolist(),
            "principal_point_px_xy": list(self.principal_point),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ConeBeamGeometry:
        """Inverse of :meth:`to_dict`."""
        return cls(
            sid_mm=float(data["sid_mm"]),
            sod_mm=float(data["sod_mm"]),
            detector_spacing_mm=tuple(data["detector_spacing_mm_row_col"]),
            detector_shape=tuple(data["detector_shape_rows_cols"]),
            world_to_carm=np.asarray(data["world_to_carm"], dtype=float),
            principal_point_px=tuple(data["principal_point_px_xy"]),
        )


@dataclass(frozen=True)
class ImagePlane:
    """A planar image placed in the world, such as an ultrasound B-mode frame.

    Pixel (x, y) lies at ``origin_mm + x * spacing_x * axis_x + y * spacing_y * axis_y``.

    Parameters
    ----------
    origin_mm : array_like, shape (3,)
        World position of the centre of pixel (0, 0).
    axis_x, axis_y : array_like, shape (3,)
        Unit world directions of increasing column and row; made orthonormal.
    spacing_mm : tuple of float
        Pixel spacing as (row, column) in mm.
    """

    origin_mm: np.ndarray
    axis_x: np.ndarray
    axis_y: np.ndarray
    spacing_mm: tuple[float, float]

    def __post_init__(self) -> None:
        rot = rotation_from_axes(self.axis_x, self.axis_y)
        object.__setattr__(self, "axis_x", rot[0])
        object.__setattr__(self, "axis_y", rot[1])
        object.__setattr__(self, "origin_mm", np.asarray(self.origin_mm, dtype=float))
        dy, dx = (float(s) for s in self.spacing_mm)
        if not (dy > 0 and dx > 0 and np.isfinite(dx) and np.isfinite(dy)):
            raise ValueError(f"spacing_mm must be finite and > 0, got {(dy, dx)}")
        object.__setattr__(self, "spacing_mm", (dy, dx))

    @property
    def normal(self) -> np.ndarray:
        """Unit normal ``axis_x × axis_y``."""
        return np.cross(self.axis_x, self.axis_y)

    def pixel_to_world_matrix(self) -> np.ndarray:
        """4×3 matrix M with ``[X, Y, Z, 1] = M @ [x, y, 1]``."""
        dy, dx = self.spacing_mm
        mat = np.zeros((4, 3))
        mat[:3, 0] = self.axis_x * dx
        mat[:3, 1] = self.axis_y * dy
        mat[:3, 2] = self.origin_mm
        mat[3, 2] = 1.0
        return mat

    def pixel_to_world(self, xy: np.ndarray) -> np.ndarray:
        """World positions (N, 3) of image pixels (N, 2) given as (x, y)."""
        xy = np.atleast_2d(np.asarray(xy, dtype=float))
        homog = np.hstack([xy, np.ones((len(xy), 1))])
        return (homog @ self.pixel_to_world_matrix().T)[:, :3]

    def world_to_pixel(self, points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """In-plane pixel (x, y) of world points and their signed distance to the plane.

        Returns
        -------
        xy : ndarray, shape (N, 2)
        distance_mm : ndarray, shape (N,)
            Signed distance along :attr:`normal`.
        """
        rel = np.atleast_2d(np.asarray(points_mm, dtype=float)) - self.origin_mm
        dy, dx = self.spacing_mm
        xy = np.column_stack([rel @ self.axis_x / dx, rel @ self.axis_y / dy])
        return xy, rel @ self.normal


def plane_homography(geometry: ConeBeamGeometry, plane: ImagePlane) -> np.ndarray:
    """Homography from plane pixels to detector pixels (the plane-induced homography).

    Returns
    -------
    ndarray, shape (3, 3)
        ``H`` with ``[x_d, y_d, 1] ~ H @ [x_p, y_p, 1]``, normalised so ``H[2, 2] = 1``.
    """
    hom = geometry.projection_matrix() @ plane.pixel_to_world_matrix()
    if abs(hom[2, 2]) < 1e-12:
        raise IllPosedGeometryError("the plane's pixel origin projects to infinity")
    return hom / hom[2, 2]


def apply_homography(hom: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Map pixel positions (N, 2) through a 3×3 homography."""
    xy = np.atleast_2d(np.asarray(xy, dtype=float))
    out = np.hstack([xy, np.ones((len(xy), 1))]) @ np.asarray(hom, dtype=float).T
    return out[:, :2] / out[:, 2:3]


def plane_obliquity_deg(
    geometry: ConeBeamGeometry, plane: ImagePlane, points_px: np.ndarray
) -> float:
    """Smallest angle (degrees) between the X-ray rays and the plane over some pixels.

    90° means the plane faces the source squarely; 0° means the rays graze it
    (edge-on), where the plane collapses to a line on the detector.

    Parameters
    ----------
    points_px : ndarray, shape (N, 2)
        Plane pixels (x, y) to test, typically the corners of the imaged region.
    """
    world = plane.pixel_to_world(points_px)
    rays = world - geometry.source_position_mm
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    sin_angle = np.abs(rays @ plane.normal)
    return float(np.degrees(np.arcsin(np.clip(sin_angle.min(), 0.0, 1.0))))


def check_not_edge_on(
    geometry: ConeBeamGeometry,
    plane: ImagePlane,
    points_px: np.ndarray,
    threshold_deg: float = EDGE_ON_THRESHOLD_DEG,
) -> float:
    """Raise :class:`IllPosedGeometryError` when the plane is seen (nearly) edge-on.

    Returns the obliquity in degrees when the geometry is well posed.
    """
    angle = plane_obliquity_deg(geometry, plane, points_px)
    if angle < threshold_deg:
        raise IllPosedGeometryError(
            f"the ultrasound plane is seen nearly edge-on by the X-ray beam (rays meet it "
            f"at {angle:.1f}° < {threshold_deg:.0f}°): a 2D-2D registration is ill-posed "
            "here; use a view closer to perpendicular to the ultrasound plane"
        )
    return angle

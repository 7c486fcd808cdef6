"""Analytic 3D phantom: solids with exact ray chords and point membership.

Attenuation is additive: each component adds ``delta_mu_per_mm`` along its chord, so a
cortical shell is an outer solid of cortical bone plus an inner solid whose delta brings
the core back to cancellous bone. Coordinates are millimetres in the phantom frame:
x = patient left, y = posterior to anterior (depth from the back), z = caudal to
cranial; the isocentre is the origin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

#: Linear attenuation coefficients (1/mm) at the ~60 keV effective energy of a filtered
#: 70-90 kVp beam; soft tissue ~ water (0.206 /cm), bone after ICRU 44.
MU_SOFT_TISSUE = 0.0195
MU_CORTICAL_BONE = 0.052
MU_CANCELLOUS_BONE = 0.030
MU_STEEL = 0.95


class Tissue(IntEnum):
    """Labels the ultrasound renderer uses for echogenicity."""

    OUTSIDE = 0
    SOFT = 1
    BONE = 2


def _rotation(rotation: np.ndarray | None) -> np.ndarray:
    if rotation is None:
        return np.eye(3)
    rot = np.asarray(rotation, dtype=float)
    if rot.shape != (3, 3) or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-8):
        raise ValueError("rotation must be a 3x3 orthonormal matrix")
    return rot


def axis_rotation(axis: str, degrees: float) -> np.ndarray:
    """Rotation matrix (world to local) for a rotation about a world axis."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    if axis == "z":
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    raise ValueError(f"axis must be 'x', 'y' or 'z', got {axis!r}")


@dataclass(frozen=True)
class Ellipsoid:
    """Solid ellipsoid; ``rotation`` maps world offsets to the local (semi-axis) frame."""

    center: np.ndarray
    semi_axes: np.ndarray
    rotation: np.ndarray | None = None

    def _local(self, pts: np.ndarray) -> np.ndarray:
        return ((pts - self.center) @ _rotation(self.rotation).T) / self.semi_axes

    def contains(self, pts: np.ndarray) -> np.ndarray:
        """Boolean membership of points (N, 3)."""
        loc = self._local(pts)
        return np.einsum("ij,ij->i", loc, loc) <= 1.0

    def chord(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Length (mm) of each ray's path inside the solid; rays are unit (N, 3)."""
        rot = _rotation(self.rotation)
        o = ((origin - self.center) @ rot.T) / self.semi_axes
        d = (dirs @ rot.T) / self.semi_axes
        a = np.einsum("ij,ij->i", d, d)
        b = 2.0 * d @ o
        c = o @ o - 1.0
        disc = b * b - 4.0 * a * c
        out = np.zeros(len(dirs))
        hit = disc > 0
        out[hit] = np.sqrt(disc[hit]) / a[hit]
        return out

    def bounding_radius(self) -> float:
        """Radius of a sphere about :attr:`center` enclosing the solid."""
        return float(np.max(self.semi_axes))


@dataclass(frozen=True)
class EllipticCylinder:
    """Solid elliptic cylinder along the local z axis, of half-length ``half_length``."""

    center: np.ndarray
    semi_axes: np.ndarray  # (a, b) along local x, y
    half_length: float
    rotation: np.ndarray | None = None

    def contains(self, pts: np.ndarray) -> np.ndarray:
        """Boolean membership of points (N, 3)."""
        loc = (pts - self.center) @ _rotation(self.rotation).T
        radial = (loc[:, 0] / self.semi_axes[0]) ** 2 + (loc[:, 1] / self.semi_axes[1]) ** 2
        return (radial <= 1.0) & (np.abs(loc[:, 2]) <= self.half_length)

    def chord(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Length (mm) of each ray's path inside the solid; rays are unit (N, 3)."""
        rot = _rotation(self.rotation)
        o = (origin - self.center) @ rot.T
        d = dirs @ rot.T
        ax, by = self.semi_axes
        a = (d[:, 0] / ax) ** 2 + (d[:, 1] / by) ** 2
        b = 2.0 * (o[0] * d[:, 0] / ax**2 + o[1] * d[:, 1] / by**2)
        c = (o[0] / ax) ** 2 + (o[1] / by) ** 2 - 1.0
        n = len(dirs)
        t_lo = np.full(n, -np.inf)
        t_hi = np.full(n, np.inf)
        parallel = a < 1e-14
        # Rays parallel to the axis are inside for all t or never.
        t_hi[parallel & (c > 0)] = -np.inf
        disc = b * b - 4.0 * a * c
        slanted = ~parallel
        miss = slanted & (disc <= 0)
        t_hi[miss] = -np.inf
        ok = slanted & (disc > 0)
        root = np.sqrt(disc[ok])
        t_lo[ok] = (-b[ok] - root) / (2.0 * a[ok])
        t_hi[ok] = (-b[ok] + root) / (2.0 * a[ok])
        dz = d[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            s1 = (-self.half_length - o[2]) / dz
            s2 = (self.half_length - o[2]) / dz
        flat = np.abs(dz) < 1e-14
        s_lo = np.where(
            flat, np.where(abs(o[2]) <= self.half_length, -np.inf, np.inf), np.minimum(s1, s2)
        )
        s_hi = np.where(
            flat, np.where(abs(o[2]) <= self.half_length, np.inf, -np.inf), np.maximum(s1, s2)
        )
        return np.clip(np.minimum(t_hi, s_hi) - np.maximum(t_lo, s_lo), 0.0, None)

    def bounding_radius(self) -> float:
        """Radius of a sphere about :attr:`center` enclosing the solid."""
        return float(np.hypot(np.max(self.semi_axes), self.half_length))


def segment_cylinder(start: np.ndarray, end: np.ndarray, radius: float) -> EllipticCylinder:
    """A round cylinder from ``start`` to ``end`` (mm)."""
    start = np.asarray(start, dtype=float)
    end = np.asarray(end, dtype=float)
    axis = end - start
    length = float(np.linalg.norm(axis))
    if length <= 0:
        raise ValueError("cylinder end points coincide")
    w = axis / length
    helper = np.array([1.0, 0.0, 0.0]) if abs(w[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(w, helper)
    u /= np.linalg.norm(u)
    v = np.cross(w, u)
    return EllipticCylinder(
        center=(start + end) / 2.0,
        semi_axes=np.array([radius, radius]),
        half_length=length / 2.0,
        rotation=np.vstack([u, v, w]),
    )


@dataclass(frozen=True)
class Component:
    """A solid with its attenuation increment and the tissue it makes for ultrasound."""

    name: str
    solid: Ellipsoid | EllipticCylinder
    delta_mu_per_mm: float
    tissue: Tissue | None  # None: does not change the tissue label (e.g. a bone core)


@dataclass(frozen=True)
class Needle:
    """A straight steel needle entering at ``hub`` (outside the skin) along ``direction``."""

    hub_mm: np.ndarray
    direction: np.ndarray
    radius_mm: float = 0.36  # 22 G: 0.72 mm outer diameter

    def tip_at(self, inserted_length_mm: float) -> np.ndarray:
        """Tip position when ``inserted_length_mm`` of shaft lies beyond the hub."""
        return self.hub_mm + inserted_length_mm * self.direction

    def solid(self, tip_mm: np.ndarray) -> EllipticCylinder:
        """The shaft from the hub to ``tip_mm``."""
        return segment_cylinder(self.hub_mm, tip_mm, self.radius_mm)


@dataclass(frozen=True)
class Phantom:
    """Static anatomy, fiducial beads and the needle trajectory of one procedure."""

    components: tuple[Component, ...]
    bead_centers_mm: np.ndarray  # (n, 3)
    bead_radius_mm: float
    needle: Needle
    body_center_xy_mm: tuple[float, float]
    body_semi_axes_xy_mm: tuple[float, float]
    fat_thickness_mm: float
    meta: dict = field(default_factory=dict)
    #: One radius per bead (mm); None: every bead has :attr:`bead_radius_mm`.
    bead_radii_mm: tuple[float, ...] | None = None

    def bead_radii(self) -> list[float]:
        """The radius (mm) of each bead, in the order of :attr:`bead_centers_mm`."""
        if self.bead_radii_mm is None:
            return [self.bead_radius_mm] * len(self.bead_centers_mm)
        return [float(r) for r in self.bead_radii_mm]

    def depth_below_skin(self, pts: np.ndarray) -> np.ndarray:
        """Depth (mm) of points below the posterior skin surface at their x."""
        cx, cy = self.body_center_xy_mm
        ax, by = self.body_semi_axes_xy_mm
        frac = np.clip(1.0 - ((pts[:, 0] - cx) / ax) ** 2, 0.0, None)
        skin_y = cy - by * np.sqrt(frac)
        return pts[:, 1] - skin_y

    def bead_components(self) -> list[Component]:
        """Each bead as a steel sphere component."""
        return [
            Component(f"bead{i}", Ellipsoid(c, np.array([r, r, r])), MU_STEEL, Tissue.SOFT)
            for i, (c, r) in enumerate(zip(self.bead_centers_mm, self.bead_radii(), strict=True))
        ]

    def line_integrals(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """∫ mu dl along each ray (dimensionless) through anatomy and beads, no needle."""
        total = np.zeros(len(dirs))
        for comp in (*self.components, *self.bead_components()):
            total += comp.delta_mu_per_mm * _chord_culled(comp.solid, origin, dirs)
        return total

    def tissue_labels(self, pts: np.ndarray) -> np.ndarray:
        """Tissue label of each point (N, 3): later components override earlier ones."""
        labels = np.full(len(pts), Tissue.OUTSIDE, dtype=np.int8)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        for comp in self.components:
            if comp.tissue is None:
                continue
            # Skip solids whose bounding sphere misses the points' bounding box.
            nearest = np.clip(comp.solid.center, lo, hi)
            if np.sum((nearest - comp.solid.center) ** 2) > comp.solid.bounding_radius() ** 2:
                continue
            inside = _contains_culled(comp.solid, pts)
            labels[inside] = comp.tissue
        return labels


def _chord_culled(solid, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Chord lengths, evaluating only rays that pass near the solid's bounding sphere."""
    to_center = solid.center - origin
    along = dirs @ to_center
    dist2 = to_center @ to_center - along**2
    near = dist2 <= solid.bounding_radius() ** 2
    out = np.zeros(len(dirs))
    if np.any(near):
        out[near] = solid.chord(origin, dirs[near])
    return out


def _contains_culled(solid, pts: np.ndarray) -> np.ndarray:
    near = np.sum((pts - solid.center) ** 2, axis=1) <= solid.bounding_radius() ** 2
    out = np.zeros(len(pts), dtype=bool)
    if np.any(near):
        out[near] = solid.contains(pts[near])
    return out


def _bone(name, solid, core=None, cortex_mm=1.5) -> list[Component]:
    """A bone with a cortical shell: outer cortical solid plus a cancellous core."""
    comps = [Component(name, solid, MU_CORTICAL_BONE - MU_SOFT_TISSUE, Tissue.BONE)]
    if core is not None:
        comps.append(Component(name + "-core", core, MU_CANCELLOUS_BONE - MU_CORTICAL_BONE, None))
    return comps


def vertebra(
    name: str, z_mm: float, scale: float = 1.0, y_body_mm: float = 35.0
) -> list[Component]:
    """Components of one vertebra centred at height ``z_mm`` (lumbar proportions × scale)."""
    s = scale
    c = np.array
    comps: list[Component] = []
    body_axes = c([22.0, 16.0]) * s
    comps += _bone(
        f"{name}-body",
        EllipticCylinder(c([0.0, y_body_mm * s, z_mm]), body_axes, 12.5 * s),
        EllipticCylinder(c([0.0, y_body_mm * s, z_mm]), body_axes - 1.5, 12.5 * s - 1.5),
    )
    y_axis = axis_rotation("x", 90.0)  # local z along world y
    for side in (-1.0, 1.0):
        comps += _bone(
            f"{name}-pedicle{'LR'[side > 0]}",
            EllipticCylinder(
                c([side * 12.0 * s, 12.0 * s, z_mm]), c([4.5, 7.0]) * s, 9.0 * s, y_axis
            ),
        )
        comps += _bone(
            f"{name}-lamina{'LR'[side > 0]}",
            Ellipsoid(
                c([side * 9.0 * s, -7.0 * s, z_mm - 3.0 * s]),
                c([9.0, 4.0, 12.0]) * s,
                axis_rotation("z", side * 20.0),
            ),
        )
        comps += _bone(
            f"{name}-transverse{'LR'[side > 0]}",
            Ellipsoid(c([side * 28.0 * s, 2.0 * s, z_mm]), c([16.0, 4.0, 5.5]) * s),
        )
        for part, dz in (("sap", 11.0), ("iap", -11.0)):
            comps += _bone(
                f"{name}-{part}{'LR'[side > 0]}",
                Ellipsoid(c([side * 16.0 * s, -9.0 * s, z_mm + dz * s]), c([5.0, 6.5, 8.0]) * s),
            )
    comps += _bone(
        f"{name}-spinous",
        Ellipsoid(c([0.0, -26.0 * s, z_mm - 5.0 * s]), c([3.5, 15.0, 10.0]) * s),
    )
    return comps


def pelvis() -> list[Component]:
    """Sacrum and the two ilia around the sacroiliac joints."""
    c = np.array
    comps: list[Component] = []
    comps += _bone(
        "sacrum",
        Ellipsoid(c([0.0, 15.0, -20.0]), c([42.0, 22.0, 55.0]), axis_rotation("x", 25.0)),
        Ellipsoid(c([0.0, 15.0, -20.0]), c([40.0, 20.0, 53.0]), axis_rotation("x", 25.0)),
    )
    for side in (-1.0, 1.0):
        rot = axis_rotation("z", side * 25.0)
        comps += _bone(
            f"ilium{'LR'[side > 0]}",
            Ellipsoid(c([side * 68.0, 25.0, 0.0]), c([10.0, 50.0, 60.0]), rot),
            Ellipsoid(c([side * 68.0, 25.0, 0.0]), c([8.0, 48.0, 58.0]), rot),
        )
    comps += vertebra("L5", 52.0)
    return comps

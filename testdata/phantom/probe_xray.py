"""The ultrasound probe itself in the fluoroscopy: housing and transducer stack, as boxes.

Clinical C-arms often see the probe that makes the ultrasound image: a plastic housing
standing on the skin and, just behind the transducer face, the dense stack of piezo
elements and their tungsten-loaded backing. The family draws it on request
(``family_case(..., probe_in_fluoro=True)``) from a random stream of its own, so that
every case drawn without it keeps its pixel data. See docs/phantom-family.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridfuse.registration.geometry import ConeBeamGeometry

from .ultrasound import ProbePlane

__all__ = ["ProbeHousing", "draw_housing", "face_points_mm", "probe_line_integrals"]

_TAG = 0x50524F42  # "PROB": this stream is separate from every stream of the family
#: Segments that approximate a curvilinear probe's element stack along its arc.
ARC_SEGMENTS = 16


@dataclass(frozen=True)
class ProbeHousing:
    """Sizes (mm) and attenuation (/mm) of the probe's housing and element stack."""

    margin_mm: float  # housing beyond each end of the face
    height_mm: float  # housing extent away from the skin
    thickness_mm: float  # housing extent across the scan plane (elevation)
    mu_housing: float  # plastic
    lens_mm: float  # face to the element stack (acoustic lens)
    stack_mm: float  # element stack and backing, along the beam axis of the probe
    stack_thickness_mm: float  # element stack across the scan plane
    mu_stack: float  # piezo ceramic and loaded backing

    def to_dict(self) -> dict:
        """JSON-ready values."""
        return {k: float(v) for k, v in self.__dict__.items()}


def draw_housing(seed: int) -> ProbeHousing:
    """The probe's sizes for one case, from a stream no other draw of the family uses."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _TAG]))
    u = rng.uniform
    return ProbeHousing(
        margin_mm=float(u(3.0, 10.0)),
        height_mm=float(u(40.0, 80.0)),
        thickness_mm=float(u(18.0, 32.0)),
        mu_housing=float(u(0.015, 0.025)),
        lens_mm=float(u(0.5, 2.5)),
        stack_mm=float(u(2.0, 5.0)),
        stack_thickness_mm=float(u(6.0, 12.0)),
        mu_stack=float(u(0.25, 0.5)),
    )


def face_points_mm(sector, width_mm: float, n: int = 2) -> np.ndarray:
    """In-plane (lateral, axial) mm of ``n`` points along the transducer face, end to end.

    A linear face is the region's top edge; a curvilinear one the arc of ``sector`` about
    its apex (the region's top edge holds the arc's ends).
    """
    if sector is None:
        lat = np.linspace(-width_mm / 2, width_mm / 2, n)
        return np.column_stack([lat, np.zeros(n)])
    a = np.radians(sector.half_angle_deg)
    ang = np.linspace(-a, a, n)
    apex_depth = -sector.radius_mm * np.cos(a)
    return np.column_stack(
        [sector.radius_mm * np.sin(ang), apex_depth + sector.radius_mm * np.cos(ang)]
    )


def _chord_box(origin, dirs, centre, axes, half) -> np.ndarray:
    """Length (mm) of each ray inside a box (centre, orthonormal axes as columns, halves)."""
    o = (origin - centre) @ axes
    v = dirs @ axes
    v = np.where(np.abs(v) < 1e-12, 1e-12, v)
    t1, t2 = (-half - o) / v, (half - o) / v
    near = np.minimum(t1, t2).max(axis=-1)
    far = np.maximum(t1, t2).min(axis=-1)
    return np.maximum(0.0, far - near)


def probe_line_integrals(
    geom: ConeBeamGeometry, plane: ProbePlane, sector, width_mm: float, h: ProbeHousing
) -> np.ndarray:
    """∫mu dl (rows, cols) of the housing and element stack of a probe on the skin."""
    rows, cols = geom.detector_shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    origin, dirs = geom.pixel_rays(np.column_stack([xx.ravel(), yy.ravel()]).astype(float))
    normal = np.cross(plane.lateral, plane.axial)
    axes = np.column_stack([plane.lateral, plane.axial, normal])
    ends = face_points_mm(sector, width_mm)
    half_face = abs(ends[1, 0] - ends[0, 0]) / 2
    # The housing stands on the face's ends (the skin line) and rises away from the body.
    top = plane.to_world(np.array([[0.0, ends[0, 1] - h.height_mm / 2]]))[0]
    half = np.array([half_face + h.margin_mm, h.height_mm / 2, h.thickness_mm / 2])
    total = h.mu_housing * _chord_box(origin, dirs, top, axes, half)
    # The fill between a convex face and the housing's bottom edge is housing too.
    pts = face_points_mm(sector, width_mm, ARC_SEGMENTS + 1)
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        along = (b - a) / np.linalg.norm(b - a)
        inward = np.array([-along[1], along[0]])  # away from the body (axial decreases)
        if inward[1] > 0:
            inward = -inward
        mid = (a + b) / 2 + inward * (h.lens_mm + h.stack_mm / 2)
        seg_axes = np.column_stack(
            [
                along[0] * plane.lateral + along[1] * plane.axial,
                inward[0] * plane.lateral + inward[1] * plane.axial,
                normal,
            ]
        )
        seg_half = np.array([np.linalg.norm(b - a) / 2, h.stack_mm / 2, h.stack_thickness_mm / 2])
        centre = plane.to_world(mid[None])[0]
        total += (h.mu_stack - h.mu_housing) * _chord_box(origin, dirs, centre, seg_axes, seg_half)
        if sector is not None:  # housing between the arc and the box's bottom edge
            depth = (a[1] + b[1]) / 2 - ends[0, 1]
            fill = plane.to_world(np.array([[(a[0] + b[0]) / 2, ends[0, 1] + depth / 2]]))[0]
            fill_half = np.array([abs(b[0] - a[0]) / 2, depth / 2, h.thickness_mm / 2])
            total += h.mu_housing * _chord_box(origin, dirs, fill, axes, fill_half)
    return total.reshape(rows, cols)


def fluoroscopy_with_probe(seed: int, *, max_detector_px: int = 320, probe: bool = True) -> dict:
    """One family seed's fluoroscopy alone (no files, no ultrasound), for fast tests.

    Returns the image in MONOCHROME2 sense (as the reader gives it), the exposed field,
    the isocentre mm per pixel, the transducer face (width, arc radius, moving pixel of
    its middle, ultrasound spacing), the true moving-to-fixed homography and, with the
    probe, the face in fixed pixels.
    """
    from hybridfuse.registration.geometry import plane_homography

    from . import family as fam
    from .ultrasound import ProbePose, image_plane

    p = fam.draw_params(seed, max_detector_px=max_detector_px)
    plane = fam._probe_plane(p)
    phantom, tip, _ = fam.build_phantom(p, plane)
    geom = fam.carm_geometry(p)
    exposed = fam._collimator(p).mask(tuple(p["detector_shape"]))
    extra = record = None
    if probe:
        extra, record = fam._probe_xray(p, plane, geom)
    stored = fam.render_fluoro(p, phantom, geom, tip, exposed, extra).astype(float)
    if p["photometric"] == "MONOCHROME1":
        stored = (2 ** p["fluoro_bits_stored"] - 1) - stored
    lay = fam._layout(p)
    sec = fam._sector(p)
    width, _ = fam._region_mm(p)
    ref_x, ref_y = lay.reference_px
    return {
        "params": p,
        "image": stored,
        "mask": exposed,
        "iso_mm": p["detector_spacing_mm"] * p["sod_mm"] / p["sid_mm"],
        "face_width_mm": width if sec is None else 2 * face_points_mm(sec, width)[1, 0],
        "face_radius_mm": None if sec is None else sec.radius_mm,
        "face_centre_xy": (ref_x, ref_y + fam._face_mm(p) / p["us_spacing_mm"]),
        "us_spacing_mm": (p["us_spacing_mm"], p["us_spacing_mm"]),
        "moving_to_fixed": plane_homography(geom, image_plane(lay, plane, ProbePose())),
        "probe": record,
    }

"""A randomised family of single-pair phantom cases: one seed, one fluoroscopy/ultrasound pair.

Each seed draws the appearance and geometry the way clinical images vary (probe type and
orientation, plane tilt, ultrasound gain/TGC/dynamic range/speckle, bit depth, needle,
beads, bones, X-ray dose, collimation, photometric interpretation, detector and C-arm
distances) and writes the case in the file format of the external validation family:
``fluoro.dcm``, ``us.dcm``, ``landmarks.csv`` and ``truth.json``. Every draw is listed in
``truth.json["params"]``. Tuning may look at :data:`TUNING_SEEDS` only; benchmarks report
on :data:`REPORT_SEEDS`, which no default is chosen on. See docs/phantom-family.md.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import io
import json
import os
from pathlib import Path

import numpy as np

from hybridfuse._safeio import atomic_directory
from hybridfuse.registration.geometry import (
    ConeBeamGeometry,
    ImagePlane,
    apply_homography,
    plane_homography,
    plane_obliquity_deg,
    rotation_from_axes,
)

from . import dicom as dw
from .anatomy import (
    MU_SOFT_TISSUE,
    Component,
    Ellipsoid,
    EllipticCylinder,
    Needle,
    Phantom,
    Tissue,
    _bone,
    axis_rotation,
)
from .ultrasound import (
    BModeRenderer,
    BModeSettings,
    ProbePlane,
    ProbePose,
    ScreenLayout,
    Sector,
    draw_screen,
    image_plane,
)
from .xray import Collimator, FluoroRenderer, RectangularCollimator

__all__ = ["REPORT_SEEDS", "TUNING_SEEDS", "draw_params", "family_case"]

#: Seeds that tuning (choosing defaults, thresholds, features) may look at.
TUNING_SEEDS = range(0, 100)
#: Seeds that only reports use; nothing is chosen by looking at them.
REPORT_SEEDS = range(1000, 1200)

GENERATOR = "hybridfuse.testdata.phantom.family/1"
_TAG = 0x46414D31  # separates this generator's random streams from the procedure's
NEEDLE_MODES = ("in-plane", "partly", "out-of-plane", "none")
#: The largest calibrated ultrasound region drawn (pixels), to bound rendering time.
MAX_REGION_PX = 300_000


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), _TAG, stream]))


def _r(value: float, digits: int = 4) -> float:
    """Round to significant digits so that DICOM DS and JSON store it exactly."""
    return float(f"{value:.{digits - 1}e}")


def draw_params(seed: int, *, edge_on: bool = False, max_detector_px: int | None = None) -> dict:
    """Every random choice of one case, JSON-ready; the same seed gives the same dict.

    ``edge_on`` tilts the plane 80-90 degrees (seen edge-on, which a registration must
    refuse); ``max_detector_px`` caps the detector size (small, fast cases for tests).
    """
    rng = _rng(seed, 0)
    p = {"seed": int(seed), "edge_on": bool(edge_on)}
    p.update(_draw_probe(rng))
    p.update(_draw_bmode(rng))
    p.update(_draw_anatomy(rng, p))
    p.update(_draw_carm(rng, edge_on, max_detector_px))
    return p


def _draw_probe(rng: np.random.Generator) -> dict:
    probe = "curvilinear" if rng.random() < 0.4 else "linear"
    if probe == "linear":
        spacing = _r(rng.uniform(0.08, 0.2), 3)
        width_mm, depth_mm = rng.uniform(30.0, 50.0), rng.uniform(35.0, 70.0)
        sector = None
    else:
        spacing = _r(rng.uniform(0.12, 0.3), 3)
        sector = [_r(rng.uniform(15.0, 60.0), 3), _r(rng.uniform(20.0, 37.0), 3)]
        sector.append(_r(rng.uniform(50.0, 110.0), 3))
        width_mm, depth_mm = Sector(*sector).box_mm()
    scale = max(1.0, np.sqrt(width_mm * depth_mm / spacing**2 / MAX_REGION_PX))
    spacing = _r(spacing * scale, 3)
    width, height = int(round(width_mm / spacing)), int(round(depth_mm / spacing))
    left, right = int(rng.integers(20, 160)), int(rng.integers(48, 160))
    top, bottom = int(rng.integers(40, 90)), int(rng.integers(6, 60))
    return {
        "probe": probe,
        "sector_radius_half_angle_depth": sector,
        "mirrored": bool(rng.random() < 0.5),
        "us_spacing_mm": spacing,
        "us_region_px": [left, top, width, height],
        "us_screen_px": [top + height + bottom, left + width + right],
    }


def _draw_bmode(rng: np.random.Generator) -> dict:
    bits = int(rng.choice([8, 8, 8, 12, 16]))
    return {
        "frequency_mhz": _r(rng.uniform(4.0, 12.0), 2),
        "psf_sigma_axial_mm": _r(rng.uniform(0.12, 0.35), 3),
        "psf_sigma_lateral_mm": _r(rng.uniform(0.3, 0.75), 3),
        "residual_attenuation_per_mm": _r(rng.uniform(0.002, 0.012), 3),
        "dynamic_range_db": _r(rng.uniform(40.0, 70.0), 3),
        "gain_median_grey": _r(rng.uniform(0.35, 0.65), 3),
        "tgc_db": [_r(v, 3) for v in rng.uniform(-5.0, 5.0, size=5)],
        "speckle_fresh_fraction": _r(rng.uniform(0.0, 0.5), 2),
        "us_bits_stored": bits,
        "us_jpeg": bool(bits == 8 and rng.random() < 0.5),
    }


def _draw_anatomy(rng: np.random.Generator, p: dict) -> dict:
    width_mm = p["us_region_px"][2] * p["us_spacing_mm"]
    depth_mm = p["us_region_px"][3] * p["us_spacing_mm"]
    fat = _r(rng.uniform(3.0, 15.0), 3)
    bones = []
    for _ in range(int(rng.integers(1, 4))):
        semi = rng.uniform([6.0, 3.0, 4.0], [20.0, 8.0, 20.0])
        bones.append(
            {
                "lateral_mm": _r(rng.uniform(-width_mm / 2 - 10, width_mm / 2 + 10), 3),
                "depth_mm": _r(rng.uniform(0.45, 0.9) * depth_mm + semi[1], 3),
                "offset_mm": _r(rng.uniform(-0.6, 0.6) * semi[0], 3),
                "semi_axes_mm": [_r(v, 3) for v in semi],
                "yaw_deg": _r(rng.uniform(0.0, 180.0), 3),
                "cortex_mm": _r(rng.uniform(1.0, 2.0), 2),
            }
        )
    inclusions = [
        {
            "center_mm": [_r(v, 3) for v in rng.uniform([-40, 10, -40], [40, 90, 40])],
            "radius_mm": _r(rng.uniform(10.0, 40.0), 3),
            "delta_mu_per_mm": _r(rng.uniform(-0.003, 0.003), 2),
        }
        for _ in range(int(rng.integers(0, 4)))
    ]
    return {
        "body_semi_axes_mm": [_r(rng.uniform(100.0, 170.0), 3), _r(rng.uniform(60.0, 110.0), 3)],
        "fat_mm": fat,
        "bones": bones,
        "inclusions": inclusions,
        "isocenter_in_plane_mm": [
            _r(rng.uniform(-8.0, 8.0), 3),
            _r(rng.uniform(0.35, 0.65) * depth_mm, 3),
        ],
        "isocenter_off_plane_mm": _r(rng.uniform(-15.0, 15.0), 3),
        "n_beads": int(rng.integers(0, 6)),
        "bead_seed": int(rng.integers(0, 2**31)),
        "needle": str(rng.choice(NEEDLE_MODES, p=[0.45, 0.25, 0.15, 0.15])),
        "needle_seed": int(rng.integers(0, 2**31)),
    }


def _draw_carm(rng: np.random.Generator, edge_on: bool, max_px: int | None) -> dict:
    cols = int(rng.choice([512, 640, 768, 1024]))
    rows = cols if rng.random() < 0.7 else int(cols * 3 // 4)
    field_mm = rng.uniform(200.0, 320.0)
    if max_px is not None and cols > max_px:
        rows, cols = int(rows * max_px // cols), int(max_px)
    sid = _r(rng.uniform(900.0, 1250.0), 5)
    tilt = rng.uniform(80.0, 90.0) if edge_on else rng.uniform(0.0, 25.0)
    photometric = "MONOCHROME1" if rng.random() < 0.5 else "MONOCHROME2"
    circular = bool(rng.random() < 0.5)
    return {
        "detector_shape": [rows, cols],
        "detector_spacing_mm": _r(field_mm / cols, 3),
        "sid_mm": sid,
        "sod_mm": _r(sid / rng.uniform(1.15, 1.7), 5),
        "tilt_deg": _r(tilt, 4),
        "tilt_azimuth_deg": _r(rng.uniform(0.0, 360.0), 4),
        "inplane_rotation_deg": _r(rng.uniform(0.0, 360.0), 4),
        "photons_per_pixel": _r(np.exp(rng.uniform(np.log(2e4), np.log(1e6))), 3),
        "photometric": photometric,
        "fluoro_bits_stored": int(rng.choice([8, 10, 12, 16])),
        "collimator": "circular" if circular else "rectangular",
        "collimator_fraction": [_r(v, 3) for v in rng.uniform(0.80, 0.98, size=4)],
        "kvp": _r(rng.uniform(65.0, 95.0), 3),
    }


# --- geometry -------------------------------------------------------------------------


def _probe_plane(p: dict) -> ProbePlane:
    """The scan plane in world mm: the isocentre (world origin) lies near its centre."""
    lat, dep = p["isocenter_in_plane_mm"]
    lateral = np.array([0.0, 0.0, -1.0 if p["mirrored"] else 1.0])
    axial = np.array([0.0, 1.0, 0.0])
    origin = -lat * lateral - dep * axial + np.array([p["isocenter_off_plane_mm"], 0.0, 0.0])
    return ProbePlane(origin_mm=origin, lateral=lateral, axial=axial)


def _sector(p: dict) -> Sector | None:
    sec = p["sector_radius_half_angle_depth"]
    return None if sec is None else Sector(*sec)


def _face_mm(p: dict) -> float:
    """Depth (mm below the region's top) of the convex face's centre, pressed into the skin."""
    sec = _sector(p)
    return 0.0 if sec is None else sec.radius_mm * (1 - np.cos(np.radians(sec.half_angle_deg)))


def _imaged(p: dict, xy: np.ndarray) -> np.ndarray:
    """Whether screen pixels (N, 2) lie in the imaged area (the region, or its sector)."""
    lay = _layout(p)
    xy = np.atleast_2d(xy)
    inside = (xy[:, 0] >= lay.x0) & (xy[:, 0] <= lay.x1) & (xy[:, 1] >= lay.y0)
    inside &= xy[:, 1] <= lay.y1
    sec = _sector(p)
    return inside if sec is None else inside & sec.contains(lay, xy)


def _layout(p: dict) -> ScreenLayout:
    left, top, width, height = p["us_region_px"]
    rows, cols = p["us_screen_px"]
    return ScreenLayout(rows, cols, left, top, width, height, p["us_spacing_mm"])


def carm_geometry(p: dict) -> ConeBeamGeometry:
    """The C-arm of a case: a lateral beam (facing the plane) tilted and turned about itself."""
    base = rotation_from_axes(np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0]))
    turn = axis_rotation("x", p["inplane_rotation_deg"])
    az = np.radians(p["tilt_azimuth_deg"])
    axis = np.array([0.0, np.cos(az), np.sin(az)])
    tilt = _axis_angle(axis, p["tilt_deg"])
    carm_axes = tilt @ turn @ base.T  # columns: detector u, v and the beam, in world
    return ConeBeamGeometry(
        sid_mm=p["sid_mm"],
        sod_mm=p["sod_mm"],
        detector_spacing_mm=(p["detector_spacing_mm"], p["detector_spacing_mm"]),
        detector_shape=tuple(p["detector_shape"]),
        world_to_carm=carm_axes.T,
    )


def _axis_angle(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Rotation matrix by ``degrees`` about the unit ``axis`` (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(degrees)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)


# --- anatomy --------------------------------------------------------------------------


def build_phantom(p: dict, plane: ProbePlane) -> tuple[Phantom, np.ndarray | None, dict]:
    """Body, bones, inclusions, beads and needle of a case; returns the needle tip too."""
    ax, by = p["body_semi_axes_mm"]
    # The skin is flat at the region's top: a convex probe presses its arc into it.
    skin = plane.origin_mm
    center = np.array([skin[0], skin[1] + by, 0.0])
    body = EllipticCylinder(center, np.array([ax, by]), 400.0)
    comps = [Component("body", body, MU_SOFT_TISSUE, Tissue.SOFT)]
    for i, inc in enumerate(p["inclusions"]):
        r = inc["radius_mm"]
        solid = Ellipsoid(center + np.array(inc["center_mm"]) - [0, by, 0], np.array([r, r, r]))
        comps.append(Component(f"inclusion{i}", solid, inc["delta_mu_per_mm"], None))
    for i, b in enumerate(p["bones"]):
        pos = plane.to_world(np.array([[b["lateral_mm"], b["depth_mm"]]]))[0]
        pos = pos + np.array([b["offset_mm"], 0.0, 0.0])
        semi = np.array(b["semi_axes_mm"])
        rot = axis_rotation("y", b["yaw_deg"])
        outer = Ellipsoid(pos, semi, rot)
        core = Ellipsoid(pos, np.maximum(semi - b["cortex_mm"], 0.5), rot)
        comps += _bone(f"bone{i}", outer, core)
    probe_free = Phantom(
        tuple(comps),
        np.zeros((0, 3)),
        1.0,
        Needle(np.zeros(3), np.array([0.0, 1.0, 0.0])),
        (float(center[0]), float(center[1])),
        (ax, by),
        p["fat_mm"],
    )
    needle, tip, needle_meta = _needle(p, plane, probe_free)
    beads, radii = _beads(p, plane, probe_free, needle, tip)
    phantom = Phantom(
        tuple(comps),
        beads,
        1.0,
        needle,
        probe_free.body_center_xy_mm,
        (ax, by),
        p["fat_mm"],
        bead_radii_mm=tuple(radii),
    )
    return phantom, tip, needle_meta


def _region_mm(p: dict) -> tuple[float, float]:
    return p["us_region_px"][2] * p["us_spacing_mm"], p["us_region_px"][3] * p["us_spacing_mm"]


def _needle(p: dict, plane: ProbePlane, probe_free: Phantom):
    """Needle hub and tip for the case's needle mode (None tip: no needle at all)."""
    rng = _rng(p["needle_seed"], 1)
    width, depth = _region_mm(p)
    face = _face_mm(p)
    sec = _sector(p)
    half = width / 2 if sec is None else sec.radius_mm * np.sin(np.radians(sec.half_angle_deg))
    entry_lat = rng.choice([-1.0, 1.0]) * (half + rng.uniform(3.0, 15.0))
    for _ in range(200):
        target = np.array([rng.uniform(-0.35, 0.35) * width, rng.uniform(0.0, 0.75 * depth)])
        target[1] = max(target[1], face + p["fat_mm"] + 8)
        if _imaged(p, _in_plane_px(p, target)).all():
            break
    entry = plane.to_world(np.array([[entry_lat, 0.0]]))[0]
    tip = plane.to_world(target[None])[0]
    normal = np.cross(plane.lateral, plane.axial)
    off = rng.uniform(1.5, 4.0)
    shift = rng.uniform(3.0, 6.0)
    mode = p["needle"]
    if mode == "partly":  # crosses the plane mid-shaft: only a short piece shows
        entry, tip = entry + off * normal, tip - off * normal
    elif mode == "out-of-plane":  # beside the plane: in the X-ray, not in the ultrasound
        entry, tip = entry + shift * normal, tip + shift * normal
    direction = (tip - entry) / np.linalg.norm(tip - entry)
    needle = Needle(hub_mm=entry - 15.0 * direction, direction=direction)
    meta = {"entry_mm": entry.tolist(), "tip_mm": tip.tolist()}
    return needle, (None if mode == "none" else tip), meta


def _beads(p: dict, plane: ProbePlane, probe_free: Phantom, needle: Needle, tip):
    """Bead centres in the plane, in soft tissue, clear of the needle and of each other."""
    rng = _rng(p["bead_seed"], 2)
    width, depth = _region_mm(p)
    beads, radii = [], []
    for _ in range(2000):
        if len(beads) == p["n_beads"]:
            break
        r = rng.uniform(0.5, 1.5)
        lat_dep = np.array([[rng.uniform(-width / 2 + 3, width / 2 - 3), 0.0]])
        lat_dep[0, 1] = rng.uniform(_face_mm(p) + p["fat_mm"] + 3.0, depth - 6.0)
        around = lat_dep[0] + (r + 2.0) * np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]])
        if not _imaged(p, np.array([_in_plane_px(p, a) for a in around])).all():
            continue
        pt = plane.to_world(lat_dep)[0]
        if tip is not None and _segment_distance(pt, needle.hub_mm, tip) < r + 4.0:
            continue
        if any(
            np.linalg.norm(pt - b) < 2 * (r + rb) + 5.0 for b, rb in zip(beads, radii, strict=True)
        ):
            continue
        if not _clear_scan_line(p, plane, probe_free, pt, r):
            continue
        beads.append(pt)
        radii.append(float(r))
    return np.array(beads).reshape(-1, 3), radii


def _clear_scan_line(p: dict, plane: ProbePlane, probe_free: Phantom, pt, r: float) -> bool:
    """Soft tissue only along the scan line from the probe to just past the bead.

    A bead in a bone's acoustic shadow would show in the X-ray only; no user could mark it.
    """
    sec = _sector(p)
    if sec is None:
        start = pt - (plane.from_world(pt[None])[0, 1] - _face_mm(p)) * plane.axial
    else:
        apex = plane.to_world(
            np.array([[0.0, -sec.radius_mm * np.cos(np.radians(sec.half_angle_deg))]])
        )[0]
        beam = (pt - apex) / np.linalg.norm(pt - apex)
        start = apex + sec.radius_mm * beam
    end = pt + (r + 1.5) * (pt - start) / np.linalg.norm(pt - start)
    line = start + np.outer(np.linspace(0.0, 1.0, 200), end - start)
    return bool(np.all(probe_free.tissue_labels(line) != Tissue.BONE))


def _in_plane_px(p: dict, lat_dep: np.ndarray) -> np.ndarray:
    """Screen pixel (x, y) of in-plane (lateral, depth) mm; lateral grows with x."""
    ref_x, ref_y = _layout(p).reference_px
    sp = p["us_spacing_mm"]
    return np.array([ref_x + lat_dep[0] / sp, ref_y + lat_dep[1] / sp])


def _segment_distance(pt: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = np.clip((pt - a) @ ab / (ab @ ab), 0.0, 1.0)
    return float(np.linalg.norm(pt - (a + t * ab)))


# --- rendering ------------------------------------------------------------------------


def render_ultrasound(p: dict, phantom: Phantom, plane: ProbePlane, tip) -> np.ndarray:
    """The scanner screen (rows, cols) as stored: 8-bit, or scaled to more stored bits."""
    rng = _rng(p["seed"], 3)
    lay = _layout(p)
    settings = BModeSettings(
        frequency_mhz=p["frequency_mhz"],
        psf_sigma_axial_mm=p["psf_sigma_axial_mm"],
        psf_sigma_lateral_mm=p["psf_sigma_lateral_mm"],
        residual_attenuation_per_mm=p["residual_attenuation_per_mm"],
        dynamic_range_db=p["dynamic_range_db"],
        speckle_decorrelation=p["speckle_fresh_fraction"],
    )
    width, depth = _region_mm(p)
    extent = (-width / 2 - 2, width / 2 + 2, -2.0, depth + 2)
    bmode = BModeRenderer(lay, plane, phantom, settings, rng, scatter_extent_mm=extent)
    sec = _sector(p)
    if sec is None:
        envelope = bmode.render_region(ProbePose(), tip, rng)
    else:
        envelope = bmode.render_sector(sec, tip, rng)
    depth = np.linspace(0.0, 1.0, lay.height)
    tgc_db = np.interp(depth, np.linspace(0.0, 1.0, len(p["tgc_db"])), p["tgc_db"])
    envelope *= (10.0 ** (tgc_db / 20.0))[:, None]
    # Gain as a sonographer sets it: the median echo at a chosen grey, not a fixed level.
    median = float(np.median(envelope[envelope > 0]))
    grey_db = (p["gain_median_grey"] - 1.0) * p["dynamic_range_db"]
    bmode.settings = dataclasses.replace(
        settings, reference_amplitude=median / 10 ** (grey_db / 20)
    )
    region = bmode.compress(envelope)
    banner = [
        f"FAMILY PHANTOM   {p['frequency_mhz']:.1f} MHz   "
        f"Depth {lay.height * lay.spacing_mm / 10:.1f} cm   DR {p['dynamic_range_db']:.0f}",
        f"Gain {100 * p['gain_median_grey']:.0f}   case {p['seed']}",
    ]
    screen = draw_screen(lay, region, banner, marker_right=p["mirrored"])
    bits = p["us_bits_stored"]
    if bits == 8:
        return screen
    return np.rint(screen.astype(float) * ((2**bits - 1) / 255.0)).astype(np.uint16)


def _collimator(p: dict):
    rows, cols = p["detector_shape"]
    f = p["collimator_fraction"]
    if p["collimator"] == "circular":
        return Collimator((cols // 2, rows // 2), 0.5 * f[0] * min(rows, cols))
    half_w, half_h = 0.5 * f[0] * cols, 0.5 * f[1] * rows
    return RectangularCollimator(
        int(cols / 2 - half_w),
        int(cols / 2 + half_w) - 1,
        int(rows / 2 - half_h),
        int(rows / 2 + half_h) - 1,
    )


def render_fluoro(
    p: dict, phantom: Phantom, geom: ConeBeamGeometry, tip, exposed, extra=None
) -> np.ndarray:
    """The stored fluoroscopy: log attenuation, windowed, in the case's bits and photometry.

    ``extra`` (rows, cols) is more attenuation (the probe) that the window does not see.
    """
    rng = _rng(p["seed"], 4)
    renderer = FluoroRenderer(geom, phantom)
    static = renderer.line_integrals(None)
    photons = p["photons_per_pixel"]
    integrals = renderer.line_integrals(tip)
    if extra is not None:
        integrals = integrals + extra
    counts = renderer.expose(integrals, photons, exposed, rng)
    # Automatic brightness: the window sits on the body, air beside it saturates.
    inside = static[exposed & (static > 1.0)]
    inside = inside if inside.size > 0.1 * exposed.sum() else static[exposed]
    lo = float(np.percentile(inside, 1.0)) - 0.2
    hi = float(np.percentile(inside, 99.5)) + 0.8
    atten = -np.log(np.maximum(counts, 0.5) / photons)
    value = np.clip((atten - lo) / (hi - lo), 0.0, 1.0)
    top = 2 ** p["fluoro_bits_stored"] - 1
    if p["photometric"] == "MONOCHROME1":  # dense is high, shown dark; no beam is black
        stored = np.where(exposed, value, 1.0)
    else:
        stored = np.where(exposed, 1.0 - value, 0.0)
    dtype = np.uint8 if top <= 255 else np.uint16
    return np.rint(stored * top).astype(dtype)


# --- truth and files ------------------------------------------------------------------


def _truth(p: dict, geom: ConeBeamGeometry, iplane: ImagePlane, phantom: Phantom) -> dict:
    """The true pixel mapping, the TRE grid and the validation family's keys."""
    lay = _layout(p)
    hom = plane_homography(geom, iplane)
    gx = np.linspace(lay.x0 + 0.05 * lay.width, lay.x1 - 0.05 * lay.width, 9)
    gy = np.linspace(lay.y0 + 0.05 * lay.height, lay.y1 - 0.05 * lay.height, 9)
    grid = np.array([[x, y] for y in gy for x in gx])
    grid = grid[_imaged(p, grid)]
    normal = iplane.normal
    tilt = np.degrees(np.arccos(min(1.0, abs(float(normal @ geom.beam_direction)))))
    return {
        "case": p["seed"],
        "generator": GENERATOR,
        "moving_to_fixed_pixel": hom.tolist(),
        "grid_moving": grid.tolist(),
        "grid_fixed": apply_homography(hom, grid).tolist(),
        "mm_per_fixed_pixel_at_isocenter": p["detector_spacing_mm"] * p["sod_mm"] / p["sid_mm"],
        "SID": p["sid_mm"],
        "SOD": p["sod_mm"],
        "imager_pixel_spacing": p["detector_spacing_mm"],
        "us_pixel_spacing": p["us_spacing_mm"],
        "us_region": [lay.x0, lay.y0, lay.x1, lay.y1],
        "plane_tilt_deg": float(tilt),
        "plane_obliquity_deg": plane_obliquity_deg(geom, iplane, lay.corners()),
        "bead_centers_mm": phantom.bead_centers_mm.tolist(),
        "bead_radii_mm": phantom.bead_radii(),
        "world_to_carm": geom.world_to_carm.tolist(),
        "image_plane": {
            "origin_mm": iplane.origin_mm.tolist(),
            "axis_x": iplane.axis_x.tolist(),
            "axis_y": iplane.axis_y.tolist(),
            "spacing_mm_row_col": list(iplane.spacing_mm),
        },
    }


def _landmarks(p, geom, iplane, phantom, tip, exposed) -> list[dict]:
    """Beads (and the needle tip when it lies in the plane) seen in both images, exact."""
    named = [(f"bead{i}", c) for i, c in enumerate(phantom.bead_centers_mm)]
    if p["needle"] == "in-plane":
        named.append(("needle_tip", np.asarray(tip)))
    rows = []
    for name, point in named:
        mov = iplane.world_to_pixel(point[None])[0][0]
        fix = geom.project(point[None])[0]
        in_us = bool(_imaged(p, mov)[0])
        r, c = int(round(fix[1])), int(round(fix[0]))
        in_fl = 0 <= r < exposed.shape[0] and 0 <= c < exposed.shape[1] and exposed[r, c]
        if in_us and in_fl:
            rows.append({"name": name, "moving_xy": mov.tolist(), "fixed_xy": fix.tolist()})
    return rows


def _landmarks_csv(rows: list[dict], seed: int) -> str:
    """``name,moving_x,moving_y,fixed_x,fixed_y`` with 0.5 px noise on each coordinate."""
    rng = _rng(seed, 5)
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["name", "moving_x", "moving_y", "fixed_x", "fixed_y"])
    for row in rows:
        noisy = np.concatenate([row["moving_xy"], row["fixed_xy"]]) + rng.normal(0, 0.5, 4)
        out.writerow([row["name"], *(f"{v:.2f}" for v in noisy)])
    return buf.getvalue()


def family_case(
    seed: int,
    out_dir: str | os.PathLike,
    *,
    edge_on: bool = False,
    max_detector_px: int | None = None,
    overwrite: bool = False,
    probe_in_fluoro: bool = False,
) -> Path:
    """Write one family case (fluoro.dcm, us.dcm, landmarks.csv, truth.json) into ``out_dir``.

    The folder is built under a temporary name and renamed when complete, so an
    interrupted run never leaves a case that looks finished.

    Parameters
    ----------
    seed : int
        Seed of every choice; the same seed gives the same pixel data.
    out_dir : path-like
        Folder to create.
    edge_on : bool
        Draw a plane seen edge-on (80-90 degrees of tilt) instead of one facing the beam.
    max_detector_px : int, optional
        Cap on the detector's columns (small cases for tests).
    overwrite : bool
        Replace an existing ``out_dir`` this project wrote.
    probe_in_fluoro : bool
        Draw the probe (housing and element stack) in the fluoroscopy, from a random
        stream of its own: without it every seed's files are unchanged.

    Returns
    -------
    Path
        ``out_dir``.
    """
    p = draw_params(seed, edge_on=edge_on, max_detector_px=max_detector_px)
    plane = _probe_plane(p)
    phantom, tip, needle_meta = build_phantom(p, plane)
    geom = carm_geometry(p)
    exposed = _collimator(p).mask(tuple(p["detector_shape"]))
    iplane = image_plane(_layout(p), plane, ProbePose())
    screen = render_ultrasound(p, phantom, plane, tip)
    probe = _probe_xray(p, plane, geom) if probe_in_fluoro else None
    fluoro = render_fluoro(p, phantom, geom, tip, exposed, None if probe is None else probe[0])
    truth = _truth(p, geom, iplane, phantom)
    if probe is not None:
        truth["probe_in_fluoro"] = True
        truth["probe_xray"] = probe[1]
    truth["needle_mm"] = needle_meta if p["needle"] != "none" else None
    rows = _landmarks(p, geom, iplane, phantom, tip, exposed)
    truth["landmarks_exact"] = rows
    truth["params"] = p
    out_dir = Path(out_dir)
    with atomic_directory(out_dir, overwrite=overwrite, kind="synth") as tmp:
        _write_dicoms(tmp, p, screen, fluoro)
        (tmp / "landmarks.csv").write_text(_landmarks_csv(rows, seed))
        (tmp / "truth.json").write_text(json.dumps(truth, indent=1))
    return out_dir


def _probe_xray(p: dict, plane: ProbePlane, geom: ConeBeamGeometry):
    """The probe's line integrals and its truth record (sizes, face ends in fixed pixels)."""
    from .probe_xray import draw_housing, face_points_mm, probe_line_integrals

    housing = draw_housing(p["seed"])
    width, _ = _region_mm(p)
    integrals = probe_line_integrals(geom, plane, _sector(p), width, housing)
    face = plane.to_world(face_points_mm(_sector(p), width, 9))
    record = {"housing": housing.to_dict(), "face_fixed_px": geom.project(face).tolist()}
    return integrals, record


def _write_dicoms(out: Path, p: dict, screen: np.ndarray, fluoro: np.ndarray) -> None:
    """Both images as one study: the XA and the US share the study, patient and date."""
    start = _dt.datetime(2026, 2, 1, 9, 0, 0) + _dt.timedelta(minutes=int(p["seed"] % 600))
    ctx = dw.StudyContext(
        seed=p["seed"], procedure="family", start=start, patient_name="PHANTOM^FAMILY"
    )
    _write_fluoro(out / "fluoro.dcm", ctx, p, fluoro)
    lay = _layout(p)
    region = {
        "x0": lay.x0,
        "y0": lay.y0,
        "x1": lay.x1,
        "y1": lay.y1,
        "spacing_mm": lay.spacing_mm,
        "reference_x": lay.reference_px[0],
        "reference_y": lay.reference_px[1],
        "frequency_khz": int(p["frequency_mhz"] * 1000),
    }
    dw.write_us(
        out / "us.dcm",
        ctx,
        screen[None],
        np.array([0.0]),
        start,
        region,
        "us",
        2,
        f"{p['probe'][0].upper()}{p['frequency_mhz']:.0f}",
        compress=p["us_jpeg"],
        bits_stored=p["us_bits_stored"],
    )


def _write_fluoro(path: Path, ctx, p: dict, fluoro: np.ndarray) -> None:
    rows, cols = p["detector_shape"]
    col = _collimator(p)
    circular = isinstance(col, Collimator)
    info = dw.XAFrameInfo(
        kvp=p["kvp"],
        tube_current_ma=4.0,
        pulse_width_ms=8.0,
        pulse_rate_per_s=7.5,
        dap_dgy_cm2=1.0,
        sid_mm=p["sid_mm"],
        sod_mm=p["sod_mm"],
        imager_spacing_mm=(p["detector_spacing_mm"], p["detector_spacing_mm"]),
        primary_angle_deg=90.0,
        secondary_angle_deg=0.0,
        collimator_center_px_xy=col.center_px_xy if circular else (cols // 2, rows // 2),
        collimator_radius_px=col.radius_px if circular else 0.0,
    )
    edges = None if circular else (col.left_px, col.right_px, col.upper_px, col.lower_px)
    dw.write_xa(
        path,
        ctx,
        fluoro[None],
        np.array([0.0]),
        ctx.start,
        info,
        "fluoro",
        1,
        photometric=p["photometric"],
        bits_stored=p["fluoro_bits_stored"],
        shutter_edges_px=edges,
    )

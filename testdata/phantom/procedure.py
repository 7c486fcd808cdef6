"""A complete synthetic hybrid procedure: anatomy, timeline, images, dose SR, truth.

The timeline of every preset:

1. a lateral *scout* fluoro run (stored, no needle yet);
2. a *fluoroscopy-guided phase* (first level): short fluoro taps, not stored; it fixes
   the procedure's own fluoro duty cycle and dose rate;
3. an *ultrasound-guided needle advance* (US cine, fluoro off) from insertion to the
   target;
4. a lateral *confirmation* run with the probe still on (stored; each frame has a
   simultaneous US frame: the well-posed registration pairs);
5. an AP *confirmation* run, in which the sagittal US plane is seen edge-on (stored:
   the ill-posed pairs);
6. a lateral digital spot acquisition (not stored).

The dose ultrasound saved is known by construction: had phase 3 been guided by
fluoroscopy, it would have run at phase 2's duty cycle and dose rate. ``truth.json``
records that figure with the assumptions behind it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hybridfuse._safeio import atomic_directory
from hybridfuse.fusion.coregister import TRUTH_SCHEMA
from hybridfuse.registration.geometry import (
    ConeBeamGeometry,
    apply_homography,
    plane_homography,
    plane_obliquity_deg,
    rotation_from_axes,
)

from . import dicom as dw
from .anatomy import (
    MU_SOFT_TISSUE,
    Component,
    EllipticCylinder,
    Needle,
    Phantom,
    Tissue,
    pelvis,
    vertebra,
)
from .ultrasound import (
    BModeRenderer,
    BModeSettings,
    ProbePlane,
    ProbePose,
    ScreenLayout,
    draw_screen,
    image_plane,
)
from .xray import Collimator, FluoroRenderer

GENERATOR_VERSION = "1"
EDGE_ON_DEG = 10.0


@dataclass(frozen=True)
class Preset:
    """Anatomy, probe, imaging and dose settings of one procedure type."""

    name: str
    description: str
    region: str
    anatomy: Callable[[], list[Component]]
    body_center_xy_mm: tuple[float, float]
    body_semi_axes_xy_mm: tuple[float, float]
    fat_mm: float
    target_column_xz_mm: tuple[float, float]  # the target lies 2 mm above bone here
    target_lateral_mm: float  # target's offset along the array from the probe centre
    needle_entry_lateral_mm: float  # entry point on the skin, along the array
    layout: ScreenLayout
    frequency_mhz: float
    photons_lateral: float
    photons_ap: float
    # Dose rates of each view (Gy·cm² per second of beam-on) and technique.
    dap_rate: dict = field(default_factory=dict)
    kvp: dict = field(default_factory=dict)
    ma: dict = field(default_factory=dict)
    spot_dap_gy_cm2: float = 0.12


def _lumbar() -> list[Component]:
    return [comp for i, z in enumerate((35.0, 0.0, -35.0)) for comp in vertebra(f"L{3 + i}", z)]


def _cervical() -> list[Component]:
    return [
        comp
        for i, z in enumerate((36.0, 18.0, 0.0, -18.0, -36.0))
        for comp in vertebra(f"C{3 + i}", z, scale=0.6)
    ]


PRESETS: dict[str, Preset] = {
    "lumbar-mbb": Preset(
        name="lumbar-mbb",
        description="lumbar medial branch block (L4, junction of SAP and transverse process)",
        region="lumbar",
        anatomy=_lumbar,
        body_center_xy_mm=(0.0, 50.0),
        body_semi_axes_xy_mm=(150.0, 105.0),
        fat_mm=9.0,
        target_column_xz_mm=(18.0, 4.0),
        target_lateral_mm=-4.0,
        needle_entry_lateral_mm=30.0,
        layout=ScreenLayout(spacing_mm=0.15, width=320, height=400),
        frequency_mhz=5.0,
        photons_lateral=4.0e5,
        photons_ap=1.2e5,
        dap_rate={"lateral": 0.075, "ap": 0.030, "oblique": 0.045},
        kvp={"lateral": 88.0, "ap": 76.0, "oblique": 80.0},
        ma={"lateral": 3.2, "ap": 2.0, "oblique": 2.5},
        spot_dap_gy_cm2=0.12,
    ),
    "lumbar-facet": Preset(
        name="lumbar-facet",
        description="lumbar facet joint injection (L4/L5 zygapophyseal joint)",
        region="lumbar",
        anatomy=_lumbar,
        body_center_xy_mm=(0.0, 50.0),
        body_semi_axes_xy_mm=(150.0, 105.0),
        fat_mm=11.0,
        target_column_xz_mm=(16.0, -17.5),
        target_lateral_mm=3.0,
        needle_entry_lateral_mm=-30.0,
        layout=ScreenLayout(spacing_mm=0.15, width=320, height=400),
        frequency_mhz=5.0,
        photons_lateral=4.0e5,
        photons_ap=1.2e5,
        dap_rate={"lateral": 0.080, "ap": 0.032, "oblique": 0.048},
        kvp={"lateral": 90.0, "ap": 77.0, "oblique": 82.0},
        ma={"lateral": 3.4, "ap": 2.1, "oblique": 2.6},
        spot_dap_gy_cm2=0.14,
    ),
    "cervical-mbb": Preset(
        name="cervical-mbb",
        description="cervical medial branch block (C5 articular pillar)",
        region="cervical",
        anatomy=_cervical,
        body_center_xy_mm=(0.0, 20.0),
        body_semi_axes_xy_mm=(65.0, 60.0),
        fat_mm=4.0,
        target_column_xz_mm=(10.0, 0.0),
        target_lateral_mm=-3.0,
        needle_entry_lateral_mm=24.0,
        layout=ScreenLayout(spacing_mm=0.10, width=380, height=400),
        frequency_mhz=10.0,
        photons_lateral=6.0e4,
        photons_ap=6.0e4,
        dap_rate={"lateral": 0.025, "ap": 0.015, "oblique": 0.020},
        kvp={"lateral": 70.0, "ap": 68.0, "oblique": 70.0},
        ma={"lateral": 1.6, "ap": 1.4, "oblique": 1.5},
        spot_dap_gy_cm2=0.05,
    ),
    "si-joint": Preset(
        name="si-joint",
        description="sacroiliac joint injection (posterior-inferior joint line)",
        region="pelvis",
        anatomy=pelvis,
        body_center_xy_mm=(0.0, 40.0),
        body_semi_axes_xy_mm=(170.0, 100.0),
        fat_mm=14.0,
        target_column_xz_mm=(37.0, -30.0),
        target_lateral_mm=0.0,
        needle_entry_lateral_mm=-30.0,
        layout=ScreenLayout(spacing_mm=0.17, width=320, height=400),
        frequency_mhz=4.0,
        photons_lateral=1.0e6,
        photons_ap=2.5e5,
        dap_rate={"lateral": 0.15, "ap": 0.06, "oblique": 0.09},
        kvp={"lateral": 96.0, "ap": 82.0, "oblique": 88.0},
        ma={"lateral": 4.0, "ap": 2.6, "oblique": 3.2},
        spot_dap_gy_cm2=0.30,
    ),
}

PULSE_RATE = 7.5
PULSE_WIDTH_MS = 8.0
SID_MM = 1000.0
DETECTOR_SHAPE = (512, 512)
DETECTOR_SPACING_MM = 0.37
COLLIMATOR_RADIUS_PX = 240.0
RP_OFFSET_MM = 150.0  # reference point 15 cm from the isocentre towards the source

# Timeline (seconds from the start of the procedure).
SCOUT = {"start": 0.0, "duration": 4.0, "stored": [1.0, 3.0]}
GUIDED_PHASE = (20.0, 80.0)
GUIDED_TAPS = [(22.0, 2.5), (37.0, 2.5), (52.0, 2.5), (67.0, 2.5)]
PROBE_ON = 90.0
NEEDLE_IN = 100.0
NEEDLE_AT_TARGET = 165.0
CONFIRM_LAT = {"start": 172.0, "duration": 4.0, "stored": [172.5, 173.5, 174.5, 175.5]}
CONFIRM_AP = {"start": 182.0, "duration": 3.0, "stored": [183.0, 184.0]}
SPOT = 190.0
US_ADVANCE_FRAMES = [92.0, 105.0, 120.0, 135.0, 150.0, 165.0]


def _find_bone_surface_y(phantom: Phantom, x: float, z: float) -> float:
    ys = np.arange(-120.0, 120.0, 0.05)
    pts = np.column_stack([np.full_like(ys, x), ys, np.full_like(ys, z)])
    bone = phantom.tissue_labels(pts) == Tissue.BONE
    if not bone.any():
        raise RuntimeError(f"no bone under the target column x={x}, z={z}")
    return float(ys[np.argmax(bone)])


def _jitter(rng: np.random.Generator, value: float, rel: float) -> float:
    return float(value * (1.0 + rel * rng.uniform(-1.0, 1.0)))


def _sig(value: float, digits: int = 4) -> float:
    """Round to significant digits so that DICOM DS stores it exactly."""
    return float(f"{value:.{digits - 1}e}")


def _carm(view: str, sod_mm: float, rng: np.random.Generator) -> ConeBeamGeometry:
    if view == "lateral":
        u, v = np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])  # beam -x
    elif view == "ap":
        u, v = np.array([-1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0])  # beam -y
    else:
        raise ValueError(view)
    base = rotation_from_axes(u, v)
    # Re-positioning of the C-arm between runs: a couple of degrees about each axis.
    angles = np.radians(rng.uniform(-2.0, 2.0, size=3))
    rot = np.eye(3)
    for axis, ang in zip(range(3), angles, strict=True):
        c, s = np.cos(ang), np.sin(ang)
        r = np.eye(3)
        i, j = [k for k in range(3) if k != axis]
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rot = r @ rot
    return ConeBeamGeometry(
        sid_mm=SID_MM,
        sod_mm=sod_mm,
        detector_spacing_mm=(DETECTOR_SPACING_MM, DETECTOR_SPACING_MM),
        detector_shape=DETECTOR_SHAPE,
        world_to_carm=rot @ base,
    )


def _field_area_at_rp_cm2(geometry: ConeBeamGeometry) -> float:
    radius_det_mm = COLLIMATOR_RADIUS_PX * geometry.detector_spacing_mm[1]
    radius_rp_mm = radius_det_mm * (geometry.sod_mm - RP_OFFSET_MM) / geometry.sid_mm
    return float(np.pi * (radius_rp_mm / 10.0) ** 2)


def _place_target_probe_needle(preset: Preset, probe_free: Phantom, rng: np.random.Generator):
    """One random draw of target, probe plane and needle entry; None if no clear path."""
    tx, tz = preset.target_column_xz_mm
    tx += rng.uniform(-1.0, 1.0)
    tz += rng.uniform(-1.5, 1.5)
    target = np.array([tx, _find_bone_surface_y(probe_free, tx, tz) - 2.0, tz])
    # Probe: paramedian long axis (array along z), tilted obliquely (yaw about the
    # axial direction) and slightly rolled; the plane contains the target.
    yaw = float(rng.choice([-1.0, 1.0]) * rng.uniform(6.0, 14.0))
    roll = float(rng.uniform(-4.0, 4.0))
    cyaw, syaw = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
    lateral = np.array([syaw, 0.0, cyaw])
    axial = np.array([0.0, 1.0, 0.0])
    c, s = np.cos(np.radians(roll)), np.sin(np.radians(roll))
    axial = c * axial + s * np.cross(lateral, axial)
    axial /= np.linalg.norm(axial)
    lat_t = preset.target_lateral_mm + rng.uniform(-2.0, 2.0)
    # Slide along the axial direction until the transducer centre sits on the skin.
    depth = 0.0
    origin = target
    for _ in range(50):
        origin = target - lat_t * lateral - depth * axial
        err = float(probe_free.depth_below_skin(origin[None])[0])
        if abs(err) < 1e-6:
            break
        depth += err / axial[1]
    plane = ProbePlane(origin_mm=origin, lateral=lateral, axial=axial)
    # Needle in plane from the skin beyond one end of the probe to the target, along a
    # path that stays in soft tissue: the preset's side first, shallow to steep, then
    # the other side.
    side = np.sign(preset.needle_entry_lateral_mm)
    offsets = np.linspace(abs(preset.needle_entry_lateral_mm) + 8.0, 16.0, 9)
    for entry_lat in [*(side * offsets), *(-side * offsets)]:
        entry = plane.to_world(np.array([[lat_t + entry_lat, 0.0]]))[0]
        seg = entry + np.outer(np.linspace(0.0, 1.0, 400), target - entry)
        if np.all(probe_free.tissue_labels(seg[:-8]) == Tissue.SOFT):
            return target, plane, entry, yaw, roll
    return None


def build_phantom(preset: Preset, rng: np.random.Generator) -> tuple[Phantom, ProbePlane, dict]:
    """Anatomy, beads, probe plane and needle trajectory for one seed."""
    cx, cy = preset.body_center_xy_mm
    ax, by = preset.body_semi_axes_xy_mm
    body = Component(
        "body",
        EllipticCylinder(np.array([cx, cy, 0.0]), np.array([ax, by]), 250.0),
        MU_SOFT_TISSUE,
        Tissue.SOFT,
    )
    anatomy = [body, *preset.anatomy()]
    probe_free = Phantom(
        tuple(anatomy),
        np.zeros((0, 3)),
        1.0,
        Needle(np.zeros(3), np.array([0.0, 1.0, 0.0])),
        preset.body_center_xy_mm,
        preset.body_semi_axes_xy_mm,
        preset.fat_mm,
    )
    for _attempt in range(40):
        found = _place_target_probe_needle(preset, probe_free, rng)
        if found is not None:
            break
    else:
        raise RuntimeError(
            f"{preset.name}: no probe pose with a soft-tissue needle path to the target"
        )
    target, plane, entry, yaw, roll = found
    target_in_plane = plane.from_world(target[None])[0]
    direction = target - entry
    insert_len = float(np.linalg.norm(direction))
    direction /= insert_len
    hub = entry - 15.0 * direction
    needle = Needle(hub_mm=hub, direction=direction)

    # Beads: in plane, in soft tissue, clear of the needle and of each other.
    lay = preset.layout
    half_w = lay.width * lay.spacing_mm / 2.0
    beads: list[np.ndarray] = []
    tries = 0
    while len(beads) < 4:
        tries += 1
        if tries > 5000:
            raise RuntimeError("could not place the beads")
        lat = rng.uniform(-half_w + 4.0, half_w - 4.0)
        dep = rng.uniform(preset.fat_mm + 4.0, target_in_plane[1] - 10.0)
        pt = plane.to_world(np.array([[lat, dep]]))[0]
        t = np.clip((pt - hub) @ direction, 0.0, insert_len + 15.0)
        if np.linalg.norm(pt - (hub + t * direction)) < 5.0:
            continue
        if any(np.linalg.norm(pt - b) < 7.0 for b in beads):
            continue
        column = pt + np.outer(np.linspace(-3.0, 3.0, 13), plane.axial)
        if np.any(probe_free.tissue_labels(column) != Tissue.SOFT):
            continue
        beads.append(pt)
    phantom = Phantom(
        components=tuple(anatomy),
        bead_centers_mm=np.array(beads),
        bead_radius_mm=1.0,
        needle=needle,
        body_center_xy_mm=preset.body_center_xy_mm,
        body_semi_axes_xy_mm=preset.body_semi_axes_xy_mm,
        fat_thickness_mm=preset.fat_mm,
    )
    meta = {
        "target_mm": target.tolist(),
        "needle_entry_mm": entry.tolist(),
        "needle_insertion_length_mm": insert_len + 15.0,
        "probe_yaw_deg": yaw,
        "probe_roll_deg": roll,
    }
    return phantom, plane, meta


def _probe_pose(t: float, phases: np.ndarray) -> ProbePose:
    return ProbePose(
        shift_lateral_mm=1.2 * np.sin(2 * np.pi * t / 97.0 + phases[0]),
        shift_axial_mm=0.3 * np.sin(2 * np.pi * t / 53.0 + phases[1]),
        rotation_deg=1.5 * np.sin(2 * np.pi * t / 71.0 + phases[2]),
    )


def _inserted_length(t: float, full: float) -> float | None:
    if t < NEEDLE_IN:
        return None
    frac = min((t - NEEDLE_IN) / (NEEDLE_AT_TARGET - NEEDLE_IN), 1.0)
    # Brisk through the skin and fat, slower near the target.
    return float(full * (1.0 - (1.0 - frac) ** 1.6) if frac < 1.0 else full)


def generate_procedure(
    out_dir: str | os.PathLike,
    seed: int = 0,
    procedure: str = "lumbar-mbb",
    *,
    compress_us: bool = True,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Write a synthetic hybrid procedure with its ground truth into ``out_dir``.

    The folder is built under a temporary name beside ``out_dir`` and renamed when
    complete, so an interrupted run never leaves a case that looks finished.

    Parameters
    ----------
    out_dir : path-like
        Folder to create.
    seed : int
        Seed of every random choice; the same seed gives identical files.
    procedure : str
        One of :data:`PRESETS`.
    compress_us : bool
        Store the ultrasound cine as JPEG baseline (as scanners usually do).
    overwrite : bool
        Replace an existing ``out_dir``.
    progress : callable, optional
        Called with a short message as each part is written.

    Returns
    -------
    dict
        The truth record (also written as ``truth.json``).
    """
    if procedure not in PRESETS:
        raise ValueError(
            f"unknown procedure {procedure!r}; choose one of {', '.join(sorted(PRESETS))}"
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")
    say = progress or (lambda _msg: None)
    # Replaces only a folder hybridfuse wrote, never through a link; removed on failure.
    with atomic_directory(out_dir, overwrite=overwrite, kind="synth") as tmp:
        truth = _generate_into(tmp, seed, PRESETS[procedure], compress_us, say)
    return truth


def _generate_into(out: Path, seed: int, preset: Preset, compress_us: bool, say) -> dict:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x48594246]))
    phantom, plane, meta = build_phantom(preset, rng)
    start = _dt.datetime(2026, 1, 15, 9, 0, 0) + _dt.timedelta(minutes=int(seed % 480))
    ctx = dw.StudyContext(seed=seed, procedure=preset.name, start=start)
    sod = float(np.round(rng.uniform(720.0, 780.0), 1))
    drift = rng.uniform(0.0, 2 * np.pi, size=3)
    full_len = meta["needle_insertion_length_mm"]

    def tip_at(t: float) -> np.ndarray | None:
        length = _inserted_length(t, full_len)
        return None if length is None else phantom.needle.tip_at(length)

    # DICOM stores the shutter centre as whole pixels, so the circle is centred on one.
    collimator = Collimator((DETECTOR_SHAPE[1] // 2, DETECTOR_SHAPE[0] // 2), COLLIMATOR_RADIUS_PX)
    exposed = collimator.mask(DETECTOR_SHAPE)
    events: list[dw.IrradiationEvent] = []

    def add_event(
        name: str,
        t0: float,
        duration: float,
        view: str,
        geometry,
        kind: str,
        pulses: int | None = None,
    ) -> dw.IrradiationEvent:
        area = _field_area_at_rp_cm2(geometry)
        if kind == "fluoroscopy":
            n_pulses = int(round(duration * PULSE_RATE))
            dap_gy_cm2 = _jitter(rng, preset.dap_rate[view], 0.06) * duration
        else:
            n_pulses = pulses or 1
            dap_gy_cm2 = _jitter(rng, preset.spot_dap_gy_cm2, 0.05) * n_pulses
        dap_gy_m2 = _sig(dap_gy_cm2 / 1e4)
        ka_r_gy = _sig(dap_gy_m2 * 1e4 / area)  # Gy·cm² / cm² = Gy (free-in-air at the RP)
        angles = {"lateral": (90.0, 0.0), "ap": (0.0, 0.0), "oblique": (25.0, 0.0)}[view]
        ev = dw.IrradiationEvent(
            uid=ctx.uid(f"event/{name}"),
            start=start + _dt.timedelta(seconds=t0),
            event_type=kind,
            protocol=name,
            dap_gy_m2=dap_gy_m2,
            dose_rp_gy=ka_r_gy,
            kvp=_sig(_jitter(rng, preset.kvp[view], 0.02), 3),
            tube_current_ma=_sig(_jitter(rng, preset.ma[view], 0.05), 2),
            pulse_rate_per_s=PULSE_RATE if kind == "fluoroscopy" else None,
            pulse_width_ms=PULSE_WIDTH_MS,
            number_of_pulses=n_pulses,
            duration_s=float(
                duration if kind == "fluoroscopy" else n_pulses * PULSE_WIDTH_MS / 1e3
            ),
            primary_angle_deg=angles[0],
            secondary_angle_deg=angles[1],
            sid_mm=geometry.sid_mm,
            sod_mm=geometry.sod_mm,
            field_area_at_rp_cm2=_sig(area, 4),
        )
        events.append(ev)
        return ev

    # --- Ultrasound renderer and the US frame times --------------------------------
    lay = preset.layout
    settings = BModeSettings(frequency_mhz=preset.frequency_mhz)
    bmode = BModeRenderer(lay, plane, phantom, settings, rng)
    us_times = sorted(set(US_ADVANCE_FRAMES + CONFIRM_LAT["stored"] + CONFIRM_AP["stored"]))
    us_t0 = PROBE_ON

    # --- Fluoroscopy runs -------------------------------------------------------------
    runs_spec = [
        ("run01_scout_lateral", "lateral", SCOUT),
        ("run02_confirm_lateral", "lateral", CONFIRM_LAT),
        ("run03_confirm_ap", "ap", CONFIRM_AP),
    ]
    fluoro_truth = []
    fluoro_geometries = {}
    for series_number, (name, view, spec) in enumerate(runs_spec, start=1):
        say(f"fluoro {name}")
        geom = _carm(view, sod, rng)
        fluoro_geometries[name] = geom
        renderer = FluoroRenderer(geom, phantom)
        static = renderer.line_integrals(None)
        # Window on the body (not the air above the skin), with headroom for the needle.
        inside = static[exposed & (static > 1.0)]
        window = (float(np.percentile(inside, 1.0)) - 0.2, float(np.percentile(inside, 99.5)) + 0.8)
        photons = preset.photons_lateral if view == "lateral" else preset.photons_ap
        frames = []
        tips = []
        for t in spec["stored"]:
            tip = tip_at(t)
            tips.append(None if tip is None else tip.tolist())
            counts = renderer.expose(renderer.line_integrals(tip), photons, exposed, rng)
            frames.append(renderer.display(counts, photons, window, exposed))
        event = add_event(
            f"Fluoro {view} ({name.split('_', 1)[1]})",
            spec["start"],
            spec["duration"],
            view,
            geom,
            "fluoroscopy",
        )
        run_start = start + _dt.timedelta(seconds=spec["stored"][0])
        rel_times = np.asarray(spec["stored"]) - spec["stored"][0]
        info = dw.XAFrameInfo(
            kvp=event.kvp,
            tube_current_ma=event.tube_current_ma,
            pulse_width_ms=PULSE_WIDTH_MS,
            pulse_rate_per_s=PULSE_RATE,
            dap_dgy_cm2=event.dap_gy_m2 * 1e5,
            sid_mm=geom.sid_mm,
            sod_mm=geom.sod_mm,
            imager_spacing_mm=geom.detector_spacing_mm,
            primary_angle_deg=event.primary_angle_deg,
            secondary_angle_deg=event.secondary_angle_deg,
            collimator_center_px_xy=collimator.center_px_xy,
            collimator_radius_px=collimator.radius_px,
        )
        filename = f"fluoro_{name}.dcm"
        sop = dw.write_xa(
            out / filename, ctx, np.stack(frames), rel_times, run_start, info, name, series_number
        )
        fluoro_truth.append(
            {
                "file": filename,
                "sop_instance_uid": sop,
                "view": view,
                "geometry": geom.to_dict(),
                "frame_times_s": list(spec["stored"]),
                "needle_tip_mm": tips,
                "photons_per_pixel_unattenuated": photons,
                "display": {
                    "photometric": "MONOCHROME1",
                    "value": "255 * clip((-ln(counts/N0) - lo) / (hi - lo), 0, 1)",
                    "window_lo_hi": list(window),
                },
                "collimator": {
                    "center_px_xy": list(collimator.center_px_xy),
                    "radius_px": collimator.radius_px,
                },
                "irradiation_event_uid": event.uid,
            }
        )

    # --- Fluoro-guided phase and the spot acquisition: events only ---------------------
    oblique_geom = _carm("ap", sod, rng)
    guided_events = [
        add_event(
            f"Fluoro oblique (level 1 guidance, tap {i + 1})",
            t0,
            dur,
            "oblique",
            oblique_geom,
            "fluoroscopy",
        )
        for i, (t0, dur) in enumerate(GUIDED_TAPS)
    ]
    spot = add_event(
        "Digital spot lateral",
        SPOT,
        0.0,
        "lateral",
        fluoro_geometries["run02_confirm_lateral"],
        "acquisition",
        pulses=1,
    )

    # --- Ultrasound cine --------------------------------------------------------------
    say("ultrasound cine")
    us_frames = []
    us_truth_frames = []
    for k, t in enumerate(us_times):
        pose = _probe_pose(t, drift)
        tip = tip_at(t)
        env = bmode.render_region(pose, tip, rng)
        region = bmode.compress(env)
        banner = [
            f"HYBRIDFUSE SYNTHETIC   {preset.frequency_mhz:.1f} MHz   "
            f"Depth {lay.height * lay.spacing_mm / 10:.1f} cm   DR {settings.dynamic_range_db:.0f}",
            f"{preset.name}   seed {seed}   frame {k + 1}/{len(us_times)}   t +{t - us_t0:.1f} s",
        ]
        us_frames.append(draw_screen(lay, region, banner))
        iplane = image_plane(lay, plane, pose)
        us_truth_frames.append(
            {
                "time_s": t,
                "probe_pose": pose.to_dict(),
                "image_plane": {
                    "origin_mm": iplane.origin_mm.tolist(),
                    "axis_x": iplane.axis_x.tolist(),
                    "axis_y": iplane.axis_y.tolist(),
                    "spacing_mm_row_col": list(iplane.spacing_mm),
                },
                "needle_tip_mm": None if tip is None else tip.tolist(),
            }
        )
    region_info = {
        "x0": lay.x0,
        "y0": lay.y0,
        "x1": lay.x1,
        "y1": lay.y1,
        "spacing_mm": lay.spacing_mm,
        "reference_x": lay.reference_px[0],
        "reference_y": lay.reference_px[1],
        "frequency_khz": int(preset.frequency_mhz * 1000),
    }
    us_start = start + _dt.timedelta(seconds=us_times[0])
    us_sop = dw.write_us(
        out / "us_clip.dcm",
        ctx,
        np.stack(us_frames),
        np.asarray(us_times) - us_times[0],
        us_start,
        region_info,
        "us_clip",
        10,
        f"L{preset.frequency_mhz:.0f}",
        compress=compress_us,
    )

    # --- Dose report ------------------------------------------------------------------
    say("dose report")
    end = start + _dt.timedelta(seconds=SPOT + 5.0)
    rdsr_sop, totals = dw.write_rdsr(out / "rdsr.dcm", ctx, events, end, 20)

    # --- Registration pairs and landmarks ------------------------------------------------
    pairs = []
    (out / "landmarks").mkdir()
    for run in fluoro_truth:
        geom = ConeBeamGeometry.from_dict(run["geometry"])
        for fi, t in enumerate(run["frame_times_s"]):
            if not us_times[0] <= t <= us_times[-1]:
                continue
            ui = int(np.argmin(np.abs(np.asarray(us_times) - t)))
            pose = _probe_pose(us_times[ui], drift)
            iplane = image_plane(lay, plane, pose)
            hom = plane_homography(geom, iplane)
            obliquity = plane_obliquity_deg(geom, iplane, lay.corners())
            names = ["needle_tip"] + [f"bead{i}" for i in range(len(phantom.bead_centers_mm))]
            pts3d = [tip_at(us_times[ui])] + list(phantom.bead_centers_mm)
            landmarks = []
            for lm_name, p in zip(names, pts3d, strict=True):
                if p is None:
                    continue
                mov, off = iplane.world_to_pixel(p[None])
                fix = geom.project(p[None])
                inside_us = lay.x0 <= mov[0, 0] <= lay.x1 and lay.y0 <= mov[0, 1] <= lay.y1
                inside_fl = bool(
                    collimator.mask(DETECTOR_SHAPE)[
                        int(np.clip(round(fix[0, 1]), 0, DETECTOR_SHAPE[0] - 1)),
                        int(np.clip(round(fix[0, 0]), 0, DETECTOR_SHAPE[1] - 1)),
                    ]
                )
                landmarks.append(
                    {
                        "name": lm_name,
                        "world_mm": list(map(float, p)),
                        "moving_xy": mov[0].tolist(),
                        "fixed_xy": fix[0].tolist(),
                        "distance_from_us_plane_mm": float(off[0]),
                        "in_us_region": bool(inside_us),
                        "in_fluoro_field": inside_fl,
                    }
                )
            pair_id = f"{run['file'][7:-4]}_f{fi:02d}_us{ui:02d}"
            csv_name = f"landmarks/{pair_id}.csv"
            with open(out / csv_name, "w", encoding="utf-8") as fh:
                fh.write("name,moving_x,moving_y,fixed_x,fixed_y\n")
                for lm in landmarks:
                    if lm["in_us_region"] and lm["in_fluoro_field"]:
                        fh.write(
                            f"{lm['name']},{lm['moving_xy'][0]:.3f},{lm['moving_xy'][1]:.3f},"
                            f"{lm['fixed_xy'][0]:.3f},{lm['fixed_xy'][1]:.3f}\n"
                        )
            # Sanity of the construction itself: the homography carries the plane's
            # landmarks onto their projections.
            moved = apply_homography(hom, np.array([lm["moving_xy"] for lm in landmarks]))
            fixed = np.array([lm["fixed_xy"] for lm in landmarks])
            if not np.allclose(moved, fixed, atol=1e-6):
                raise RuntimeError("internal: plane homography disagrees with projection")
            pairs.append(
                {
                    "id": pair_id,
                    "fluoro_file": run["file"],
                    "fluoro_frame": fi,
                    "us_file": "us_clip.dcm",
                    "us_frame": ui,
                    "time_difference_s": float(us_times[ui] - t),
                    "moving_to_fixed_pixel": hom.tolist(),
                    "obliquity_deg": obliquity,
                    "edge_on": obliquity < EDGE_ON_DEG,
                    "landmarks_csv": csv_name,
                    "landmarks": landmarks,
                }
            )

    # --- Dose saved by construction --------------------------------------------------------
    guided_time = sum(e.duration_s for e in guided_events)
    guided_len = GUIDED_PHASE[1] - GUIDED_PHASE[0]
    duty = guided_time / guided_len
    dap_rate = sum(e.dap_gy_m2 for e in guided_events) * 1e4 / guided_time
    kar_rate = sum(e.dose_rp_gy for e in guided_events) * 1e3 / guided_time
    us_interval = NEEDLE_AT_TARGET - NEEDLE_IN
    saved_time = duty * us_interval
    saved = {
        "method": "within-procedure counterfactual",
        "us_guided_interval_s": [NEEDLE_IN, NEEDLE_AT_TARGET],
        "fluoro_guided_phase_s": list(GUIDED_PHASE),
        "observed_duty_cycle": duty,
        "observed_dap_rate_gy_cm2_per_s": dap_rate,
        "observed_ka_r_rate_mgy_per_s": kar_rate,
        "pulse_rate_per_s": PULSE_RATE,
        "fluoro_time_s": saved_time,
        "pulses": saved_time * PULSE_RATE,
        "dap_gy_cm2": saved_time * dap_rate,
        "ka_r_mgy": saved_time * kar_rate,
        "assumptions": [
            "Without ultrasound, the needle advance (insertion to target) would have been "
            "guided by intermittent fluoroscopy at the duty cycle of this procedure's own "
            "fluoroscopy-guided phase (beam-on time / phase duration).",
            "Each second of that fluoroscopy would have delivered the mean DAP and Dose (RP) "
            "per beam-on second of the fluoroscopy-guided phase, at its pulse rate.",
            "Scout, confirmation and spot exposures are needed with or without ultrasound.",
        ],
    }
    delivered = {
        "dap_total_gy_cm2": totals["dap_total_gy_m2"] * 1e4,
        "fluoro_dap_gy_cm2": totals["fluoro_dap_total_gy_m2"] * 1e4,
        "acquisition_dap_gy_cm2": totals["acquisition_dap_total_gy_m2"] * 1e4,
        "ka_r_total_mgy": totals["dose_rp_total_gy"] * 1e3,
        "fluoro_time_s": totals["total_fluoro_time_s"],
        "acquisition_time_s": totals["total_acquisition_time_s"],
        "n_events": len(events),
        "n_fluoro_events": sum(e.event_type == "fluoroscopy" for e in events),
        "n_acquisition_events": sum(e.event_type != "fluoroscopy" for e in events),
        "n_planes": 1,
        "reference_point": dw.RP_DEFINITION,
    }
    truth = {
        "schema": TRUTH_SCHEMA,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "procedure": preset.name,
        "description": preset.description,
        "region": preset.region,
        "procedure_start": start.isoformat(),
        "phantom_frame": "mm; x = patient left, y = posterior to anterior, z = caudal to "
        "cranial; isocentre at the origin",
        "pixel_convention": "(x, y) = (column, row), 0-based, pixel centres at integers",
        "files": {
            "fluoro": [r["file"] for r in fluoro_truth],
            "ultrasound": ["us_clip.dcm"],
            "rdsr": "rdsr.dcm",
        },
        "anatomy": {
            **meta,
            "n_components": len(phantom.components),
            "body_center_xy_mm": list(preset.body_center_xy_mm),
            "body_semi_axes_xy_mm": list(preset.body_semi_axes_xy_mm),
            "fat_thickness_mm": preset.fat_mm,
        },
        "beads": {
            "centers_mm": phantom.bead_centers_mm.tolist(),
            "radius_mm": phantom.bead_radius_mm,
            "material": "steel",
        },
        "needle": {
            "hub_mm": phantom.needle.hub_mm.tolist(),
            "direction": phantom.needle.direction.tolist(),
            "radius_mm": phantom.needle.radius_mm,
            "inserted_at_s": NEEDLE_IN,
            "at_target_s": NEEDLE_AT_TARGET,
        },
        "fluoro_runs": fluoro_truth,
        "ultrasound": {
            "file": "us_clip.dcm",
            "sop_instance_uid": us_sop,
            "frame_times_s": us_times,
            "layout": {
                "rows": lay.rows,
                "cols": lay.cols,
                "region_x0_y0_x1_y1": [lay.x0, lay.y0, lay.x1, lay.y1],
                "spacing_mm": lay.spacing_mm,
                "reference_px_xy": list(lay.reference_px),
            },
            "probe_plane": {
                "origin_mm": plane.origin_mm.tolist(),
                "lateral": plane.lateral.tolist(),
                "axial": plane.axial.tolist(),
            },
            "settings": settings.__dict__,
            "frames": us_truth_frames,
        },
        "pairs": pairs,
        "timeline_s": {
            "scout_lateral": [SCOUT["start"], SCOUT["start"] + SCOUT["duration"]],
            "fluoro_guided_phase": list(GUIDED_PHASE),
            "probe_on": PROBE_ON,
            "needle_inserted": NEEDLE_IN,
            "needle_at_target": NEEDLE_AT_TARGET,
            "confirm_lateral": [
                CONFIRM_LAT["start"],
                CONFIRM_LAT["start"] + CONFIRM_LAT["duration"],
            ],
            "confirm_ap": [CONFIRM_AP["start"], CONFIRM_AP["start"] + CONFIRM_AP["duration"]],
            "spot_acquisition": SPOT,
        },
        "dose": {
            "rdsr_file": "rdsr.dcm",
            "rdsr_sop_instance_uid": rdsr_sop,
            "rdsr_totals_as_written": totals,
            "delivered": delivered,
            "events": [
                {
                    "uid": e.uid,
                    "start_s": (e.start - start).total_seconds(),
                    "type": e.event_type,
                    "protocol": e.protocol,
                    "dap_gy_cm2": e.dap_gy_m2 * 1e4,
                    "ka_r_mgy": e.dose_rp_gy * 1e3,
                    "duration_s": e.duration_s,
                    "pulses": e.number_of_pulses,
                }
                for e in sorted(events, key=lambda e: e.start)
            ],
            "spot_event_uid": spot.uid,
            "saved": saved,
        },
    }
    with open(out / "truth.json", "w", encoding="utf-8") as fh:
        json.dump(truth, fh, indent=1)
    return truth


def load_truth(case_dir: str | os.PathLike) -> dict:
    """Read ``truth.json`` of a synthetic case."""
    path = Path(case_dir) / "truth.json"
    with open(path, encoding="utf-8") as fh:
        truth = json.load(fh)
    if truth.get("schema") != TRUTH_SCHEMA:
        raise ValueError(f"{path}: schema {truth.get('schema')!r}, expected {TRUTH_SCHEMA!r}")
    return truth

"""A clip in which the probe slides along the skin and turns in its plane.

The procedure's own cine barely moves the probe (about a millimetre and a degree), so a
tracker that never moves scores well on it. Here the probe slides ``slide_mm`` along its
array and turns ``turn_deg`` in the image plane over the clip, on a smooth (cosine) ramp,
while a lateral fluoroscopy run of the same anatomy records a frame per ultrasound
frame. Everything is returned in memory with the truth of every frame; nothing written
by :func:`generate_procedure` changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridfuse.registration.geometry import plane_homography

from .procedure import (
    COLLIMATOR_RADIUS_PX,
    DETECTOR_SHAPE,
    PRESETS,
    _carm,
    build_phantom,
)
from .ultrasound import (
    BModeRenderer,
    BModeSettings,
    ProbePose,
    ScreenLayout,
    draw_screen,
    image_plane,
)
from .xray import Collimator, FluoroRenderer

__all__ = ["MovingProbeClip", "moving_probe_clip"]


@dataclass(frozen=True)
class MovingProbeClip:
    """Frame pairs (fluoroscopy i with ultrasound i) and the truth of each.

    Images are float32 in MONOCHROME2 sense, as :meth:`Image.gray` gives them; pixels
    (x, y) = (column, row), 0-based.
    """

    fixed_frames: list[np.ndarray]
    moving_frames: list[np.ndarray]
    fixed_mask: np.ndarray
    moving_mask: np.ndarray
    #: Moving→fixed pixel homography of each frame.
    truths: list[np.ndarray]
    poses: list[ProbePose]
    #: Fluoroscopy pixel size at the isocentre plane (mm), for TRE in mm.
    fixed_mm_per_px: float
    #: Calibrated ultrasound pixel size (mm).
    moving_mm_per_px: float

    @property
    def slide_mm(self) -> float:
        """How far the probe's face travels over the clip (mm)."""
        a, b = self.poses[0], self.poses[-1]
        return float(np.hypot(b.shift_lateral_mm - a.shift_lateral_mm, b.shift_axial_mm))

    @property
    def turn_deg(self) -> float:
        """How far the probe turns in its plane over the clip (degrees)."""
        return float(abs(self.poses[-1].rotation_deg - self.poses[0].rotation_deg))


def _pose(frac: float, slide_mm: float, turn_deg: float) -> ProbePose:
    """Pose at ``frac`` (0..1) of the clip: a cosine ramp, eased at both ends as a hand."""
    s = 0.5 - 0.5 * np.cos(np.pi * frac)
    return ProbePose(
        shift_lateral_mm=float(slide_mm * (s - 0.5)),
        shift_axial_mm=float(0.3 * np.sin(2 * np.pi * frac)),
        rotation_deg=float(turn_deg * (s - 0.5)),
    )


def _jumped(pose: ProbePose, jump_mm: float, jump_deg: float) -> ProbePose:
    """``pose`` moved ``jump_mm`` along the array and turned ``jump_deg`` in plane."""
    return ProbePose(
        shift_lateral_mm=pose.shift_lateral_mm + jump_mm,
        shift_axial_mm=pose.shift_axial_mm,
        rotation_deg=pose.rotation_deg + jump_deg,
    )


def moving_probe_clip(
    seed: int = 0,
    procedure: str = "lumbar-mbb",
    *,
    n_frames: int = 16,
    slide_mm: float = 18.0,
    turn_deg: float = 12.0,
    jump_at: int | None = None,
    jump_mm: float = 0.0,
    jump_deg: float = 0.0,
    off_skin: tuple[int, ...] = (),
    fluoro_drift_mm: tuple[float, float] = (0.0, 0.0),
) -> MovingProbeClip:
    """A clip of ``n_frames`` pairs over which the probe slides and turns (same seed, same clip).

    For a tracker that must notice it lost the probe: from frame ``jump_at`` on the probe
    is ``jump_mm`` further along its array and turned ``jump_deg`` more (a jump between
    two frames, beyond any tracker's capture range); the frames in ``off_skin`` show what
    a probe lifted off the skin shows (no echoes, only the scanner's noise), their truth
    the pose the probe would have had. ``fluoro_drift_mm`` (x, y; mm at the isocentre):
    the anatomy in fluoroscopy frame k is shifted k times that on the detector (a patient
    creeping on the table), and its truth with it; the collimator, fixed to the detector,
    stays where it is, so ``fixed_mask`` fits every frame. Without these, the clip is what
    it always was.

    The needle rests at its target; each fluoroscopy frame is a new exposure (its own
    quantum noise) of the same lateral view. The ultrasound is one B-mode panorama of the
    whole plane swept by the probe, rendered once and sampled at each frame's pixels,
    so its speckle is tissue-fixed; a fifth of each frame's speckle is fresh. Rendering
    every frame anew cost 0.7 s a frame; the price is that acoustic shadows and depth
    attenuation follow the clip's middle pose rather than each frame's scan lines.
    """
    preset = PRESETS[procedure]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x434C4950]))
    phantom, plane, meta = build_phantom(preset, rng)
    tip = phantom.needle.tip_at(meta["needle_insertion_length_mm"])  # at the target
    geom = _carm("lateral", float(np.round(rng.uniform(720.0, 780.0), 1)), rng)
    integrals = _lateral_integrals((seed, procedure), geom, phantom, tip)
    fixed, exposed = _fluoro_frames(integrals, preset, n_frames, rng)
    lay = preset.layout
    poses = [_pose(k / max(n_frames - 1, 1), slide_mm, turn_deg) for k in range(n_frames)]
    if jump_at is not None:
        poses = poses[:jump_at] + [_jumped(p, jump_mm, jump_deg) for p in poses[jump_at:]]
    # The panorama covers the jump either way (a jump of 0 leaves the clip as it was).
    swept_mm = slide_mm + 2.0 * abs(jump_mm) if jump_at is not None else slide_mm
    sample, compress = _panorama(lay, plane, phantom, tip, preset, swept_mm, rng)
    moving = _ultrasound_frames(lay, poses, (sample, compress), off_skin, rng)
    moving_mask = np.zeros((lay.rows, lay.cols), bool)
    moving_mask[lay.y0 : lay.y1 + 1, lay.x0 : lay.x1 + 1] = True
    mm_per_px = float(geom.detector_spacing_mm[0] * geom.sod_mm / geom.sid_mm)
    truths = [plane_homography(geom, image_plane(lay, plane, pose)) for pose in poses]
    if any(fluoro_drift_mm):
        step_px = np.asarray(fluoro_drift_mm, float) / mm_per_px
        fixed, truths = _drifted(fixed, truths, step_px, exposed)
    return MovingProbeClip(
        fixed, moving, exposed, moving_mask, truths, poses, mm_per_px, float(lay.spacing_mm)
    )


def _drifted(frames, truths, step_px, exposed):
    """Frame k's anatomy shifted k × ``step_px`` (x, y) in ``exposed``, its truth with it.

    The collimator is fixed to the detector: only what lies inside it moves. The anatomy
    shifted in across the field's edge is the field's own, extended outward (nearest
    exposed pixel), not the collimator's dark.
    """
    from scipy.ndimage import distance_transform_edt, shift

    _, (iy, ix) = distance_transform_edt(~exposed, return_indices=True)
    out_frames, out_truths = [], []
    for k, (frame, truth) in enumerate(zip(frames, truths, strict=True)):
        dx, dy = k * step_px
        anatomy = shift(frame[iy, ix], (dy, dx), order=1, mode="nearest")
        out_frames.append(np.where(exposed, anatomy, frame).astype(np.float32))
        move = np.eye(3)
        move[:2, 2] = (dx, dy)
        out_truths.append(move @ truth)
    return out_frames, out_truths


def _ultrasound_frames(lay, poses, panorama, off_skin, rng) -> list[np.ndarray]:
    """One screen per pose, sampled from the ``panorama`` (sampler, compression).

    A fifth of each frame's speckle is fresh; a frame in ``off_skin`` shows only noise.
    """
    sample, compress = panorama
    moving = []
    for k, pose in enumerate(poses):
        lat_ax = _in_plane_mm(lay, pose)
        envelope = sample(lat_ax).reshape(lay.height, lay.width)
        fresh = np.abs(
            rng.standard_normal(envelope.shape) + 1j * rng.standard_normal(envelope.shape)
        )
        if k in off_skin:  # no contact: receive noise at the level of weak tissue echoes
            envelope = 0.7 * np.median(envelope) * fresh
        else:
            envelope = envelope * (0.8 + 0.2 * fresh / np.sqrt(np.pi / 2))
        moving.append(draw_screen(lay, compress(envelope), []).astype(np.float32))
    return moving


def _in_plane_mm(lay, pose: ProbePose) -> np.ndarray:
    """(lateral, axial) mm in the probe plane of each region pixel, as :func:`image_plane`."""
    c, s = np.cos(np.radians(pose.rotation_deg)), np.sin(np.radians(pose.rotation_deg))
    ref_x, ref_y = lay.reference_px
    xy = lay.region_pixels()
    u, v = (xy[:, 0] - ref_x) * lay.spacing_mm, (xy[:, 1] - ref_y) * lay.spacing_mm
    return np.column_stack(
        [pose.shift_lateral_mm + c * u - s * v, pose.shift_axial_mm + s * u + c * v]
    )


#: (seed, procedure) -> the lateral view's line integrals (read-only), newest last.
_TRACED: dict[tuple[int, str], np.ndarray] = {}


def _lateral_integrals(key, geom, phantom, tip) -> np.ndarray:
    """∫mu dl of the clip's lateral view, traced once per process for each ``key``.

    The view follows from the seed and procedure alone, and tracing draws no random
    numbers; it is most of a clip's X-ray time: several clips of one seed (tests, the
    tracking benchmark) share it.
    """
    if key not in _TRACED:
        integrals = FluoroRenderer(geom, phantom).line_integrals(tip)
        integrals.setflags(write=False)
        _TRACED[key] = integrals
        while len(_TRACED) > 4:  # a few seeds' worth (8 MB each)
            del _TRACED[next(iter(_TRACED))]
    return _TRACED[key]


def _fluoro_frames(integrals, preset, n_frames, rng):
    """``n_frames`` exposures of one lateral view (MONOCHROME2 sense) and the exposed field."""
    collimator = Collimator((DETECTOR_SHAPE[1] // 2, DETECTOR_SHAPE[0] // 2), COLLIMATOR_RADIUS_PX)
    exposed = collimator.mask(DETECTOR_SHAPE)
    inside = integrals[exposed & (integrals > 1.0)]
    window = (float(np.percentile(inside, 1.0)) - 0.2, float(np.percentile(inside, 99.5)) + 0.8)
    photons = preset.photons_lateral
    frames = []
    for _ in range(n_frames):
        shown = FluoroRenderer.display(
            FluoroRenderer.expose(integrals, photons, exposed, rng), photons, window, exposed
        )
        frames.append(255.0 - shown.astype(np.float32))  # MONOCHROME1 read as MONOCHROME2
    return frames, exposed


#: Extra depth (mm) the panorama covers above the transducer face and below the image,
#: for the corners of a turned probe.
_PANORAMA_MARGIN_MM = 6.0


def _panorama(lay, plane, phantom, tip, preset, slide_mm, rng):
    """B-mode of the plane swept by the probe: a sampler of (lat, ax) mm and its compression."""
    from scipy.ndimage import map_coordinates

    d = lay.spacing_mm
    margin = int(np.ceil(_PANORAMA_MARGIN_MM / d))
    width = lay.width + int(np.ceil(slide_mm / d)) + 2 * margin
    wide = ScreenLayout(
        rows=lay.height + 2 * margin + 2,
        cols=width + 2,
        x0=1,
        y0=1,
        width=width,
        height=lay.height + 2 * margin,
        spacing_mm=d,
    )
    lifted = ProbePose(shift_axial_mm=-margin * d)  # the face sits margin rows down
    renderer = BModeRenderer(
        wide, plane, phantom, BModeSettings(frequency_mhz=preset.frequency_mhz), rng
    )
    envelope = renderer.render_region(lifted, tip, rng)
    ref_x = (wide.width - 1) / 2.0

    def sample(lat_ax):
        cols = lat_ax[:, 0] / d + ref_x
        rows = (lat_ax[:, 1] + margin * d) / d
        return map_coordinates(envelope, [rows, cols], order=1, mode="nearest")

    return sample, renderer.compress

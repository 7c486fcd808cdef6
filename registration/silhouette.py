"""The ultrasound probe's silhouette in the fluoroscopy: where the transducer face lies.

A probe on the skin shows in the X-ray as its housing and, just behind the face, the dense
stack of piezo elements and backing: a bar as long as the face (straight for a linear
probe, an arc about the apex for a curvilinear one), denser than the air beyond its ends
and than the housing behind it, with the body on its other side. The face is the
ultrasound image's top edge, and its width is known from the calibration, so a bar of that
width at the calibrated magnification fixes where the image's top edge lies, its
direction and the side the image extends to (the body's). What it leaves open, the
handedness (the probe marker's side), :func:`placements` returns both of. The detector
returns None rather than a guess: a bar of the wrong length, uneven, cut by the field's
edge, not on the body's edge, or matched twice elsewhere. See docs/registration-method.md,
"The probe's silhouette".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Face", "Silhouette", "detect_silhouette", "placements"]

#: Working pixel of the search (mm at the isocentre): fine enough for a 2-6 mm stack.
WORK_MM = 0.9
#: Angle step of the search (degrees); the best poses are refined to a quarter of it.
ANGLE_STEP_DEG = 4.0
#: Half thickness of the bar's core (mm): thinner than any element stack.
CORE_HALF_MM = 0.9
#: Zones beside the bar: a gap, then this depth (mm).
GAP_MM, ZONE_MM = 1.5, 6.0
#: Least density step of the bar over its ends, the housing behind it and of the body over
#: the housing, as a fraction of the field's 1-99 % density range.
MIN_CONTRAST = 0.10
#: Measured face width over the calibrated one: a plane tilted 35 degrees about an axis
#: across the face shortens it to 0.82; the plane off the isocentre changes it by a few %.
WIDTH_RATIO = (0.78, 1.12)
#: Largest spread (10-90 %) of the density along the bar, relative to its contrast.
MAX_UNEVEN = 0.6
#: A second bar that passes every check and is not the first: no answer (ambiguous). Poses
#: closer (mm, or half the face) and less turned (degrees) than this are one bar.
_SAME_MM, _SAME_DEG = 6.0, 30.0
#: Search poses this close (mm, and 6 degrees) are measured once.
_NEAR_MM = 3.0


@dataclass(frozen=True)
class Face:
    """The transducer face, from the ultrasound calibration (mm; moving pixels)."""

    width_mm: float  # between its ends
    radius_mm: float | None  # of the arc about the apex; None: straight
    centre_xy: tuple[float, float]  # moving px of the face's middle
    spacing_mm: tuple[float, float]  # moving (row, col) pixel spacing


@dataclass(frozen=True)
class Silhouette:
    """A found probe face in the fluoroscopy (fixed pixels)."""

    centre_xy: np.ndarray  # the face's middle
    axis_xy: np.ndarray  # unit, along the face
    body_xy: np.ndarray  # unit, towards the body (the image's depth)
    width_mm: float  # measured, at the isocentre scale
    expected_width_mm: float
    contrast: float  # weakest of the steps, in units of the field's density range
    ends_xy: np.ndarray  # (2, 2) the face's ends

    def to_dict(self) -> dict:
        """JSON-ready record for ``transform.json``."""
        return {
            "face_ends_fixed_px": np.round(self.ends_xy, 2).tolist(),
            "face_centre_fixed_px": np.round(self.centre_xy, 2).tolist(),
            "body_direction": np.round(self.body_xy, 4).tolist(),
            "width_mm": round(self.width_mm, 2),
            "expected_width_mm": round(self.expected_width_mm, 2),
            "contrast": round(self.contrast, 3),
        }


def _density(img: np.ndarray, mask: np.ndarray, dense_bright: bool) -> np.ndarray:
    """Density in units of the field's 1-99 % range (dense high); outside the field: 0."""
    d = np.asarray(img, float) if dense_bright else -np.asarray(img, float)
    lo, hi = np.percentile(d[mask], [1.0, 99.0])
    out = (d - lo) / max(hi - lo, 1e-9)
    out[~mask] = 0.0
    return out


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    r, c = (a.shape[0] // k) * k, (a.shape[1] // k) * k
    return a[:r, :c].reshape(r // k, k, c // k, k).mean(axis=(1, 3))


def _zones(face_px: float, radius_px: float | None, theta: float, px_mm: float) -> list:
    """Kernels (bar, left end, right end, behind, body) as (dy, dx, weight) arrays."""
    half = face_px / 2
    reach = int(np.ceil(half * 1.2 + (GAP_MM + 2 * ZONE_MM) / px_mm)) + 2
    yy, xx = np.mgrid[-reach : reach + 1, -reach : reach + 1].astype(float)
    c, s = np.cos(theta), np.sin(theta)
    u = c * xx + s * yy  # along the face
    v = -s * xx + c * yy  # towards the body
    if radius_px is None:
        arc = np.zeros_like(u)
    else:
        arc = np.sqrt(np.maximum(radius_px**2 - np.minimum(u * u, half * half), 0)) - radius_px
    w = v - arc
    core, gap, zone = CORE_HALF_MM / px_mm, GAP_MM / px_mm, ZONE_MM / px_mm
    inner = np.abs(u) <= 0.8 * half
    end_lo, end_hi = half * WIDTH_RATIO[1] + gap, half * WIDTH_RATIO[1] + gap + zone
    zones = [
        inner & (np.abs(w) <= core),
        (u <= -end_lo) & (u >= -end_hi) & (np.abs(w) <= core),
        (u >= end_lo) & (u <= end_hi) & (np.abs(w) <= core),
        inner & (w <= -core - gap) & (w >= -core - gap - zone),
        inner & (w >= core + gap + zone) & (w <= core + gap + 2 * zone),
    ]
    return [z / max(z.sum(), 1) for z in zones]


def _correlate(fa: np.ndarray, kernel: np.ndarray, shape, out_shape) -> np.ndarray:
    """Correlation of the image padded by the kernel's half size (its rfft2 ``fa``)."""
    from scipy import fft

    h = kernel.shape[0] // 2
    full = fft.irfft2(fa * fft.rfft2(kernel[::-1, ::-1].astype(np.float32), s=shape), s=shape)
    return full[2 * h : 2 * h + out_shape[0], 2 * h : 2 * h + out_shape[1]]


def _search(dens: np.ndarray, valid: np.ndarray, face_px, radius_px, px_mm) -> list:
    """Poses (score, theta, x, y) scoring above :data:`MIN_CONTRAST`, in working pixels.

    The score is the weakest of four steps: the bar over each end, over the housing
    behind it, and the body over the housing. A zone leaving the field scores nothing.
    """
    from scipy.fft import next_fast_len, rfft2

    out, fa = [], None
    for theta in np.radians(np.arange(0.0, 360.0, ANGLE_STEP_DEG)):
        zones = _zones(face_px, radius_px, theta, px_mm)
        h = zones[0].shape[0] // 2
        shape = tuple(next_fast_len(n + 4 * h, real=True) for n in dens.shape)
        if fa is None:  # the same kernel size at every angle: transform the image once
            fa = rfft2(np.pad(dens, h).astype(np.float32), s=shape)
            invalid = np.pad((~valid).astype(np.float32), h, constant_values=1.0)
            fv = rfft2(invalid, s=shape)
        bar, left, right, behind, body = (_correlate(fa, z, shape, dens.shape) for z in zones)
        union = sum((z > 0).astype(float) for z in zones)
        cut = _correlate(fv, union, shape, dens.shape) > 0.5
        score = np.minimum.reduce([bar - left, bar - right, bar - behind, body - behind])
        score[cut] = -np.inf
        for i in np.argsort(score, axis=None)[-3:]:
            y, x = divmod(int(i), score.shape[1])
            if score[y, x] >= MIN_CONTRAST:
                out.append((float(score[y, x]), float(theta), x, y))
    return out


@dataclass(frozen=True)
class _Pose:
    """A candidate bar in working pixels: its middle, angle, and the face's shape."""

    x: float
    y: float
    theta: float
    half_px: float
    radius_px: float | None

    def sample(self, dens: np.ndarray, u: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Density at (along, towards the body) offsets from the face's arc (NaN outside)."""
        from scipy.ndimage import map_coordinates

        if self.radius_px is None:
            arc = np.zeros_like(u)
        else:
            uu = np.minimum(u * u, self.half_px**2)
            arc = np.sqrt(np.maximum(self.radius_px**2 - uu, 0.0)) - self.radius_px
        c, s = np.cos(self.theta), np.sin(self.theta)
        x = self.x + c * u - s * (w + arc)
        y = self.y + s * u + c * (w + arc)
        return map_coordinates(dens, [y, x], order=1, mode="constant", cval=np.nan)


def _first_below(values: np.ndarray, level: float) -> int | None:
    hit = np.flatnonzero(values < level)
    return int(hit[0]) if len(hit) else None


def _measure(dens: np.ndarray, pose: _Pose, px_mm: float) -> tuple | None:
    """(pose recentred, width px, contrast, body offset px) if the bar passes, else None.

    The ends are where the density along the bar falls halfway to the level beyond them;
    the width they give must match the calibration (:data:`WIDTH_RATIO`) and the bar be
    even (:data:`MAX_UNEVEN`).
    """
    step = 0.5
    reach = pose.half_px * WIDTH_RATIO[1] + (GAP_MM + ZONE_MM) / px_mm
    u = np.arange(-reach, reach + step, step)
    core = CORE_HALF_MM / px_mm
    along = np.nanmean([pose.sample(dens, u, np.full_like(u, w)) for w in (-core, 0, core)], 0)
    if not np.all(np.isfinite(along)):
        return None
    inner = np.abs(u) <= 0.8 * pose.half_px
    end_lo = pose.half_px * WIDTH_RATIO[1] + GAP_MM / px_mm
    bar = float(np.median(along[inner]))
    ends = [float(np.median(along[sel])) for sel in (u <= -end_lo, u >= end_lo)]
    contrast = bar - max(ends)
    if contrast < MIN_CONTRAST:
        return None
    mid = len(u) // 2
    right = _first_below(along[mid:], (bar + ends[1]) / 2)
    left = _first_below(along[: mid + 1][::-1], (bar + ends[0]) / 2)
    if right is None or left is None:
        return None
    lo_u, hi_u = u[mid - left], u[mid + right]
    width = float(hi_u - lo_u)
    ratio = width / (2 * pose.half_px)
    if not WIDTH_RATIO[0] <= ratio <= WIDTH_RATIO[1]:
        return None
    body = (u > lo_u + 0.1 * width) & (u < hi_u - 0.1 * width)
    spread = np.percentile(along[body], 90) - np.percentile(along[body], 10)
    if spread > MAX_UNEVEN * contrast:
        return None
    shift = (lo_u + hi_u) / 2
    c, s = np.cos(pose.theta), np.sin(pose.theta)
    moved = _Pose(pose.x + c * shift, pose.y + s * shift, pose.theta, width / 2, pose.radius_px)
    return moved, width, contrast, _body_edge(dens, moved, px_mm)


def _body_edge(dens: np.ndarray, pose: _Pose, px_mm: float) -> float:
    """Offset (working px) from the bar's core to its body-side edge, the face."""
    w = np.arange(0.0, (GAP_MM + ZONE_MM) / px_mm, 0.25)
    u = np.linspace(-0.6 * pose.half_px, 0.6 * pose.half_px, 15)
    cross = np.nanmean([pose.sample(dens, u, np.full_like(u, wi)) for wi in w], axis=1)
    behind = np.nanmean(pose.sample(dens, u, np.full_like(u, -(CORE_HALF_MM + GAP_MM) / px_mm)))
    edge = _first_below(cross, (cross[0] + behind) / 2)
    # A body as dense as the stack hides the edge: the core's own half width stands in.
    return float(w[edge]) if edge is not None else CORE_HALF_MM / px_mm


def _near(a: _Pose, b: _Pose, px_mm: float) -> bool:
    """Whether a search pose repeats one already measured (within a few mm and degrees)."""
    dist = np.hypot(a.x - b.x, a.y - b.y) * px_mm
    return dist < _NEAR_MM and abs((np.degrees(a.theta - b.theta) + 180) % 360 - 180) < 6.0


def _same(a: _Pose, b: _Pose, px_mm: float) -> bool:
    """Whether two poses lie on one bar (their middles within half its width, alike turned)."""
    dist = np.hypot(a.x - b.x, a.y - b.y)
    turn = abs((np.degrees(a.theta - b.theta) + 180.0) % 360.0 - 180.0)
    return dist < max(_SAME_MM / px_mm, a.half_px) and turn < _SAME_DEG


def detect_silhouette(
    img: np.ndarray,
    mask: np.ndarray | None,
    iso_mm: float,
    face: Face,
    *,
    dense_bright: bool = False,
    max_candidates: int = 12,
) -> Silhouette | None:
    """The probe face in the fluoroscopy ``img``, or None when none (or two) are found.

    Parameters
    ----------
    img : ndarray (rows, cols)
        The fluoroscopy as stored (dense dark unless ``dense_bright``).
    mask : ndarray of bool, optional
        The exposed field; bars it cuts are not probes.
    iso_mm : float
        Fluoroscopy mm per pixel at the isocentre (the calibrated magnification).
    face : Face
        The transducer face from the ultrasound calibration.
    """
    mask = np.ones(img.shape, bool) if mask is None else np.asarray(mask, bool)
    if mask.sum() < 100 or not face.width_mm > 0 or not iso_mm > 0:
        return None
    k = max(1, int(round(WORK_MM / iso_mm)))
    px_mm = iso_mm * k
    dens = _block_mean(_density(img, mask, dense_bright), k)
    valid = _block_mean(mask.astype(float), k) > 0.999
    half = face.width_mm / px_mm / 2
    radius = None if face.radius_mm is None else face.radius_mm / px_mm
    tried, passed = [], []
    for _score, theta, x, y in sorted(_search(dens, valid, 2 * half, radius, px_mm))[::-1]:
        pose = _Pose(float(x), float(y), theta, half, radius)
        if any(_near(pose, t, px_mm) for t in tried):
            continue
        tried.append(pose)
        found = _measure(dens, pose, px_mm)
        # Poses along one bar recentre onto its middle: the same bar, not a second one.
        if found is not None and not any(_same(found[0], p[0], px_mm) for p in passed):
            passed.append(found)
        if len(passed) > 1 or len(tried) >= max_candidates:
            break
    if len(passed) != 1:
        return None  # none, or two bars that each look like the probe
    return _to_fixed(passed[0], k, px_mm, face)


def _to_fixed(found: tuple, k: int, px_mm: float, face: Face) -> Silhouette:
    """The measured bar as the face in fixed pixels."""
    pose, width, contrast, edge = found
    axis = np.array([np.cos(pose.theta), np.sin(pose.theta)])
    body = np.array([-axis[1], axis[0]])
    mid = np.array([pose.x, pose.y]) + edge * body
    sag = 0.0
    if pose.radius_px is not None:
        sag = pose.radius_px - np.sqrt(max(pose.radius_px**2 - pose.half_px**2, 0.0))
    ends = np.array([mid - pose.half_px * axis, mid + pose.half_px * axis]) - sag * body

    def fixed(p):  # working pixel centre -> fixed pixel (block of k pixels)
        return p * k + (k - 1) / 2

    return Silhouette(
        centre_xy=fixed(mid),
        axis_xy=axis,
        body_xy=body,
        width_mm=width * px_mm,
        expected_width_mm=face.width_mm,
        contrast=float(contrast),
        ends_xy=fixed(ends),
    )


def placements(sil: Silhouette, face: Face, iso_mm: float) -> list[np.ndarray]:
    """Moving->fixed similarity starts at the calibrated scale: [proper, mirrored].

    The face's middle maps to the silhouette's, the image's depth (+y) to the body's
    direction; the two differ in the handedness (which end of the face is the marker's).
    """
    row_mm, col_mm = face.spacing_mm
    out = []
    for flip in (1.0, -1.0):
        a = sil.axis_xy if np.cross(sil.axis_xy, sil.body_xy) > 0 else -sil.axis_xy
        lin = np.column_stack([flip * a, sil.body_xy]) @ np.diag([col_mm, row_mm]) / iso_mm
        h = np.eye(3)
        h[:2, :2] = lin
        h[:2, 2] = sil.centre_xy - lin @ np.asarray(face.centre_xy, float)
        out.append(h)
    return out

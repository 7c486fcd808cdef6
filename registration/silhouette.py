"""The ultrasound probe's silhouette in the fluoroscopy: where the transducer face lies.

A probe on the skin shows in the X-ray as its housing and, just behind the face, the dense
stack of piezo elements and backing. The face is the ultrasound image's top edge: straight
for a linear probe, an arc about the apex for a curvilinear one, its width known from the
calibration. The detector looks, at the calibrated magnification, for a face of that
shape and width standing on the body's skin line: a band just behind the face denser than
the air beyond its ends, and the skin continuing beyond both ends. Found, it fixes where
the image's top edge lies, its direction and the side the image extends to (the body's);
the handedness (the probe marker's side) it leaves open, and :func:`placements` returns
both. It returns None rather than a guess: a band of the wrong width or uneven, cut by the
field's edge, or a second candidate elsewhere. See docs/registration-method.md, "The
probe's silhouette".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Face", "Silhouette", "detect_silhouette", "placements"]

#: Working pixel of the search (mm at the isocentre): fine enough for a 2-6 mm stack.
WORK_MM = 0.9
#: Angle step of the search (degrees).
ANGLE_STEP_DEG = 4.0
#: The band just behind the face (mm from the skin line, away from the body) where the
#: probe is denser than the air beside it: lens and element stack, or the housing.
BAND_MM = (1.0, 4.0)
#: The skin beyond the face's ends: from this depth (mm), this deep.
GAP_MM, ZONE_MM = 1.5, 10.0
#: Least density step of the band over the air beyond the face's ends, and of the skin
#: beyond the ends over that air, as a fraction of the field's 1-99 % density range.
MIN_CONTRAST = 0.10
#: The probe stands in air: beyond its ends, just behind the skin line, the density is at
#: most this (fraction of the field's 1-99 % range). Bone and soft-tissue edges inside the
#: body do not have air beside them.
AIR_MAX = 0.2
#: Measured width over the calibrated face width. A housing wider than the face lengthens
#: it; a plane tilted about an axis across the face shortens it (to 0.87 at 30 degrees). The
#: lower end keeps out the body's own skin line under an arc template, which the tuning
#: cases without a probe measured at 0.79-0.81 (docs/registration-method.md).
WIDTH_RATIO = (0.86, 1.3)
#: Largest spread (10-90 %) of the density along the band, relative to its contrast.
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
    """Mean kernels (band, left end, right end, left skin, right skin) at angle ``theta``.

    In the face's frame u runs along it and w towards the body, w = 0 on the skin line
    (the face's arc, continued level beyond its ends).
    """
    half = face_px / 2
    reach = int(np.ceil(half * WIDTH_RATIO[1] + (GAP_MM + ZONE_MM) / px_mm)) + 2
    yy, xx = np.mgrid[-reach : reach + 1, -reach : reach + 1].astype(float)
    c, s = np.cos(theta), np.sin(theta)
    u = c * xx + s * yy
    w = -s * xx + c * yy
    if radius_px is not None:
        uu = np.minimum(u * u, half * half)
        w = w - (np.sqrt(np.maximum(radius_px**2 - uu, 0)) - radius_px)
    band = (w >= -BAND_MM[1] / px_mm) & (w <= -BAND_MM[0] / px_mm)
    skin = (w >= GAP_MM / px_mm) & (w <= (GAP_MM + ZONE_MM) / px_mm)
    out_lo = half * WIDTH_RATIO[1] + GAP_MM / px_mm
    out_hi = out_lo + ZONE_MM / px_mm
    left, right = (u <= -out_lo) & (u >= -out_hi), (u >= out_lo) & (u <= out_hi)
    zones = [band & (np.abs(u) <= 0.8 * half), band & left, band & right, skin & left]
    zones.append(skin & right)
    return [z / max(z.sum(), 1) for z in zones]


def _correlate(fa: np.ndarray, kernel: np.ndarray, shape, out_shape) -> np.ndarray:
    """Correlation of the image padded by the kernel's half size (its rfft2 ``fa``)."""
    from scipy import fft

    h = kernel.shape[0] // 2
    full = fft.irfft2(fa * fft.rfft2(kernel[::-1, ::-1].astype(np.float32), s=shape), s=shape)
    return full[2 * h : 2 * h + out_shape[0], 2 * h : 2 * h + out_shape[1]]


def _search(dens: np.ndarray, valid: np.ndarray, face_px, radius_px, px_mm) -> list:
    """Poses (score, theta, x, y) scoring above :data:`MIN_CONTRAST`, in working pixels.

    The score is the weakest of four steps: the band behind the face over the air beyond
    each end, and the skin beyond each end over that air. A zone leaving the field scores
    nothing.
    """
    from scipy.fft import next_fast_len, rfft2

    out, fa = [], None
    for theta in np.radians(np.arange(0.0, 360.0, ANGLE_STEP_DEG)):
        zones = _zones(face_px, radius_px, theta, px_mm)
        h = zones[0].shape[0] // 2
        shape = tuple(next_fast_len(n + 2 * h, real=True) for n in dens.shape)
        if fa is None:  # the same kernel size at every angle: transform the image once
            fa = rfft2(np.pad(dens, h).astype(np.float32), s=shape)
            invalid = np.pad((~valid).astype(np.float32), h, constant_values=1.0)
            fv = rfft2(invalid, s=shape)
        bar, left, right, skin_l, skin_r = (_correlate(fa, z, shape, dens.shape) for z in zones)
        union = sum((z > 0).astype(float) for z in zones)
        cut = _correlate(fv, union, shape, dens.shape) > 0.5
        score = np.minimum.reduce([bar - left, bar - right, skin_l - left, skin_r - right])
        score[cut] = -np.inf
        good = np.flatnonzero(score >= MIN_CONTRAST)
        for i in good[np.argsort(score.flat[good])[-3:]]:
            y, x = divmod(int(i), score.shape[1])
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


def _steps(dens: np.ndarray, pose: _Pose, px_mm: float, u: np.ndarray, skin: bool = True):
    """Density along the band (and along the skin), sampled at offsets ``u`` along the face."""
    ws = np.linspace(-BAND_MM[1], -BAND_MM[0], 4) / px_mm
    if skin:
        ws = np.concatenate([ws, np.linspace(GAP_MM, GAP_MM + ZONE_MM, 5) / px_mm])
    uu, ww = np.meshgrid(u, ws)
    vals = pose.sample(dens, uu.ravel(), ww.ravel()).reshape(uu.shape)
    return vals[:4].mean(axis=0), (vals[4:].mean(axis=0) if skin else None)


def _refine(dens: np.ndarray, pose: _Pose, px_mm: float) -> _Pose:
    """The pose turned and moved across the face to where the band stands out most.

    Within half the search's angle step and 2 mm: the band, 3 mm wide, leaves a 50 mm
    stack 2 degrees off at its ends and reads as uneven there.
    """
    out_lo = pose.half_px * WIDTH_RATIO[1] + GAP_MM / px_mm
    u = np.concatenate([np.linspace(-0.8, 0.8, 33) * pose.half_px, [-out_lo - 1, out_lo + 1]])
    best, best_pose = -np.inf, pose
    for dt in np.radians(np.arange(-ANGLE_STEP_DEG / 2, ANGLE_STEP_DEG / 2 + 0.1, 0.5)):
        for dw in np.arange(-2.0, 2.01, 0.5) / px_mm:
            th = pose.theta + dt
            x, y = pose.x - np.sin(th) * dw, pose.y + np.cos(th) * dw
            trial = _Pose(x, y, th, pose.half_px, pose.radius_px)
            along, _ = _steps(dens, trial, px_mm, u, skin=False)
            score = np.median(along[:-2]) - np.max(along[-2:])
            if score > best:
                best, best_pose = score, trial
    return best_pose


def _measure(dens: np.ndarray, pose: _Pose, px_mm: float) -> tuple | None:
    """(pose recentred, width px, contrast) if the band passes, else None.

    The ends are where the density along the band falls halfway to the level beyond
    them; the width they give must match the calibration (:data:`WIDTH_RATIO`), the band
    be even (:data:`MAX_UNEVEN`), the skin beyond both ends denser than the air there, and
    that air near the field's least density (:data:`AIR_MAX`).
    """
    step = 0.5
    out_lo = pose.half_px * WIDTH_RATIO[1] + GAP_MM / px_mm
    u = np.arange(-out_lo - ZONE_MM / px_mm, out_lo + ZONE_MM / px_mm + step, step)
    along, skin = _steps(dens, pose, px_mm, u)
    if not (np.all(np.isfinite(along)) and np.all(np.isfinite(skin))):
        return None
    inner = np.abs(u) <= 0.8 * pose.half_px
    bar = float(np.median(along[inner]))
    sides = (u <= -out_lo, u >= out_lo)
    ends = [float(np.median(along[sel])) for sel in sides]
    skins = [float(np.median(skin[sel])) for sel in sides]
    contrast = min(bar - max(ends), skins[0] - ends[0], skins[1] - ends[1])
    if contrast < MIN_CONTRAST or max(ends) > AIR_MAX:
        return None
    mid = len(u) // 2
    right = _first_below(along[mid:], (bar + ends[1]) / 2)
    left = _first_below(along[: mid + 1][::-1], (bar + ends[0]) / 2)
    if right is None or left is None:
        return None
    lo_u, hi_u = u[mid - left], u[mid + right]
    width = float(hi_u - lo_u)
    if not WIDTH_RATIO[0] <= width / (2 * pose.half_px) <= WIDTH_RATIO[1]:
        return None
    body = (u > lo_u + 0.1 * width) & (u < hi_u - 0.1 * width)
    spread = np.percentile(along[body], 90) - np.percentile(along[body], 10)
    if spread > MAX_UNEVEN * (bar - max(ends)):
        return None
    shift = (lo_u + hi_u) / 2
    c, s = np.cos(pose.theta), np.sin(pose.theta)
    moved = _Pose(pose.x + c * shift, pose.y + s * shift, pose.theta, pose.half_px, pose.radius_px)
    return moved, width, contrast


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
    convex_faces: bool = False,
) -> Silhouette | None:
    """The probe face in the fluoroscopy ``img``, or None when none (or two) are found.

    A curvilinear probe's face is looked for only with ``convex_faces``: its arc's band
    dips into the body, and the body's straight skin line against air passes every check
    of an arc (docs/registration-method.md, "The probe's silhouette").

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
    convex_faces : bool
        Whether to look for an arc face (curvilinear probe); otherwise None for one.
    """
    mask = np.ones(img.shape, bool) if mask is None else np.asarray(mask, bool)
    if mask.sum() < 100 or not face.width_mm > 0 or not iso_mm > 0:
        return None
    if face.radius_mm is not None and not convex_faces:
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
        found = _measure(dens, _refine(dens, pose, px_mm), px_mm)
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
    pose, width, contrast = found
    axis = np.array([np.cos(pose.theta), np.sin(pose.theta)])
    body = np.array([-axis[1], axis[0]])
    mid = np.array([pose.x, pose.y])
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
        ax, bd = sil.axis_xy, sil.body_xy
        a = ax if ax[0] * bd[1] - ax[1] * bd[0] > 0 else -ax
        lin = np.column_stack([flip * a, sil.body_xy]) @ np.diag([col_mm, row_mm]) / iso_mm
        h = np.eye(3)
        h[:2, :2] = lin
        h[:2, 2] = sil.centre_xy - lin @ np.asarray(face.centre_xy, float)
        out.append(h)
    return out

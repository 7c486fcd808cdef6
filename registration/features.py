"""Beads found in both modalities at the calibrated millimetre scale.

Metal or glass beads show in the fluoroscopy as dense (dark, in MONOCHROME2 sense after
:mod:`fusion` has inverted MONOCHROME1) discs, found by a scale-normalised Laplacian of
Gaussian whose width follows each bead radius looked for (1–3 mm beads) in the image's own
pixel spacing; the Hessian's eigenvalue ratio keeps only round blobs (the needle and bone
edges are ridges).

In the ultrasound a bead is a bright echo from its near wall, usually with a comet tail of
reverberations beneath it along the beam (down the columns for a linear probe, radially
from the apex for a sector probe), so it looks like a short streak, not a disc. Candidates
are maxima of the curvature *across* the beam whose strongest curvature is across the beam
(a streak along the beam, or a round blob; bone surfaces lie across the beam and fail). The
bead is the top of its streak: each candidate is walked up the beam to where the streak
starts, the wall echo is the first strong peak there, and the centre lies one radius
deeper. Candidates of one streak (the tail's echoes) end on the same top and are merged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BEAD_RADII_MM", "BEAD_RADIUS_MM", "Blobs", "beam_apex", "detect_beads"]

#: Bead radius assumed by callers that look for one size: fiducial beads of 2 mm diameter.
BEAD_RADIUS_MM = 1.0
#: Radii looked for when none is given: beads of 1 to 3 mm diameter.
BEAD_RADII_MM = (0.5, 1.0, 1.5)
#: Least peak response, in robust standard deviations of the response inside the mask.
MIN_SNR = 6.0
#: The same for ultrasound echoes: small beads in speckle answer at 5-7, and speckle's
#: weak spots are filtered by the streak and surface tests and left to the matcher.
MIN_SNR_ECHO = 4.5
#: Least ratio of the smaller to the larger Hessian eigenvalue: 1 is a disc, 0 a ridge.
MIN_ROUNDNESS = 0.35
#: Ultrasound: most angle (degrees) between a streak's across direction and the beam's.
MAX_STREAK_TILT_DEG = 30.0
#: Ultrasound: walking up a comet tail, the next echo is at least this fraction (above the
#: background) of the one below it; a dimmer one belongs to something else.
TAIL_RATIO = 0.7
#: Most blobs kept per image, strongest first (the matcher is quadratic in each count).
MAX_BLOBS = 12
#: Opening angle (degrees) from which a mask's converging sides are taken as a sector.
MIN_SECTOR_DEG = 10.0


@dataclass(frozen=True)
class Blobs:
    """Blob centres (x, y) in pixels, their strength (peak response / noise), radius (mm)."""

    xy: np.ndarray
    strength: np.ndarray
    radius_mm: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.xy)


def _none() -> Blobs:
    return Blobs(np.zeros((0, 2)), np.zeros(0), np.zeros(0))


def detect_beads(
    image: np.ndarray,
    mask: np.ndarray | None,
    spacing_mm: tuple[float, float],
    *,
    bright: bool,
    radius_mm: float | None = None,
    near_wall: bool = False,
    beam_apex_xy: tuple[float, float] | None = None,
    exclude: list | None = None,
    min_snr: float | None = None,
    max_blobs: int = MAX_BLOBS,
) -> Blobs:
    """Bead centres in ``image``: discs, or (``near_wall``) the tops of beam-wise streaks.

    Parameters
    ----------
    image : ndarray (rows, cols)
        Greyscale frame, higher = brighter (any bit depth).
    mask : ndarray of bool or None
        Valid pixels (collimator field, imaged ultrasound area).
    spacing_mm : (float, float)
        Row and column spacing in mm (fluoroscopy: at the isocentre).
    bright : bool
        True for bright blobs (ultrasound), False for dark ones (fluoroscopy).
    radius_mm : float or None
        Bead radius in mm; None looks for every radius of ``BEAD_RADII_MM``.
    near_wall : bool
        Ultrasound: the echo is the near wall of the bead with a tail along the beam.
    beam_apex_xy : (float, float) or None
        Ultrasound sector apex (pixels); None: a linear probe, the beam runs down (+y).
    exclude : list of (ndarray (2,), ndarray (2,), float) or None
        Segments (x, y ends in pixels, distance in pixels) near which nothing is a bead
        (the needle's shaft answers at its ends and bends).
    min_snr, max_blobs : float or None, int
        Least strength kept (None: ``MIN_SNR_ECHO`` with ``near_wall``, else ``MIN_SNR``),
        most blobs returned.

    Returns
    -------
    Blobs
        Strongest first.
    """
    from scipy.ndimage import binary_erosion

    img = np.asarray(image, np.float64)
    valid = np.ones(img.shape, bool) if mask is None else np.asarray(mask, bool)
    # Derivatives need 3 pixels on a side (a 1-pixel-wide image holds no blob anyway).
    if img.ndim != 2 or min(img.shape) < 3 or not valid.any():
        return _none()
    spacing = np.asarray(spacing_mm, float)
    if min_snr is None:
        min_snr = MIN_SNR_ECHO if near_wall else MIN_SNR
    radii = BEAD_RADII_MM if radius_mm is None else (float(radius_mm),)
    if near_wall:  # an echo is as wide as the beam, whatever the bead: look at every scale
        radii = tuple(sorted(set(BEAD_RADII_MM) | set(radii)))
    # Outside the mask the median: the mask's border must not read as an edge.
    filled = np.where(valid, img, np.median(img[valid]))
    # The mask's edge answers up to about 2 sigma inside; a bead nearer than that is lost.
    reach = max(1, int(np.ceil(2 * max(radii) / spacing.min())))
    inner = binary_erosion(valid, iterations=reach)
    if not inner.any():
        return _none()
    beam = _beam(img.shape, beam_apex_xy) if near_wall else None
    found = []
    for r in radii:
        found += _candidates(filled, inner, r, spacing, bright, beam, min_snr)
    if near_wall:
        found = _to_streak_tops(filled, valid, found, spacing, beam, radius_mm)
    found = _away_from(found, exclude or [])
    return _strongest_apart(found, spacing, max_blobs)


def _beam(shape, apex_xy) -> tuple[np.ndarray, np.ndarray]:
    """Unit beam direction (bx, by) per pixel: down, or away from the sector apex."""
    if apex_xy is None:
        return np.zeros(shape), np.ones(shape)
    yy, xx = np.indices(shape, dtype=float)
    dx, dy = xx - apex_xy[0], yy - apex_xy[1]
    n = np.maximum(np.hypot(dx, dy), 1e-9)
    return dx / n, dy / n


def _candidates(filled, inner, r_mm, spacing, bright, beam, min_snr) -> list:
    """(x, y, snr, radius mm) of the peaks of one scale's blob or streak response."""
    from scipy.ndimage import gaussian_filter, maximum_filter

    r_px = r_mm / spacing  # (rows, cols)
    # A disc of radius r answers a Laplacian of width r/sqrt(2) most; the ultrasound echo
    # is an arc as wide as the bead, across the beam, answered best at r.
    sigma = r_px if beam is not None else r_px / np.sqrt(2.0)
    sign = -1.0 if bright else 1.0
    dyy, dxy, dxx = (sign * d for d in _hessian(gaussian_filter(filled, sigma), sigma))
    if beam is None:
        response = dyy + dxx
    else:  # curvature across the beam: u = (-by, bx)
        ux, uy = -beam[1], beam[0]
        response = ux * ux * dxx + 2 * ux * uy * dxy + uy * uy * dyy
    vals = response[inner]
    noise = 1.4826 * np.median(np.abs(vals - np.median(vals)))
    if not noise > 0:
        return []
    size = tuple(int(2 * np.ceil(v) + 1) for v in r_px * 2)
    snr = response / noise
    peaks = inner & (response == maximum_filter(response, size=size)) & (snr >= min_snr)
    out = []
    for r, c in zip(*np.nonzero(peaks), strict=True):
        h = (dyy[r, c], dxy[r, c], dxx[r, c])
        if beam is None:
            ok = _roundness(h) >= MIN_ROUNDNESS
        else:
            ok = _across_beam(h, beam[0][r, c], beam[1][r, c])
        if ok:
            x, y = _subpixel(response, r, c)
            out.append((x, y, float(snr[r, c]), r_mm))
    return out


def _hessian(smooth: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale-normalised second derivatives (d_yy, d_xy, d_xx) of a smoothed image."""
    gy, gx = np.gradient(smooth)
    dyy, dyx = np.gradient(gy)
    dxx = np.gradient(gx, axis=1)  # its d/dy would be dyx again
    s2 = float(sigma[0] * sigma[1])
    return dyy * s2, dyx * s2, dxx * s2


def _eig(h) -> tuple[float, float, np.ndarray]:
    """Eigenvalues (larger, smaller) of the signed Hessian, and the larger's unit (x, y).

    A peak's eigenvalues are positive; the vector is the direction of strongest curvature.
    """
    a, b, d = h[2], h[1], h[0]  # xx, xy, yy
    half_tr, det = 0.5 * (a + d), a * d - b * b
    disc = np.sqrt(max(half_tr * half_tr - det, 0.0))
    big, small = half_tr + disc, half_tr - disc
    vec = np.array([b, big - a]) if abs(b) > 1e-12 else np.array([1.0, 0.0] if a >= d else [0, 1])
    return big, small, vec / (np.linalg.norm(vec) or 1.0)


def _roundness(h) -> float:
    """Smaller over larger curvature at a peak: 1 a disc, 0 a ridge, < 0 a saddle."""
    big, small, _ = _eig(h)
    return float(small / big) if big > 0 else -1.0


def _across_beam(h, bx: float, by: float) -> bool:
    """A round peak, or a streak whose strongest curvature runs across the beam."""
    big, small, vec = _eig(h)
    if not big > 0:
        return False
    if small / big >= 0.5:
        return True
    along = abs(vec[0] * bx + vec[1] * by)  # |cos| of the curvature axis to the beam
    return along <= np.sin(np.radians(MAX_STREAK_TILT_DEG))


def _subpixel(response: np.ndarray, r: int, c: int) -> tuple[float, float]:
    """Peak (x, y) refined by a parabola through the 3 samples along each axis."""
    rows, cols = response.shape
    dx = _parabola(*response[r, c - 1 : c + 2]) if 0 < c < cols - 1 else 0.0
    dy = _parabola(*response[r - 1 : r + 2, c]) if 0 < r < rows - 1 else 0.0
    return c + dx, r + dy


def _parabola(m1: float, p0: float, p1: float) -> float:
    den = m1 - 2 * p0 + p1
    return float(np.clip(0.5 * (m1 - p1) / den, -0.5, 0.5)) if den < 0 else 0.0


def _to_streak_tops(filled, valid, found, spacing, beam, radius_mm) -> list:
    """Each candidate moved to its bead's centre: one radius below the top wall echo.

    The radius is ``radius_mm`` when known (the fluoroscopy shows it), else the scale the
    candidate was found at.
    """
    from scipy.ndimage import gaussian_filter

    if not found:
        return []
    fine = gaussian_filter(filled, np.maximum(0.2 / spacing, 0.5))
    background = float(np.median(filled[valid]))
    out = []
    for x, y, snr, r in found:
        b = (beam[0][int(round(y)), int(round(x))], beam[1][int(round(y)), int(round(x))])
        r_bead = r if radius_mm is None else float(radius_mm)
        centre = _streak_centre(fine, background, np.array([x, y]), (r, r_bead), b, spacing)
        if centre is not None:
            out.append((centre[0], centre[1], snr, r_bead))
    return out


def _streak_centre(fine, background, xy, radii, beam, spacing, step_mm: float = 0.1):
    """The bead centre (x, y) for a candidate at ``xy`` on a streak along ``beam``, or None.

    ``radii``: the scale the candidate was found at and the bead's radius (mm). Along the
    beam the wall is found on a profile averaged over the echo's width; across the beam
    the centre is the middle of the wall echo (the arc is symmetric about it). None too
    when the echo goes on sideways: a bone surface, not a bead.
    """
    from scipy.ndimage import map_coordinates

    bx, by = beam
    d_px = np.array([bx / spacing[1], by / spacing[0]]) * step_mm  # px per step down
    u_px = np.array([-by / spacing[1], bx / spacing[0]]) * step_mm  # and across

    def sample(along, across):
        p = xy + np.multiply.outer(along, d_px) + np.multiply.outer(across, u_px)
        return map_coordinates(fine, [p[..., 1], p[..., 0]], order=1, mode="nearest")

    r_steps, shift_steps = max(radii) / step_mm, radii[1] / step_mm
    t = np.arange(-int(14 * r_steps), int(2 * r_steps) + 1)
    profile = np.mean([sample(t, np.full(len(t), k * r_steps)) for k in (-0.5, 0, 0.5)], axis=0)
    wall = _wall_index(profile, t, r_steps, background)
    if wall is None:
        return None
    # The averaged lines meet the arc deeper at its sides: the wall is taken on the middle.
    near = np.arange(int(wall - 0.5 * r_steps), int(wall + 0.5 * r_steps) + 1)
    middle = sample(near, np.zeros(len(near)))
    k = int(np.argmax(middle))
    if 0 < k < len(middle) - 1:
        wall = float(near[k] + _parabola(*middle[k - 1 : k + 2]))
    if _goes_on_sideways(sample, wall, r_steps, background, max(3 * r_steps, 2.0 / step_mm)):
        return None
    across = np.arange(-int(1.5 * r_steps), int(1.5 * r_steps) + 1, dtype=float)
    echo = sample(np.full(len(across), wall + 0.2 * r_steps), across)
    echo = np.maximum(echo - 0.5 * (background + echo.max()), 0.0)  # its upper half only
    side = float(np.sum(echo * across) / echo.sum()) if echo.sum() > 0 else 0.0
    return xy + (wall + shift_steps) * d_px + side * u_px


def _goes_on_sideways(sample, wall, r_steps, background, reach) -> bool:
    """True when the echo goes on to either side of the wall (a surface, not a bead).

    Going on: at some depth within three radii of the wall (a surface may slope), the echo
    stays as bright as halfway from the background to the wall's peak all along a run
    from 1.5 radii to ``reach`` sideways (speckle is bright in spots, not in runs).
    """
    peak = float(sample(np.array([wall]), np.array([0.0]))[0])
    level = background + 0.5 * (peak - background)
    depth = np.arange(wall - 3 * r_steps, wall + 3 * r_steps + 1)
    run = np.linspace(1.5 * r_steps, max(reach, 2.0 * r_steps), 8)
    for s in (-1.0, 1.0):
        grid = sample(np.repeat(depth, len(run)), np.tile(s * run, len(depth)))
        if np.max(grid.reshape(len(depth), len(run)).min(axis=1)) >= level:
            return True
    return False


def _wall_index(profile: np.ndarray, t: np.ndarray, r_steps: float, background: float):
    """Position (steps from the candidate) of the streak's top wall echo, or None.

    A comet tail's echoes fade with depth, so walking up the beam from the candidate's
    echo each next echo (within ``4 r``) is at least ``TAIL_RATIO`` as bright; the walk
    ends at the first that is not (another structure above) or at a gap: that echo is the
    bead's near wall.
    """
    from scipy.ndimage import gaussian_filter1d

    prof = gaussian_filter1d(profile, max(r_steps / 4.0, 1.0))
    n = len(prof)
    peaks = [k for k in range(1, n - 1) if prof[k] >= prof[k - 1] and prof[k] > prof[k + 1]]
    i0 = int(np.flatnonzero(t == 0)[0])
    near = [k for k in peaks if abs(k - i0) <= r_steps]
    if not near:
        return None
    cur = max(near, key=lambda k: prof[k])
    if not prof[cur] > background:
        return None
    while True:
        above = [k for k in peaks if cur - 4 * r_steps <= k < cur - 0.5 * r_steps]
        nxt = max(above, key=lambda k: prof[k], default=None)
        if nxt is None or prof[nxt] - background < TAIL_RATIO * (prof[cur] - background):
            break
        cur = nxt
    return float(t[cur] + _parabola(*prof[cur - 1 : cur + 2]))


def _away_from(found: list, exclude: list) -> list:
    """Candidates farther than each segment's distance from it."""
    out = []
    for x, y, snr, r in found:
        p = np.array([x, y])
        if all(_segment_distance(p, a, b) > d for a, b, d in exclude):
            out.append((x, y, snr, r))
    return out


def _segment_distance(p: np.ndarray, a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p - a - t * ab))


def _strongest_apart(found: list, spacing, max_blobs: int) -> Blobs:
    """The strongest candidates, none within 1.5 radii (mm) of a stronger one.

    A bead answers at several of the radii looked for; its radius is interpolated from
    the strengths at the neighbouring radii (a parabola through three).
    """
    mm = np.array([spacing[1], spacing[0]])
    kept: list = []
    for x, y, snr, r in sorted(found, key=lambda f: -f[2]):
        p = np.array([x, y]) * mm
        near = [k for k in kept if np.linalg.norm(p - k[0]) <= 1.5 * max(r, k[2])]
        if near:
            near[0][3].setdefault(r, snr)
        elif len(kept) < max_blobs:
            kept.append((p, snr, r, {r: snr}, (x, y)))
    if not kept:
        return _none()
    xy = np.array([k[4] for k in kept], float)
    radius = np.array([_radius(k[2], k[3]) for k in kept])
    return Blobs(xy, np.array([k[1] for k in kept], float), radius)


def _radius(r: float, at: dict) -> float:
    """The radius of best response, refined between the radii looked for."""
    radii = sorted(at)
    i = radii.index(r)
    if 0 < i < len(radii) - 1:
        r0, r2 = radii[i - 1], radii[i + 1]
        if np.isclose(r - r0, r2 - r):
            return float(r + (r - r0) * _parabola(at[r0], at[r], at[r2]))
    return float(r)


def beam_apex(mask: np.ndarray | None) -> tuple[float, float] | None:
    """The apex (x, y) of a sector-shaped mask, or None for a rectangle (linear probe).

    The mask's left and right edges, row by row below its top sixth (where an inner arc
    may cut the sides) and away from the image's border (where a screen clips them), are
    fitted with lines; lines that meet above the mask at an opening of at least
    ``MIN_SECTOR_DEG`` make a sector.
    """
    if mask is None or not np.any(mask):
        return None
    m = np.asarray(mask, bool)
    rows = np.flatnonzero(m.any(axis=1))
    top, bottom = rows[0], rows[-1]
    ys = rows[rows >= top + (bottom - top) // 6]
    left = np.array([np.flatnonzero(m[y])[0] for y in ys], float)
    right = np.array([np.flatnonzero(m[y])[-1] for y in ys], float)
    fits = [
        _edge_line(ys[left > 0], left[left > 0]),
        _edge_line(ys[right < m.shape[1] - 1], right[right < m.shape[1] - 1]),
    ]
    if fits[0] is None or fits[1] is None:
        return None
    (bl, al), (br, ar) = fits
    opening = np.degrees(np.arctan(br) - np.arctan(bl))
    if opening < MIN_SECTOR_DEG:
        return None
    apex_y = (al - ar) / (br - bl)
    return (float(al + bl * apex_y), float(apex_y)) if apex_y < top + 2 else None


def _edge_line(ys: np.ndarray, xs: np.ndarray):
    """(slope, intercept) of x = intercept + slope·y, points over 2 px off dropped; or None."""
    keep = np.ones(len(ys), bool)
    for _ in range(3):
        if keep.sum() < 5:
            return None
        slope, icpt = np.polyfit(ys[keep], xs[keep], 1)
        keep = np.abs(xs - (icpt + slope * ys)) <= 2.0
    return (float(slope), float(icpt)) if keep.sum() >= 5 else None

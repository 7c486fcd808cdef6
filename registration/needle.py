"""The needle as a straight line segment with its tip, found in either modality.

A steel needle is a thin line: dark in the fluoroscopy (dense), bright in the ultrasound
(the shaft's specular echo, when it lies in the plane, often followed by reverberations
into one band thicker than the shaft). Both are looked for at the calibrated millimetre
scale: pixels where the Hessian at the shaft's width shows a ridge (strong curvature
across, little along); in the fluoroscopy a ridge must stand out from both its sides (the
foot of a bone's edge also curves, but one of its sides lies far above the other). In the
ultrasound, pixels on a strong edge facing the probe (brightening along the beam) count
too, the band's near side whatever its thickness; the line is then moved down onto the
echo's peak. Through either set, a
RANSAC line whose supporting pixels run along it, and on that line the longest stretch
without a gap, at least ``MIN_LENGTH_MM`` long; its ends are moved to where the line's
profile falls to the background (the detection stops short of a blurred end). An
ultrasound line with an acoustic shadow beneath it is bone, not steel: it is set aside
with the pixels near it and the next strongest line is tried (a bone's surface is often
the straightest strong echo in the image, with the needle second).

The tip is the end away from the image border (the shaft comes in from the skin or from
outside the X-ray field); when both ends lie inside, the ultrasound's tip is the deeper
end along the beam, and the fluoroscopy's is left open (``tip_known`` false: the matcher
tries both ends).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MIN_LENGTH_MM", "Needle", "detect_needle"]

#: Width (Gaussian sigma, mm) of the shaft's ridge: a 18–22 G needle is 0.7–1.3 mm wide.
SHAFT_SIGMA_MM = 0.6
#: Least ridge strength, in robust standard deviations of the response in the mask.
MIN_RIDGE_SNR = 5.0
#: Ultrasound: least strength of the near edge (speckle has edges everywhere, weaker).
MIN_EDGE_SNR = 4.0
#: Least length (mm) of a straight ridge taken as a needle.
MIN_LENGTH_MM = 10.0
#: Largest gap (mm) along the line inside one needle, and the line's half-width (mm).
MAX_GAP_MM = 2.0
LINE_TOL_MM = 0.6
#: Least fraction of the segment's length covered by ridge pixels.
MIN_COVER = 0.6
#: An end nearer than this (mm) to the mask's border is where the shaft enters.
BORDER_MM = 3.0
#: Ultrasound: beneath bone the echo falls to below this fraction of the image's median.
SHADOW_FRACTION = 0.5
#: Ultrasound: straight segments found shadowed (bone) and set aside before giving up, and
#: how far (mm) from one its pixels are set aside with it.
MAX_BONE_SKIPS = 3
BONE_CLEAR_MM = 2.0
RANSAC_TRIALS = 400
#: Fluoroscopy: most difference of a ridge's two sides, relative to its rise above them.
MAX_ASYMMETRY = 1.5
#: Strength counted at most per 0.5 mm of line (in units of the ridge SNR).
SNR_CAP = 3.0 * MIN_RIDGE_SNR


@dataclass(frozen=True)
class Needle:
    """A needle segment in pixels: its tip, the other visible end, how it was found."""

    tip_xy: np.ndarray
    tail_xy: np.ndarray
    strength: float
    #: False when both ends lie inside the image, away from its border: either may be
    #: the tip (fluoroscopy of a needle seen whole).
    tip_known: bool

    def length_mm(self, spacing_mm) -> float:
        """Visible length in millimetres."""
        d = (self.tip_xy - self.tail_xy) * np.array([spacing_mm[1], spacing_mm[0]])
        return float(np.hypot(*d))


def detect_needle(
    image: np.ndarray,
    mask: np.ndarray | None,
    spacing_mm: tuple[float, float],
    *,
    bright: bool,
    beam_apex_xy: tuple[float, float] | None = None,
    seed: int = 0,
) -> Needle | None:
    """The strongest straight needle-like segment, or None when there is none.

    Parameters
    ----------
    image : ndarray (rows, cols)
        Greyscale frame, higher = brighter.
    mask : ndarray of bool or None
        Valid pixels.
    spacing_mm : (float, float)
        Row and column spacing in mm.
    bright : bool
        True: a bright line (ultrasound); False: a dark line (fluoroscopy).
    beam_apex_xy : (float, float) or None
        Ultrasound only: sector apex (None: a linear probe); sets "deeper" for the tip.
    seed : int
        Of the RANSAC draws (the result is deterministic for a given seed).
    """
    img = np.asarray(image, np.float64)
    valid = np.ones(img.shape, bool) if mask is None else np.asarray(mask, bool)
    if img.ndim != 2 or min(img.shape) < 5 or valid.sum() < 25:
        return None
    spacing = np.asarray(spacing_mm, float)
    # The mask filled and lightly smoothed once for the ridges, the edges and the ends.
    filled = np.where(valid, img, np.median(img[valid]))
    light = None
    pts_px, snr, along = _ridge_pixels(filled, valid, spacing, bright)
    if bright:  # a thin shaft is a ridge, a thick band only an edge: either counts
        light = _light_smooth(filled, spacing)
        more = _top_edge_pixels(light, valid, spacing, beam_apex_xy)
        mine = (pts_px, snr, along)
        pts_px, snr, along = (np.concatenate(p) for p in zip(mine, more, strict=True))
    if len(pts_px) < 10:
        return None
    mm = np.array([spacing[1], spacing[0]])
    rng = np.random.default_rng(seed)
    light = _light_smooth(filled, spacing) if light is None else light
    smooth = (1.0 if bright else -1.0) * light  # the needle's sign made bright
    for _ in range(1 + (MAX_BONE_SKIPS if bright else 0)):
        found = _ransac_segment(pts_px * mm, snr, along, rng)
        if found is None:
            return None
        a, b = _refined_ends(smooth, found[0], found[1], mm, bright, beam_apex_xy)
        if not (bright and _shadowed(img, valid, a, b, spacing, beam_apex_xy)):
            return _orient(a, b, found[2], valid, spacing, bright, beam_apex_xy)
        # Bone: its surface is often the straightest strong echo; the needle may be next.
        away = _distance_to_segment(pts_px * mm, a * mm, b * mm) > BONE_CLEAR_MM
        pts_px, snr, along = pts_px[away], snr[away], along[away]
        if len(pts_px) < 10:
            return None
    return None


def _refined_ends(smooth, a_mm, b_mm, mm, bright, apex) -> tuple[np.ndarray, np.ndarray]:
    """A RANSAC segment's ends (px) moved onto the echo (ultrasound) and out to its ends."""
    if bright:  # from the band's near edge to the echo of the shaft's near surface
        a_mm, b_mm = _onto_echo(smooth, a_mm, b_mm, mm, apex)
    a_mm, b_mm = _extend(smooth, a_mm, b_mm, mm), _extend(smooth, b_mm, a_mm, mm)
    return a_mm / mm, b_mm / mm


def _distance_to_segment(pts: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each point (N, 2) from the segment a-b (same units)."""
    ab = b - a
    t = np.clip((pts - a) @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.linalg.norm(pts - (a + t[:, None] * ab), axis=1)


def _light_smooth(filled, spacing) -> np.ndarray:
    """The filled image smoothed at half the shaft's width."""
    from scipy.ndimage import gaussian_filter

    # Lighter than the ridge's smoothing: the end is blurred no more than it must be.
    return gaussian_filter(filled, 0.5 * SHAFT_SIGMA_MM / spacing)


def _onto_echo(smooth, a_mm, b_mm, mm, apex, reach_mm: float = 1.0, step_mm: float = 0.05):
    """The segment moved down the beam onto the brightest echo within ``reach_mm``."""
    from scipy.ndimage import map_coordinates

    mid = 0.5 * (a_mm + b_mm) / mm
    beam = np.array([0.0, 1.0]) if apex is None else mid - np.asarray(apex, float)
    beam = beam * mm / (np.linalg.norm(beam * mm) or 1.0)  # a unit step in mm
    t = np.arange(0.0, reach_mm + step_mm / 2, step_mm)
    profile = np.zeros(len(t))
    for f in np.linspace(0.1, 0.9, 9):
        p = a_mm + f * (b_mm - a_mm) + t[:, None] * beam
        profile += map_coordinates(smooth, [p[:, 1] / mm[1], p[:, 0] / mm[0]], order=1)
    shift = t[int(np.argmax(profile))] * beam
    return a_mm + shift, b_mm + shift


def _extend(smooth, end_mm, other_mm, mm, reach_mm: float = 5.0, step_mm: float = 0.1):
    """The end moved along the line to where the shaft falls to half its height.

    The ridge test stops short of a blurred end; the shaft's profile along the line is at
    half height exactly at the end of the line that was blurred.
    """
    from scipy.ndimage import map_coordinates

    u = (end_mm - other_mm) / (np.linalg.norm(end_mm - other_mm) or 1.0)
    n = np.array([-u[1], u[0]])
    t = np.arange(-reach_mm, reach_mm + step_mm / 2, step_mm)
    pts = end_mm + t[:, None] * u
    side = [pts + k * n for k in (-4 * SHAFT_SIGMA_MM, 4 * SHAFT_SIGMA_MM)]

    def at(p):
        return map_coordinates(smooth, [p[:, 1] / mm[1], p[:, 0] / mm[0]], order=1, mode="nearest")

    line = at(pts)
    background = 0.5 * (at(side[0]) + at(side[1]))
    height = np.median((line - background)[t < 0])
    if not height > 0:
        return end_mm
    # 0.7, not 0.5: a log-compressed display (ultrasound) widens a bright end.
    above = (line - background) >= 0.7 * height
    k = int(np.flatnonzero(t >= 0)[0])
    while k + 1 < len(t) and above[k + 1]:
        k += 1
    while k > 0 and not above[k]:
        k -= 1
    return pts[k]


def _top_edge_pixels(light, valid, spacing, apex):
    """Ultrasound: (x, y) pixels on a strong echo's near edge, strength and direction (mm).

    The needle's echo is its near surface followed by reverberations, often one bright
    band thicker than the shaft: its edge facing the probe (the image brightening along
    the beam) is the line looked for, whatever the band's thickness. ``light``: the
    filled image, :func:`_light_smooth`.
    """
    from scipy.ndimage import binary_erosion

    sigma = 0.5 * SHAFT_SIGMA_MM / spacing
    gy, gx = np.gradient(light)
    gx, gy = gx / spacing[1], gy / spacing[0]  # per mm
    if apex is None:
        bx, by = np.zeros(light.shape), np.ones(light.shape)
    else:
        yy, xx = np.indices(light.shape, dtype=float)
        bx, by = xx - apex[0], yy - apex[1]
        n = np.maximum(np.hypot(bx, by), 1e-9)
        bx, by = bx / n, by / n
    mag = np.hypot(gx, gy)
    facing = (gx * bx + gy * by) > 0.2 * mag  # brighter deeper: the side facing the probe
    inner = binary_erosion(valid, iterations=max(1, int(np.ceil(4 * sigma.max()))))
    if not inner.any():
        return np.zeros((0, 2)), np.zeros(0), np.zeros((0, 2))
    vals = mag[inner]
    centre = np.median(vals)
    noise = 1.4826 * np.median(np.abs(vals - centre))
    if not noise > 0:
        return np.zeros((0, 2)), np.zeros(0), np.zeros((0, 2))
    snr = (mag - centre) / noise
    rows, cols = np.nonzero(inner & facing & (snr >= MIN_EDGE_SNR))
    if len(rows) > 6000:
        keep = np.argsort(-snr[rows, cols])[:6000]
        rows, cols = rows[keep], cols[keep]
    along = np.column_stack([-gy[rows, cols], gx[rows, cols]])  # perpendicular to the gradient
    along /= np.maximum(np.linalg.norm(along, axis=1, keepdims=True), 1e-12)
    return np.column_stack([cols, rows]).astype(float), snr[rows, cols], along


def _ridge_pixels(filled, valid, spacing, bright):
    """(x, y) pixels on a ridge, their strength (SNR) and unit direction along it (mm).

    ``filled``: the image with the median outside ``valid``.
    """
    from scipy.ndimage import binary_erosion, gaussian_filter

    sigma = SHAFT_SIGMA_MM / spacing
    smooth = gaussian_filter(filled, sigma)
    sign = -1.0 if bright else 1.0
    gy, gx = np.gradient(smooth)
    dyy, dyx = np.gradient(gy)
    dxx = np.gradient(gx, axis=1)  # its d/dy would be dyx again
    s2 = float(sigma[0] * sigma[1])
    a, b, d = sign * dxx * s2, sign * dyx * s2, sign * dyy * s2
    half_tr = 0.5 * (a + d)
    disc = np.sqrt(np.maximum(half_tr**2 - (a * d - b * b), 0.0))
    big, small = half_tr + disc, half_tr - disc
    inner = binary_erosion(valid, iterations=max(1, int(np.ceil(3 * sigma.max()))))
    if not inner.any():
        return np.zeros((0, 2)), np.zeros(0), np.zeros((0, 2))
    vals = big[inner]
    noise = 1.4826 * np.median(np.abs(vals - np.median(vals)))
    if not noise > 0:
        return np.zeros((0, 2)), np.zeros(0), np.zeros((0, 2))
    ridge = inner & (big / noise >= MIN_RIDGE_SNR) & (np.abs(small) < 0.3 * big)
    rows, cols = np.nonzero(ridge)
    if not bright:  # the ultrasound's needle has its reverberations beside it, below
        keep = _both_sides(-sign * smooth, rows, cols, a, b, big, 1.5 * sigma)
        rows, cols = rows[keep], cols[keep]
    if len(rows) > 6000:  # the strongest: RANSAC's cost is linear in them
        keep = np.argsort(-big[rows, cols])[:6000]
        rows, cols = rows[keep], cols[keep]
    # Direction along the ridge: perpendicular to the strongest curvature's eigenvector.
    ex, ey = b[rows, cols], big[rows, cols] - a[rows, cols]
    along = np.column_stack([-ey * spacing[1], ex * spacing[0]])
    along /= np.maximum(np.linalg.norm(along, axis=1, keepdims=True), 1e-12)
    return np.column_stack([cols, rows]).astype(float), big[rows, cols] / noise, along


def _both_sides(signed, rows, cols, a, b, big, reach_px) -> np.ndarray:
    """Ridge pixels where a line stands out from both sides, not the foot of a step.

    ``signed`` is the smoothed image with the line's sign made positive (bright). Sampled
    ``reach_px`` away on either side across the ridge, the centre must stand above the
    sides' mean by more than the sides differ (``MAX_ASYMMETRY``). A linear background
    slope cancels from the first and adds to the second only; a step's foot (a bone's
    edge) has its sides differ by two or more times its rise.
    """
    from scipy.ndimage import map_coordinates

    ex, ey = b[rows, cols], big[rows, cols] - a[rows, cols]
    norm = np.maximum(np.hypot(ex, ey), 1e-12)
    dx, dy = ex / norm * reach_px[1], ey / norm * reach_px[0]
    centre = signed[rows, cols]
    s1, s2 = (
        map_coordinates(signed, [rows + s * dy, cols + s * dx], order=1, mode="nearest")
        for s in (-1.0, 1.0)
    )
    rise = centre - 0.5 * (s1 + s2)
    return (rise > 0) & (np.abs(s1 - s2) < MAX_ASYMMETRY * rise)


def _ransac_segment(pts, snr, along, rng):
    """(end, end, strength) in mm of the best-supported straight gap-free stretch."""
    p = snr / snr.sum()
    # Drawn through one cumulative sum instead of ``rng.choice(len(pts), 2, replace=False, p=p)``,
    # which rebuilt and checked it on every draw: the same pairs (:func:`_pair`).
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    # No stretch can have more support than its points' capped strengths summed: a line
    # whose points cannot beat the best so far is not measured (the same answer, faster).
    capped = np.clip(snr, 0.0, SNR_CAP)
    cos_tol = np.cos(np.radians(15.0))
    best = None
    for _ in range(RANSAC_TRIALS):
        i, j = _pair(rng, cdf, p)
        d = pts[j] - pts[i]
        length = float(np.hypot(*d))
        if length < 2.0:
            continue
        u = d / length
        on = np.abs((pts - pts[i]) @ np.array([-u[1], u[0]])) < LINE_TOL_MM
        on &= np.abs(along @ u) > cos_tol
        if best is not None and capped[on].sum() * (1 + 1e-9) <= best[2]:
            continue
        seg = _longest_run(pts[on], snr[on], pts[i], u)
        if seg is not None and (best is None or seg[2] > best[2]):
            best = seg
    return best


def _pair(rng, cdf: np.ndarray, p: np.ndarray) -> tuple[int, int]:
    """Two different indices drawn with probabilities ``p``, as ``rng.choice`` draws them.

    NumPy's ``Generator.choice(n, 2, replace=False, p=p)`` draws two uniforms, looks both
    up in the normalised cumulative sum and, when they fall on the same index, zeroes it
    and draws the second again; this does the same with ``cdf`` computed once (tested
    draw for draw against ``rng.choice``).
    """
    i, j = cdf.searchsorted(rng.random(2), side="right")
    if i != j:
        return int(i), int(j)
    q = p.copy()
    q[i] = 0.0
    rest = np.cumsum(q)
    rest /= rest[-1]
    return int(i), int(rest.searchsorted(rng.random(1), side="right")[0])


def _longest_run(pts, snr, origin, u):
    """The gap-free stretch along ``u`` with the most support, refitted; None if short."""
    if len(pts) < 5:
        return None
    s = (pts - origin) @ u
    order = np.argsort(s)
    s, pts, snr = s[order], pts[order], snr[order]
    breaks = np.flatnonzero(np.diff(s) > MAX_GAP_MM)
    starts, ends = np.r_[0, breaks + 1], np.r_[breaks + 1, len(s)]
    k = _best_run(s, snr, starts, ends)
    a, b = starts[k], ends[k]
    length = s[b - 1] - s[a]
    if length < MIN_LENGTH_MM:
        return None
    bins = np.floor((s[a:b] - s[a]) / 0.5)  # sorted: distinct bins are where it steps
    cover = (1 + np.count_nonzero(np.diff(bins))) * 0.5 / length
    if cover < MIN_COVER:
        return None
    # Refit the line to the stretch (principal axis) and take its ends on it.
    seg = pts[a:b]
    c = seg.mean(axis=0)
    _, _, vt = np.linalg.svd(seg - c, full_matrices=False)
    v = vt[0]
    t = (seg - c) @ v
    return c + t.min() * v, c + t.max() * v, _support(s[a:b], snr[a:b])


def _best_run(s, snr, starts, ends) -> int:
    """Index of the run with the most :func:`_support` (the first of equals).

    A run whose capped strengths sum below the best so far cannot beat it (its support
    is a sum of some of them) and is not measured.
    """
    if len(starts) == 1:
        return 0
    capped = np.minimum(snr, SNR_CAP)
    k, best = 0, -np.inf
    for m, (a, b) in enumerate(zip(starts, ends, strict=True)):
        if capped[a:b].sum() * (1 + 1e-9) <= best:
            continue
        v = _support(s[a:b], snr[a:b])
        if v > best:
            k, best = m, v
    return k


def _support(s: np.ndarray, snr: np.ndarray) -> float:
    """Length-like support: per 0.5 mm bin along the line its best strength, capped.

    Capped so that a short high-contrast edge (a bone's cortex) does not outweigh a long
    faint needle: straightness over length is what sets a needle apart. ``s`` ascending.
    """
    bins = np.floor((s - s.min()) / 0.5).astype(int)
    best = np.zeros(bins[-1] + 1)
    # Sorted bins: each bin's maximum by one reduction over its stretch.
    first = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    best[bins[first]] = np.maximum(np.maximum.reduceat(np.minimum(snr, SNR_CAP), first), 0.0)
    return float(best.sum())


def _shadowed(img, valid, a, b, spacing, apex) -> bool:
    """True when the echo 2–6 mm beneath the segment's middle is a shadow (bone)."""
    mid = 0.5 * (a + b)
    beam = np.array([0.0, 1.0]) if apex is None else mid - np.asarray(apex, float)
    beam = beam / (np.linalg.norm(beam) or 1.0)
    samples = []
    for depth_mm in np.arange(2.0, 6.01, 0.5):
        for f in np.linspace(0.2, 0.8, 5):
            p = a + f * (b - a) + beam * depth_mm / np.array([spacing[1], spacing[0]])
            x, y = int(round(p[0])), int(round(p[1]))
            if 0 <= y < img.shape[0] and 0 <= x < img.shape[1] and valid[y, x]:
                samples.append(img[y, x])
    if len(samples) < 10:
        return False
    return float(np.median(samples)) < SHADOW_FRACTION * float(np.median(img[valid]))


def _orient(a, b, strength, valid, spacing, bright, apex) -> Needle:
    """The needle with its tip at the end away from the border (or the deeper end)."""
    depth = _border_distance_mm(valid, spacing)
    near_a, near_b = depth(a) < BORDER_MM, depth(b) < BORDER_MM
    if near_a != near_b:
        tip, tail = (b, a) if near_a else (a, b)
        return Needle(tip, tail, strength, True)
    if bright:  # ultrasound: the tip is the deeper end along the beam
        ref = np.array([0.0, -1e6]) if apex is None else np.asarray(apex, float)
        far_b = np.linalg.norm(b - ref) > np.linalg.norm(a - ref)
        tip, tail = (b, a) if far_b else (a, b)
        return Needle(tip, tail, strength, not (near_a and near_b))
    return Needle(a, b, strength, False)


def _border_distance_mm(valid: np.ndarray, spacing):
    """depth(p): distance (mm) from pixel p (x, y) to the nearest invalid pixel.

    ``distance_transform_edt(valid, sampling=spacing)`` read at two pixels: measured
    from those two alone instead of over the whole frame (tenths of a second for a large
    fluoroscopy); the transform itself where every pixel is valid (it then has no zero to
    measure from and returns its own figures).
    """
    rows, cols = np.nonzero(~valid)
    if not len(rows):
        from scipy.ndimage import distance_transform_edt

        edt = distance_transform_edt(valid, sampling=spacing)
    shape = valid.shape

    def depth(p) -> float:
        x = int(np.clip(round(p[0]), 0, shape[1] - 1))
        y = int(np.clip(round(p[1]), 0, shape[0] - 1))
        if not len(rows):
            return float(edt[y, x])
        if not valid[y, x]:
            return 0.0
        d2 = ((rows - y) * spacing[0]) ** 2 + ((cols - x) * spacing[1]) ** 2
        return float(np.sqrt(d2.min()))

    return depth

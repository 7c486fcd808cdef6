"""Starting transforms that need no user input: matched beads, or image moments.

:func:`auto_start` detects the beads (:mod:`registration.features`) and the needle
(:mod:`registration.needle`) both images show at the calibrated millimetre scale and
matches them (:mod:`registration.correspond`); the matched beads and the needle's tip are
landmarks, refined by the intensity metric like clicked ones.

ITK's ``CenteredTransformInitializer`` in MOMENTS mode lines up the images' centres of
mass. Between an ultrasound frame and a fluoroscopy frame the raw intensities share
nothing, so here the centres are those of the feature images that the metric compares
(:func:`registration.preprocess.preprocess_pair`: needle, beads, bone edges), the scale
is the calibration's (ultrasound spacing × SID/SOD / imager spacing) and the axes are
taken as parallel. That start is only rough: the fluoroscopy's features span its whole
field while the ultrasound sees a small part of it, so on phantom cases the centres
missed by 28–50 mm. :func:`moments_start` therefore also says how far the global search
has to reach from it to cover every place in the fluoroscopy field.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .correspond import AmbiguousMatchError, Correspondence, NoFeaturesError, match_points
from .errors import RegistrationError
from .evidence import Structures, detect_structures, matched_landmarks, unit_weights
from .features import Blobs
from .needle import Needle
from .preprocess import Preprocess, mask_extent, preprocess_pair
from .start import Landmarks

__all__ = [
    "AUTO_SOURCE",
    "AUTO_SOURCE_TO_CONFIRM",
    "CHECKED_ITEMS",
    "MIN_CHECKED_ITEMS",
    "AutoStart",
    "MomentsStart",
    "auto_start",
    "corners",
    "match_structures",
    "moments_start",
    "wide_search_options",
]

#: Candidates kept from the search grid, and their least separation (mm), when the search
#: spans the whole field. With the defaults (8, 5 mm) over ±60 mm, the true pose's basin
#: was missing from the kept candidates in 10 of 112 phantom pairs; 32 candidates 10 mm
#: apart spread over the field instead of crowding around a few bright structures.
WIDE_SEARCH_KEEP = 32
#: Three matched beads fix an affine map only when they span an area: the smaller over the
#: larger singular value of their centred positions must reach this (1: evenly spread).
MIN_SPREAD_RATIO = 0.25
WIDE_SEARCH_SEPARATION_MM = 10.0
#: Least agreeing items (beads, needle line, needle tip) for an automatic start that
#: ``fusion.coregister`` does not refuse outright.
MIN_CHECKED_ITEMS = 3
#: Agreeing items that check a match by themselves: two fix the similarity, three more
#: must agree with it. Fewer leave too few pairs to check each other; ``register`` then
#: has the intensity-only route, run from the matches' answer, confirm them
#: (:func:`registration.verify.intensity_route_check`; docs/registration-method.md, *Few
#: matched structures confirmed by the images*). Without that check, matches of 3-4 were
#: refused (a plane seen edge-on matched decoys with 4).
CHECKED_ITEMS = 5
#: ``Landmarks.source`` of an automatic start of ``CHECKED_ITEMS`` or more, and of fewer
#: (which ``register`` has the images confirm).
AUTO_SOURCE = "automatic correspondences"
AUTO_SOURCE_TO_CONFIRM = "automatic correspondences, to be confirmed by the images"


@dataclass(frozen=True)
class MomentsStart:
    """A start from feature moments.

    Attributes
    ----------
    matrix : ndarray (3, 3)
        Moving (ultrasound) pixel → fixed (fluoroscopy) pixel: the calibrated scale per
        axis, no rotation, the feature centroids lined up.
    reach_px : float
        Largest distance, along x or y in fixed pixels, from where ``matrix`` maps the
        ultrasound region's centre to any pixel of the fixed mask: a square search of
        this half-width covers every position in the field.
    """

    matrix: np.ndarray
    reach_px: float


def moments_start(
    fixed: np.ndarray,
    moving: np.ndarray,
    scale_xy: tuple[float, float],
    *,
    fixed_mask: np.ndarray | None = None,
    moving_mask: np.ndarray | None = None,
    preprocess: Preprocess | str = Preprocess.STRUCTURES,
    shadow_px: tuple[float, float] | None = (2.0, 10.0),
    grain: float = 1.0,
) -> MomentsStart:
    """Line up the centroids of both feature images at the calibrated scale.

    Parameters
    ----------
    fixed, moving : ndarray (rows, cols)
        Fluoroscopy and ultrasound frames.
    scale_xy : (float, float)
        Expected fixed pixels per moving pixel along the moving x and y axes (plane at
        the isocentre).
    fixed_mask, moving_mask : ndarray of bool, optional
        Valid pixels (collimator disc, calibrated ultrasound region).
    preprocess : str
        Feature images whose centroids are used (``none``: raw intensities).
    shadow_px : (float, float) or None
        As in :func:`registration.preprocess.preprocess_pair`.
    grain : float
        As in :func:`registration.preprocess.preprocess_pair`
        (:func:`registration.optimise.grain`).

    Raises
    ------
    RegistrationError
        A scale that is not positive and finite, or a feature image that is zero
        everywhere in its mask.
    """
    sx, sy = (float(v) for v in scale_xy)
    if not (np.isfinite(sx) and np.isfinite(sy) and sx > 0 and sy > 0):
        raise RegistrationError(f"moments start needs a positive scale, got {scale_xy}")
    fixed = np.asarray(fixed, dtype=np.float64)
    moving = np.asarray(moving, dtype=np.float64)
    fmask = np.ones(fixed.shape, bool) if fixed_mask is None else np.asarray(fixed_mask, bool)
    mmask = np.ones(moving.shape, bool) if moving_mask is None else np.asarray(moving_mask, bool)
    f_feat, m_feat = preprocess_pair(
        fixed,
        fmask,
        moving,
        mmask,
        Preprocess(preprocess),
        scale=0.5 * (sx + sy),
        shadow_px=shadow_px,
        grain=grain,
    )
    cf = _centroid(f_feat, fmask, "fixed")
    cm = _centroid(m_feat, mmask, "moving")
    matrix = np.array([[sx, 0.0, cf[0] - sx * cm[0]], [0.0, sy, cf[1] - sy * cm[1]], [0, 0, 1.0]])
    ext = mask_extent(mmask)
    centre = matrix @ np.array([ext[4], ext[5], 1.0])
    # The farthest mask pixel along x or y lies on the fixed mask's bounding box.
    x0, x1, y0, y1 = mask_extent(fmask)[:4]
    reach = max(centre[0] - x0, x1 - centre[0], centre[1] - y0, y1 - centre[1])
    return MomentsStart(matrix, float(reach))


def _centroid(img: np.ndarray, mask: np.ndarray, name: str) -> np.ndarray:
    # Features are non-negative for both preprocessing modes; raw intensities may not be.
    w = np.where(mask, img - img[mask].min() if mask.any() else img, 0.0)
    total = float(w.sum())
    if not total > 0:
        raise RegistrationError(f"the {name} image has no features in its mask to take moments of")
    yy, xx = np.indices(img.shape)
    return np.array([(w * xx).sum() / total, (w * yy).sum() / total])


def wide_search_options(options, reach_mm: float):
    """``options`` with a global search wide enough to cover ``reach_mm`` from the start.

    The translation range grows to ``reach_mm`` (never shrinks), and more candidates,
    further apart, are kept from the grid (``WIDE_SEARCH_KEEP``,
    ``WIDE_SEARCH_SEPARATION_MM``). Rotation and scale ranges are unchanged.
    """
    if not (np.isfinite(reach_mm) and reach_mm > 0):
        raise RegistrationError(f"search reach must be positive, got {reach_mm}")
    search = options.grid
    return options.with_values(
        search=True,
        search_translation_mm=max(float(search.search_translation_mm), float(reach_mm)),
        search_keep=max(int(search.search_keep), WIDE_SEARCH_KEEP),
        search_separation_mm=max(float(search.search_separation_mm), WIDE_SEARCH_SEPARATION_MM),
    )


@dataclass(frozen=True)
class AutoStart:
    """Landmarks from matched beads (and the needle's tip), with what they came from."""

    landmarks: Landmarks
    moving_beads: Blobs
    fixed_beads: Blobs
    match: Correspondence
    moving_needle: Needle | None = None
    fixed_needle: Needle | None = None
    #: The detections matched, whose other placements may judge a few-item match
    #: (:func:`registration.hypotheses.judge_few_match`).
    structures: Structures | None = None

    def to_dict(self) -> dict:
        """The figures ``transform.json`` records about the automatic start."""
        m = self.match
        return {
            "beads_detected_moving": len(self.moving_beads),
            "beads_detected_fixed": len(self.fixed_beads),
            "needle_detected_moving": self.moving_needle is not None,
            "needle_detected_fixed": self.fixed_needle is not None,
            "pairs_matched": len(m.moving_index),
            "needle_line_agrees": m.needle_line,
            "needle_tip_matched": m.needle_tip,
            "mirrored": m.mirrored,
            "rotation_deg": round(m.rotation_deg, 2),
            "scale": round(m.scale, 4),
            "residual_mm_max": round(float(m.residual_mm.max()), 3) if len(m.residual_mm) else None,
            "consensus_margin": round(m.margin, 3),
        }


def auto_start(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    fixed_spacing_mm: tuple[float, float],
    moving_spacing_mm: tuple[float, float],
    fixed_mask: np.ndarray | None = None,
    moving_mask: np.ndarray | None = None,
    bead_radius_mm: float | None = None,
    beam_apex_xy: tuple[float, float] | None = None,
) -> AutoStart:
    """Landmarks from the beads and needle both frames show, matched at the calibrated scale.

    Parameters
    ----------
    fixed, moving : ndarray (rows, cols)
        Fluoroscopy (dense = dark) and ultrasound (echo = bright) frames.
    fixed_spacing_mm : (float, float)
        Fluoroscopy row and column spacing at the isocentre.
    moving_spacing_mm : (float, float)
        Ultrasound row and column spacing (its calibration).
    fixed_mask, moving_mask : ndarray of bool, optional
        Valid pixels.
    bead_radius_mm : float or None
        Radius of the beads looked for; None: 0.5–1.5 mm, the ultrasound's taken from the
        fluoroscopy's beads (a disc shows its size; an echo with a tail does not).
    beam_apex_xy : (float, float) or None
        Ultrasound sector apex (pixels); None: found from ``moving_mask``'s shape (a
        rectangle: a linear probe).

    Raises
    ------
    registration.correspond.NoFeaturesError, registration.correspond.AmbiguousMatchError
        Too few beads, or no single consistent match (both are RegistrationError).
    """
    found = detect_structures(
        fixed,
        moving,
        fixed_spacing_mm=fixed_spacing_mm,
        moving_spacing_mm=moving_spacing_mm,
        fixed_mask=fixed_mask,
        moving_mask=moving_mask,
        bead_radius_mm=bead_radius_mm,
        beam_apex_xy=beam_apex_xy,
    )
    return match_structures(found, moving_mask)


def match_structures(found: Structures, moving_mask: np.ndarray | None) -> AutoStart:
    """:func:`auto_start` on structures already detected (same refusals).

    A refusal by the matcher carries ``structures`` (the detections), from which
    :func:`registration.hypotheses.judge_placements` lists the placements to judge.
    """
    mb, fb, mn, fn = found.moving_beads, found.fixed_beads, found.moving_needle, found.fixed_needle
    to_mm_m, to_mm_f = found.moving_mm, found.fixed_mm
    line_m, line_f = found.lines()
    try:
        match = match_points(
            mb.xy * to_mm_m,
            fb.xy * to_mm_f,
            moving_weight=unit_weights(mb.strength),
            fixed_weight=unit_weights(fb.strength),
            moving_line=line_m,
            fixed_line=line_f,
            extent_mm=None if moving_mask is None else corners(moving_mask) * to_mm_m,
        )
    except (NoFeaturesError, AmbiguousMatchError) as exc:
        # Too few items, or two placements: the images may still judge between the
        # placements the structures allow (registration.hypotheses), which need them.
        exc.structures = found
        raise
    source = AUTO_SOURCE if match.items >= CHECKED_ITEMS else AUTO_SOURCE_TO_CONFIRM
    landmarks = matched_landmarks(match, found, source)
    try:
        _check_area(match, fb, fn, to_mm_f)
        _check_spread(landmarks.moving_xy * to_mm_m)
    except AmbiguousMatchError as exc:
        # Points along a line leave the map across it (and its side) to the images.
        exc.structures = found
        raise
    return AutoStart(landmarks, mb, fb, match, mn, fn, found)


def _check_area(match: Correspondence, fb: Blobs, fn: Needle | None, to_mm_f) -> None:
    """Refuse a match whose structures lie along a line in the fluoroscopy.

    A plane seen edge-on projects onto a line: its beads and needle all fall on it, and a
    few of them can then be matched to ultrasound structures spread over the plane. The
    matched beads alone spanning an area also pass: a needle's far end, tens of mm from a
    compact group of beads, stretches the whole set into a line it does not lie on.
    The refusal carries the structures: the images may still judge the placements
    (:func:`registration.hypotheses.judge_placements`), whose runs refuse an edge-on map.
    """
    beads = fb.xy[match.fixed_index] * to_mm_f
    pts = [beads]
    if match.needle_line and fn is not None:
        pts.append(np.array([fn.tip_xy, fn.tail_xy]) * to_mm_f)
    ratio = _spread_ratio(np.vstack(pts))
    if ratio < MIN_SPREAD_RATIO and _spread_ratio(beads) < MIN_SPREAD_RATIO:
        raise AmbiguousMatchError(
            f"the {match.items} matched structures lie along a line in the fluoroscopy "
            f"(spread ratio {ratio:.2f} < {MIN_SPREAD_RATIO}): the plane may be seen "
            "edge-on; give landmarks or a starting transform"
        )


def _spread_ratio(pts: np.ndarray) -> float:
    """Smaller over larger singular value of the centred points (0 with fewer than 3)."""
    if len(pts) < 3:
        return 0.0
    sv = np.linalg.svd(pts - pts.mean(axis=0), compute_uv=False)
    return float(sv[1] / sv[0]) if sv[0] > 0 else 0.0


def _check_spread(moving_mm: np.ndarray) -> None:
    """Refuse matched landmarks nearly in a line: their map extrapolates badly.

    Any number of them: five beads in a row matched (the needle's line agreeing, its tip
    not) made a map that collapsed the plane, refused as if seen edge-on (exit 2). As
    for :func:`_check_area`, the images may still judge the placements.
    """
    if len(moving_mm) < 3:  # two give a similarity
        return
    sv = np.linalg.svd(moving_mm - moving_mm.mean(axis=0), compute_uv=False)
    if sv[1] < MIN_SPREAD_RATIO * sv[0]:
        raise AmbiguousMatchError(
            f"the {len(moving_mm)} matched points (beads, needle tip) lie nearly in a line "
            f"(spread ratio {sv[1] / sv[0]:.2f} < {MIN_SPREAD_RATIO}): the map across the "
            "ultrasound region is not fixed by them; give landmarks or a starting transform"
        )


def corners(mask: np.ndarray) -> np.ndarray:
    """Corners (x, y) of the mask's bounding box."""
    x0, x1, y0, y1 = mask_extent(np.asarray(mask, bool))[:4]
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)

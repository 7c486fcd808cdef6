"""Structures both images show, used near a known start: as landmarks, then as evidence.

With a start (``--init-transform``), the beads and needle detected in both frames at the
calibrated millimetre scale (:mod:`registration.features`, :mod:`registration.needle`)
are matched by a consensus restricted to placements the start allows
(:func:`registration.correspond.match_near`: within the search range around it, the same
handedness); the matched ones become weighted landmarks, as :func:`initial.auto_start`
makes them, and the landmark + intensity route refines from them. Its answer is kept only
when accepted with a predicted TRE within :data:`MAX_PREDICTED_MM` (:func:`near_route`);
otherwise ``register`` takes the intensity-only route, as without structures.

After the refinement, :func:`features_agree` maps every detected ultrasound bead that was
NOT a landmark through the answer and measures how far it lands from the nearest
fluoroscopy bead: a landmark was fitted to land on its partner, so only the others are
independent evidence for the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .correspond import (
    INLIER_MM,
    AmbiguousMatchError,
    Correspondence,
    Line,
    NoFeaturesError,
    match_near,
)
from .errors import RegistrationError
from .features import Blobs, beam_apex, detect_beads
from .needle import Needle, detect_needle
from .start import Landmarks
from .transforms import Transform

__all__ = [
    "AGREE_MM",
    "NEAR_START_SOURCE",
    "NearMatch",
    "Structures",
    "detect_structures",
    "features_agree",
    "landmarks_near",
    "matched_landmarks",
    "near_route",
    "needle_zone",
    "start_mm",
    "unit_weights",
]

#: A mapped ultrasound bead within this (mm at the isocentre) of a fluoroscopy bead agrees
#: with it: the matcher's inlier distance.
AGREE_MM = INLIER_MM
#: Landmark weight of the needle tip against a bead's: the ultrasound shows where the
#: shaft leaves the plane or its echo fades, which may fall short of the tip.
TIP_WEIGHT = 0.5
#: Most predicted TRE (mm, a 90th-percentile bound) of a landmark route from the
#: structures that is taken: 1.5 x the 2 mm at which a result counts as wrong (#15). On
#: tuning seeds 0-39, six such answers predicting 2.2-2.8 mm were 0.3-0.9 mm off; one
#: predicting 6.2 mm (four matches in 2 % of the field) was 5.3 mm off.
MAX_PREDICTED_MM = 3.0
#: Widest search range (mm) within which a start counts as a prior for the matching: a
#: start trusted less (``--init moments`` widens the search to the whole field) leaves a
#: match of three items as loose as the automatic route's, which needs more.
MAX_RANGE_MM = 30.0
#: Independent beads in the field, none agreeing, that refuse an answer.
MIN_DISAGREEING = 2


@dataclass(frozen=True)
class Structures:
    """Beads and needle detected in both frames, and each frame's pixel size (x, y) in mm."""

    moving_beads: Blobs
    fixed_beads: Blobs
    moving_needle: Needle | None
    fixed_needle: Needle | None
    moving_mm: np.ndarray
    fixed_mm: np.ndarray

    def lines(self) -> tuple[Line | None, Line | None]:
        """The needles as :class:`Line` in mm (moving, fixed), None where not seen."""
        return _line(self.moving_needle, self.moving_mm), _line(self.fixed_needle, self.fixed_mm)


def detect_structures(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    fixed_spacing_mm: tuple[float, float],
    moving_spacing_mm: tuple[float, float],
    fixed_mask: np.ndarray | None = None,
    moving_mask: np.ndarray | None = None,
    bead_radius_mm: float | None = None,
    beam_apex_xy: tuple[float, float] | None = None,
) -> Structures:
    """Detect beads and needle in both frames (spacings: row, column in mm).

    The ultrasound beads are looked for at the fluoroscopy beads' radius (a disc shows its
    size; an echo with a tail does not), away from either needle's shaft.
    """
    apex = beam_apex_xy if beam_apex_xy is not None else beam_apex(moving_mask)
    fn = detect_needle(fixed, fixed_mask, fixed_spacing_mm, bright=False)
    mn = detect_needle(moving, moving_mask, moving_spacing_mm, bright=True, beam_apex_xy=apex)
    fb = detect_beads(
        fixed,
        fixed_mask,
        fixed_spacing_mm,
        bright=False,
        radius_mm=bead_radius_mm,
        exclude=needle_zone(fn, fixed_spacing_mm),
    )
    mb = detect_beads(
        moving,
        moving_mask,
        moving_spacing_mm,
        bright=True,
        near_wall=True,
        radius_mm=bead_radius_mm or _typical_radius(fb),
        beam_apex_xy=apex,
        exclude=needle_zone(mn, moving_spacing_mm),
    )
    to_mm_f = np.array(fixed_spacing_mm[::-1], float)  # (col, row) = (x, y)
    to_mm_m = np.array(moving_spacing_mm[::-1], float)
    return Structures(mb, fb, mn, fn, to_mm_m, to_mm_f)


@dataclass(frozen=True)
class NearMatch:
    """Landmarks matched near a start, with the consensus and the beads they used."""

    landmarks: Landmarks
    match: Correspondence
    structures: Structures

    def to_dict(self) -> dict:
        """What ``quality.verification`` records about the matching near the start."""
        m = self.match
        return {
            "beads_detected_moving": len(self.structures.moving_beads),
            "beads_detected_fixed": len(self.structures.fixed_beads),
            "pairs_matched": len(m.moving_index),
            "needle_line_agrees": m.needle_line,
            "needle_tip_matched": m.needle_tip,
            "residual_mm_max": round(float(m.residual_mm.max()), 3) if len(m.residual_mm) else None,
            "consensus_margin": round(m.margin, 3),
        }


def start_mm(matrix: np.ndarray, structures: Structures, centre_px) -> np.ndarray:
    """The start's affine map, moving mm → fixed mm, linearised at ``centre_px`` (moving)."""
    t = Transform(np.asarray(matrix, float))
    c = np.asarray(centre_px, float)
    pts = np.array([c, c + (1.0, 0.0), c + (0.0, 1.0)])
    mapped = t.apply(pts) * structures.fixed_mm
    src = pts * structures.moving_mm
    out = np.eye(3)
    out[:2, 0] = (mapped[1] - mapped[0]) / (src[1, 0] - src[0, 0])
    out[:2, 1] = (mapped[2] - mapped[0]) / (src[2, 1] - src[0, 1])
    out[:2, 2] = mapped[0] - out[:2, :2] @ src[0]
    return out


def landmarks_near(
    structures: Structures,
    matrix: np.ndarray,
    *,
    centre_px,
    extent_px: np.ndarray,
    shift_mm: float,
    turn_deg: float,
) -> NearMatch | None:
    """Landmarks from the structures matched within ``shift_mm``/``turn_deg`` of the start.

    ``centre_px``: the ultrasound region's centre (moving px), about which the start's
    error is measured; ``extent_px``: its corners, over which a rival placement must
    differ. None when too few structures agree or two placements do equally well.
    """
    s = structures
    mb, fb = s.moving_beads, s.fixed_beads
    line_m, line_f = s.lines()
    centre_mm = np.asarray(centre_px, float) * s.moving_mm
    try:
        match = match_near(
            mb.xy * s.moving_mm,
            fb.xy * s.fixed_mm,
            start_mm(matrix, s, centre_px),
            centre_mm=centre_mm,
            shift_mm=shift_mm,
            turn_deg=turn_deg,
            moving_weight=unit_weights(mb.strength),
            fixed_weight=unit_weights(fb.strength),
            moving_line=line_m,
            fixed_line=line_f,
            extent_mm=np.asarray(extent_px, float) * s.moving_mm,
        )
    except (NoFeaturesError, AmbiguousMatchError):
        return None
    return NearMatch(matched_landmarks(match, s, NEAR_START_SOURCE), match, s)


#: ``Landmarks.source`` of the structures matched near a start.
NEAR_START_SOURCE = "structures matched near the start"


def matched_landmarks(match: Correspondence, s: Structures, source: str) -> Landmarks:
    """Matched beads, and the needle tip when it agrees, as weighted landmark pairs.

    Named ``auto_*``: :mod:`registration.verify_landmarks` then treats them as checked by
    a consensus, not as clicks that nothing checks. Weight: the weaker of the two
    detections, relative to the strongest pair.
    """
    mb, fb = s.moving_beads, s.fixed_beads
    mi, fi = match.moving_index, match.fixed_index
    w = list(np.minimum(unit_weights(mb.strength)[mi], unit_weights(fb.strength)[fi]))
    moving_xy, fixed_xy = list(mb.xy[mi]), list(fb.xy[fi])
    names = [f"auto_bead{k}" for k in range(len(mi))]
    if match.needle_tip:
        moving_xy.append(s.moving_needle.tip_xy)
        fixed_xy.append(match.needle_tip_mm / s.fixed_mm)
        w.append(TIP_WEIGHT)
        names.append("auto_needle_tip")
    w = np.array(w, float)
    return Landmarks(
        moving_xy=np.array(moving_xy).reshape(-1, 2),
        fixed_xy=np.array(fixed_xy).reshape(-1, 2),
        names=tuple(names),
        weights=w / w.max(),
        source=source,
    )


def features_agree(
    transform: Transform,
    structures: Structures,
    fixed_mask: np.ndarray | None,
    used_moving: np.ndarray | None = None,
) -> dict:
    """Where the answer puts each detected ultrasound bead that was not a landmark.

    ``used_moving``: indices of the moving beads used as landmarks (left out: fitted to
    land on their partners, they cannot also testify for the answer). Returns
    ``quality.verification["features_agree"]``: the independent items mapped into the
    fluoroscopy field, how many land within :data:`AGREE_MM` of a fluoroscopy bead, and
    each one's distance (mm).
    """
    s = structures
    keep = np.ones(len(s.moving_beads), bool)
    if used_moving is not None and len(used_moving):
        keep[np.asarray(used_moving, int)] = False
    mapped = transform.apply(s.moving_beads.xy[keep].reshape(-1, 2))
    inside = _inside(mapped, fixed_mask)
    d = np.full(len(mapped), np.inf)
    if len(s.fixed_beads) and len(mapped):
        diff = (mapped[:, None, :] - s.fixed_beads.xy[None]) * s.fixed_mm
        d = np.linalg.norm(diff, axis=2).min(axis=1)
    d_in = d[inside]
    return {
        "items": int(inside.sum()),
        "agree": int(np.sum(d_in <= AGREE_MM)),
        "residual_mm": [round(float(v), 3) if np.isfinite(v) else None for v in d_in],
        "landmarks_left_out": int((~keep).sum()),
    }


def _inside(mapped: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Which mapped points fall on a valid pixel of ``mask`` (all finite ones without it)."""
    ok = np.isfinite(mapped).all(axis=1)
    if mask is None:
        return ok
    mask = np.asarray(mask, bool)
    col, row = np.round(np.where(ok[:, None], mapped, -1)).astype(int).T
    ok &= (row >= 0) & (row < mask.shape[0]) & (col >= 0) & (col < mask.shape[1])
    ok[ok] = mask[row[ok], col[ok]]
    return ok


def needle_zone(needle: Needle | None, spacing_mm) -> list:
    """The needle's segment as an exclusion zone for beads (2 mm around it), or none."""
    if needle is None:
        return []
    return [(needle.tip_xy, needle.tail_xy, 2.0 / float(min(spacing_mm)))]


def _line(needle: Needle | None, to_mm: np.ndarray) -> Line | None:
    if needle is None:
        return None
    return Line(needle.tip_xy * to_mm, needle.tail_xy * to_mm, needle.tip_known)


def _typical_radius(blobs: Blobs) -> float | None:
    """Median radius (mm) of the strongest few beads found, None without beads."""
    if not len(blobs) or blobs.radius_mm is None:
        return None
    return float(np.median(blobs.radius_mm[:5]))


def unit_weights(strength: np.ndarray) -> np.ndarray:
    """Weights in (0, 1]: the square root of each strength relative to the strongest.

    The root, because beads of 1 mm answer far more weakly than beads of 3 mm and must
    still count nearly as one bead each; a faint decoy still counts less.
    """
    s = np.asarray(strength, float)
    return np.sqrt(s / s.max()) if len(s) and s.max() > 0 else np.ones(len(s))


def near_start(fixed, moving, masks, initial, opts, expected_scale, px_mm):
    """The structures and, when they match near ``initial``, their landmarks.

    Returns (None, None) where the route does not apply: no start, no calibration to put
    both frames in mm, a search range over :data:`MAX_RANGE_MM`, or ``search_structures``
    off. ``masks``: (fixed, moving) or Nones.
    """
    from .preprocess import mask_extent

    if initial is None or not opts.grid.search_structures or expected_scale is None:
        return None, None
    if not px_mm or opts.grid.search_translation_mm > MAX_RANGE_MM:
        return None, None
    if all(level > opts.landmarks.landmark_start_factor for level in opts.pyramid.levels):
        return None, None  # landmarks would skip every level: the user asked for the metric
    sx, sy = np.broadcast_to(np.asarray(expected_scale, float), (2,))
    fixed_mask, moving_mask = masks
    structures = detect_structures(
        fixed,
        moving,
        fixed_spacing_mm=(px_mm, px_mm),
        moving_spacing_mm=(sy * px_mm, sx * px_mm),
        fixed_mask=fixed_mask,
        moving_mask=moving_mask,
    )
    h0 = initial.matrix if isinstance(initial, Transform) else np.asarray(initial, float)
    mmask = np.ones(np.shape(moving), bool) if moving_mask is None else moving_mask
    x0, x1, y0, y1, cx, cy = mask_extent(mmask)[:6]
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
    near = landmarks_near(
        structures,
        h0,
        centre_px=(cx, cy),
        extent_px=corners,
        shift_mm=float(opts.grid.search_translation_mm),
        turn_deg=float(opts.grid.search_rotation_deg),
    )
    return structures, near


def near_route(run) -> tuple:
    """``run()`` (the landmark route from the matched structures) when its answer holds.

    Returns (result, None), or (None, why) when it failed, was refused, or predicts a TRE
    over :data:`MAX_PREDICTED_MM` (matches clustered in a corner of the field extrapolate: four
    within 2 % of it gave 5 mm at a predicted 6 mm); the caller then takes the
    intensity-only route, which verifies itself.
    """
    try:
        result = run()
    except RegistrationError as exc:
        return None, f"the landmark route stopped: {exc}"
    q = result.quality
    if q.verdict != "accepted":
        return None, "refused: " + "; ".join(q.reasons)
    refinement = q.intensity_refinement or ""
    if refinement.startswith("rejected") and (q.verification or {}).get("unchecked"):
        # Too few matches to check each other, and the images pulled them away: a start
        # of the wrong handedness matched four beads mirrored (synth seed 3), accepted
        # 25 mm off at a predicted 2.8 mm with the landmark-only fit kept.
        return None, (
            "the images disagree with the matched structures (intensity refinement "
            f"{refinement}) and they are too few to check each other"
        )
    if q.predicted_tre_mm is not None and q.predicted_tre_mm > MAX_PREDICTED_MM:
        return None, (
            f"its predicted TRE {q.predicted_tre_mm:.1f} mm exceeds {MAX_PREDICTED_MM} mm: the "
            "matched structures do not span the field"
        )
    return result, None


def with_evidence(
    result,
    structures: Structures | None,
    near: NearMatch | None,
    fixed_mask,
    declined: str | None = None,
):
    """``result`` with ``verification.features_agree`` (and ``structures_near_start``).

    ``declined``: why the landmark route from ``near`` was not taken (its beads then count).

    Intensity-only (nothing matched near the start), every detected bead is independent:
    the answer is refused when two or more land in the field and none on a fluoroscopy
    bead, as a right answer puts a real bead's echo on its shadow. After a match, the
    consensus already took every bead that agreed near the start, so the ones left over
    are mostly false detections and are only reported.
    """
    if structures is None:
        return result
    used = near.match.moving_index if near is not None and declined is None else None
    agree = features_agree(result.transform, structures, fixed_mask, used)
    q = result.quality
    verification = {**(q.verification or {}), "features_agree": agree}
    if near is not None:
        record = {**near.to_dict(), "used": declined is None}
        verification["structures_near_start"] = record | (
            {"declined": declined} if declined else {}
        )
    changes = {"verification": verification}
    if used is None and agree["items"] >= MIN_DISAGREEING and agree["agree"] == 0:
        reason = (
            f"unverified: none of the {agree['items']} detected ultrasound beads that were not "
            f"landmarks lands within {AGREE_MM} mm of a fluoroscopy bead"
        )
        changes.update(verdict="refused", reasons=[*q.reasons, reason])
        if result.options.get("accept_unverified"):
            changes["accepted_unverified"] = True
    result.quality = q.replace(**changes)
    return result

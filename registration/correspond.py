"""Which bead in the ultrasound is which bead in the fluoroscopy: a consensus over pairs.

Both point sets are taken to millimetres (ultrasound: its calibration; fluoroscopy: its
spacing at the isocentre), where the plane's in-plane map is close to a rotation, maybe
mirrored (the probe marker flips the image), at scale 1 ± ``scale_tolerance`` (the plane
is not exactly at the isocentre). Two points fix such a map, so every pair of ultrasound
points against every ordered pair of fluoroscopy points whose distance agrees within the
scale tolerance, in both handednesses, is a hypothesis; each is scored by the points it
brings within ``inlier_mm`` of a detection (MSAC: closer counts more). The best is refitted
to its inliers. It is refused when fewer than three points agree (two points agree with
any similarity) or when a hypothesis that places the ultrasound elsewhere is nearly as
well supported (the pattern is ambiguous).

A needle seen in both images (:mod:`registration.needle`) adds to the score its line (the
mapped ultrasound segment lies along the fluoroscopy's needle, in direction and within
the tolerance) and its tip (the mapped tip on the fluoroscopy's tip, or on either end when
that one is not known), and counts as one agreeing structure (line and tip are one
object): two beads and a needle are enough to match, one bead and a needle are not (a
plane seen edge-on puts everything on one line, where they fit). It also seeds hypotheses
of its own: the tips paired, the shafts aligned, at scale 1. The tip is a point pair only
when it agrees: a needle leaving the plane ends early in the ultrasound, and its line
still agrees.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations, permutations

import numpy as np

from .errors import RegistrationError

__all__ = [
    "AmbiguousMatchError",
    "Correspondence",
    "Line",
    "NoFeaturesError",
    "Placement",
    "match_near",
    "match_points",
    "placements",
]

#: Scale (fixed mm at the isocentre per ultrasound mm) allowed around 1.
SCALE_TOLERANCE = 0.10
#: Largest distance (mm) at which a mapped point agrees with a detection.
INLIER_MM = 1.5
#: Least number of agreeing points: two agree with any similarity at the right scale.
MIN_INLIERS = 3
#: Near a start as far from it: two beads agree with decoys among a dozen fluoroscopy
#: blobs often enough (one tuning case in 24 paired a bead with a blob 11 mm off).
MIN_INLIERS_NEAR = 3
#: A rival hypothesis scoring within this of the best makes the match ambiguous. A score
#: is about one per agreeing bead, so the best must be backed by half a bead more: three
#: beads in a line match their mirror image equally, and only a fourth bead off the line
#: tells the two apart.
AMBIGUITY_MARGIN = 0.5
#: Two hypotheses are the same pose when they place the ultrasound region's corners (or,
#: without them, the matched points) within this (mm) of each other.
SAME_POSE_MM = 3.0
#: Least consensus score: each agreeing pair adds its two detections' relative strengths'
#: product (1 for the strongest) times its closeness, so three weak blobs (the fluoroscopy
#: of an edge-on plane shows bone corners, not beads, where the beads fall in a line)
#: do not pass.
MIN_SCORE = 1.5
#: Placements within this many times a start's range compete with the match near it: a
#: copy of the pattern where the start points hides the true placement just beyond the
#: range. Over the whole field, chance rivals refused right matches in 8 of 36 tuning
#: cases (45-160 mm away or turned 35-260 degrees from 20 mm / 20 degree ranges); within
#: twice the range, in 2 (docs/registration-method.md, *A pattern and its copy*).
NEIGHBOURHOOD = 2.0
#: Items of a match near a start a copy elsewhere may leave off and still repeat it: one
#: extra ultrasound detection landing on a fluoroscopy blob, or one real shadow crowded
#: out of the strongest blobs, lets a copy bring on one item more than the truth.
COPY_SPARED_ITEMS = 1
#: Least items a copy that leaves some off must still bring on: three items match a few
#: of a dozen fluoroscopy blobs somewhere near the start too often to count as a repeat.
MIN_COPY_ITEMS = 4
#: Blobs a separate copy may share with the match it repeats: painted beside the real
#: shadows, a copy can take one of them over (tuning seed 5 at 320 px, 15 mm off).
COPY_SHARED_BLOBS = 1
#: Leading hypotheses (by their two-point score) refitted when looking for a rival.
RIVALS_REFITTED = 64
#: Most distinct placements :func:`placements` lists (the leading ones by consensus); twice
#: the most the tuning seeds allowed (docs/registration-method.md).
MAX_PLACEMENTS = 96
#: Point pairs closer than this (mm) give too unsteady an angle to seed a hypothesis.
MIN_BASE_MM = 3.0
#: Most angle (degrees) between the mapped ultrasound needle and the fluoroscopy's.
LINE_ANGLE_DEG = 5.0
#: Share of a point's distance from the fitted points that adds to ``inlier_mm``: a plane
#: tilted by 25 degrees is foreshortened by 1 − cos 25° ≈ 0.094 along one axis.
TILT_SLACK = 0.1


@dataclass(frozen=True)
class Line:
    """A needle segment in mm: its tip, its other visible end, whether the tip is known."""

    tip: np.ndarray
    tail: np.ndarray
    tip_known: bool = True

    def ends(self) -> list[np.ndarray]:
        """The ends that may be the tip."""
        return [self.tip] if self.tip_known else [self.tip, self.tail]


class NoFeaturesError(RegistrationError):
    """Too few structures were detected in one image to match."""


class AmbiguousMatchError(RegistrationError):
    """The detected structures match in two different ways, or in none."""


@dataclass(frozen=True)
class Correspondence:
    """Matched points and how well the consensus holds.

    Attributes
    ----------
    moving_index, fixed_index : ndarray of int
        The matched detections, pair by pair.
    residual_mm : ndarray
        Distance of each matched fixed point from its mapped moving point.
    needle_line, needle_tip : bool
        The needle's line agrees (the mapped ultrasound segment lies along the
        fluoroscopy's); its tip agrees too (then ``needle_tip_mm`` holds the mapped
        ultrasound tip's fixed partner: the fluoroscopy end it landed on).
    mirrored : bool
        The ultrasound is mirrored relative to the fluoroscopy.
    rotation_deg, scale : float
        The refitted similarity (mm to mm).
    score, runner_up : float
        MSAC score (about one per agreeing bead) of the best hypothesis and of the best one
        placing the ultrasound region elsewhere.
    """

    moving_index: np.ndarray
    fixed_index: np.ndarray
    residual_mm: np.ndarray
    mirrored: bool
    rotation_deg: float
    scale: float
    score: float
    runner_up: float
    needle_line: bool = False
    needle_tip: bool = False
    needle_tip_mm: np.ndarray | None = None

    @property
    def items(self) -> int:
        """Agreeing items: matched beads, plus the needle's line and tip when they agree."""
        return len(self.moving_index) + int(self.needle_line) + int(self.needle_tip)

    @property
    def margin(self) -> float:
        """Best score − runner-up's (about one per agreeing bead; 0 is a tie)."""
        return self.score - self.runner_up


@dataclass(frozen=True)
class _Sets:
    """What every hypothesis is scored against (all in mm)."""

    mov: np.ndarray
    fix: np.ndarray
    w_mov: np.ndarray
    w_fix: np.ndarray
    line_mov: Line | None
    line_fix: Line | None
    inlier_mm: float


def _region_probe(sets: _Sets, points: np.ndarray, extent_mm) -> np.ndarray:
    """Where two placements are compared: the region's corners, else ``points``.

    Without either (no bead matched), the ultrasound needle's ends.
    """
    probe = points if extent_mm is None else np.asarray(extent_mm, float).reshape(-1, 2)
    if len(probe) == 0:
        probe = np.array([sets.line_mov.tip, sets.line_mov.tail])
    return probe


def match_points(
    moving_mm: np.ndarray,
    fixed_mm: np.ndarray,
    *,
    moving_weight: np.ndarray | None = None,
    fixed_weight: np.ndarray | None = None,
    moving_line: Line | None = None,
    fixed_line: Line | None = None,
    scale_tolerance: float = SCALE_TOLERANCE,
    extent_mm: np.ndarray | None = None,
    inlier_mm: float = INLIER_MM,
    min_inliers: int = MIN_INLIERS,
    ambiguity_margin: float = AMBIGUITY_MARGIN,
    min_score: float = MIN_SCORE,
) -> Correspondence:
    """Match two point sets (mm) under a possibly mirrored rotation at scale about 1.

    ``moving_line``, ``fixed_line``: the needle in either image (mm), used only when both
    are given. ``extent_mm``: points spanning the ultrasound region (its corners, mm), over
    which a rival hypothesis must differ from the best by more than ``SAME_POSE_MM``.

    Raises
    ------
    NoFeaturesError
        Fewer than ``min_inliers`` structures (beads; a needle in both counts as one) in
        either image.
    AmbiguousMatchError
        No hypothesis with ``min_inliers`` agreeing items, or a different pose scoring at
        within ``ambiguity_margin`` of the best.
    """
    points = (moving_mm, fixed_mm, moving_weight, fixed_weight)
    sets = _checked_sets(points, (moving_line, fixed_line), min_inliers, inlier_mm)
    mov, fix, both = sets.mov, sets.fix, sets.line_mov is not None
    hyps = _hypotheses(sets, scale_tolerance)
    good = [h for h in hyps if h[1] >= min_inliers and h[0] >= min_score]
    if not good:
        raise AmbiguousMatchError(
            f"no placement brings {min_inliers} structures (of {len(mov)} ultrasound beads"
            f"{' and the needle' if both else ''}) firmly onto the {len(fix)} fluoroscopy "
            f"beads{' and needle' if both else ''} at the calibrated scale "
            f"(±{scale_tolerance:.0%}); the plane may be seen edge-on, or the beads are not "
            "in both images"
        )
    best = max(good, key=lambda h: h[0])
    matrix, inl, origin = _refit(sets, best[2], best[3])
    score = max(best[0], _score(matrix, sets, origin)[0])
    # Compared over the whole region: beads in a line place the same under a mirroring.
    probe = _region_probe(sets, mov[inl], extent_mm)
    rival = _rival_score(hyps, matrix, probe, sets)
    if score - rival < ambiguity_margin:
        raise AmbiguousMatchError(
            f"the beads match in two different ways (scores {score:.2f} and {rival:.2f}); "
            "give landmarks or a starting transform"
        )
    return _correspondence(matrix, sets, inl, score, rival, origin)


@dataclass(frozen=True)
class Placement:
    """One way the structures agree: the similarity (moving mm → fixed mm), its support.

    ``score`` is the MSAC consensus (about one per agreeing bead), ``items`` the agreeing
    structures (beads; the needle counts as one).
    """

    matrix: np.ndarray
    score: float
    items: int


def placements(
    moving_mm: np.ndarray,
    fixed_mm: np.ndarray,
    *,
    moving_weight: np.ndarray | None = None,
    fixed_weight: np.ndarray | None = None,
    moving_line: Line | None = None,
    fixed_line: Line | None = None,
    scale_tolerance: float = SCALE_TOLERANCE,
    extent_mm: np.ndarray | None = None,
    min_items: int = 2,
    limit: int | None = None,
) -> list[Placement]:
    """The distinct placements that bring ``min_items`` structures on, best first.

    Where :func:`match_points` refuses (two placements nearly tie, or only two items
    agree, which any similarity at the right scale does), these are the candidates the
    images may judge between (:mod:`registration.hypotheses`). Distinct: each places the
    ultrasound region (``extent_mm``; without it the moving points) more than
    ``SAME_POSE_MM`` from every better one; each hypothesis is refitted to its items first.
    At most ``limit`` (default :data:`MAX_PLACEMENTS`); an empty list when a side has fewer
    than ``min_items`` items.
    """
    points = (moving_mm, fixed_mm, moving_weight, fixed_weight)
    try:
        sets = _checked_sets(points, (moving_line, fixed_line), min_items, INLIER_MM)
    except NoFeaturesError:
        return []
    probe = _region_probe(sets, sets.mov, extent_mm)
    found: list[Placement] = []
    placed: list[np.ndarray] = []
    hyps = [h for h in _hypotheses(sets, scale_tolerance) if h[1] >= min_items]
    for seed_score, n, h, origin in sorted(hyps, key=lambda h: -h[0]):
        refit, _, at = _refit(sets, h, origin)
        score, m = _score(refit, sets, at)
        if m < n:  # the refit lost an item: keep the two-point similarity
            refit, score, m = h, seed_score, n
        where = _apply(refit, probe)
        if any(np.max(np.linalg.norm(where - p, axis=1)) <= SAME_POSE_MM for p in placed):
            continue
        found.append(Placement(refit, max(score, seed_score), m))
        placed.append(where)
        if len(found) >= (MAX_PLACEMENTS if limit is None else limit):
            break
    return sorted(found, key=lambda p: -p.score)


def match_near(
    moving_mm: np.ndarray,
    fixed_mm: np.ndarray,
    start_mm: np.ndarray,
    *,
    centre_mm: np.ndarray,
    shift_mm: float,
    turn_deg: float,
    moving_weight: np.ndarray | None = None,
    fixed_weight: np.ndarray | None = None,
    moving_line: Line | None = None,
    fixed_line: Line | None = None,
    scale_tolerance: float = SCALE_TOLERANCE,
    extent_mm: np.ndarray | None = None,
    min_inliers: int = MIN_INLIERS_NEAR,
    ambiguity_margin: float = AMBIGUITY_MARGIN,
    min_score: float = MIN_SCORE,
) -> Correspondence:
    """:func:`match_points` among the placements a start allows.

    ``start_mm`` (3 × 3, moving mm → fixed mm) is trusted to within ``shift_mm`` at
    ``centre_mm`` (moving) and ``turn_deg``, with its handedness; every hypothesis outside
    that is dropped, for the best and its rivals alike; ``min_inliers`` items must agree at
    a consensus of ``min_score`` (as :func:`match_points`: three weak blobs do not pass).

    Raises
    ------
    NoFeaturesError, AmbiguousMatchError
        As :func:`match_points`, counted among the allowed placements only; and when the
        same structures match as well just beyond the start's range
        (:func:`_same_pattern_elsewhere`).
    """
    points = (moving_mm, fixed_mm, moving_weight, fixed_weight)
    sets = _checked_sets(points, (moving_line, fixed_line), min_inliers, INLIER_MM)
    mov = sets.mov
    near = _Near(np.asarray(start_mm, float), np.asarray(centre_mm, float), shift_mm, turn_deg)
    hyps = [h for h in _hypotheses(sets, scale_tolerance) if near.allows(h[2])]
    good = [h for h in hyps if h[1] >= min_inliers and h[0] >= min_score]
    if not good:
        raise AmbiguousMatchError(
            f"no placement near the start brings {min_inliers} items firmly on"
        )
    best = max(good, key=lambda h: h[0])
    matrix, inl, origin = _refit(sets, best[2], best[3])
    if not near.allows(matrix) or _score(matrix, sets, origin)[1] < min_inliers:
        raise AmbiguousMatchError("the refitted placement leaves the start's range")
    score = max(best[0], _score(matrix, sets, origin)[0])
    probe = mov[inl] if extent_mm is None else np.asarray(extent_mm, float).reshape(-1, 2)
    rival = _rival_score(hyps, matrix, probe, sets)
    if score - rival < ambiguity_margin:
        raise AmbiguousMatchError(f"two placements near the start ({score:.2f}, {rival:.2f})")
    _same_pattern_elsewhere(sets, scale_tolerance, (matrix, origin), probe, near, ambiguity_margin)
    return _correspondence(matrix, sets, inl, score, rival, origin)


def _same_pattern_elsewhere(sets: _Sets, tol: float, best, probe, near: _Near, margin: float):
    """Refuse a match near a start that the same structures repeat just beyond its range.

    ``best``: the match's (matrix, origin). The start narrows where to look; it cannot tell
    a pattern from its copy. Blobs painted where a start 15-22 mm off puts the beads were
    taken as the match: the true beads lay just outside the start's range, or answered
    weaker. So placements within :data:`NEIGHBOURHOOD` times the start's range compete
    too, each item counted as one whatever its strength (a painted blob can be made as
    strong as wanted): one bringing on as many items at a consensus within ``margin``, at
    a different pose, makes the match ambiguous. As many, or one fewer where that leaves
    four (:func:`_items_to_repeat`), judged then against the match's consensus without its
    weakest item: one extra ultrasound detection landing on a blob at the copy gave a copy
    of report seed 1120's five beads six items against the truth's five. A separate copy
    (:meth:`_Held.apart_from`) repeats the match at any consensus of :data:`MIN_SCORE`:
    painted beside the real shadows it shifts their detected centres, and its own
    precision is the painter's choice, so the consensus cannot rank it against the truth.

    Every one of the :data:`RIVALS_REFITTED` leading hypotheses is refitted and judged on
    what decides: the refitted placement (still in the neighbourhood) and the better of its
    seed's and its refit's consensus. A two-point seed of an imprecise copy can score well
    below what the copy's least-squares fit brings on, so the seed's score alone stops
    nothing.
    """
    plain = replace(sets, w_mov=np.ones(len(sets.mov)), w_fix=np.ones(len(sets.fix)))
    match = _Held(plain, *best)
    wide = replace(near, shift=NEIGHBOURHOOD * near.shift, turn=NEIGHBOURHOOD * near.turn)
    placed = _apply(best[0], probe)
    hyps = [h for h in _hypotheses(plain, tol) if wide.allows(h[2])]
    for seed_score, _n, h, seed_origin in sorted(hyps, key=lambda h: -h[0])[:RIVALS_REFITTED]:
        refit, _, at = _refit(plain, h, seed_origin)
        if not wide.allows(refit):
            continue
        moved = float(np.max(np.linalg.norm(_apply(refit, probe) - placed, axis=1)))
        rival = _Held(plain, refit, at, seed_score)
        if moved > SAME_POSE_MM and match.repeated_by(rival, margin):
            raise AmbiguousMatchError(
                f"the {match.n} items matched near the start (consensus {match.score:.2f}) "
                f"match as well {moved:.0f} mm away ({rival.n} items, {rival.score:.2f}"
                f"{', on other blobs' if match.apart_from(rival) else ''}): the same pattern "
                "repeats just beyond the start's range; ambiguous"
            )


class _Held:
    """A placement's items counted one each: consensus, count, shares, blobs brought on."""

    def __init__(self, plain: _Sets, matrix, origin, seed_score: float = 0.0):
        self.score, self.n = _score(matrix, plain, origin)
        # A rival is judged on the better of its two-point seed's and its refit's consensus.
        self.score = max(self.score, seed_score)
        shares, blobs = _agreeing(matrix, plain, origin)
        self.shares, self.blobs = np.sort(shares), set(blobs.tolist())

    def apart_from(self, rival: _Held) -> bool:
        """Whether ``rival`` is a separate copy of this match, on blobs of its own.

        All our items (at least :data:`MIN_COPY_ITEMS`), on blobs all but
        :data:`COPY_SHARED_BLOBS` of them others than ours.
        """
        shared = len(self.blobs & rival.blobs)
        return rival.n >= self.n >= MIN_COPY_ITEMS and shared <= COPY_SHARED_BLOBS

    def repeated_by(self, rival: _Held, margin: float) -> bool:
        """Whether ``rival`` (elsewhere) repeats this match, as the docstring above says."""
        if self.apart_from(rival):  # a separate copy: its precision is the painter's
            return rival.score >= MIN_SCORE
        if rival.n < _items_to_repeat(self.n):
            return False
        # A copy that leaves an item off is judged against the match without its weakest.
        return (
            rival.score
            >= self.score - float(np.sum(self.shares[: max(self.n - rival.n, 0)])) - margin
        )


def _items_to_repeat(n: int) -> int:
    """Items a rival must bring on to repeat a match of ``n`` items.

    All of them, or all but :data:`COPY_SPARED_ITEMS` where that still leaves
    :data:`MIN_COPY_ITEMS`: a copy may miss the match's one chance item, three do not repeat.
    """
    return n if n <= MIN_COPY_ITEMS else max(n - COPY_SPARED_ITEMS, MIN_COPY_ITEMS)


@dataclass(frozen=True)
class _Near:
    """The placements a start allows: its handedness, ``turn`` degrees, ``shift`` mm."""

    start: np.ndarray
    centre: np.ndarray
    shift: float
    turn: float

    def allows(self, matrix: np.ndarray) -> bool:
        """Whether ``matrix`` (mm → mm) lies within the start's range."""
        if np.linalg.det(matrix[:2, :2]) * np.linalg.det(self.start[:2, :2]) <= 0:
            return False
        moved = np.linalg.norm(
            _apply(matrix, self.centre[None]) - _apply(self.start, self.centre[None])
        )
        d_angle = abs((_angle(matrix) - _angle(self.start) + 180.0) % 360.0 - 180.0)
        return bool(moved <= self.shift and d_angle <= self.turn)


def _angle(matrix: np.ndarray) -> float:
    """Rotation (degrees) of the similarity nearest to the linear part, mirror undone."""
    lin = matrix[:2, :2]
    if np.linalg.det(lin) < 0:
        lin = lin @ np.diag([-1.0, 1.0])
    return float(np.degrees(np.arctan2(lin[1, 0] - lin[0, 1], lin[0, 0] + lin[1, 1])))


def _checked_sets(points, lines, min_inliers: int, inlier_mm: float) -> _Sets:
    """Both sides' items as :class:`_Sets`, or :class:`NoFeaturesError` when a side has too few.

    ``points``: (moving mm, fixed mm, moving weights, fixed weights); ``lines``: the needles
    (moving, fixed), used only when both images show one (the needle counts as one item).
    """
    moving_mm, fixed_mm, moving_weight, fixed_weight = points
    moving_line, fixed_line = lines
    mov = np.asarray(moving_mm, float).reshape(-1, 2)
    fix = np.asarray(fixed_mm, float).reshape(-1, 2)
    both = moving_line is not None and fixed_line is not None
    for name, pts, line in (("ultrasound", mov, moving_line), ("fluoroscopy", fix, fixed_line)):
        if len(pts) + both < min_inliers:
            raise NoFeaturesError(_too_few(name, len(pts), line is not None, min_inliers))
    return _Sets(
        mov,
        fix,
        np.ones(len(mov)) if moving_weight is None else np.asarray(moving_weight, float),
        np.ones(len(fix)) if fixed_weight is None else np.asarray(fixed_weight, float),
        moving_line if both else None,
        fixed_line if both else None,
        inlier_mm,
    )


def _too_few(name: str, n: int, needle: bool, need: int) -> str:
    return (
        f"{n} bead{'s' if n != 1 else ''} detected in the {name}"
        f"{' (and a needle)' if needle else ''}; automatic correspondences need at least "
        f"{need} beads in each image, or {max(need - 1, 0)} and the needle in both"
    )


def _hypotheses(sets: _Sets, tol: float) -> list[tuple[float, int, np.ndarray, np.ndarray]]:
    """(score, items, matrix, origin) of every two-point similarity in scale tolerance.

    ``origin`` (mm, moving) is the middle of the two points the similarity was made from.
    """
    mov, fix = sets.mov, sets.fix
    seeds = []
    for i, j in combinations(range(len(mov)), 2):
        dm = mov[j] - mov[i]
        lm = float(np.hypot(*dm))
        if lm < MIN_BASE_MM:
            continue
        for k, q in permutations(range(len(fix)), 2):
            s = float(np.hypot(*(fix[q] - fix[k]))) / lm
            if abs(s - 1.0) <= tol:
                seeds.append((mov[i], mov[j], fix[k], fix[q]))
    seeds += _needle_seeds(sets.line_mov, sets.line_fix)
    out = []
    for m0, m1, f0, f1 in seeds:
        for mirror in (False, True):
            a = _two_point(m0, m1, f0, f1, mirror)
            origin = 0.5 * (m0 + m1)
            score, n = _score(a, sets, origin)
            out.append((score, n, a, origin))
    return out


def _needle_seeds(lm: Line | None, lf: Line | None) -> list:
    """Tip on tip, shaft along shaft, at scale 1: each candidate tip of either needle."""
    if lm is None or lf is None:
        return []
    out = []
    for tm in lm.ends():
        om = lm.tail if tm is lm.tip else lm.tip
        um = (om - tm) / (np.linalg.norm(om - tm) or 1.0)
        for tf in lf.ends():
            of = lf.tail if tf is lf.tip else lf.tip
            uf = (of - tf) / (np.linalg.norm(of - tf) or 1.0)
            out.append((tm, tm + 10.0 * um, tf, tf + 10.0 * uf))
    return out


def _rival_score(hyps, matrix, probe, sets: _Sets, top: int = RIVALS_REFITTED) -> float:
    """Best refitted score among the leading hypotheses that place ``probe`` elsewhere.

    Each is refitted first: a two-point hypothesis of the right pose from a short base
    swings the far corners by millimetres and must not count as a rival.
    """
    placed = _apply(matrix, probe)
    rival = 0.0
    for score, _n, h, origin in sorted(hyps, key=lambda h: -h[0])[:top]:
        if score <= rival:
            break
        refit, _, at = _refit(sets, h, origin)
        if np.max(np.linalg.norm(_apply(refit, probe) - placed, axis=1)) > SAME_POSE_MM:
            rival = max(rival, _score(refit, sets, at)[0], score)
    return rival


def _two_point(m0, m1, f0, f1, mirror: bool) -> np.ndarray:
    """The similarity (3 × 3) taking m0 → f0 and m1 → f1, x mirrored first if asked."""
    flip = np.diag([-1.0, 1.0]) if mirror else np.eye(2)
    a, b = flip @ m0, flip @ m1
    dm, df = b - a, f1 - f0
    ang = np.arctan2(df[1], df[0]) - np.arctan2(dm[1], dm[0])
    s = np.hypot(*df) / np.hypot(*dm)
    rot = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]]) @ flip
    out = np.eye(3)
    out[:2, :2] = rot
    out[:2, 2] = f0 - rot @ m0
    return out


def _apply(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ matrix[:2, :2].T + matrix[:2, 2]


def _nearest(matrix, mov, fix) -> tuple[np.ndarray, np.ndarray]:
    if len(mov) == 0 or len(fix) == 0:
        return np.full(len(mov), np.inf), np.zeros(len(mov), int)
    d = np.linalg.norm(_apply(matrix, mov)[:, None, :] - fix[None, :, :], axis=2)
    return d.min(axis=1), d.argmin(axis=1)


def _tolerance(sets: _Sets, pts: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Agreement distance (mm) at each moving point: ``inlier_mm`` plus the tilt's share.

    A plane tilted by up to 25 degrees from facing the detector is foreshortened by up to
    ``TILT_SLACK`` of each distance, which a similarity through ``origin`` cannot follow.
    """
    return sets.inlier_mm + TILT_SLACK * np.linalg.norm(np.atleast_2d(pts) - origin, axis=1)


def _score(matrix, sets: _Sets, origin: np.ndarray) -> tuple[float, int]:
    """MSAC score and the number of agreeing items (beads, the needle).

    A bead adds both weights × (1 − (d/tol)²); a needle item adds 1 − (d/tol)².
    """
    shares, _ = _agreeing(matrix, sets, origin)
    score, n = float(np.sum(shares)), len(shares)
    line, tip, _ = _needle_agreement(matrix, sets, origin)
    # The tip adds to the score, not to the count: line and tip are one structure, and a
    # bead and a needle alone fit a plane seen edge-on (everything on one line).
    for closeness in (line, tip):
        if closeness is not None:
            score += closeness
    return score, n + int(line is not None)


def _agreeing(matrix, sets: _Sets, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each agreeing bead's share of :func:`_score` and the fixed blob it lands on.

    A share is both weights × the bead's closeness.
    """
    d, idx = _nearest(matrix, sets.mov, sets.fix)
    tol = _tolerance(sets, sets.mov, origin)
    inl = _one_to_one(d, idx, tol)
    pair_w = sets.w_mov[inl] * sets.w_fix[idx[inl]]
    return pair_w * (1.0 - (d[inl] / tol[inl]) ** 2), idx[inl]


def _needle_agreement(matrix, sets: _Sets, origin: np.ndarray):
    """(line closeness, tip closeness, fixed tip) of the needle under ``matrix``.

    A closeness is 1 − (d/tol)² where the item agrees, else None.
    """
    lm, lf = sets.line_mov, sets.line_fix
    if lm is None or lf is None:
        return None, None, None
    tol = _tolerance(sets, np.array([lm.tip, lm.tail]), origin)
    a, b = _apply(matrix, np.array([lm.tip, lm.tail]))
    uf = lf.tail - lf.tip
    length = float(np.linalg.norm(uf)) or 1.0
    uf = uf / length
    normal = np.array([-uf[1], uf[0]])
    off = np.abs(np.array([(a - lf.tip) @ normal, (b - lf.tip) @ normal])) / tol
    along = np.array([(a - lf.tip) @ uf, (b - lf.tip) @ uf])
    cos = abs((b - a) @ uf) / (np.linalg.norm(b - a) or 1.0)
    inside = along.min() > -tol.max() and along.max() < length + tol.max()
    line_ok = off.max() < 1.0 and inside and cos >= np.cos(np.radians(LINE_ANGLE_DEG))
    if not line_ok:
        return None, None, None
    line = float(1.0 - off.max() ** 2)
    tips = [(float(np.linalg.norm(a - e)), e) for e in lf.ends()] if lm.tip_known else []
    d_tip, tip = min(tips, key=lambda t: t[0], default=(np.inf, None))
    if d_tip < tol[0]:
        return line, float(1.0 - (d_tip / tol[0]) ** 2), tip
    return line, None, None


def _one_to_one(d: np.ndarray, idx: np.ndarray, tol) -> np.ndarray:
    """Inliers (closer than ``tol``), each fixed point used once (by its closest)."""
    inl = d < tol
    for f in np.unique(idx[inl]):
        users = np.flatnonzero(inl & (idx == f))
        inl[users[users != users[np.argmin(d[users])]]] = False
    return inl


def _refit(sets: _Sets, matrix, origin, rounds: int = 3):
    """Least-squares similarity (handedness kept) on the agreeing items, repeated.

    The needle's line adds the ultrasound segment's ends paired with their feet on the
    fluoroscopy's line, its tip the tip pair. Returns the matrix, the bead inliers and
    the new origin of the tolerance (the middle of the points fitted).
    """
    mirror = np.linalg.det(matrix[:2, :2]) < 0
    for _ in range(rounds):
        d, idx = _nearest(matrix, sets.mov, sets.fix)
        new = _one_to_one(d, idx, _tolerance(sets, sets.mov, origin))
        src, dst = _needle_pairs(matrix, sets, origin)
        src = np.vstack([sets.mov[new], src])
        dst = np.vstack([sets.fix[idx[new]], dst])
        if len(src) < 2:
            break
        matrix, origin = _umeyama(src, dst, mirror), src.mean(axis=0)
    d, idx = _nearest(matrix, sets.mov, sets.fix)
    return matrix, _one_to_one(d, idx, _tolerance(sets, sets.mov, origin)), origin


def _needle_pairs(matrix, sets: _Sets, origin) -> tuple[np.ndarray, np.ndarray]:
    """Moving and fixed points (mm) the needle contributes to a refit under ``matrix``."""
    line_d, tip_d, tip = _needle_agreement(matrix, sets, origin)
    if line_d is None:
        return np.zeros((0, 2)), np.zeros((0, 2))
    lm, lf = sets.line_mov, sets.line_fix
    uf = (lf.tail - lf.tip) / (np.linalg.norm(lf.tail - lf.tip) or 1.0)
    mapped = _apply(matrix, np.array([lm.tip, lm.tail]))
    feet = lf.tip + ((mapped - lf.tip) @ uf)[:, None] * uf
    src, dst = [lm.tip, lm.tail], [feet[0], feet[1]]
    if tip_d is not None:
        src.append(lm.tip)
        dst.append(tip)
    return np.array(src), np.array(dst)


def _umeyama(src: np.ndarray, dst: np.ndarray, mirror: bool) -> np.ndarray:
    """Least-squares similarity src → dst with the given handedness (Umeyama 1991)."""
    flip = np.diag([-1.0, 1.0]) if mirror else np.eye(2)
    a = src @ flip.T
    ca, cb = a.mean(axis=0), dst.mean(axis=0)
    u, sv, vt = np.linalg.svd((dst - cb).T @ (a - ca))
    fix_det = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    r = u @ fix_det @ vt
    s = float(np.sum(sv * np.diag(fix_det)) / np.sum((a - ca) ** 2))
    out = np.eye(3)
    out[:2, :2] = s * r @ flip
    out[:2, 2] = cb - s * r @ ca
    return out


def _pairs(matrix, sets: _Sets, inl, origin):
    """The bead inliers and the needle's (line, tip, fixed tip) reported as matches.

    The consensus tolerates a tilted plane's foreshortening; the pairs handed on as
    landmarks are held to ``inlier_mm`` under a map that follows it: an affine fit to
    four or more matched beads. With fewer, the beads stand, and the tip (a weaker point:
    a needle's echo may end short of it) must agree under the similarity itself.
    """
    d, idx = _nearest(matrix, sets.mov, sets.fix)
    line_d, tip_d, tip = _needle_agreement(matrix, sets, origin)
    check = matrix
    if inl.sum() >= 4:
        check = _affine(sets.mov[inl], sets.fix[idx[inl]])
        dd = np.linalg.norm(_apply(check, sets.mov) - sets.fix[idx], axis=1)
        inl = inl & (dd < sets.inlier_mm)
    if tip is not None:
        d_tip = float(np.linalg.norm(_apply(check, sets.line_mov.tip[None])[0] - tip))
        if d_tip >= sets.inlier_mm:
            tip_d, tip = None, None
    return inl, d, idx, line_d, tip_d, tip


def _affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares affine map (3 × 3) src → dst."""
    a = np.column_stack([src, np.ones(len(src))])
    sol, *_ = np.linalg.lstsq(a, dst, rcond=None)
    out = np.eye(3)
    out[:2, :] = sol.T
    return out


def _correspondence(matrix, sets: _Sets, inl, score, rival, origin) -> Correspondence:
    inl, d, idx, line_d, tip_d, tip = _pairs(matrix, sets, inl, origin)
    m_idx = np.flatnonzero(inl)
    lin = matrix[:2, :2]
    mirrored = bool(np.linalg.det(lin) < 0)
    col0 = lin @ (np.array([-1.0, 0.0]) if mirrored else np.array([1.0, 0.0]))
    return Correspondence(
        moving_index=m_idx,
        fixed_index=idx[m_idx],
        residual_mm=d[m_idx],
        mirrored=mirrored,
        rotation_deg=float(np.degrees(np.arctan2(col0[1], col0[0]))),
        scale=float(np.sqrt(abs(np.linalg.det(lin)))),
        score=float(score),
        runner_up=float(rival),
        needle_line=line_d is not None,
        needle_tip=tip_d is not None,
        needle_tip_mm=tip,
    )

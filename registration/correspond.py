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
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations, permutations

import numpy as np

from .errors import RegistrationError

__all__ = ["AmbiguousMatchError", "Correspondence", "NoFeaturesError", "match_points"]

#: Scale (fixed mm at the isocentre per ultrasound mm) allowed around 1.
SCALE_TOLERANCE = 0.10
#: Largest distance (mm) at which a mapped point agrees with a detection.
INLIER_MM = 1.5
#: Least number of agreeing points: two agree with any similarity at the right scale.
MIN_INLIERS = 3
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
#: Point pairs closer than this (mm) give too unsteady an angle to seed a hypothesis.
MIN_BASE_MM = 3.0


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

    @property
    def margin(self) -> float:
        """Best score − runner-up's (about one per agreeing bead; 0 is a tie)."""
        return self.score - self.runner_up


def match_points(
    moving_mm: np.ndarray,
    fixed_mm: np.ndarray,
    *,
    moving_weight: np.ndarray | None = None,
    fixed_weight: np.ndarray | None = None,
    scale_tolerance: float = SCALE_TOLERANCE,
    extent_mm: np.ndarray | None = None,
    inlier_mm: float = INLIER_MM,
    min_inliers: int = MIN_INLIERS,
    ambiguity_margin: float = AMBIGUITY_MARGIN,
    min_score: float = MIN_SCORE,
) -> Correspondence:
    """Match two point sets (mm) under a possibly mirrored rotation at scale about 1.

    ``extent_mm``: points spanning the ultrasound region (its corners, mm), over which a
    rival hypothesis must differ from the best by more than ``SAME_POSE_MM``.

    Raises
    ------
    NoFeaturesError
        Fewer than ``min_inliers`` points in either set.
    AmbiguousMatchError
        No hypothesis with ``min_inliers`` agreeing points, or a different pose scoring at
        within ``ambiguity_margin`` of the best.
    """
    mov = np.asarray(moving_mm, float).reshape(-1, 2)
    fix = np.asarray(fixed_mm, float).reshape(-1, 2)
    for name, pts in (("ultrasound", mov), ("fluoroscopy", fix)):
        if len(pts) < min_inliers:
            raise NoFeaturesError(
                f"{len(pts)} bead{'s' if len(pts) != 1 else ''} detected in the {name}; "
                f"automatic correspondences need at least {min_inliers} in each image"
            )
    w = np.ones(len(mov)) if moving_weight is None else np.asarray(moving_weight, float)
    wf = np.ones(len(fix)) if fixed_weight is None else np.asarray(fixed_weight, float)
    hyps = _hypotheses(mov, fix, (w, wf), scale_tolerance, inlier_mm)
    good = [h for h in hyps if h[1] >= min_inliers and h[0] >= min_score]
    if not good:
        raise AmbiguousMatchError(
            f"no placement brings {min_inliers} of the {len(mov)} ultrasound beads firmly onto the "
            f"{len(fix)} fluoroscopy beads at the calibrated scale (±{scale_tolerance:.0%}); "
            "the plane may be seen edge-on, or the beads are not in both images"
        )
    best = max(good, key=lambda h: h[0])
    matrix, inl = _refit(mov, fix, best[2], inlier_mm)
    score = max(best[0], _score(matrix, mov, fix, (w, wf), inlier_mm)[0])
    # Compared over the whole region: beads in a line place the same under a mirroring.
    probe = mov[inl] if extent_mm is None else np.asarray(extent_mm, float).reshape(-1, 2)
    rival = _rival_score(hyps, matrix, probe, mov, fix, (w, wf), inlier_mm)
    if score - rival < ambiguity_margin:
        raise AmbiguousMatchError(
            f"the beads match in two different ways (scores {score:.2f} and {rival:.2f}); "
            "give landmarks or a starting transform"
        )
    return _correspondence(matrix, mov, fix, inl, inlier_mm, score, rival)


def _hypotheses(mov, fix, w, tol, inlier_mm) -> list[tuple[float, int, np.ndarray]]:
    """(score, inliers, matrix) of every two-point similarity within the scale tolerance."""
    out = []
    for i, j in combinations(range(len(mov)), 2):
        dm = mov[j] - mov[i]
        lm = float(np.hypot(*dm))
        if lm < MIN_BASE_MM:
            continue
        for k, q in permutations(range(len(fix)), 2):
            df = fix[q] - fix[k]
            s = float(np.hypot(*df)) / lm
            if abs(s - 1.0) > tol:
                continue
            for mirror in (False, True):
                a = _two_point(mov[i], mov[j], fix[k], fix[q], mirror)
                score, n = _score(a, mov, fix, w, inlier_mm)
                out.append((score, n, a))
    return out


def _rival_score(hyps, matrix, probe, mov, fix, w, inlier_mm, top: int = 64) -> float:
    """Best refitted score among the leading hypotheses that place ``probe`` elsewhere.

    Each is refitted first: a two-point hypothesis of the right pose from a short base
    swings the far corners by millimetres and must not count as a rival.
    """
    placed = _apply(matrix, probe)
    rival = 0.0
    for score, _n, h in sorted(hyps, key=lambda h: -h[0])[:top]:
        if score <= rival:
            break
        refit, _ = _refit(mov, fix, h, inlier_mm)
        if np.max(np.linalg.norm(_apply(refit, probe) - placed, axis=1)) > SAME_POSE_MM:
            rival = max(rival, _score(refit, mov, fix, w, inlier_mm)[0], score)
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
    d = np.linalg.norm(_apply(matrix, mov)[:, None, :] - fix[None, :, :], axis=2)
    return d.min(axis=1), d.argmin(axis=1)


def _score(matrix, mov, fix, w, inlier_mm) -> tuple[float, int]:
    """MSAC score (both weights × (1 − (d/tol)²) over inliers) and the inlier count."""
    d, idx = _nearest(matrix, mov, fix)
    inl = _one_to_one(d, idx, inlier_mm)
    pair_w = w[0][inl] * w[1][idx[inl]]
    return float(np.sum(pair_w * (1.0 - (d[inl] / inlier_mm) ** 2))), int(inl.sum())


def _one_to_one(d: np.ndarray, idx: np.ndarray, inlier_mm: float) -> np.ndarray:
    """Inliers, each fixed point used once (by its closest moving point)."""
    inl = d < inlier_mm
    for f in np.unique(idx[inl]):
        users = np.flatnonzero(inl & (idx == f))
        inl[users[users != users[np.argmin(d[users])]]] = False
    return inl


def _refit(mov, fix, matrix, inlier_mm, rounds: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity (handedness kept) on the inliers, repeated."""
    mirror = np.linalg.det(matrix[:2, :2]) < 0
    inl = np.zeros(len(mov), bool)
    for _ in range(rounds):
        d, idx = _nearest(matrix, mov, fix)
        new = _one_to_one(d, idx, inlier_mm)
        if new.sum() < 2 or np.array_equal(new, inl):
            break
        inl = new
        matrix = _umeyama(mov[inl], fix[idx[inl]], mirror)
    d, idx = _nearest(matrix, mov, fix)
    return matrix, _one_to_one(d, idx, inlier_mm)


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


def _correspondence(matrix, mov, fix, inl, inlier_mm, score, rival) -> Correspondence:
    d, idx = _nearest(matrix, mov, fix)
    m_idx = np.flatnonzero(inl)
    lin = matrix[:2, :2]
    mirrored = bool(np.linalg.det(lin) < 0)
    scale = float(np.sqrt(abs(np.linalg.det(lin))))
    col0 = lin @ (np.array([-1.0, 0.0]) if mirrored else np.array([1.0, 0.0]))
    return Correspondence(
        moving_index=m_idx,
        fixed_index=idx[m_idx],
        residual_mm=d[m_idx],
        mirrored=mirrored,
        rotation_deg=float(np.degrees(np.arctan2(col0[1], col0[0]))),
        scale=scale,
        score=float(score),
        runner_up=float(rival),
    )

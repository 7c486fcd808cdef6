"""Placements the images judge: the automatic start where the beads leave a few.

The consensus over beads and needle (:func:`registration.correspond.match_points`)
refuses when two placements nearly tie, and when only two items agree (two beads, or one
bead and the needle): two points fix a similarity at the calibrated scale, so every
ordered pair in either handedness is a placement. :func:`judge_placements` lists the
distinct placements (:func:`registration.correspond.placements`), screens them by a short
intensity optimisation at the two coarsest pyramid levels, runs the start route
(``register(initial=...)``, with its verification) from the best few, and accepts only
an answer the images single out: one answer accepted, and every other candidate ending
at the same answer (within ``verify_basin_mm``) or at a cost worse by more than
``search_min_margin`` (the verification's ambiguity gate). Costs are compared at one
standard: the two finest levels re-run from each end on the whole images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .correspond import AMBIGUITY_MARGIN, MAX_PLACEMENTS, SAME_POSE_MM, placements
from .errors import ConvergenceError, RegistrationError
from .evidence import Structures, unit_weights
from .guards import raise_if_refused, scale_range
from .initial import CHECKED_ITEMS, MIN_CHECKED_ITEMS, corners
from .metrics import Metric
from .optimise import LevelProblem, Pyramid, grain, run_levels
from .options import RegistrationOptions
from .preprocess import Preprocess, mask_extent, preprocess_pair, quantised_scale
from .transforms import Transform, TransformModel
from .verify import HOP_GAIN

__all__ = [
    "CANDIDATE_LEVEL",
    "RIVAL_LEVEL",
    "SCREEN_MARGIN",
    "Candidate",
    "judge_few_match",
    "judge_placements",
    "list_candidates",
]

#: ``progress(CANDIDATE_LEVEL, k, n)`` says the start route runs from candidate k of n.
CANDIDATE_LEVEL = -2
#: ``progress(RIVAL_LEVEL, k, n)`` says rival placement k of n of a few-item match runs.
RIVAL_LEVEL = -3
#: Pyramid factors and iteration caps of the screen: the coarse levels' wide basins.
SCREEN_LEVELS = (16, 8)
SCREEN_ITERATIONS = (30, 30)
#: A placement the screen dropped whose screened cost is within this (relative) of the
#: winner's screened cost refuses the answer: it was not seen at the fine levels.
SCREEN_MARGIN = 0.12


@dataclass
class Candidate:
    """One placement and what became of it (costs: lower is better)."""

    matrix: np.ndarray  # the start, moving px -> fixed px
    score: float
    items: int
    screen_cost: float = np.inf
    result: object | None = None
    error: str | None = None
    end_cost: float = np.inf
    distance_mm: float | None = None

    @property
    def accepted(self) -> bool:
        """Whether the start route from this placement ended accepted."""
        return self.result is not None and self.result.quality.verdict == "accepted"

    def to_dict(self, winner: Candidate | None) -> dict:
        """What ``quality.verification["placements"]`` records of this candidate."""
        run = self.result is not None or self.error is not None
        return {
            **self.record(winner, run=run, against="accepted"),
            "verdict": None if self.result is None else self.result.quality.verdict,
            "error": self.error,
        }

    def record(self, ref: Candidate | None, *, run: bool, against: str) -> dict:
        """Its consensus, costs, and where it ended against ``ref`` (``..._{against}`` keys).

        One shape for the placements route's and the few-item judgement's records.
        """
        rel = None
        if ref is not None and np.isfinite(self.end_cost) and np.isfinite(ref.end_cost):
            rel = round(_relative(self.end_cost, ref.end_cost), 4)
        return {
            "consensus": round(self.score, 3),
            "items": self.items,
            "screen_cost": _rounded(self.screen_cost),
            "run": run,
            "end_cost": _rounded(self.end_cost),
            f"relative_to_{against}": rel,
            f"distance_from_{against}_mm": _rounded(self.distance_mm),
        }


def _rounded(v) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 5)


def _relative(cost: float, ref: float) -> float:
    return (cost - ref) / max(abs(ref), 1e-12)


def list_candidates(structures: Structures, moving_mask, every: bool = False) -> list[Candidate]:
    """The distinct placements of the detected structures, as pixel starts, best first.

    Those of three or more agreeing items where there are any, else those of two;
    ``every``: all those of two or more (the rivals of a few-item match).
    """
    s = structures
    line_m, line_f = s.lines()
    extent = None if moving_mask is None else corners(moving_mask) * s.moving_mm
    args = dict(
        moving_weight=unit_weights(s.moving_beads.strength),
        fixed_weight=unit_weights(s.fixed_beads.strength),
        moving_line=line_m,
        fixed_line=line_f,
        extent_mm=extent,
    )
    beads = (s.moving_beads.xy * s.moving_mm, s.fixed_beads.xy * s.fixed_mm)
    pairs = placements(
        *beads, min_items=2, limit=FEW_MATCH_MAX_PLACEMENTS if every else None, **args
    )
    if every:
        found = pairs
    else:
        three = placements(*beads, min_items=3, **args)
        found = judged(three, pairs, extent if extent is not None else beads[0])
    to_px = np.diag([1.0 / s.fixed_mm[0], 1.0 / s.fixed_mm[1], 1.0])
    from_px = np.diag([s.moving_mm[0], s.moving_mm[1], 1.0])
    return [Candidate(to_px @ p.matrix @ from_px, p.score, p.items) for p in found]


def judged(three: list, pairs: list, probe_mm: np.ndarray) -> list:
    """The placements to judge: of three or more items where any exist, else of two.

    Where three items agree somewhere (a two-way match), two-item placements are the
    chance agreements any pair of beads at the right distance makes and are left out,
    except those scoring within ``AMBIGUITY_MARGIN`` of the best: the rival that made the
    match ambiguous may be one, and the images must rule it out too.
    """
    if not three:
        return pairs
    found = list(three)
    if pairs:
        best = max(pairs[0].score, three[0].score)
        near = [p for p in pairs if p.score >= best - AMBIGUITY_MARGIN]
        found += [p for p in near if not any(_same_pose(p, q, probe_mm) for q in found)]
    return sorted(found, key=lambda p: -p.score)


def _same_pose(a, b, probe_mm: np.ndarray) -> bool:
    """Whether two placements (mm to mm) put ``probe_mm`` within ``SAME_POSE_MM``."""
    pts = np.column_stack([probe_mm, np.ones(len(probe_mm))])
    wa, wb = pts @ a.matrix.T, pts @ b.matrix.T
    d = np.linalg.norm(wa[:, :2] / wa[:, 2:] - wb[:, :2] / wb[:, 2:], axis=1)
    return bool(np.max(d) <= SAME_POSE_MM)


class _Bench:
    """One preprocessing of the whole pair: the screen and the common cost standard."""

    def __init__(self, fixed, moving, masks, opts: RegistrationOptions, expected, px_mm):
        fmask = np.ones(fixed.shape, bool) if masks[0] is None else np.asarray(masks[0], bool)
        mmask = np.ones(moving.shape, bool) if masks[1] is None else np.asarray(masks[1], bool)
        ext = mask_extent(mmask)
        scale = quantised_scale(float(np.mean(expected)))
        shadow = None if opts.shadow_px is None else tuple(opts.shadow_px)
        feats = preprocess_pair(
            np.asarray(fixed, float), fmask, np.asarray(moving, float), mmask,
            Preprocess(opts.preprocess), scale=scale, shadow_px=shadow,
            fluoro_dense=opts.fluoro_dense, grain=grain(opts, px_mm),
        )  # fmt: skip
        self.pyramid = Pyramid(feats[0], fmask, feats[1], mmask, scale, opts, grain(opts, px_mm))
        half = float(max(ext[1] - ext[0], ext[3] - ext[2], 2.0)) / 2.0
        prior = None
        if opts.guards.scale_tolerance is not None:
            prior = (*expected, float(opts.guards.scale_tolerance))
        self.problem = LevelProblem(
            Metric(opts.metric), opts, (float(ext[4]), float(ext[5])), half, scale_prior=prior
        )
        screen = opts.with_values(
            levels=SCREEN_LEVELS, max_iterations=SCREEN_ITERATIONS, fine_levels=0
        )
        self.screen_problem = dataclasses.replace(self.problem, options=screen, trace=[])
        self.model = TransformModel(opts.model)
        x0, x1, y0, y1 = ext[:4]
        gx, gy = np.meshgrid(np.linspace(x0, x1, 5), np.linspace(y0, y1, 5))
        self.grid = np.column_stack([gx.ravel(), gy.ravel()])
        self.px_mm = float(px_mm)

    def screen(self, matrix: np.ndarray) -> float:
        """Cost after the coarse levels from ``matrix`` (inf when it leaves the field)."""
        self.screen_problem.trace.clear()
        try:
            return float(run_levels(self.screen_problem, self.pyramid, matrix, self.model).value)
        except ConvergenceError:
            return np.inf

    def standard_cost(self, matrix: np.ndarray) -> float:
        """Cost after the two finest levels re-run from ``matrix`` on the whole images."""
        first = max(len(self.problem.options.pyramid.levels) - 2, 0)
        self.problem.trace.clear()
        try:
            out = run_levels(self.problem, self.pyramid, matrix, self.model, first=first)
        except ConvergenceError:
            return np.inf
        return float(out.value)

    def end(self, matrix: np.ndarray) -> tuple[np.ndarray | None, float]:
        """(end, its standard cost) after every level from ``matrix``; (None, inf) off-field."""
        self.problem.trace.clear()
        try:
            out = run_levels(self.problem, self.pyramid, matrix, self.model)
        except ConvergenceError:
            return None, np.inf
        return out.matrix, self.standard_cost(out.matrix)

    def distance_mm(self, a: np.ndarray, b: np.ndarray) -> float:
        """Median distance (mm at the isocentre) between two maps over the region."""
        d = np.linalg.norm(Transform(a).apply(self.grid) - Transform(b).apply(self.grid), axis=1)
        return float(np.median(d)) * self.px_mm


def judge_placements(
    exc: RegistrationError,
    fixed: np.ndarray,
    moving: np.ndarray,
    masks: tuple,
    run: Callable,
    *,
    options: RegistrationOptions | None,
    expected_scale,
    px_mm: float | None,
    progress=None,
):
    """The answer the images single out among the placements the structures allow.

    ``exc``: the automatic start's refusal, carrying the detected ``structures``
    (:func:`registration.initial.match_structures`); re-raised where nothing applies (no
    structures, ``auto_placements`` 0, no metric or calibration, no placement).
    ``run(start, options, progress)``: the start route, ``register(initial=start)``.

    Raises
    ------
    RegistrationError
        ``exc``, a refusal naming the candidates and why (accept_unverified off), or the
        refusal of every candidate's run.
    """
    opts = options or RegistrationOptions()
    structures = getattr(exc, "structures", None)
    expected = scale_range(expected_scale)
    if structures is None or opts.grid.auto_placements == 0 or opts.metric is None:
        raise exc
    if expected is None or not px_mm:
        raise exc
    cands = list_candidates(structures, masks[1])
    if not cands:
        raise exc
    if len(cands) >= MAX_PLACEMENTS:  # the list is cut: placements past it go unseen
        raise type(exc)(
            f"{exc}; the structures allow {len(cands)} or more placements, too many for "
            "the images to judge"
        )
    bench = _Bench(fixed, moving, masks, opts, expected, px_mm)
    kept, dropped = _screened(cands, bench, opts.grid.auto_placements)
    trial = opts.with_values(accept_unverified=True)
    for k, cand in enumerate(kept):
        if progress is not None:
            progress(CANDIDATE_LEVEL, k + 1, len(kept))
        try:
            cand.result = run(cand.matrix, trial, progress)
        except RegistrationError as err:
            cand.error = str(err)[:200]
            continue
        cand.end_cost = bench.standard_cost(cand.result.transform.matrix)
    winner, why = _verdict(kept, dropped, bench, opts)
    if why is None and len(kept) == 1:
        why = _lone_beaten(structures, masks[1], winner, bench, opts, progress)
    return _finished(exc, cands, kept, winner, why, opts)


def _lone_beaten(structures, moving_mask, winner: Candidate, bench: _Bench, opts, progress):
    """Why a lone placement's accepted answer is not singled out (None: it is).

    Structures along a line whose mirror brings too few items leave one placement of
    three or more, and the start route's own checks alone can accept a wrong placement
    (docs/registration-method.md). So it is judged as a confirmed few-item match is:
    against every placement of two or more items (:func:`_confirmed_match`'s rule).
    """
    answer = winner.result.transform.matrix
    _, why = _beaten(structures, moving_mask, answer, bench, opts, progress)
    return None if why is None else f"the other placements of its {winner.items} structures {why}"


def _beaten(structures, moving_mask, answer, bench: _Bench, opts, progress):
    """(record, why) of an accepted ``answer`` against every placement of two or more items.

    :data:`CONFIRMED_MATCH_RULE`: refused where one ends beyond ``verify_basin_mm`` clearly
    lower, or where they cannot all be judged (:func:`_unjudged`); ``why`` None otherwise.
    """
    cands = list_candidates(structures, moving_mask, every=True)
    record, _ = _rivals(cands, answer, bench, opts, progress)
    why = _unjudged(record) or _beaten_why(_beating(record, opts.guards.verify_basin_mm))
    return record, why


def _screened(cands: list[Candidate], bench: _Bench, keep: int):
    """(kept, dropped): the ``keep`` placements with the best coarse cost, and the rest."""
    if len(cands) <= keep:
        return cands, []
    for cand in cands:
        cand.screen_cost = bench.screen(cand.matrix)
    order = sorted(cands, key=lambda c: c.screen_cost)
    return order[:keep], order[keep:]


def _verdict(kept, dropped, bench: _Bench, opts) -> tuple[Candidate | None, str | None]:
    """The winner and None, or the best end and why the images do not single it out."""
    ended = [c for c in kept if c.result is not None and np.isfinite(c.end_cost)]
    accepted = [c for c in ended if c.accepted]
    n = len(kept)
    if not accepted:
        best = min(ended, key=lambda c: c.end_cost, default=None)
        return best, f"none of the {n} placements of the structures ends verified"
    winner = min(accepted, key=lambda c: c.end_cost)
    if len(ended) < n:  # a run that did not end cannot be ruled out
        return winner, (
            f"{n - len(ended)} of the {n} placements of the structures did not end (their "
            "run failed or left the field), so nothing rules them out"
        )
    if n == 1 and winner.items < MIN_CHECKED_ITEMS:
        return winner, (
            f"one placement of {winner.items} structures, and nothing to check it against"
        )
    basin, margin = opts.guards.verify_basin_mm, opts.grid.search_min_margin
    for c in ended:
        c.distance_mm = bench.distance_mm(c.result.transform.matrix, winner.result.transform.matrix)
    for c in ended:
        rel = _relative(c.end_cost, winner.end_cost)
        if c is winner or c.distance_mm <= basin or (rel > margin and not c.accepted):
            continue
        both = "both end verified" if c.accepted else "end"
        side = "better" if rel < 0 else "worse"
        return winner, (
            f"2 of {n} placements of the structures {both} {c.distance_mm:.1f} mm apart, "
            f"the other at a cost {abs(rel):.0%} {side} (the ambiguity gate is {margin:.0%})"
        )
    for c in dropped:
        if c.screen_cost <= winner.screen_cost or (
            _relative(c.screen_cost, winner.screen_cost) <= SCREEN_MARGIN
        ):
            return winner, (
                f"a placement the coarse screen left out (of {len(kept) + len(dropped)}) "
                f"scored within {SCREEN_MARGIN:.0%} of the accepted one's there"
            )
    return winner, None


def _finished(exc, cands, kept, winner, why, opts):
    """The winner's result with the placements recorded, refused with ``why`` if given."""
    if winner is None:
        raise type(exc)(f"{exc}; the images do not single out a placement either: {why}")
    q = winner.result.quality
    record = {
        "placements": len(cands),
        "run": len(kept),
        "why_tried": str(exc)[:200],
        "candidates": [c.to_dict(winner) for c in cands],
    }
    changes = {"verification": {**(q.verification or {}), "placements": record}}
    if why is not None:
        tried = str(exc).split("; give ")[0]
        reason = f"unverified: {why} (tried because {tried})"
        reasons = q.reasons if q.verdict == "refused" else []
        changes.update(
            verdict="refused",
            reasons=[*reasons, reason],
            accepted_unverified=True if opts.guards.accept_unverified else None,
        )
    result = winner.result
    result.quality = q.replace(**changes)
    result.options = opts.to_dict()
    raise_if_refused(result, opts)
    return result


#: ``quality.verification`` key recording how a few-item match fared among its rivals.
JUDGED_MATCH_KEY = "judged_match"
JUDGED_MATCH_RULE = (
    "every placement of the structures whose coarse screen scores within SCREEN_MARGIN of "
    "the match's answer, run by the images from its own start, ends within "
    "verify_max_spread_mm of that answer, within verify_basin_mm at a cost not better by more "
    "than HOP_GAIN, or at a cost worse by more than search_min_margin"
)
CONFIRMED_MATCH_RULE = (
    "a match the intensity route confirmed is refused where a placement of its structures "
    "whose coarse screen scores within SCREEN_MARGIN of it, run by the images from its own "
    "start, ends beyond verify_basin_mm from it at a cost lower by more than HOP_GAIN, or "
    "where they cannot all be judged: FEW_MATCH_MAX_PLACEMENTS placements or more, more "
    "than FEW_MATCH_MAX_RUNS screening close, or the answer leaving the field when re-run"
)
#: Placements listed for a few-item match's judgement (its two-item placements are many;
#: each screen costs about 0.04 s on the family's tuning cases), and most run in full.
FEW_MATCH_MAX_PLACEMENTS = 400
FEW_MATCH_MAX_RUNS = 12
#: Placements not run that the record lists (the best screened): the rest are counted.
RECORDED_UNRUN = 4


def judge_few_match(result, structures, fixed, moving, masks, *, items, options, expected_scale,
                    px_mm, progress=None):  # fmt: skip
    """A 3-4 item match judged among the other placements its structures allow.

    ``result``: ``register`` run from the match (refused results returned, not raised).
    One the intensity route confirmed is refused where a rival clearly beats it
    (:func:`_confirmed_match`). A refused one is judged only when its one refusal is the
    intensity route's and that route's checks,
    eased to a flat basin, hold (:func:`_local_doubt`): the images' optimum near the
    answer may be flat; whether another lies elsewhere, the rivals say.
    Then the placements its structures allow (:func:`list_candidates`, ``every``) are
    run at one cost standard (:class:`_Bench`) and :data:`JUDGED_MATCH_RULE` decides;
    otherwise the reason names the rival. Returns ``result``, its quality replaced when
    judged (``quality.verification["judged_match"]``).
    """
    opts = options or RegistrationOptions()
    q = result.quality
    check = q.verification or {}
    route, expected = check.get("intensity_route"), scale_range(expected_scale)
    if items >= CHECKED_ITEMS or structures is None or route is None:
        return result
    if expected is None or not px_mm or opts.metric is None:
        return result
    judge = (structures, masks[1], _Bench(fixed, moving, masks, opts, expected, px_mm), opts)
    if q.verdict == "accepted":
        return _confirmed_match(result, judge, items, progress)
    if q.reasons != [check.get("unverified")] or _local_doubt(route, opts):
        return result
    record, why = _rivals(
        list_candidates(structures, masks[1], every=True),
        result.transform.matrix,
        judge[2],
        opts,
        progress,
    )
    record |= {"rule": JUDGED_MATCH_RULE, "route_waived": check.get("unverified")}
    check = {k: v for k, v in check.items() if k != "unverified" or why is not None}
    check[JUDGED_MATCH_KEY] = record | {"singled_out": why is None}
    if why is None:
        result.quality = q.replace(
            verdict="accepted", reasons=[], accepted_unverified=None, verification=check
        )
    else:
        reason = f"unverified: the other placements of the {items} matched structures {why}"
        result.quality = q.replace(reasons=[*q.reasons, reason], verification=check)
    return result


def _confirmed_match(result, judge, items: int, progress):
    """A 3-4 item match the intensity route confirmed, refused where a rival beats it.

    The route checks the answer locally only: a placement of the same structures that
    runs to an end elsewhere (beyond ``verify_basin_mm``) at a lower cost than the answer's
    shows the images preferring another place, and placements that cannot all be run are
    not ruled out (:data:`CONFIRMED_MATCH_RULE`, :func:`_unjudged`). Only then is it
    refused; a close-but-worse placement does not refuse it.
    """
    structures, moving_mask, bench, opts = judge
    q = result.quality
    record, why = _beaten(structures, moving_mask, result.transform.matrix, bench, opts, progress)
    record |= {"rule": CONFIRMED_MATCH_RULE, "confirmed_by_route": True}
    check = {**(q.verification or {}), JUDGED_MATCH_KEY: record | {"singled_out": why is None}}
    if why is None:
        result.quality = q.replace(verification=check)
        return result
    reason = f"unverified: the other placements of the {items} matched structures {why}"
    result.quality = q.replace(
        verdict="refused",
        reasons=[*q.reasons, reason],
        accepted_unverified=True if opts.guards.accept_unverified else None,
        verification=check,
    )
    return result


def _unjudged(record: dict) -> str | None:
    """Why the placements could not all be judged against the answer (None: they were)."""
    if record["placements"] >= FEW_MATCH_MAX_PLACEMENTS:  # none run: nothing rules them out
        return f"are {record['placements']} or more, too many for the images to judge"
    if record["answer_cost"] is None or record["answer_screen_cost"] is None:
        return "cannot be compared with it: its answer leaves the field when re-run"
    if record.get("close", 0) > record["run"]:
        return (
            f"include {record['close']} that score within {SCREEN_MARGIN:.0%} of its answer "
            f"at the coarse screen, more than the {FEW_MATCH_MAX_RUNS} the images may judge"
        )
    return None


def _beaten_why(beaten: dict | None) -> str | None:
    if beaten is None:
        return None
    return (
        f"include one ({beaten['items']} items) ending {beaten['distance_from_answer_mm']:.1f}"
        f" mm from its answer at a cost {-beaten['relative_to_answer']:.0%} better"
    )


def _beating(record: dict, basin_mm: float) -> dict | None:
    """The first placement run that ended beyond ``basin_mm`` of the answer clearly lower.

    Clearly: by more than :data:`verify.HOP_GAIN`, as a restart must to hop; an end as low
    elsewhere is the ambiguity the matched structures themselves resolve.
    """
    for c in record.get("candidates", []):
        d, rel = c["distance_from_answer_mm"], c["relative_to_answer"]
        if c["run"] and d is not None and d > basin_mm and rel is not None and rel < -HOP_GAIN:
            return c
    return None


def _local_doubt(route: dict, opts) -> str | None:
    """Why the intensity route doubts the answer even within a flat basin (None: it does not).

    Kept from the route: its end (after any hop) within its limit of the matched answer,
    the calibration's scale, the mirror image clearly worse. Eased: its restarts within
    the cost gate and the second metric may end anywhere within ``verify_basin_mm`` of
    its end (the point-optimum test asks 1 mm): flat, but not elsewhere.
    """
    g, margin = opts.guards, opts.grid.search_min_margin
    if route.get("distance_mm") is None or route["distance_mm"] > route["limit_mm"]:
        return "the route ends beyond its limit"
    ratio, tol = route.get("scale_ratio_to_calibration"), g.scale_tolerance
    if ratio is not None and tol is not None and abs(ratio - 1.0) > tol:
        return "the route's magnification is off the calibration"
    mirrored = route.get("mirrored_relative_cost")
    if mirrored is not None and mirrored < g.verify_mirror_margin:
        return "the mirror image is not clearly worse"
    if not route["second_metric_drift_mm"] <= g.verify_basin_mm:
        return "the second metric moves the answer"
    costs = route.get("relative_costs") or []
    if len(costs) != len(route["distances_mm"]):
        return "the restarts' costs are not known"
    ends = list(zip(route["distances_mm"], costs, strict=True))
    if any(c < margin and not d <= g.verify_basin_mm for d, c in ends):
        return "a restart within the cost gate ends beyond the basin"
    # Flat means no lower: a clearly better end is a slope, the answer not its bottom.
    if any(c < -HOP_GAIN and not d <= g.verify_max_spread_mm for d, c in ends):
        return "a restart ends clearly better away from the answer"
    return None


def _rivals(cands: list[Candidate], answer, bench: _Bench, opts, progress):
    """(record, None) when the images single ``answer`` out among ``cands``, else why not.

    Every placement is screened; those whose screened cost is within ``SCREEN_MARGIN`` of
    the answer's own (or better) run every level, the best :data:`FEW_MATCH_MAX_RUNS` of
    them (more than that refuses unless one of those run already does).
    """
    own = Candidate(answer, np.nan, 0)
    own.screen_cost, own.end_cost = bench.screen(answer), bench.standard_cost(answer)
    record = {
        "placements": len(cands),
        "answer_screen_cost": _rounded(own.screen_cost),
        "answer_cost": _rounded(own.end_cost),
        "run": 0,
    }
    if len(cands) >= FEW_MATCH_MAX_PLACEMENTS:
        return record, f"are {len(cands)} or more, too many for the images to judge"
    if not np.isfinite(own.screen_cost) or not np.isfinite(own.end_cost):
        return record, "cannot be compared with it: its answer leaves the field when re-run"
    for c in cands:
        c.screen_cost = bench.screen(c.matrix)
    order = sorted(cands, key=lambda c: c.screen_cost)
    close = [c for c in order if _relative(c.screen_cost, own.screen_cost) <= SCREEN_MARGIN]
    record["close"] = len(close)
    for k, c in enumerate(close[:FEW_MATCH_MAX_RUNS]):  # the best screened first
        if progress is not None:
            progress(RIVAL_LEVEL, k + 1, min(len(close), FEW_MATCH_MAX_RUNS))
        end, c.end_cost = bench.end(c.matrix)
        c.distance_mm = None if end is None else bench.distance_mm(end, answer)
    ran = close[:FEW_MATCH_MAX_RUNS]
    record["run"] = len(ran)
    ids = {id(c) for c in ran}  # by identity: a Candidate's arrays do not compare
    rest = [c.record(own, run=False, against="answer") for c in order if id(c) not in ids]
    ran_records = [c.record(own, run=True, against="answer") for c in ran]
    record["candidates"] = ran_records + rest[:RECORDED_UNRUN]
    why = _rival_verdict(ran, len(cands), own, opts)
    if why is None and len(close) > len(ran):
        why = (
            f"include {len(close)} that score within {SCREEN_MARGIN:.0%} of its answer at "
            f"the coarse screen, more than the {FEW_MATCH_MAX_RUNS} the images may judge"
        )
    return record, why


def _rival_verdict(run: list[Candidate], listed: int, own: Candidate, opts) -> str | None:
    """None when :data:`JUDGED_MATCH_RULE` holds for the placements ``run``, else why not."""
    # The same answer: an end at the same point, or within the flat basin the route's checks
    # were eased to and not clearly lower (lower is a slope: the answer is not its bottom).
    basin, margin = opts.guards.verify_basin_mm, opts.grid.search_min_margin
    point = opts.guards.verify_max_spread_mm
    if listed < 2:
        return "are too few to compare it with"
    for c in run:
        if c.distance_mm is None or not np.isfinite(c.distance_mm) or not np.isfinite(c.end_cost):
            return (
                f"include one ({c.items} items) scoring close at the coarse screen whose run "
                "left the field or could not be costed, so nothing rules it out"
            )
        rel = _relative(c.end_cost, own.end_cost)
        if point < c.distance_mm <= basin and rel < -HOP_GAIN:
            return (
                f"include one ({c.items} items) ending {c.distance_mm:.1f} mm from its answer "
                f"at a cost {abs(rel):.0%} better: the images' optimum is not at the answer"
            )
        if c.distance_mm > basin and rel <= margin:
            side = "better" if rel < 0 else "worse"
            return (
                f"include one ({c.items} items) ending {c.distance_mm:.1f} mm from its answer "
                f"at a cost {abs(rel):.0%} {side} (the ambiguity gate is {margin:.0%})"
            )
    return None

"""Verification of an intensity-only answer by evidence other than its own cost.

The optimiser's cost says only that the answer is the best it found. A wrong answer can be
a confident optimum that the search's ambiguity margin does not see; so the final levels
run again from a few starts perturbed around the answer, which must come back to it, end
clearly worse, or end within a basin of the answer (LC2's optimum on these images is a
flat basin a millimetre or two wide: ends within it are the same answer, loosely pinned),
and a second metric run from the answer must leave it where it is. How far both scatter
is the basis of the predicted error (:func:`predicted_tre_mm`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .errors import ConvergenceError
from .guards import centre_scale, scale_ratio
from .metrics import Metric
from .optimise import LevelProblem, Pyramid, run_levels
from .transforms import Transform

__all__ = [
    "PREDICTED_TRE_FACTOR",
    "HOP_GAIN",
    "PREDICTED_TRE_FLOOR_MM",
    "UNCONFIRMED",
    "UNVERIFIED",
    "basin_radius_mm",
    "intensity_agreement",
    "intensity_route_check",
    "predicted_tre_mm",
    "restart_check",
]

#: Predicted 90th-percentile TRE = max(floor, factor × the larger of the returned
#: restarts' spread and the second metric's drift). The floor carries the metric's bias
#: (an echo's near wall against the X-ray's centre), which restarts cannot see: the 90th
#: percentile of accepted answers' TRE on the family's tuning seeds 0-84, rounded up
#: (docs/registration-method.md, *Calibrating predicted_tre_mm*).
PREDICTED_TRE_FACTOR = 2.0
PREDICTED_TRE_FLOOR_MM = 1.2

#: A restart ending elsewhere at a cost better than the answer's by more than this
#: (relative) replaces the answer: below it, two ends are the same optimum's noise.
HOP_GAIN = 0.01

#: Every reason the verification adds starts with this.
UNVERIFIED = "unverified:"
#: Why matched structures too few to check each other stand unconfirmed when no image
#: check ran (``--metric none``, or the verification turned off).
UNCONFIRMED = (
    f"{UNVERIFIED} too few matched structures to check each other, and no image check ran "
    "to confirm them (a metric and verify_restarts > 0 are needed)"
)


def restart_check(
    problem: LevelProblem, pyramid: Pyramid, outcome, model, first: int, px_mm, basin_mm=None
):
    """The answer after any better optimum the checks found, and ``quality.verification``.

    A restart or the mirror run that ends elsewhere at a cost clearly better than the
    answer's (by more than :data:`HOP_GAIN`) shows the optimiser stopped in a lesser
    optimum: that end replaces the answer and the check runs again, at most
    ``verify_max_hops`` times, and the answer is refused as unverified (a better cost was
    no nearer the truth often enough: docs/registration-method.md, *Hops*). Returns
    ``(outcome, check)``; ``check["hops"]`` lists each replacement, and the last check's
    figures are the verification (:func:`_check`). ``basin_mm``: the radius within which
    ends are the same answer (:func:`basin_radius_mm`; None: ``verify_basin_mm``).
    """
    hops = []
    basin = basin_radius_mm(problem.options.guards, basin_mm)
    while True:
        check, better = _check(problem, pyramid, outcome, model, first, px_mm, basin)
        if better is None or len(hops) >= problem.options.guards.verify_max_hops:
            break
        moved, how, rel = better
        hops.append({"from": how, "distance_mm": moved["distance_mm"], "relative_cost": rel})
        outcome = dataclasses.replace(moved["outcome"], iterations=outcome.iterations)
    check["hops"] = hops
    # Two optima close in cost leave the truth near either: the way between them is scatter.
    check["hop_distance_mm"] = float(sum(h["distance_mm"] for h in hops))
    check["predicted_tre_mm"] = predicted_tre_mm(check)
    if hops and "unverified" not in check:
        check["unverified"] = (
            f"unverified: a better optimum lay {check['hop_distance_mm']:.1f} mm from where "
            "the optimiser stopped: the start was outside its capture range, and the images "
            "hold optima close in cost that the answer may have to choose between"
        )
    return outcome, check


def basin_radius_mm(guards, basin_mm=None) -> float:
    """How far (mm) from the answer an end within the cost gate is still the same answer.

    ``basin_mm`` (None: the ``verify_basin_mm`` option), never below
    ``verify_max_spread_mm`` (the point-optimum test, which the restarts always had).
    """
    basin = guards.verify_basin_mm if basin_mm is None else basin_mm
    return float(max(basin, guards.verify_max_spread_mm))


def _check(problem: LevelProblem, pyramid: Pyramid, outcome, model, first: int, px_mm, basin):
    """Restarts around the answer and a second metric from it, and a better end if any.

    ``outcome``: the pyramid's :class:`LevelsOutcome`, whose matrix is the answer; the
    restarts re-run the levels from index ``first`` on (see :func:`_restarts`), the second
    metric (MI, or LC2 when the metric is MI) the last two levels from the answer itself.
    Distances are medians over a 5 × 5 grid of the ultrasound region, mm at the isocentre.
    A restart ending within ``verify_max_spread_mm`` came back; one ending within
    ``basin`` (mm) at a cost within ``search_min_margin`` of the answer's is the same
    answer in a flat basin: both set ``spread_mm`` (the answer's precision). Sets
    ``unverified`` (the reason) when a restart ends farther than ``basin`` at a cost within
    the margin, or when the second metric moves the answer more than
    ``verify_max_metric_drift_mm`` (or ``basin``, where wider than the point-optimum
    test). The second value is ``None``, or the best end beyond ``basin`` that beat the
    answer by more than :data:`HOP_GAIN`, with where it came from and its relative cost.
    """
    opts = problem.options
    guards, quiet = opts.guards, dataclasses.replace(problem, trace=[], progress=None)
    grid = _field_grid(problem.center, problem.half)
    base = Transform(outcome.matrix).apply(grid)

    def distance_mm(h):
        return float(np.median(np.linalg.norm(Transform(h).apply(grid) - base, axis=1))) * px_mm

    runs = _restarts(quiet, pyramid, outcome, model, first, px_mm, distance_mm)
    distances = [r["distance_mm"] for r in runs]
    rel = [r["relative_cost"] for r in runs]
    other = Metric.LC2 if problem.metric is Metric.MI else Metric.MI
    fine = max(first, len(opts.pyramid.levels) - 2)
    alt = dataclasses.replace(quiet, metric=other)
    try:
        drift = distance_mm(run_levels(alt, pyramid, outcome.matrix, model, first=fine).matrix)
    except ConvergenceError:  # the second metric left the field: it does not agree
        drift = np.inf
    mirror = {"mirrored_relative_cost": None, "mirrored_distance_mm": None}
    mirrored = None
    if guards.verify_mirror_margin > 0:
        mirrored = _mirror_run(quiet, pyramid, outcome, model, first, distance_mm)
        mirror = {k: mirrored[k] for k in mirror}
    margin = opts.grid.search_min_margin
    out = {
        "restarts": len(distances),
        "shift_mm": float(guards.verify_shift_mm),
        "rotation_deg": float(guards.verify_rotation_deg),
        "distances_mm": distances,
        "relative_costs": rel,
        **_basin(distances, rel, guards, margin, basin),
        "second_metric": other.value,
        "second_metric_drift_mm": drift,
        **mirror,
    }
    out["predicted_tre_mm"] = predicted_tre_mm(out)
    out.update(_verdict(out, guards, margin, other))
    # A clearly better end hops wherever it lies beyond the point-optimum test: a basin
    # whose cost still falls that much is not flat, and the answer is not its bottom.
    return out, _better(runs, mirrored, guards.verify_max_spread_mm)


def _basin(distances, rel, guards, margin: float, basin: float) -> dict:
    """``spread_mm`` (the farthest same-answer end), ``basin_mm``, the second metric's limit.

    An end within ``verify_max_spread_mm`` came back whatever its cost; one within
    ``basin`` came back if its cost is within ``margin`` of the answer's and not better by
    more than :data:`HOP_GAIN` (a much worse end stopped on the basin's slope and says
    nothing of the answer's precision; a clearly better one is a hop).
    """
    back = [
        d
        for d, c in zip(distances, rel, strict=True)
        if d <= guards.verify_max_spread_mm or (d <= basin and -HOP_GAIN <= c < margin)
    ]
    # The second metric's end is one more end: within a basin wider than the point-optimum
    # test it is the same answer too (the intensity route's check keeps its own limit).
    drift_limit = guards.verify_max_metric_drift_mm
    if basin > guards.verify_max_spread_mm:
        drift_limit = max(drift_limit, basin)
    return {
        "spread_mm": max(back, default=0.0),
        "basin_mm": basin,
        "second_metric_limit_mm": float(drift_limit),
    }


def _better(runs: list, mirrored: dict | None, limit_mm: float):
    """The distinct end (restart or mirror run) that beat the answer most, if by enough."""
    ends = [(r, "restart") for r in runs]
    if mirrored is not None and mirrored.get("outcome") is not None:
        ends.append(({**mirrored, "relative_cost": mirrored["mirrored_relative_cost"],
                      "distance_mm": mirrored["mirrored_distance_mm"]}, "mirror"))  # fmt: skip
    ends = [
        (r, how) for r, how in ends
        if r.get("outcome") is not None and r["distance_mm"] > limit_mm
        and r["relative_cost"] < -HOP_GAIN
    ]  # fmt: skip
    if not ends:
        return None
    best, how = min(ends, key=lambda e: e[0]["relative_cost"])
    return best, how, float(best["relative_cost"])


def _verdict(out: dict, guards, margin: float, other: Metric) -> dict:
    """``{"unverified": reason}`` when the checks' figures refuse the answer, else ``{}``."""
    limit = out["basin_mm"]
    rel, drift = out["relative_costs"], out["second_metric_drift_mm"]
    rivals = [
        (d, c) for d, c in zip(out["distances_mm"], rel, strict=True) if d > limit and c < margin
    ]
    if rivals:
        d, c = min(rivals, key=lambda r: r[1])
        return {
            "unverified": f"unverified: a restart {guards.verify_shift_mm:g} mm / "
            f"{guards.verify_rotation_deg:g} deg from the answer ends {d:.1f} mm from it at "
            f"a cost {100 * c:+.1f} % of the answer's (a distinct optimum within "
            f"{100 * margin:.0f} %, beyond the {limit:g} mm basin)"
        }
    mirrored = out["mirrored_relative_cost"]
    if mirrored is not None and mirrored < guards.verify_mirror_margin:
        return {
            "unverified": f"unverified: the answer's mirror image, refined, ends only "
            f"{100 * mirrored:+.0f} % worse (< {100 * guards.verify_mirror_margin:.0f} %): "
            "the images do not single the answer out"
        }
    if drift > out["second_metric_limit_mm"]:
        return {
            "unverified": f"unverified: {other.value} moves the answer by {drift:.2f} mm (> "
            f"{out['second_metric_limit_mm']:g} mm): the two metrics disagree"
        }
    return {}


def _restarts(quiet, pyramid, outcome, model, first, px_mm, distance_mm) -> list[dict]:
    """Each restart's end: distance (mm), cost relative to the answer's, its outcome.

    The outcome is the restart's :class:`LevelsOutcome` (``None`` when it left the field).

    The starts are the answer pre-composed with a rotation of ±``verify_rotation_deg``
    about where it maps the ultrasound centre and a shift of ``verify_shift_mm`` in
    directions spread over the circle (deterministic, so a result repeats).
    """
    guards = quiet.options.guards
    n, answer = guards.verify_restarts, outcome.matrix
    ct = Transform(answer).apply(np.array([quiet.center]))[0]
    runs = []
    for k in range(n):
        start = _perturbed(
            answer,
            ct,
            angle_deg=guards.verify_rotation_deg * (1 if k % 2 == 0 else -1),
            shift_px=guards.verify_shift_mm / px_mm,
            direction=2 * np.pi * (k + 0.5) / n,
        )
        try:
            out = run_levels(quiet, pyramid, start, model, first=first)
        except ConvergenceError:  # it left the fluoroscopy field: it did not come back
            runs.append({"distance_mm": np.inf, "relative_cost": np.inf, "outcome": None})
            continue
        rel = (out.value - outcome.value) / max(abs(outcome.value), 1e-12)
        runs.append({"distance_mm": distance_mm(out.matrix), "relative_cost": rel, "outcome": out})
    return runs


def intensity_agreement(
    problem: LevelProblem,
    pyramid: Pyramid,
    answer,
    model,
    px_mm: float,
    limit_mm: float,
    both_limit_mm: float | None = None,
) -> dict:
    """Whether the images alone leave a landmark answer where it is: two metrics.

    Landmarks too few to check each other leave the images as the only other evidence.
    LC2 and MI (the two metrics the limits were calibrated with, whatever metric the
    registration used: a metric that fails on these images must not refuse landmarks)
    each run the three finest levels without the landmark term from the answer; either
    moving it more than ``limit_mm`` refuses it, and so do both moving it more than
    ``both_limit_mm``: clicks all off the same way agree with each other, and only two
    independent metrics that both place the answer elsewhere can tell. Staying is not
    proof: a wrong placement can sit in a fine level's local optimum (a 32 mm wrong
    three-bead match moved 1.1 mm), so this refuses disagreement and confirms nothing.
    """
    quiet = dataclasses.replace(
        problem, landmarks=None, landmark_weights=None, trace=[], progress=None
    )
    grid = _field_grid(problem.center, problem.half)
    base = Transform(answer).apply(grid)
    n_levels = len(problem.options.pyramid.levels)
    drift = {}
    for metric in (Metric.LC2, Metric.MI):
        run = dataclasses.replace(quiet, metric=metric)
        try:
            out = run_levels(run, pyramid, answer, model, first=max(0, n_levels - 3))
        except ConvergenceError:  # it left the field: the images do not hold the answer
            drift[metric.value] = np.inf
            continue
        d = np.median(np.linalg.norm(Transform(out.matrix).apply(grid) - base, axis=1))
        drift[metric.value] = float(d) * px_mm
    agrees = max(drift.values()) <= limit_mm
    result = {"intensity_only_drift_mm": drift, "agreement_limit_mm": float(limit_mm)}
    if both_limit_mm is not None:
        agrees = agrees and min(drift.values()) <= both_limit_mm
        result["agreement_both_limit_mm"] = float(both_limit_mm)
    result["intensity_agrees"] = bool(agrees)
    return result


def intensity_route_check(
    problem: LevelProblem, pyramid: Pyramid, answer, model, px_mm: float, limit_mm: float,
    scale_prior=None,
) -> dict:  # fmt: skip
    """The intensity-only route run from a landmark answer, verified, and where it ends.

    Matched structures too few to check each other need evidence of another kind: the
    images alone, run from their answer, must reach an optimum that passes the
    intensity-only verification (:func:`restart_check`: restarts come back, the second
    metric agrees, the mirror image is clearly worse, no better optimum nearby) within
    ``limit_mm`` of it, at a magnification ``scale_prior`` (as the intensity-only route's:
    expected min, max, tolerance) allows. Returns ``{"intensity_route": figures}`` plus
    ``unverified`` (the reason) when any fails.
    """
    quiet = dataclasses.replace(
        problem,
        landmarks=None,
        landmark_weights=None,
        trace=[],
        progress=None,
        scale_prior=scale_prior,
    )
    first = max(0, len(problem.options.pyramid.levels) - 3)
    grid = _field_grid(problem.center, problem.half)
    base = Transform(answer).apply(grid)
    try:
        outcome = run_levels(quiet, pyramid, answer, model, first=first)
    except ConvergenceError:  # it left the field: the images do not hold the answer
        return {
            "intensity_route": {"distance_mm": None, "limit_mm": float(limit_mm)},
            "unverified": "unverified: too few matched structures to check each other, and "
            "the images alone, run from their answer, leave the field",
        }
    # The point-optimum test, as this check was calibrated with (its ends must meet
    # ``limit_mm`` too): matched structures too few to check each other get no basin.
    strict = problem.options.guards.verify_max_spread_mm
    outcome, check = restart_check(quiet, pyramid, outcome, model, first, px_mm, strict)
    moved = np.linalg.norm(Transform(outcome.matrix).apply(grid) - base, axis=1)
    distance = float(np.median(moved)) * px_mm
    keys = ("spread_mm", "second_metric_drift_mm", "mirrored_relative_cost", "distances_mm",
            "relative_costs")  # fmt: skip
    figures = {k: check[k] for k in keys} | {
        "distance_mm": distance,
        "limit_mm": float(limit_mm),
        "hops": len(check["hops"]),
        "verified": "unverified" not in check,
        "scale_ratio_to_calibration": None,
    }
    ratio = None
    if scale_prior is not None:
        ratio = scale_ratio(centre_scale(outcome.matrix, problem.center), scale_prior[:2])
        figures["scale_ratio_to_calibration"] = ratio
    out = {"intensity_route": figures}
    why = _route_doubt(check, distance, limit_mm, ratio, scale_prior)
    if why:
        out["unverified"] = (
            f"{UNVERIFIED} too few matched structures to check each other, and the images "
            f"alone{why}"
        )
    return out


def _route_doubt(check: dict, distance: float, limit_mm: float, ratio, scale_prior) -> str:
    """Why the intensity route does not confirm the matched answer ('' when it does)."""
    if "unverified" in check:
        why = check["unverified"].removeprefix(UNVERIFIED).strip()
        return f", run from their answer, do not confirm it: {why}"
    if distance > limit_mm:
        return f" end {distance:.1f} mm from their answer (> {limit_mm:.1f} mm)"
    if ratio is not None and abs(ratio - 1.0) > scale_prior[2]:
        return (
            f" end at a magnification {100 * (ratio - 1):+.1f} % off the calibration's "
            f"(±{100 * scale_prior[2]:.0f} % allowed)"
        )
    return ""


def _mirror_run(quiet, pyramid, outcome, model, first, distance_mm) -> dict:
    """The levels re-run from the answer mirrored about the ultrasound's centre column.

    A probe marker flips the image left-right; an answer of the wrong handedness is a
    smooth optimum the restarts return to, so the mirrored placement is tried too: where
    it ends at a cost as good as the answer's, the images do not fix the handedness.
    Returns its cost relative to the answer's (positive: worse) and where it ends (mm).
    """
    cx = quiet.center[0]
    flip = np.array([[-1.0, 0.0, 2.0 * cx], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    try:
        out = run_levels(quiet, pyramid, outcome.matrix @ flip, model, first=first)
    except ConvergenceError:  # it left the fluoroscopy field: no mirrored rival
        return {"mirrored_relative_cost": np.inf, "mirrored_distance_mm": None, "outcome": None}
    rel = (out.value - outcome.value) / max(abs(outcome.value), 1e-12)
    return {
        "mirrored_relative_cost": float(rel),
        "mirrored_distance_mm": distance_mm(out.matrix),
        "outcome": out,
    }


def predicted_tre_mm(check: dict) -> float:
    """A calibrated 90th-percentile bound on the TRE (mm) from :func:`restart_check`'s figures.

    Mostly the floor: the restarts' and second metric's scatter does not track the TRE
    (the metric's bias dominates it), so the scatter, and the way hops travelled, only
    widen the bound where the answer is visibly loose.
    """
    scatter = max(
        check["spread_mm"], check["second_metric_drift_mm"], check.get("hop_distance_mm", 0.0)
    )
    return max(PREDICTED_TRE_FLOOR_MM, PREDICTED_TRE_FACTOR * scatter)


def _perturbed(h, centre, angle_deg, shift_px, direction):
    """``h`` pre-composed with a rotation about fixed point ``centre`` and a shift."""
    a = np.radians(angle_deg)
    pre = np.eye(3)
    pre[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    shift = shift_px * np.array([np.cos(direction), np.sin(direction)])
    pre[:2, 2] = centre - pre[:2, :2] @ centre + shift
    return pre @ np.asarray(h, float)


def _field_grid(center, half) -> np.ndarray:
    """A 5 × 5 grid of moving points over the square of side ``2 half`` about ``center``."""
    g = np.linspace(-half, half, 5)
    gx, gy = np.meshgrid(center[0] + g, center[1] + g)
    return np.column_stack([gx.ravel(), gy.ravel()])

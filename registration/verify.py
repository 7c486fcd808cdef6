"""Verification of an intensity-only answer by evidence other than its own cost.

The optimiser's cost says only that the answer is the best it found. A wrong answer can be
a confident optimum that the search's ambiguity margin does not see; so the final levels
run again from a few starts perturbed around the answer, which must come back to it or end
clearly worse, and a second metric run from the answer must leave it where it is. How far
both scatter is the basis of the predicted error (:func:`predicted_tre_mm`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .errors import ConvergenceError
from .metrics import Metric
from .optimise import LevelProblem, Pyramid, run_levels
from .transforms import Transform

__all__ = [
    "PREDICTED_TRE_FACTOR",
    "PREDICTED_TRE_FLOOR_MM",
    "UNVERIFIED",
    "predicted_tre_mm",
    "restart_check",
]

#: Predicted 90th-percentile TRE = max(floor, factor × the larger of the returned
#: restarts' spread and the second metric's drift); calibrated on the own phantom's
#: tuning seeds (docs/registration-method.md, *Verification*).
PREDICTED_TRE_FACTOR = 2.0
PREDICTED_TRE_FLOOR_MM = 0.8

#: Every reason the verification adds starts with this.
UNVERIFIED = "unverified:"


def restart_check(problem: LevelProblem, pyramid: Pyramid, outcome, model, first: int, px_mm):
    """Restarts around the answer and a second metric from it: ``quality.verification``.

    ``outcome``: the pyramid's :class:`LevelsOutcome`, whose matrix is the answer; the
    restarts re-run the levels from index ``first`` on (see :func:`_restarts`), the second
    metric (MI, or LC2 when the metric is MI) the last two levels from the answer itself.
    Distances are medians over a 5 × 5 grid of the ultrasound region, mm at the isocentre.
    Sets ``unverified`` (the reason) when a restart ends more than ``verify_max_spread_mm``
    away at a cost within ``search_min_margin`` of the answer's, or when the second metric
    moves the answer more than ``verify_max_metric_drift_mm``.
    """
    opts = problem.options
    guards, quiet = opts.guards, dataclasses.replace(problem, trace=[], progress=None)
    grid = _field_grid(problem.center, problem.half)
    base = Transform(outcome.matrix).apply(grid)

    def distance_mm(h):
        return float(np.median(np.linalg.norm(Transform(h).apply(grid) - base, axis=1))) * px_mm

    distances, rel = _restarts(quiet, pyramid, outcome, model, first, px_mm, distance_mm)
    other = Metric.LC2 if problem.metric is Metric.MI else Metric.MI
    fine = max(first, len(opts.pyramid.levels) - 2)
    alt = dataclasses.replace(quiet, metric=other)
    try:
        drift = distance_mm(run_levels(alt, pyramid, outcome.matrix, model, first=fine).matrix)
    except ConvergenceError:  # the second metric left the field: it does not agree
        drift = np.inf
    back = [d for d in distances if d <= guards.verify_max_spread_mm]
    out = {
        "restarts": len(distances),
        "shift_mm": float(guards.verify_shift_mm),
        "rotation_deg": float(guards.verify_rotation_deg),
        "distances_mm": distances,
        "relative_costs": rel,
        "spread_mm": max(back, default=0.0),
        "second_metric": other.value,
        "second_metric_drift_mm": drift,
    }
    margin = opts.grid.search_min_margin
    limit = guards.verify_max_spread_mm
    rivals = [(d, c) for d, c in zip(distances, rel, strict=True) if d > limit and c < margin]
    if rivals:
        d, c = min(rivals, key=lambda r: r[1])
        out["unverified"] = (
            f"unverified: a restart {guards.verify_shift_mm:g} mm / "
            f"{guards.verify_rotation_deg:g} deg from the answer ends {d:.1f} mm from it at "
            f"a cost {100 * c:+.1f} % of the answer's (a distinct optimum within "
            f"{100 * margin:.0f} %)"
        )
    elif drift > guards.verify_max_metric_drift_mm:
        out["unverified"] = (
            f"unverified: {other.value} moves the answer by {drift:.2f} mm (> "
            f"{guards.verify_max_metric_drift_mm:g} mm): the two metrics disagree"
        )
    return out


def _restarts(quiet, pyramid, outcome, model, first, px_mm, distance_mm):
    """Each restart's distance from the answer (mm) and cost relative to the answer's.

    The starts are the answer pre-composed with a rotation of ±``verify_rotation_deg``
    about where it maps the ultrasound centre and a shift of ``verify_shift_mm`` in
    directions spread over the circle (deterministic, so a result repeats).
    """
    guards = quiet.options.guards
    n, answer = guards.verify_restarts, outcome.matrix
    ct = Transform(answer).apply(np.array([quiet.center]))[0]
    distances, rel = [], []
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
            distances.append(np.inf)
            rel.append(np.inf)
            continue
        distances.append(distance_mm(out.matrix))
        rel.append((out.value - outcome.value) / max(abs(outcome.value), 1e-12))
    return distances, rel


def predicted_tre_mm(check: dict) -> float:
    """A calibrated 90th-percentile bound on the TRE (mm) from :func:`restart_check`'s figures."""
    scatter = max(check["spread_mm"], check["second_metric_drift_mm"])
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

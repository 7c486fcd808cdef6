"""Sequence tracking: register an ultrasound clip to a fluoroscopy run frame by frame.

Each frame pair starts from the last accepted pair's transform moved on by the last
frame-to-frame motion (a warm, predicted start), skips the global search and optimises
one fine pyramid level on a capped number of samples: between consecutive frames the
probe's motion changes little, so the prediction is well inside the capture range.

A tracker can lose the probe (a jump beyond its capture range, a probe off the skin, a
cut in the clip), and then its answers look like any other frame's. So every frame gets a
verdict from cheap evidence (:class:`TrackingChecks`): its similarity against the clip's
running level and the size of its update from the predicted start. A doubtful frame is
registered again on its own (global search around the last accepted transform, verified
as :func:`register` verifies); it is accepted only if that re-acquisition is, and until
one is, every frame is refused and no refused transform seeds the next frame.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from ._blas import one_blas_thread
from ._register import RegistrationOptions, RegistrationResult, register
from .errors import IllPosedGeometryError, RegistrationError, UnverifiedResultError
from .guards import centre_scale, measure
from .metrics import Metric
from .preprocess import mask_extent
from .search import DEFAULT_PIXEL_MM
from .transforms import Transform, TransformModel

__all__ = ["TrackingChecks", "predict", "track_sequence"]

_REACQUISITION_REFUSED = (
    "registered on its own (a global search around the last accepted transform), the "
    "frame was refused too"
)


@dataclass(frozen=True)
class TrackingChecks:
    """How each tracked frame is judged, and what follows a doubtful one.

    ``level_fraction``: a frame whose similarity (the metric's value, negated) falls below
    this fraction of the running level, the median over the last ``level_frames``
    accepted frames, is doubtful: a frame registered where the probe is not scores far
    below the clip's own level. ``max_update_mm``: a frame whose answer lies further than
    this from its predicted start (median over the ultrasound field, mm at the isocentre)
    is doubtful: one fine level's capture range is a few mm. ``reacquire``: register a
    doubtful frame on its own (search ``reacquire_translation_mm`` around the last accepted
    transform, verified); without it, every frame from the first doubtful one is refused.
    ``check_every``: also re-register every K-th accepted frame that way and continue from
    the verified answer (0: only doubtful frames; each check costs a registration).
    """

    level_fraction: float = 0.8
    level_frames: int = 8
    max_update_mm: float = 3.0
    reacquire: bool = True
    reacquire_translation_mm: float = 30.0
    check_every: int = 0


def track_sequence(
    fixed_frames,
    moving_frames,
    pairs,
    initial: Transform | np.ndarray,
    *,
    fixed_mask=None,
    moving_mask=None,
    options: RegistrationOptions | None = None,
    levels: tuple[int, ...] = (2,),
    max_iterations: tuple[int, ...] = (8,),
    max_samples: int = 4000,
    update_model: str | None = "affine",
    checks: TrackingChecks | None = None,
    expected_scale=None,
    fixed_spacing_mm: float | None = None,
    progress=None,
) -> tuple[list[RegistrationResult], float]:
    """Register ``moving_frames[j]`` onto ``fixed_frames[i]`` for each (i, j) in ``pairs``.

    Parameters
    ----------
    fixed_frames, moving_frames : indexable by frame number (lists, dicts of 2D arrays).
    pairs : list of (fixed index, moving index), in time order.
    initial : the transform of the first pair (e.g. from a landmark registration).
    levels, max_iterations : pyramid factors and iteration caps used for every frame.
    max_samples : ultrasound samples per frame (a warm start needs few).
    update_model : the per-frame update composed onto the previous homography
        (``None``: the options' model); ``affine`` carries the first pair's perspective
        along, which one frame pins down worst (docs/registration-method.md, *Sequence
        tracking*).
    checks : how frames are judged (:class:`TrackingChecks`; default: its defaults).
    expected_scale, fixed_spacing_mm : as for :func:`register`; used by re-acquisition
        (without a scale, the first pair's at the field's centre is taken) and, the
        spacing, to express updates in mm (without it a pixel counts as 0.3 mm).

    Returns
    -------
    results : one RegistrationResult per pair; ``quality.verdict`` accepted or refused
        with ``quality.reasons``, ``quality.verification["tracking"]`` the evidence (the
        route: ``tracked``, ``re-acquired``, ``checked`` or ``refused``). A refused frame
        whose registration produced nothing carries the last accepted transform.
    frames_per_second : pairs registered per second of wall time.
    """
    _check_inputs(fixed_spacing_mm, moving_mask)
    base = options or RegistrationOptions()
    frame_opts = _frame_options(base, update_model, levels, max_iterations, max_samples)
    start = initial.matrix if isinstance(initial, Transform) else np.asarray(initial, float)
    masks = dict(fixed_mask=fixed_mask, moving_mask=moving_mask)
    setup = (base, frame_opts, checks or TrackingChecks())
    geometry = (expected_scale, fixed_spacing_mm)
    tracker = _Tracker((fixed_frames, moving_frames), masks, setup, geometry, start)
    results = []
    t0 = time.perf_counter()
    with one_blas_thread():  # the optimiser's tiny BLAS calls: threads only cost (_blas)
        for k, (i, j) in enumerate(pairs):
            results.append(tracker.step(k, i, j))
            if progress is not None:
                progress(k + 1, len(pairs))
    elapsed = time.perf_counter() - t0
    return results, (len(pairs) / elapsed if elapsed > 0 else float("inf"))


def _check_inputs(fixed_spacing_mm, moving_mask) -> None:
    """Refuse a spacing or a mask that would silence the checks or crash in them.

    A negative spacing made every update negative (no frame was ever doubted); an empty
    ultrasound mask ended in numpy's "SVD did not converge" on the first refused frame.
    """
    if fixed_spacing_mm is not None and not (
        np.isfinite(fixed_spacing_mm) and fixed_spacing_mm > 0
    ):
        raise IllPosedGeometryError(
            f"fixed_spacing_mm must be a positive number of mm, got {fixed_spacing_mm!r}"
        )
    if moving_mask is not None and not np.asarray(moving_mask, bool).any():
        raise IllPosedGeometryError("moving_mask selects no ultrasound pixel")


def _frame_options(base, update_model, levels, max_iterations, max_samples):
    """The options of one frame's registration: no search, few levels, few samples."""
    return base.with_values(
        model=update_model or base.model,
        levels=tuple(levels),
        max_iterations=tuple(max_iterations),
        search=False,
        verify_restarts=0,
        fine_levels=len(levels),
        max_samples=max_samples,
    )


def _reacquire_options(base: RegistrationOptions, checks: TrackingChecks):
    """The options of a re-acquisition: the caller's, with the search on and verified."""
    restarts = base.guards.verify_restarts or RegistrationOptions().guards.verify_restarts
    return base.with_values(
        search=True,
        search_translation_mm=checks.reacquire_translation_mm,
        verify_restarts=restarts,
    )


def predict(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The next frame's start: the last frame-to-frame motion applied once more.

    A hand moves the probe smoothly, so the motion between frames changes little from one
    frame to the next; starting from the extrapolation leaves the optimiser the change in
    motion to find rather than the motion itself.
    """
    step = np.linalg.solve(previous, current)  # moving-side motion: current = previous @ step
    h = current @ step
    return h / h[2, 2]


class _Tracker:
    """The state along a clip: the last accepted transforms, the level, whether lost."""

    def __init__(self, frames, masks, options, geometry, start):
        self.fixed_frames, self.moving_frames = frames
        self.masks = masks
        self.base, self.frame_opts, self.checks = options
        caps = (1,) * len(self.frame_opts.pyramid.levels)  # LC2 where the answer is
        self.lc2_opts = self.frame_opts.with_values(metric=Metric.LC2.value, max_iterations=caps)
        self.expected_scale, spacing = geometry
        self.spacing = spacing
        self.px_mm = spacing or DEFAULT_PIXEL_MM
        self.initial = start  # the caller's first-pair transform: the scale, if none given
        self.current, self.previous = start, None  # the last two accepted transforms
        self.motion = None  # the last tracked frame-to-frame step (moving side)
        self.levels = deque(maxlen=max(1, self.checks.level_frames))
        self.lost_at = None  # the frame from which the probe is lost, until re-acquired
        self.accepted_since_check = 0
        self.grid = None

    def step(self, k: int, i: int, j: int) -> RegistrationResult:
        """Frame ``k`` (fixed ``i``, moving ``j``): tracked, re-acquired or refused."""
        if self.lost_at is not None:
            why = f"the probe was lost at frame {self.lost_at} and not re-acquired since"
            return self._recover(k, i, j, [why], None)
        start = self.current if self.previous is None else predict(self.previous, self.current)
        res, evidence, doubts = self._tracked(i, j, start)
        if doubts:
            return self._recover(k, i, j, doubts, res)
        every = self.checks.check_every
        if every and self.accepted_since_check + 1 >= every:
            return self._recover(k, i, j, [], res, periodic=True)
        self._accept(res, evidence)
        return _judged(res, self.base, "accepted", [], evidence)

    def _tracked(self, i, j, start):
        """The warm-started registration of one pair, its evidence and any doubts."""
        try:
            res = register(
                self.fixed_frames[i],
                self.moving_frames[j],
                initial=start,
                options=self.frame_opts,
                **self.masks,
            )
        except RegistrationError as exc:  # no answer from this start: lost
            return None, {"route": "tracked"}, [f"the tracked registration failed: {exc}"]
        try:
            similarity = self._similarity(i, j, res)
        except RegistrationError as exc:
            return res, {"route": "tracked"}, [f"its similarity could not be measured: {exc}"]
        evidence = self._evidence(res, start, similarity, self.moving_frames[j])
        return res, evidence, self._doubts(evidence)

    def _similarity(self, i, j, res) -> float:
        """LC2 at the frame's answer: the tracked value, or a one-iteration LC2 run from it.

        The level check was chosen on LC2; NMI's and NGF's own values hardly drop on a
        lost frame (docs/registration-method.md, *Tracking: a verdict per frame*), so other
        metrics are judged by LC2 too, at the price of a second, shorter registration.
        """
        if res.metric == Metric.LC2.value:
            return -float(res.metric_value)
        probe = register(
            self.fixed_frames[i],
            self.moving_frames[j],
            initial=res.transform.matrix,
            options=self.lc2_opts,
            **self.masks,
        )
        return -float(probe.metric_value)

    def _evidence(self, res, start, similarity, frame) -> dict:
        """The frame's similarity, the running level and the update from its start."""
        level = float(np.median(self.levels)) if self.levels else None
        if self.grid is None:  # from the mask, or the whole first frame without one
            self.grid = _field_grid(self._moving_mask(frame))
        grid = self.grid
        moved = Transform(res.transform.matrix).apply(grid) - Transform(start).apply(grid)
        return {
            "route": "tracked",
            "similarity": similarity,
            "level": level,
            "update_mm": float(np.median(np.linalg.norm(moved, axis=1)) * self.px_mm),
        }

    def _doubts(self, evidence: dict) -> list[str]:
        """Why the cheap evidence doubts a tracked frame (empty: it does not)."""
        doubts, c = [], self.checks
        level, sim = evidence["level"], evidence["similarity"]
        if level is not None and sim < c.level_fraction * level:
            doubts.append(
                f"its similarity {sim:.3f} is below {c.level_fraction:g} of the clip's "
                f"running level {level:.3f}: the probe is not where the tracker put it"
            )
        if evidence["update_mm"] > c.max_update_mm:
            doubts.append(
                f"it moved {evidence['update_mm']:.1f} mm from its predicted start (more "
                f"than {c.max_update_mm:g} mm): beyond the tracker's capture range"
            )
        return doubts

    def _accept(self, res, evidence) -> None:
        """Carry ``res`` forward: the next start, the level, the count to the next check."""
        if self.previous is not None:  # the step from the last accepted frame to this one
            self.motion = np.linalg.solve(self.current, res.transform.matrix)
        self.previous, self.current = self.current, res.transform.matrix
        self.levels.append(evidence["similarity"])
        self.accepted_since_check += 1

    def _recover(self, k, i, j, doubts, tracked, periodic=False) -> RegistrationResult:
        """Frame ``k`` registered on its own: accepted if verified, else refused (lost)."""
        res, refusal = self._reacquire(i, j) if self.checks.reacquire else (None, None)
        route = "checked" if periodic else "re-acquired"
        if res is not None and refusal is None:
            evidence = {"route": route, "doubts": doubts, **self._relevel(i, j, res)}
            self._restart_from(res.transform.matrix)
            self.accepted_since_check = 0
            return _judged(res, self.base, "accepted", [], evidence)
        if not self.checks.reacquire:
            refusal = ["re-acquisition is off"]
        reasons = (["the periodic check refused it"] if periodic else doubts) + refusal
        self.lost_at = k if self.lost_at is None else self.lost_at
        self.previous = None  # only a re-acquisition, never a refused frame, starts the next
        shown = res or tracked or self._placeholder(i, j)
        return _judged(shown, self.base, "refused", reasons, {"route": "refused"})

    def _reacquire(self, i, j):
        """A verified registration around the last accepted transform, and any refusal."""
        try:
            res = register(
                self.fixed_frames[i],
                self.moving_frames[j],
                initial=self.current,
                options=_reacquire_options(self.base, self.checks),
                expected_scale=self._expected_scale(j),
                fixed_spacing_mm=self.spacing,
                **self.masks,
            )
        except UnverifiedResultError as exc:  # its reasons travel in its quality
            return exc.result, [_REACQUISITION_REFUSED]
        except RegistrationError as exc:  # an edge-on plane, a constant image, ...
            return None, [f"re-acquisition failed: {exc}"]
        if res.quality.verdict != "accepted":  # accept_unverified: written, not trusted
            return res, [_REACQUISITION_REFUSED]
        return res, None

    def _expected_scale(self, j):
        """The calibration's scale, or without one the first pair's at the field's centre.

        Without a scale a re-acquisition has no magnification check (and no perspective
        check): a left-right-flipped frame after a lost one was re-acquired 35 mm off at a
        predicted 1.75 mm. The first pair's transform is the caller's verified answer, and
        the probe's plane keeps its depth, hence its magnification, along a clip.
        """
        if self.expected_scale is not None:
            return self.expected_scale
        mask = self._moving_mask(self.moving_frames[j])
        if not mask.any():  # nothing to take it at; the registration refuses the frame
            return None
        cx, cy = mask_extent(mask)[4:6]
        try:
            scale = centre_scale(self.initial, (cx, cy))
        except np.linalg.LinAlgError:  # the start maps the centre to infinity
            return None
        return scale if np.isfinite(scale) and scale > 0 else None

    def _restart_from(self, matrix: np.ndarray) -> None:
        """Continue from a re-acquired ``matrix`` with the hand's last motion, if known.

        The last tracked step is a motion of the probe in its own plane, which a jump or a
        gap moves but does not stop: the next frame starts that step on from ``matrix``.
        """
        if self.motion is not None:
            self.previous = matrix @ np.linalg.inv(self.motion)
        self.current, self.lost_at = matrix, None

    def _relevel(self, i, j, res) -> dict:
        """Restart the running level from the tracked similarity at a re-acquired answer.

        A re-acquisition runs the full pyramid, whose value is not on the tracked level's
        scale, and after a jump the probe may see anatomy that scores differently.
        """
        self.levels.clear()
        _, evidence, _ = self._tracked(i, j, res.transform.matrix)
        if "similarity" not in evidence:  # the next frames start the level afresh
            return {}
        self.levels.append(evidence["similarity"])
        return {"similarity": evidence["similarity"]}

    def _moving_mask(self, frame) -> np.ndarray:
        """The ultrasound mask, or all of ``frame`` without one."""
        mask = self.masks["moving_mask"]
        return np.ones(np.shape(frame), bool) if mask is None else np.asarray(mask, bool)

    def _placeholder(self, i, j) -> RegistrationResult:
        """A result for a frame nothing registered: the last accepted transform, refused."""
        mask = self._moving_mask(self.moving_frames[j])
        transform = Transform(self.current, self.base.model)
        quality = measure(transform, None, None, mask, None, self.base)
        return RegistrationResult(
            transform=transform,
            model=TransformModel(self.base.model).value,
            metric=None,
            metric_value=None,
            iterations=[],
            wall_time_s=0.0,
            trace=[],
            landmark_fit=None,
            quality=quality,
            converged=False,
            message="not registered",
            options=self.frame_opts.to_dict(),
        )


def _judged(res, base, verdict, reasons, evidence) -> RegistrationResult:
    """``res`` in the options' model with the verdict, its reasons and the evidence."""
    res.transform = Transform(res.transform.matrix, base.model)
    res.model = TransformModel(base.model).value
    verification = {**(res.quality.verification or {}), "tracking": evidence}
    if verdict == "refused":
        reasons = list(res.quality.reasons) + [r for r in reasons if r not in res.quality.reasons]
    else:
        reasons = []
    res.quality = res.quality.replace(verdict=verdict, reasons=reasons, verification=verification)
    return res


def _field_grid(moving_mask) -> np.ndarray:
    """A 5 × 5 grid over the ultrasound field's box (moving px), where updates are measured."""
    x0, x1, y0, y1 = mask_extent(np.asarray(moving_mask, bool))[:4]
    gx, gy = np.meshgrid(np.linspace(x0, x1, 5), np.linspace(y0, y1, 5))
    return np.column_stack([gx.ravel(), gy.ravel()])

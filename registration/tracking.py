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

Small updates that each pass those checks can still carry the answer away from the truth
(a fluoroscopy that drifts a little every frame was followed 3.4 mm off), and nothing in
one frame shows it. So the same verified registration is forced once the answer has
travelled ``max_travel_mm`` from the last verified frame or the fluoroscopy's content has
moved ``max_fluoro_shift_mm`` from that frame's; every accepted frame carries a predicted
TRE that grows with that travel.
"""

from __future__ import annotations

import functools
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
from .verify import PREDICTED_TRE_FLOOR_MM

__all__ = ["TrackingChecks", "image_shift_px", "predict", "track_sequence"]

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

    Tracked error accumulates with the distance the answer travels from the last verified
    frame (the first pair's transform, a re-acquired or checked one), so that check is also
    forced when a tracked answer lies more than ``max_travel_mm`` from it (median over the
    field, mm at the isocentre), or when the fluoroscopy's content has shifted more than
    ``max_fluoro_shift_mm`` from that frame's (the tracker assumes a still X-ray; phase
    correlation). ``tre_per_travel``: the predicted TRE of a tracked frame is the
    verified frame's (at least the intensity floor) plus this many mm per mm of travel.
    ``max_anchor_tre_mm``: a re-registered frame predicted looser than this is refused
    (every tracked frame after it would build on it).
    """

    level_fraction: float = 0.8
    level_frames: int = 8
    max_update_mm: float = 3.0
    reacquire: bool = True
    reacquire_translation_mm: float = 30.0
    check_every: int = 0
    max_travel_mm: float = 15.0
    max_fluoro_shift_mm: float = 1.0
    tre_per_travel: float = 0.1
    max_anchor_tre_mm: float = 2.0


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
    initial_tre_mm: float | None = None,
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
    initial_tre_mm : the predicted TRE of ``initial`` (its registration's
        ``quality.predicted_tre_mm``); without it, the intensity floor (1.2 mm).

    Returns
    -------
    results : one RegistrationResult per pair; ``quality.verdict`` accepted or refused
        with ``quality.reasons``, ``quality.verification["tracking"]`` the evidence (the
        route: ``tracked``, ``re-acquired``, ``checked`` or ``refused``). A refused frame
        whose registration produced nothing carries the last accepted transform. Every
        accepted frame has ``quality.predicted_tre_mm``: a tracked one the last verified
        frame's plus its travel since (:class:`TrackingChecks`), a re-registered one its own.
    frames_per_second : pairs registered per second of wall time.
    """
    pairs, checks = list(pairs), checks or TrackingChecks()
    _check_inputs(fixed_spacing_mm, moving_mask, initial_tre_mm, checks)
    _check_fluoroscopy(fixed_frames, fixed_mask, pairs, checks)
    masks = dict(fixed_mask=fixed_mask, moving_mask=moving_mask)
    setup = (options, update_model, levels, max_iterations, max_samples, checks)
    geometry, start = (expected_scale, fixed_spacing_mm), (initial, initial_tre_mm)
    tracker = _start_tracker((fixed_frames, moving_frames), masks, setup, geometry, start)
    return _run(tracker, pairs, progress)


def _run(tracker, pairs, progress) -> tuple[list[RegistrationResult], float]:
    """Every pair through ``tracker``, in order: the results and the pairs per second."""
    results = []
    t0 = time.perf_counter()
    with one_blas_thread():  # the optimiser's tiny BLAS calls: threads only cost (_blas)
        for k, (i, j) in enumerate(pairs):
            results.append(tracker.step(k, i, j))
            if progress is not None:
                progress(k + 1, len(pairs))
    elapsed = time.perf_counter() - t0
    return results, (len(pairs) / elapsed if elapsed > 0 else float("inf"))


def _start_tracker(frames, masks, setup, geometry, start) -> _Tracker:
    """The tracker at the first pair: its options, the caller's transform and its bound."""
    options, update_model, levels, max_iterations, max_samples, checks = setup
    base = options or RegistrationOptions()
    frame_opts = _frame_options(base, update_model, levels, max_iterations, max_samples)
    initial, initial_tre_mm = start
    matrix = initial.matrix if isinstance(initial, Transform) else np.asarray(initial, float)
    tracker = _Tracker(frames, masks, (base, frame_opts, checks), geometry, matrix)
    tracker.anchor_tre = PREDICTED_TRE_FLOOR_MM if initial_tre_mm is None else initial_tre_mm
    return tracker


def _check_inputs(fixed_spacing_mm, moving_mask, initial_tre_mm=None, checks=None) -> None:
    """Refuse a spacing, a mask or a bound that would silence the checks or crash in them.

    A negative spacing made every update negative (no frame was ever doubted); an empty
    ultrasound mask ended in numpy's "SVD did not converge" on the first refused frame; a
    NaN bound compares false, so it turned its check off.
    """
    spacing_ok = _at_least(fixed_spacing_mm, 0, finite=True, strict=True)
    if fixed_spacing_mm is not None and not spacing_ok:
        raise IllPosedGeometryError(
            f"fixed_spacing_mm must be a positive number of mm, got {fixed_spacing_mm!r}"
        )
    if moving_mask is not None and not np.asarray(moving_mask, bool).any():
        raise IllPosedGeometryError("moving_mask selects no ultrasound pixel")
    if initial_tre_mm is not None and not _at_least(initial_tre_mm, 0, finite=True):
        raise IllPosedGeometryError(
            f"initial_tre_mm must be a non-negative number of mm, got {initial_tre_mm!r}"
        )
    for name in ("max_travel_mm", "max_fluoro_shift_mm"):
        value = getattr(checks or TrackingChecks(), name)
        if not _at_least(value, 0):  # inf turns the check off; NaN would, unseen
            raise IllPosedGeometryError(
                f"TrackingChecks.{name} must be a non-negative number of mm (inf: no "
                f"check), got {value!r}"
            )


def _at_least(value, low, *, finite=False, strict=False) -> bool:
    """Whether ``value`` is a real number (not NaN; finite if asked) at least ``low``."""
    if isinstance(value, bool | str | bytes):
        return False
    try:
        v = float(value)
    except (TypeError, ValueError):
        return False
    if np.isnan(v) or (finite and not np.isfinite(v)):
        return False
    return v > low if strict else v >= low


#: Fewest shift blocks (:data:`_SHIFT_BLOCK`) along each side of the fluoroscopy field's
#: inner box that phase correlation is measured on.
_MIN_SHIFT_BLOCKS = 8


def _check_fluoroscopy(fixed_frames, fixed_mask, pairs, checks) -> None:
    """Refuse fluoroscopy frames of different shapes, or a field too small for the shift.

    Frames of different shapes ended in numpy's broadcast error, and a field under about
    10 px wide in "Invalid number of FFT data points (0)", from inside the tracking. The
    shift is measured only between different fluoroscopy frames, and only with a finite
    ``max_fluoro_shift_mm``; a field too small to measure it is refused rather than left
    unchecked (inf turns the check off, on purpose).
    """
    used = list(dict.fromkeys(i for i, _ in pairs))
    shapes = {np.shape(fixed_frames[i]) for i in used}
    if len(shapes) > 1:
        raise IllPosedGeometryError(
            f"the fluoroscopy frames differ in shape ({', '.join(map(str, sorted(shapes)))}): "
            "tracking needs one detector size"
        )
    if len(used) < 2 or not np.isfinite(checks.max_fluoro_shift_mm):
        return
    shape = shapes.pop()
    if fixed_mask is not None and np.shape(fixed_mask) != shape:
        raise IllPosedGeometryError(
            f"fixed_mask is {np.shape(fixed_mask)}, the fluoroscopy frames {shape}"
        )
    y0, y1, x0, x1 = _inner_box(fixed_mask, shape)
    blocks = min((y1 - y0) // _SHIFT_BLOCK, (x1 - x0) // _SHIFT_BLOCK)
    if blocks < _MIN_SHIFT_BLOCKS:
        raise IllPosedGeometryError(
            f"the fluoroscopy field is too small to measure its shift ({x1 - x0} × {y1 - y0} "
            f"px inside; at least {_MIN_SHIFT_BLOCKS * _SHIFT_BLOCK} needed): widen fixed_mask "
            "or set TrackingChecks.max_fluoro_shift_mm=inf"
        )


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
        # The last verified frame: its transform, predicted TRE and fluoroscopy's spectrum.
        self.anchor, self.anchor_tre = start, PREDICTED_TRE_FLOOR_MM
        self.anchor_fixed = self.anchor_spectrum = None
        self.fluoro_box = None

    def step(self, k: int, i: int, j: int) -> RegistrationResult:
        """Frame ``k`` (fixed ``i``, moving ``j``): tracked, re-acquired or refused."""
        if self.lost_at is not None:
            why = f"the probe was lost at frame {self.lost_at} and not re-acquired since"
            return self._recover(k, i, j, [why], None)
        moved = self._fluoro_moved(i)
        if moved:
            return self._recover(k, i, j, moved, None, periodic=True)
        start = self.current if self.previous is None else predict(self.previous, self.current)
        res, evidence, doubts = self._tracked(i, j, start)
        if doubts:
            return self._recover(k, i, j, doubts, res)
        every = self.checks.check_every
        if every and self.accepted_since_check + 1 >= every:
            return self._recover(k, i, j, [], res, periodic=True)
        if evidence["travel_mm"] > self.checks.max_travel_mm:
            why = (
                f"it lies {evidence['travel_mm']:.1f} mm from the last verified frame (more "
                f"than {self.checks.max_travel_mm:g} mm): tracked error grows with travel"
            )
            return self._recover(k, i, j, [why], res, periodic=True)
        self._accept(res, evidence)
        predicted = self.anchor_tre + self.checks.tre_per_travel * evidence["travel_mm"]
        return _judged(res, self.base, "accepted", [], evidence, predicted)

    def _fluoro_moved(self, i) -> list[str]:
        """Why fluoroscopy frame ``i`` counts as moved from the last verified frame's (or [])."""
        if self.anchor_fixed is None:  # the first pair: the caller's transform is verified
            self.anchor_fixed = i
        if i == self.anchor_fixed or not np.isfinite(self.checks.max_fluoro_shift_mm):
            return []
        if self.fluoro_box is None:
            self.fluoro_box = _inner_box(self.masks["fixed_mask"], np.shape(self.fixed_frames[i]))
        if self.anchor_spectrum is None:
            self.anchor_spectrum = _spectrum(self.fixed_frames[self.anchor_fixed], self.fluoro_box)
        frame = _spectrum(self.fixed_frames[i], self.fluoro_box)
        shift_mm = float(np.hypot(*image_shift_px(self.anchor_spectrum, frame))) * self.px_mm
        if shift_mm <= self.checks.max_fluoro_shift_mm:
            return []
        return [
            f"the fluoroscopy's content moved {shift_mm:.1f} mm since the last verified frame "
            f"(more than {self.checks.max_fluoro_shift_mm:g} mm): the tracker assumes it still"
        ]

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
        self._field_grid_for(frame)
        return {
            "route": "tracked",
            "similarity": similarity,
            "level": level,
            "update_mm": self._distance_mm(res.transform.matrix, start),
            "travel_mm": self._distance_mm(res.transform.matrix, self.anchor),
        }

    def _field_grid_for(self, frame) -> None:
        """The grid distances are taken on: the mask's, or the first frame's whole box."""
        if self.grid is None:
            self.grid = _field_grid(self._moving_mask(frame))

    def _distance_mm(self, a: np.ndarray, b: np.ndarray) -> float:
        """Median distance between two transforms over the field's grid (mm, isocentre)."""
        moved = Transform(a).apply(self.grid) - Transform(b).apply(self.grid)
        return float(np.median(np.linalg.norm(moved, axis=1)) * self.px_mm)

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
            self._anchor_at(i, res)
            return _judged(res, self.base, "accepted", [], evidence)
        if not self.checks.reacquire:
            refusal = ["re-acquisition is off"]
        reasons = (doubts or ["the periodic check refused it"]) + refusal
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
        return res, self._unfit_anchor(res, j)

    def _unfit_anchor(self, res, j) -> list[str] | None:
        """Why a verified re-registration may not anchor the frames after it (or None).

        Every tracked frame after it builds on it, so its bound must be tight; and an answer
        further from the last accepted transform than the range searched around it is a
        jump no hand makes between two frames (a drifting clip re-acquired 51 mm off at a
        predicted 1.2 mm).
        """
        c = self.checks
        predicted = res.quality.predicted_tre_mm
        if predicted is not None and predicted > c.max_anchor_tre_mm:
            return [
                f"registered on its own, its predicted TRE {predicted:.1f} mm is above "
                f"{c.max_anchor_tre_mm:g} mm: too loose to track on from"
            ]
        self._field_grid_for(self.moving_frames[j])
        jump = self._distance_mm(res.transform.matrix, self.current)
        if jump > c.reacquire_translation_mm:
            return [
                f"registered on its own, it lies {jump:.0f} mm from the last accepted frame, "
                f"beyond the {c.reacquire_translation_mm:g} mm searched around it"
            ]
        return None

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

    def _anchor_at(self, i, res) -> None:
        """Make the verified ``res`` (fluoroscopy frame ``i``) the frame travel counts from."""
        self.accepted_since_check = 0
        self.anchor = res.transform.matrix
        predicted = res.quality.predicted_tre_mm
        self.anchor_tre = PREDICTED_TRE_FLOOR_MM if predicted is None else float(predicted)
        if i != self.anchor_fixed:
            self.anchor_fixed, self.anchor_spectrum = i, None

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


def _judged(res, base, verdict, reasons, evidence, predicted=None) -> RegistrationResult:
    """``res`` in the options' model with the verdict, its reasons and the evidence.

    ``predicted``: a tracked frame's predicted TRE (a re-registered frame keeps its own).
    """
    res.transform = Transform(res.transform.matrix, base.model)
    res.model = TransformModel(base.model).value
    verification = {**(res.quality.verification or {}), "tracking": evidence}
    if verdict == "refused":
        reasons = list(res.quality.reasons) + [r for r in reasons if r not in res.quality.reasons]
    else:
        reasons = []
    res.quality = res.quality.replace(verdict=verdict, reasons=reasons, verification=verification)
    if predicted is not None:
        res.quality = res.quality.replace(predicted_tre_mm=float(predicted))
    return res


def _field_grid(moving_mask) -> np.ndarray:
    """A 5 × 5 grid over the ultrasound field's box (moving px), where updates are measured."""
    x0, x1, y0, y1 = mask_extent(np.asarray(moving_mask, bool))[:4]
    gx, gy = np.meshgrid(np.linspace(x0, x1, 5), np.linspace(y0, y1, 5))
    return np.column_stack([gx.ravel(), gy.ravel()])


def _inner_box(fixed_mask, shape) -> tuple[int, int, int, int]:
    """The fluoroscopy field's box (rows y0:y1, columns x0:x1) less a fifth at each side.

    The collimator's edge is the same in every frame: inside it, only anatomy moves.
    """
    mask = np.ones(shape, bool) if fixed_mask is None else np.asarray(fixed_mask, bool)
    if not mask.any():
        mask = np.ones(shape, bool)
    x0, x1, y0, y1 = (int(v) for v in mask_extent(mask)[:4])
    my, mx = (y1 - y0 + 1) // 5, (x1 - x0 + 1) // 5
    return y0 + my, y1 + 1 - my, x0 + mx, x1 + 1 - mx


#: Block size (fluoroscopy px) the shift is measured at: 4 px is about 1 mm at the
#: isocentre; the default threshold (``max_fluoro_shift_mm``) is 1 mm, and the
#: parabola-refined peak measures a shift to a fraction of a block.
_SHIFT_BLOCK = 4


def _spectrum(frame, box) -> np.ndarray:
    """The Fourier transform of ``frame``'s ``box``, block-summed and Hann-windowed."""
    y0, y1, x0, x1 = box
    b = _SHIFT_BLOCK
    h, w = (y1 - y0) // b, (x1 - x0) // b // 2 * 2  # even: rfft2's inverse needs the width
    crop = np.asarray(frame[y0 : y0 + h * b, x0 : x0 + w * b], np.float32)
    small = crop.reshape(h, b, w * b).sum(axis=1).reshape(h, w, b).sum(axis=2)  # block sums
    return np.fft.rfft2((small - small.mean()) * _hann(h, w))


@functools.lru_cache(maxsize=4)
def _hann(h: int, w: int) -> np.ndarray:
    """A 2D Hann window: the field's box edges weigh nothing, so they cannot correlate."""
    return np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)


def image_shift_px(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """(dx, dy) fluoroscopy px by which ``other``'s content lies shifted from ``reference``'s.

    Phase correlation of two :func:`_spectrum` outputs, the peak refined by a parabola on
    each axis; sub-block accurate, which is all a millimetre threshold needs.
    """
    cross = other * np.conj(reference)
    corr = np.fft.irfft2(cross / np.maximum(np.abs(cross), 1e-12), s=_shape(reference))
    iy, ix = np.unravel_index(int(np.argmax(corr)), corr.shape)
    dy = _peak(corr[:, ix], iy)
    dx = _peak(corr[iy, :], ix)
    return np.array([dx, dy]) * _SHIFT_BLOCK


def _shape(spectrum: np.ndarray) -> tuple[int, int]:
    """The real image shape behind an ``rfft2`` spectrum of an even width."""
    return spectrum.shape[0], 2 * (spectrum.shape[1] - 1)


def _peak(line: np.ndarray, i: int) -> float:
    """The sub-sample peak near ``i`` of a circular correlation ``line``, as a signed lag."""
    n = len(line)
    left, centre, right = line[(i - 1) % n], line[i], line[(i + 1) % n]
    curvature = left - 2.0 * centre + right
    lag = i + (0.5 * (left - right) / curvature if curvature < 0 else 0.0)
    return lag - n if lag > n / 2 else lag

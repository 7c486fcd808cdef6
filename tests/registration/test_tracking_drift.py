"""Tracking that small updates cannot walk away: a fluoroscopy that creeps every frame."""

import warnings

import numpy as np
import pytest

from hybridfuse.registration.tracking import (
    TrackingChecks,
    _inner_box,
    _spectrum,
    image_shift_px,
    track_sequence,
)
from hybridfuse.testdata.phantom.clip import moving_probe_clip
from tests.registration.test_tracking import _tre_mm

#: TRE (mm) at which an accepted frame counts as wrong (#15).
WRONG_MM = 2.0
#: 2.3 mm a frame, up and to the right on the detector (the round-11 attack's size).
DRIFT_MM = (2.3 * np.cos(np.radians(300)), 2.3 * np.sin(np.radians(300)))


@pytest.fixture(scope="module")
def drifting():
    # The probe slides and turns as in the smooth clip; fluoroscopy frame k is shifted a
    # further 2.3 mm, so frame k's truth is 2.3 k mm from the still clip's.
    return moving_probe_clip(seed=3, n_frames=12, fluoro_drift_mm=DRIFT_MM)


def test_the_drift_moves_the_anatomy_inside_a_fixed_collimator(drifting):
    # The collimator is fixed to the detector, and the tracker's shift check reads only
    # inside fixed_mask: the drifted clip shifted the whole frame, so by frame 7 the mask
    # was 16 mm off the collimator's edge.
    outside = ~drifting.fixed_mask
    for k, frame in enumerate(drifting.fixed_frames):
        assert np.array_equal(frame[outside], drifting.fixed_frames[0][outside]), k
        assert np.ptp(frame[outside]) == 0, k  # the collimator's shadow, nothing else
        assert frame[drifting.fixed_mask].std() > 10 * np.ptp(frame[outside]) + 1, k


#: Frames tracked: by frame 7 the tracker without the drift checks is over 2 mm off.
FRAMES = 8


def _track(clip, checks=None):
    n = FRAMES
    results, _ = track_sequence(
        clip.fixed_frames,
        clip.moving_frames,
        [(k, k) for k in range(n)],
        clip.truths[0],
        fixed_mask=clip.fixed_mask,
        moving_mask=clip.moving_mask,
        fixed_spacing_mm=clip.fixed_mm_per_px,
        checks=checks,
    )
    return results, [_tre_mm(clip, r.transform.matrix, k) for k, r in enumerate(results)]


def test_without_the_drift_checks_small_updates_walk_away(drifting):
    # What the clip is for: every frame passes the per-frame checks (similarity near the
    # level, updates under 3 mm) while the answer ends millimetres off.
    unbounded = TrackingChecks(max_travel_mm=np.inf, max_fluoro_shift_mm=np.inf)
    results, tre = _track(drifting, unbounded)
    wrong = [k for k, r in enumerate(results) if r.quality.verdict == "accepted" and tre[k] >= 2]
    assert wrong, [round(t, 2) for t in tre]


def test_no_drifted_frame_is_accepted_wrong(drifting):
    results, tre = _track(drifting)
    seen = [(r.quality.verdict, r.quality.verification["tracking"]["route"]) for r in results]
    wrong = [
        (k, round(tre[k], 2))
        for k, (v, _) in enumerate(seen)
        if v == "accepted" and tre[k] >= WRONG_MM
    ]
    assert not wrong, (wrong, seen)
    # The moving fluoroscopy forces checks, and the clip is not simply refused.
    assert any(route == "checked" for _, route in seen), seen
    assert sum(v == "accepted" for v, _ in seen) >= 5, seen
    for r, t in zip(results, tre, strict=True):
        if r.quality.verdict == "accepted":  # every accepted frame carries its bound
            assert r.quality.predicted_tre_mm is not None and t <= r.quality.predicted_tre_mm + 0.5


def test_the_fluoroscopy_shift_is_measured_in_the_field(drifting):
    box = _inner_box(drifting.fixed_mask, drifting.fixed_frames[0].shape)
    ref = _spectrum(drifting.fixed_frames[0], box)
    expected = np.asarray(DRIFT_MM) / drifting.fixed_mm_per_px
    for k in range(1, FRAMES):
        shift = image_shift_px(ref, _spectrum(drifting.fixed_frames[k], box))
        # Within 0.3 mm of the true shift (measured: 0.08 to 0.18 mm over these frames,
        # 2.3 to 16 mm of drift), well under the default 1 mm threshold.
        error_mm = np.hypot(*(shift - k * expected)) * drifting.fixed_mm_per_px
        assert error_mm < 0.3, (k, shift, k * expected)


def _anchor_reasons(predicted_tre_mm, shift_px):
    """Why a verified re-registration ``shift_px`` from the last accepted frame may not
    anchor tracking (None: it may)."""
    from types import SimpleNamespace

    from hybridfuse.registration import RegistrationOptions
    from hybridfuse.registration.tracking import _Tracker

    frame = np.zeros((64, 64), np.float32)
    setup = (RegistrationOptions(), RegistrationOptions(), TrackingChecks())
    tracker = _Tracker(([frame], [frame]), {"moving_mask": None}, setup, (None, 0.5), np.eye(3))
    moved = np.eye(3)
    moved[0, 2] = shift_px
    quality = SimpleNamespace(predicted_tre_mm=predicted_tre_mm)
    res = SimpleNamespace(transform=SimpleNamespace(matrix=moved), quality=quality)
    return tracker._unfit_anchor(res, 0)


def test_a_re_registration_anchors_tracking_only_if_tight_and_near():
    assert _anchor_reasons(1.2, 20.0) is None  # 10 mm away, bound 1.2 mm: anchors
    # Every later tracked frame builds on it: a loose bound refuses it ...
    assert "predicted TRE 2.7 mm" in _anchor_reasons(2.7, 0.0)[0]
    # ... and so does an answer beyond the 30 mm searched around the last accepted frame
    # (a drifting clip was re-acquired 51 mm off at a predicted 1.2 mm).
    assert "51 mm" in _anchor_reasons(1.2, 102.0)[0]


def test_a_meaningless_initial_bound_is_refused_up_front():
    from hybridfuse.registration.errors import IllPosedGeometryError

    frame = np.zeros((8, 8), np.float32)
    for bad in (-1.0, float("nan")):
        with pytest.raises(IllPosedGeometryError, match="initial_tre_mm"):
            track_sequence([frame], [frame], [(0, 0)], np.eye(3), initial_tre_mm=bad)


@pytest.mark.parametrize(
    ("checks", "initial_tre_mm", "match"),
    [
        (TrackingChecks(max_travel_mm=float("nan")), None, "max_travel_mm"),
        (TrackingChecks(max_fluoro_shift_mm=float("nan")), None, "max_fluoro_shift_mm"),
        (TrackingChecks(max_fluoro_shift_mm=-1.0), None, "max_fluoro_shift_mm"),
        (None, "1.2", "initial_tre_mm"),
        (None, [1.2], "initial_tre_mm"),
    ],
)
def test_a_bound_that_would_silence_a_check_or_crash_is_refused_up_front(
    checks, initial_tre_mm, match
):
    # A NaN bound compares false, so its check never fired; a string initial_tre_mm ended
    # in numpy's TypeError. Both are refused, one line naming the input.
    from hybridfuse.registration.errors import IllPosedGeometryError

    frame = np.zeros((8, 8), np.float32)
    with pytest.raises(IllPosedGeometryError, match=match) as caught:
        track_sequence(
            [frame], [frame], [(0, 0)], np.eye(3), checks=checks, initial_tre_mm=initial_tre_mm
        )
    assert "\n" not in str(caught.value)


def _two_fluoroscopy_frames(fixed, fixed_mask=None, checks=None):
    rng = np.random.default_rng(0)
    moving = [rng.random((80, 80)) for _ in range(2)]
    start = np.array([[1.0, 0, 20], [0, 1, 20], [0, 0, 1]])
    return track_sequence(
        fixed, moving, [(0, 0), (1, 1)], start, fixed_mask=fixed_mask, checks=checks
    )


def test_fluoroscopy_frames_of_different_shapes_are_refused_up_front():
    # They ended in numpy's broadcast error from inside the shift measurement.
    from hybridfuse.registration.errors import IllPosedGeometryError

    rng = np.random.default_rng(1)
    fixed = [rng.random((120, 120)), rng.random((120, 128))]
    with pytest.raises(IllPosedGeometryError, match="differ in shape") as caught:
        _two_fluoroscopy_frames(fixed)
    assert "\n" not in str(caught.value)


def test_a_fluoroscopy_field_too_narrow_for_the_shift_is_refused_unless_the_check_is_off():
    # A field under about 10 px wide ended in numpy's "Invalid number of FFT data points
    # (0)" from inside track_sequence. Measuring no shift would leave a creeping X-ray to
    # the travel bound alone, so it is refused; inf turns the shift check off on purpose.
    from hybridfuse.registration.errors import IllPosedGeometryError

    rng = np.random.default_rng(2)
    fixed = [rng.random((120, 120)) for _ in range(2)]
    narrow = np.zeros((120, 120), bool)
    narrow[10:110, 50:59] = True  # 9 px wide
    with warnings.catch_warnings(), pytest.raises(ValueError, match="number of FFT data"):
        warnings.simplefilter("ignore")  # the empty box's mean
        _spectrum(fixed[1], _inner_box(narrow, narrow.shape))  # what the tracker would do
    with pytest.raises(IllPosedGeometryError, match="too small to measure its shift") as caught:
        _two_fluoroscopy_frames(fixed, narrow)
    assert "\n" not in str(caught.value)
    off = TrackingChecks(max_fluoro_shift_mm=np.inf)
    results, _ = _two_fluoroscopy_frames(fixed, narrow, off)  # runs to the end, no crash
    assert len(results) == 2

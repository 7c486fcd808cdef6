"""Tracking that small updates cannot walk away: a fluoroscopy that creeps every frame."""

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
        # Within 0.3 mm of the true shift (measured: 0.08 to 0.19 mm over these frames,
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

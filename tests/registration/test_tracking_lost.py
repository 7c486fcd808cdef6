"""Tracking that knows when it has lost the probe: a jump and a probe off the skin."""

import numpy as np
import pytest

from hybridfuse.registration.tracking import TrackingChecks, track_sequence
from hybridfuse.testdata.phantom.clip import moving_probe_clip
from tests.registration.test_tracking import _tre_mm

#: TRE (mm) at which an accepted frame counts as wrong (#15).
WRONG_MM = 2.0
JUMP_AT, OFF_SKIN = 4, 7


@pytest.fixture(scope="module")
def clip():
    # Frames 0-3 slide and turn smoothly; from frame 4 on the probe is 20 mm further back
    # along its array and turned 15 degrees (far beyond one frame's capture range); frame 7
    # is a probe lifted off the skin; frames 8-9 are back on it.
    return moving_probe_clip(
        seed=3,
        n_frames=10,
        slide_mm=18.0,
        turn_deg=12.0,
        jump_at=JUMP_AT,
        jump_mm=-20.0,
        jump_deg=-15.0,
        off_skin=(OFF_SKIN,),
    )


def _track(clip, checks=None, pairs=None):
    pairs = pairs or [(k, k) for k in range(len(clip.truths))]
    results, _ = track_sequence(
        clip.fixed_frames,
        clip.moving_frames,
        pairs,
        clip.truths[0],
        fixed_mask=clip.fixed_mask,
        moving_mask=clip.moving_mask,
        fixed_spacing_mm=clip.fixed_mm_per_px,
        checks=checks,
    )
    tre = [_tre_mm(clip, r.transform.matrix, j) for r, (_, j) in zip(results, pairs, strict=True)]
    return [(r.quality.verdict, t) for r, t in zip(results, tre, strict=True)]


@pytest.fixture(scope="module")
def tracked(clip):
    return _track(clip)


def test_a_tracker_without_checks_accepts_the_jump_wrong(clip):
    # What the clip is for: a tracker that judges nothing reports the frame after the jump
    # as right while it is centimetres off (today's tracker did that for every frame).
    blind = TrackingChecks(level_fraction=0.0, max_update_mm=np.inf, reacquire=False)
    verdict, tre = _track(clip, blind)[JUMP_AT]
    assert verdict == "accepted" and tre > 10.0, (verdict, tre)


def test_no_frame_is_accepted_wrong(tracked):
    wrong = [(k, round(t, 2)) for k, (v, t) in enumerate(tracked) if v == "accepted" and t >= 2]
    assert not wrong, tracked


def test_the_jump_is_re_acquired_right(tracked):
    # The frames before the jump are tracked, and the jump's frame is registered again on
    # its own from the last accepted transform: right (or refused, never wrong).
    assert all(v == "accepted" for v, _ in tracked[:JUMP_AT]), tracked
    verdict, tre = tracked[JUMP_AT]
    assert verdict == "accepted" and tre < WRONG_MM, tracked


def test_a_probe_off_the_skin_is_refused_and_tracking_resumes(tracked):
    assert tracked[OFF_SKIN][0] == "refused", tracked
    # Back on the skin the probe is found again: the clip does not stay refused.
    assert any(v == "accepted" and t < WRONG_MM for v, t in tracked[OFF_SKIN + 1 :]), tracked


def test_without_reacquisition_every_frame_after_a_loss_is_refused(clip):
    # The probe leaves the skin after frame 2 and comes back where it was (frame 3's pose):
    # tracked from frame 2, frame 3 would look right, but nothing re-acquired the probe,
    # so it is refused; a refused frame never seeds the next as if it were right.
    pairs = [(0, 0), (1, 1), (2, 2), (OFF_SKIN, OFF_SKIN), (3, 3)]
    out = _track(clip, TrackingChecks(reacquire=False), pairs)
    assert [v for v, _ in out] == ["accepted"] * 3 + ["refused"] * 2, out

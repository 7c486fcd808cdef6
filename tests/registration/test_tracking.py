"""Sequence tracking: warm-started frame-by-frame registration along a clip whose probe moves."""

import numpy as np
import pytest

from hybridfuse.fusion import read_image
from hybridfuse.registration import RegistrationOptions, Transform, register
from hybridfuse.registration.tracking import track_sequence
from hybridfuse.testdata import sample_case
from hybridfuse.testdata.phantom import load_truth
from hybridfuse.testdata.phantom.clip import moving_probe_clip


def _clip():
    case = sample_case()
    truth = load_truth(case)
    pairs = [p for p in truth["pairs"] if not p["edge_on"]]
    fixed = read_image(case / pairs[0]["fluoro_file"])
    moving = read_image(case / "us_clip.dcm")
    frames_f = {i: fixed.gray(i) for i in range(fixed.n_frames)}
    frames_m = {j: moving.gray(j) for j in range(moving.n_frames)}
    return pairs, fixed, moving, frames_f, frames_m


@pytest.fixture(scope="module")
def moving_clip():
    # 12 frames over which the probe slides 18 mm and turns 12 degrees (up to 2.6 mm and
    # 1.7 degrees between frames).
    return moving_probe_clip(seed=3, n_frames=12, slide_mm=18.0, turn_deg=12.0)


def _tre_mm(clip, h, k) -> float:
    """Median distance (mm at the isocentre) from the truth over a 12 x 12 grid of the field."""
    ys, xs = np.nonzero(clip.moving_mask)
    gx, gy = np.meshgrid(np.linspace(xs.min(), xs.max(), 12), np.linspace(ys.min(), ys.max(), 12))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    err = Transform(h).apply(grid) - Transform(clip.truths[k]).apply(grid)
    return float(np.median(np.linalg.norm(err, axis=1)) * clip.fixed_mm_per_px)


def _track(clip):
    n = len(clip.truths)
    results, fps = track_sequence(
        clip.fixed_frames,
        clip.moving_frames,
        [(k, k) for k in range(n)],
        clip.truths[0],
        fixed_mask=clip.fixed_mask,
        moving_mask=clip.moving_mask,
    )
    # Every frame of a smooth clip is accepted as tracked: a check that refuses or
    # re-registers good frames would fail here.
    routes = [(r.quality.verdict, r.quality.verification["tracking"]["route"]) for r in results]
    assert routes == [("accepted", "tracked")] * n, routes
    tre = [_tre_mm(clip, r.transform.matrix, k) for k, r in enumerate(results)]
    # Each tracked frame's predicted TRE bounds its true TRE, and grows along the clip
    # (the answer travels from the first frame) without becoming useless.
    predicted = [r.quality.predicted_tre_mm for r in results]
    assert all(t <= p for t, p in zip(tre, predicted, strict=True)), (tre, predicted)
    assert predicted[-1] > predicted[0] and max(predicted) < 3.0, predicted
    return tre, fps


def test_the_clip_really_moves(moving_clip):
    assert moving_clip.slide_mm >= 15.0 and moving_clip.turn_deg >= 10.0
    # A tracker that keeps the first frame's transform ends centimetres off.
    stationary = [_tre_mm(moving_clip, moving_clip.truths[0], k) for k in range(12)]
    assert stationary[0] == pytest.approx(0.0, abs=1e-9)
    assert stationary[-1] > 8.0, stationary


def test_tracking_follows_a_sliding_turning_probe(moving_clip):
    tracked, fps = _track(moving_clip)
    # Every frame stays within 1.2 mm of the truth (a tracker that never moves is
    # 8-12 mm off by the end: see test_the_clip_really_moves) ...
    assert max(tracked) < 1.2, [round(t, 2) for t in tracked]
    # ... and as close as registering frames independently (full search from the first
    # frame's transform), within 0.3 mm, mid-clip and at its end.
    for k in (6, 11):
        res = register(
            moving_clip.fixed_frames[k],
            moving_clip.moving_frames[k],
            fixed_mask=moving_clip.fixed_mask,
            moving_mask=moving_clip.moving_mask,
            initial=moving_clip.truths[0],
            fixed_spacing_mm=moving_clip.fixed_mm_per_px,
            # The comparison is of accuracy: the restarts only slow it down.
            options=RegistrationOptions().with_values(verify_restarts=0),
        )
        independent = _tre_mm(moving_clip, res.transform.matrix, k)
        assert tracked[k] < independent + 0.3, (k, tracked[k], independent)
    assert fps > 0


def test_frames_of_a_clip_reuse_the_smoothing_weights_of_the_first(monkeypatch):
    # The masks are the same in every frame, and so must be the smoothing widths, or
    # each frame recomputes its mask weights (they were a sixth of a tracked frame's
    # time). New entries come only when the probe's box crosses the crop grid or its
    # scale a 1 % step.
    from hybridfuse.registration import preprocess

    pairs, fixed, moving, frames_f, frames_m = _clip()
    seq = [(p["fluoro_frame"], p["us_frame"]) for p in pairs] * 5
    kw = dict(fixed_mask=fixed.mask, moving_mask=moving.mask)
    monkeypatch.setattr(preprocess, "_CACHE_ENTRIES", 10_000)
    monkeypatch.setattr(preprocess, "_WEIGHTS", {})
    first, _ = track_sequence(
        frames_f, frames_m, seq[:1], np.asarray(pairs[0]["moving_to_fixed_pixel"]), **kw
    )
    per_frame = len(preprocess._WEIGHTS)
    assert per_frame > 0  # the cache is in use
    track_sequence(frames_f, frames_m, seq[1:], first[0].transform, **kw)
    added = len(preprocess._WEIGHTS) - per_frame
    assert added <= per_frame, f"{added} new entries over {len(seq) - 1} frames"


def test_every_kth_frame_is_checked_by_a_verified_registration(moving_clip):
    # check_every=3: the third accepted frame is registered again on its own (search and
    # verification) and tracking continues from that answer.
    from hybridfuse.registration.tracking import TrackingChecks

    results, _ = track_sequence(
        moving_clip.fixed_frames,
        moving_clip.moving_frames,
        [(0, 0), (1, 1), (2, 2)],
        moving_clip.truths[0],
        fixed_mask=moving_clip.fixed_mask,
        moving_mask=moving_clip.moving_mask,
        fixed_spacing_mm=moving_clip.fixed_mm_per_px,
        checks=TrackingChecks(check_every=3),
    )
    routes = [r.quality.verification["tracking"]["route"] for r in results]
    assert routes == ["tracked", "tracked", "checked"], routes
    assert results[2].quality.verdict == "accepted"
    assert results[2].quality.verification["restarts"] > 0  # the verification ran
    assert _tre_mm(moving_clip, results[2].transform.matrix, 2) < 2.0

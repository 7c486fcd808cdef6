"""Sequence tracking: warm-started frame-by-frame registration along a clip."""

import numpy as np

from hybridfuse.fusion import read_image
from hybridfuse.registration import RegistrationOptions, Transform
from hybridfuse.registration.tracking import track_sequence
from hybridfuse.testdata import sample_case
from hybridfuse.testdata.phantom import load_truth


def _clip():
    case = sample_case()
    truth = load_truth(case)
    pairs = [p for p in truth["pairs"] if not p["edge_on"]]
    fixed = read_image(case / pairs[0]["fluoro_file"])
    moving = read_image(case / "us_clip.dcm")
    frames_f = {i: fixed.gray(i) for i in range(fixed.n_frames)}
    frames_m = {j: moving.gray(j) for j in range(moving.n_frames)}
    return pairs, fixed, moving, frames_f, frames_m


def test_tracking_follows_the_probe_from_frame_to_frame():
    pairs, fixed, moving, frames_f, frames_m = _clip()
    # The probe drifts between frames (the generator moves it in-plane): each truth differs.
    assert not np.allclose(pairs[0]["moving_to_fixed_pixel"], pairs[-1]["moving_to_fixed_pixel"])
    results, fps = track_sequence(
        frames_f,
        frames_m,
        [(p["fluoro_frame"], p["us_frame"]) for p in pairs],
        np.asarray(pairs[0]["moving_to_fixed_pixel"]),
        fixed_mask=fixed.mask,
        moving_mask=moving.mask,
        options=RegistrationOptions(model="projective"),
    )
    ys, xs = np.nonzero(moving.mask)
    gx, gy = np.meshgrid(np.linspace(xs.min(), xs.max(), 12), np.linspace(ys.min(), ys.max(), 12))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    iso = fixed.xray.isocenter_spacing_mm[0]
    for res, pair in zip(results, pairs, strict=True):
        true = Transform(np.asarray(pair["moving_to_fixed_pixel"]))
        tre = np.median(np.linalg.norm(res.transform.apply(grid) - true.apply(grid), axis=1)) * iso
        assert tre < 1.0, (pair["id"], tre)
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

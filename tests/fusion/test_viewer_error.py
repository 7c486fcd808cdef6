"""The viewer's predicted-error outline: which error model, and where its 1 mm line lies."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial import Delaunay

from hybridfuse.fusion.viewer_error import LIMIT_MM, _bilinear, error_model, iso_segments
from hybridfuse.registration import Transform


def _landmarks(pair, matrix=None, pts=None):
    """The sample's landmarks, or ``pts`` (ultrasound px) mapped exactly by ``matrix``."""
    if pts is None:
        pts = np.array([lm["moving_xy"] for lm in pair["landmarks"]])
        fx = np.array([lm["fixed_xy"] for lm in pair["landmarks"]])
        names = [lm["name"] for lm in pair["landmarks"]]
    else:
        fx, names = Transform(matrix).apply(pts), [f"p{i}" for i in range(len(pts))]
    return [{"name": n, "x": f[0], "y": f[1], "mx": p[0], "my": p[1]}
            for n, p, f in zip(names, pts, fx, strict=True)]  # fmt: skip


@pytest.fixture(scope="module")
def case(fused):
    _, _, _, pair, fixed, moving = fused
    tr = Transform(np.asarray(pair["moving_to_fixed_pixel"]))
    return pair, tr, fixed.xray.isocenter_spacing_mm, moving.mask


def test_iso_segments_lie_on_the_level_by_linear_interpolation():
    xs, ys = np.arange(0, 50, 10.0), np.arange(0, 40, 10.0)
    f = np.hypot(*np.meshgrid(xs - 20, ys - 15)) / 10  # a cone: a closed 1.0 ring
    seg = iso_segments(xs, ys, f, 1.0)
    assert len(seg) >= 4
    assert _bilinear(xs, ys, f, seg.reshape(-1, 2)) == pytest.approx(1.0, abs=1e-9)


def test_sample_landmarks_outline_the_far_field(case):
    pair, tr, spacing, mask = case
    em = error_model(tr, _landmarks(pair), None, spacing, mask)
    assert em["kind"] == "landmarks" and "5 landmarks" in em["text"] and "σ" in em["text"]
    xs, ys, mm = (np.asarray(em[k]) for k in ("xs", "ys", "mm"))
    seg = np.asarray(em["segments"])
    assert len(seg) > 10 and mm.max() > 3 * LIMIT_MM  # extrapolation far from 5 clustered points
    near = _bilinear(xs, ys, mm, np.array([[lm["mx"], lm["my"]] for lm in _landmarks(pair)]))
    assert near.max() < LIMIT_MM  # at the landmarks the fit is good
    # Every segment end on the 1 mm line (to the 0.01 px rounding), or on the imaged
    # area's edge where the error is above it.
    val = _bilinear(xs, ys, mm, seg.reshape(-1, 2))
    ys_m, xs_m = np.nonzero(mask)
    on_edge = ((np.abs(seg.reshape(-1, 2)[:, 0] - xs_m.min()) < 5)
               | (np.abs(seg.reshape(-1, 2)[:, 0] - xs_m.max()) < 5)
               | (np.abs(seg.reshape(-1, 2)[:, 1] - ys_m.min()) < 5)
               | (np.abs(seg.reshape(-1, 2)[:, 1] - ys_m.max()) < 5))  # fmt: skip
    assert np.all(np.isclose(val, LIMIT_MM, atol=5e-3) | (on_edge & (val > 0.9 * LIMIT_MM)))
    assert np.any(np.isclose(val, LIMIT_MM, atol=5e-3)) and np.any(on_edge)


def test_dense_landmarks_leave_no_outline_inside_their_hull(case):
    pair, tr, spacing, mask = case
    ys_m, xs_m = np.nonzero(mask)
    gx, gy = np.meshgrid(np.linspace(xs_m.min() + 20, xs_m.max() - 20, 8),
                         np.linspace(ys_m.min() + 20, ys_m.max() - 20, 8))  # fmt: skip
    pts = np.column_stack([gx.ravel(), gy.ravel()])
    em = error_model(tr, _landmarks(pair, tr.matrix, pts), None, spacing, mask)
    assert em["kind"] == "landmarks"
    seg = np.asarray(em["segments"]).reshape(-1, 2)
    assert not np.any(Delaunay(pts).find_simplex(seg) >= 0)  # nothing inside the hull
    xs, ys, mm = (np.asarray(em[k]) for k in ("xs", "ys", "mm"))
    assert _bilinear(xs, ys, mm, pts).max() < LIMIT_MM


def test_sigma_from_transform_json_and_rejected_landmarks_left_out(case):
    pair, tr, spacing, mask = case
    lms = _landmarks(pair)
    q = {"model_selection": {"landmark_sigma_px": 3.0, "landmark_sigma_estimated": False},
         "landmarks_rejected": [lms[0]["name"]]}  # fmt: skip
    em = error_model(tr, lms, q, spacing, mask)
    assert "4 landmarks" in em["text"] and "σ 3.00 px (given" in em["text"]
    q["model_selection"]["landmark_sigma_px"] = 1.0
    small = error_model(tr, lms, q, spacing, mask)
    # The error scales with σ: three times the noise, three times the error.
    assert np.asarray(em["mm"]) == pytest.approx(3 * np.asarray(small["mm"]), rel=1e-3)


def test_without_landmarks_the_recorded_prediction_or_nothing(case):
    pair, tr, spacing, mask = case
    no_positions = [{"name": "a", "x": 1.0, "y": 2.0}]  # fixed only: no fit to propagate
    em = error_model(tr, no_positions, {"predicted_tre_mm": 2.4}, spacing, mask)
    assert em["kind"] == "uniform" and "2.40 mm taken for the whole field" in em["text"]
    assert len(em["segments"]) > 0  # the whole imaged area is above 1 mm: its edge
    assert error_model(tr, [], {"predicted_tre_mm": 0.6}, spacing, mask)["segments"] == []
    none = error_model(tr, [], {"verdict": "accepted"}, spacing, mask)
    assert none["kind"] == "none" and none["segments"] == []
    assert "no landmark positions and no predicted error" in none["text"]
    json.dumps(none, allow_nan=False)


def test_fuse_embeds_the_error_model(fused):
    out, *_ = fused
    html = (out / "viewer.html").read_text(encoding="utf-8")
    data = json.loads(html.split('id="viewer-data">', 1)[1].split("</script>", 1)[0])
    # The fixture's landmarks have no ultrasound positions and there is no quality record.
    assert data["errorModel"]["kind"] == "none" and data["errorModel"]["segments"] == []

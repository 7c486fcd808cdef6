"""What viewer.html embeds from a fuse run: display settings, geometry, timing, quality."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hybridfuse.fusion import viewer as viewer_mod
from hybridfuse.fusion.viewer import (
    ViewerContext,
    ViewerFrames,
    read_quality,
    render_viewer,
    viewer_context,
)
from hybridfuse.registration import Transform


def _data(html: str) -> dict:
    return json.loads(html.split('id="viewer-data">', 1)[1].split("</script>", 1)[0])


def _frames(n=3, shape=(8, 8)) -> ViewerFrames:
    vf = ViewerFrames(n)
    for k in range(n):
        f = np.full(shape, 10 * k, np.uint8)
        vf.add(k, f, f, np.ones(shape, bool))
    return vf


def _render(vf, ctx, times=(0.0, 0.5, 1.0)) -> dict:
    return _data(render_viewer(vf, times_s=list(times), mm_per_px=0.3, landmarks=[],
                               case_label="c", context=ctx))  # fmt: skip


def test_fuse_embeds_its_mode_geometry_pairs_and_spacings(fused):
    out, summary, _, pair, fixed, moving = fused
    data = _data((out / "viewer.html").read_text(encoding="utf-8"))
    assert (data["mode"], data["opacity"], data["colormap"]) == ("alpha", 0.5, "hot")
    assert np.allclose(data["matrix"], pair["moving_to_fixed_pixel"])
    shown = summary["viewer"]["output_frames"]
    pairs = summary["pairs"]
    assert data["usFrame"] == [pairs[k]["moving_frame"] for k in shown]
    assert data["dt"] == [round(pairs[k]["time_difference_s"], 3) for k in shown]
    assert set(data["usImages"]) == {str(j) for j in data["usFrame"]}
    assert data["fixedSpacingMm"] == pytest.approx(list(fixed.xray.isocenter_spacing_mm))
    assert data["usSpacingMm"] == pytest.approx(list(moving.pixel_spacing_mm))
    assert (data["usHeight"], data["usWidth"]) == moving.shape
    ys, xs = np.nonzero(moving.mask)
    # Frames cropped to the mask's box and the margin the page's warp reads.
    m = viewer_mod.US_MARGIN_PX
    assert data["usOffset"] == [max(0, xs.min() - m), max(0, ys.min() - m)]
    assert data["order"] == "linear" and data["layers"] == []  # the page warps them itself
    assert data["times"] == pytest.approx(list(fixed.frame_times_s - fixed.frame_times_s[0]))
    assert "FrameTimeVector" in data["timesSource"]
    assert data["quality"] is None  # no transform file given: no banner verdict invented


def test_quality_is_read_from_the_transform_file(fused, tmp_path):
    _, summary, _, pair, fixed, moving = fused
    q = {"verdict": "accepted", "predicted_tre_mm": 0.7, "reasons": [], "edge_on": False}
    t = tmp_path / "transform.json"
    t.write_text(json.dumps({"moving_to_fixed_pixel": pair["moving_to_fixed_pixel"], "quality": q}))
    pairs = [
        (p["fixed_frame"], p["moving_frame"], p["time_difference_s"]) for p in summary["pairs"]
    ]
    opts = {"mode": "edges", "opacity": 0.3, "colormap": "viridis"}
    tr = Transform(np.asarray(pair["moving_to_fixed_pixel"]))
    ctx = viewer_context(fixed, moving, tr, pairs, opts, transform_source=t)
    assert ctx.quality == q and (ctx.mode, ctx.opacity, ctx.colormap) == ("edges", 0.3, "viridis")
    given = {"verdict": "refused"}
    assert viewer_context(fixed, moving, tr, pairs, opts, given, t).quality == given
    assert read_quality(tmp_path / "absent.json") is None
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert read_quality(tmp_path / "bad.json") is None


def test_context_values_are_sanitised():
    ctx = ViewerContext(
        mode="color",
        opacity=7.0,
        colormap="viridis",
        matrix=np.zeros((3, 3)),  # singular: no linked cursor rather than a wrong one
        pairs=[(0, float("nan")), (1, 0.25), (1, None)],
        moving_frame=lambda j: np.full((6, 5), 300.0),
        fixed_spacing_mm=(0.2, float("inf")),
        moving_spacing_mm=(0.1, 0.12),
        quality={
            "verdict": 3,
            "predicted_tre_mm": float("nan"),
            "reasons": ["a", 1],
            "unknown_key": "dropped",
        },  # fmt: skip
    )
    data = _render(_frames(), ctx)
    assert data["opacity"] == 1.0 and data["matrix"] is None
    assert data["dt"] == [None, 0.25, None] and data["usFrame"] == [0, 1, 1]
    assert list(data["usImages"]) == ["0", "1"]  # one image per distinct frame
    assert data["fixedSpacingMm"] == [0.3, 0.3]  # the (row, col) pair was unusable
    assert data["usSpacingMm"] == [0.1, 0.12]
    assert data["quality"] == {"verdict": "3", "predicted_tre_mm": None, "reasons": ["a", "1"]}
    assert "viridis" in data["colormaps"] and len(data["colormaps"]["hot"]) == 768


@pytest.mark.parametrize("name", ["hot", "gray", "cool", "viridis"])
def test_colour_maps_are_matplotlibs(name):
    import matplotlib

    want = np.rint(matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255)
    assert viewer_mod.colormap_lut(name) == want.astype(int).ravel().tolist()


def test_identical_layers_are_embedded_once():
    data = _render(_frames(), ViewerContext())
    assert len(data["layers"]) == 3 and data["layerOf"] == [0, 1, 2]
    vf = ViewerFrames(3)
    f = np.full((8, 8), 50, np.uint8)
    for k in range(3):
        vf.add(k, f + k, f, np.ones((8, 8), bool))  # one ultrasound frame for all three
    data = _render(vf, ViewerContext())
    assert len(data["frames"]) == 3 and len(data["layers"]) == 1 and data["layerOf"] == [0] * 3
    page = sum(map(len, data["frames"])) + len(data["layers"][0])
    assert vf.summary()["embedded_bytes"] == page < vf.nbytes  # fuse.json: as embedded


def test_ultrasound_past_its_budget_thins_the_shown_frames_evenly_and_says_so(monkeypatch):
    rng = np.random.default_rng(0)
    noise = {j: rng.integers(0, 255, (40, 40)).astype(float) for j in range(3)}
    ctx = ViewerContext(pairs=[(0, 0.0), (1, 0.0), (2, 0.0)], moving_frame=noise.__getitem__)
    one = len(_render(_frames(), ctx)["usImages"]["0"])
    monkeypatch.setattr(viewer_mod, "MAX_US_BYTES", 2 * one + one // 2)  # two frames fit
    data = _render(_frames(), ctx)
    # Every shown frame keeps its ultrasound (the page warps it): frames 0 and 2, evenly.
    assert data["frameIndex"] == [0, 2] and data["usFrame"] == [0, 2]
    assert sorted(data["usImages"]) == ["0", "2"]
    assert "every 2nd" in data["usNote"] and "byte budget" in data["usNote"]

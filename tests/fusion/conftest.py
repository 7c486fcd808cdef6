"""Fixtures shared by the fusion tests."""

from __future__ import annotations

import numpy as np
import pytest

from hybridfuse.fusion import read_image
from hybridfuse.fusion.fuse import fuse_images
from hybridfuse.registration import Transform
from hybridfuse.testdata import sample_case
from hybridfuse.testdata.phantom import load_truth


@pytest.fixture(scope="session")
def fused(tmp_path_factory):
    case = sample_case()
    truth = load_truth(case)
    pair = next(p for p in truth["pairs"] if not p["edge_on"])
    fixed = read_image(case / pair["fluoro_file"])
    moving = read_image(case / "us_clip.dcm")
    out = tmp_path_factory.mktemp("fuse") / "out"
    summary = fuse_images(
        fixed,
        moving,
        Transform(np.asarray(pair["moving_to_fixed_pixel"])),
        out,
        mode="alpha",
        video="gif",
        transform_frames=(0, pair["us_frame"]),
        landmarks=[
            {"name": lm["name"], "x": lm["fixed_xy"][0], "y": lm["fixed_xy"][1]}
            for lm in pair["landmarks"]
        ],
    )
    return out, summary, truth, pair, fixed, moving


#: The anisotropic case: a dark disc (centre x, y and radius in the sample's square pixels)
#: painted into the fluoroscopy, whose columns are then made 1.5 times coarser.
DISC = (256.0, 390.0, 50.0)


def _coarser_columns(frames: np.ndarray, cols: int) -> np.ndarray:
    """``frames`` (n, rows, c) linearly resampled to ``cols`` columns, pixel edges kept."""
    c = frames.shape[2]
    pos = np.clip((np.arange(cols) + 0.5) * c / cols - 0.5, 0, c - 1)
    i0 = np.minimum(np.floor(pos).astype(int), c - 2)
    w = pos - i0
    out = frames[..., i0] * (1 - w) + frames[..., i0 + 1] * w
    return np.rint(out).astype(frames.dtype)


@pytest.fixture(scope="session")
def anisotropic(tmp_path_factory):
    """The sample pair with the fluoroscopy's pixels 1.5 times as wide as tall.

    A dark disc of :data:`DISC` is painted in first (outside the ultrasound's footprint),
    so a circle of the scene is known; the columns are resampled 512 -> 341, the
    ImagerPixelSpacing's column widened to match, and the transform, the landmarks' x and
    the disc's centre carried onto the new grid. The circular shutter is dropped: its
    radius counts columns, which the reader does not yet scale for such pixels.
    Returns a dict: fixed path, moving, transform, landmarks, factor (old / new columns),
    disc (x, y on the new grid), pair.
    """
    import pydicom

    case = sample_case()
    pair = next(p for p in load_truth(case)["pairs"] if not p["edge_on"])
    ds = pydicom.dcmread(case / pair["fluoro_file"])
    frames = ds.pixel_array.astype(float)
    yy, xx = np.mgrid[: frames.shape[1], : frames.shape[2]]
    x0, y0, r = DISC
    frames[:, np.hypot(xx - x0, yy - y0) <= r] = 255  # MONOCHROME1: the darkest
    cols = round(frames.shape[2] / 1.5)
    factor = frames.shape[2] / cols
    new_x = lambda x: (x + 0.5) / factor - 0.5  # noqa: E731
    ds.PixelData = _coarser_columns(frames, cols).astype(np.uint8).tobytes()
    ds.Columns = cols
    ds.ImagerPixelSpacing = [0.37, round(0.37 * factor, 6)]
    for kw in ("ShutterShape", "CenterOfCircularShutter", "RadiusOfCircularShutter"):
        delattr(ds, kw)
    path = tmp_path_factory.mktemp("aniso") / "fluoro_aniso.dcm"
    ds.save_as(path)
    shrink = np.array([[1 / factor, 0, 0.5 / factor - 0.5], [0, 1, 0], [0, 0, 1]])
    landmarks = [
        {"name": lm["name"], "x": new_x(lm["fixed_xy"][0]), "y": lm["fixed_xy"][1],
         "moving_x": lm["moving_xy"][0], "moving_y": lm["moving_xy"][1]}
        for lm in pair["landmarks"]
    ]  # fmt: skip
    return {
        "fixed": path,
        "moving": read_image(case / "us_clip.dcm"),
        "transform": Transform(shrink @ np.asarray(pair["moving_to_fixed_pixel"])),
        "landmarks": landmarks,
        "factor": factor,
        "disc": (new_x(x0), y0),
        "pair": pair,
    }

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

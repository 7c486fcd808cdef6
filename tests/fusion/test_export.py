"""Video exports: the GIF's frame bound keeps the clip's length."""

from __future__ import annotations

import numpy as np
from PIL import Image

from fusion.export import GIF_MAX_FRAMES, write_gif


def test_long_gif_keeps_every_kth_frame_and_the_clip_length(tmp_path):
    n, fps = 250, 10.0
    frames = [np.full((8, 8, 3), k % 256, np.uint8) for k in range(n)]
    step = write_gif(tmp_path / "a.gif", frames, fps)
    assert step == 3
    with Image.open(tmp_path / "a.gif") as im:
        assert im.n_frames == 84 <= GIF_MAX_FRAMES
        assert im.info["duration"] == 300
    assert write_gif(tmp_path / "b.gif", frames[:GIF_MAX_FRAMES], fps) == 1
    with Image.open(tmp_path / "b.gif") as im:
        assert im.n_frames == GIF_MAX_FRAMES

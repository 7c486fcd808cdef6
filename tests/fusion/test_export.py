"""Video exports: the GIF's frame bound keeps the clip's length."""

from __future__ import annotations

import numpy as np
from PIL import Image

from hybridfuse.fusion.export import GIF_MAX_FRAMES, write_gif


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


def test_fuse_json_says_which_frames_the_gif_holds(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    import hybridfuse.fusion.export
    from hybridfuse.cli.main import cli
    from hybridfuse.testdata import sample_case

    monkeypatch.setattr(hybridfuse.fusion.export, "GIF_MAX_FRAMES", 2)
    case = sample_case()
    fixed = case / "fluoro_run02_confirm_lateral.dcm"
    lms = case / "landmarks" / "run02_confirm_lateral_f00_us06.csv"
    reg = ["register", "--fixed", str(fixed), "--moving", str(case / "us_clip.dcm")]
    reg += ["--moving-frame", "6", "--landmarks", str(lms), "--metric", "none"]
    assert CliRunner().invoke(cli, [*reg, "--out", str(tmp_path / "r")]).exit_code == 0
    fuse = ["fuse", "--fixed", str(fixed), "--moving", str(case / "us_clip.dcm"), "--no-dicom"]
    fuse += ["--transform", str(tmp_path / "r" / "transform.json"), "--video", "gif"]
    result = CliRunner().invoke(cli, [*fuse, "--out", str(tmp_path / "f")])
    assert result.exit_code == 0, result.output
    video = json.loads((tmp_path / "f" / "fuse.json").read_text())["video"]
    assert video == {"format": "gif", "frames": "2 of 4 frames, one in 2 (a GIF's bound)"}
    with Image.open(tmp_path / "f" / "fused.gif") as im:
        assert im.n_frames == 2

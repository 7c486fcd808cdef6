"""Write fused frames: PNG, animated GIF, MP4 (H.264).

Every file is written under an exclusive temporary name beside it
(:func:`hybridfuse._safeio.atomic_file`) and renamed when complete: a planted link is never
written through, and an interrupted write leaves no file that looks finished.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hybridfuse._safeio import atomic_file

from .errors import FusionError

__all__ = ["GIF_MAX_FRAMES", "write_png", "write_gif", "write_mp4"]

#: A GIF holds at most this many frames (evenly spaced, each shown for as long as the
#: frames it stands for): Pillow keeps every frame of a GIF in memory while writing.
GIF_MAX_FRAMES = 100


def write_png(path: str | os.PathLike, rgb: np.ndarray, compress_level: int = 1) -> Path:
    """PNG of an RGB (or grey) uint8 image; fast compression (the frames are many)."""
    from PIL import Image

    path = Path(path)
    with atomic_file(path) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb)).save(
            tmp, format="PNG", compress_level=compress_level
        )
    return path


def write_gif(path: str | os.PathLike, frames, fps: float) -> int:
    """Looping animated GIF (for short previews); returns the frame step it kept.

    At most :data:`GIF_MAX_FRAMES` frames, every ``step``-th, so the clip keeps its length.
    """
    from PIL import Image

    path = Path(path)
    step = max(1, -(-len(frames) // GIF_MAX_FRAMES))
    images = [Image.fromarray(frames[k]) for k in range(0, len(frames), step)]
    with atomic_file(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=int(round(1000.0 * step / max(fps, 0.1))),
            loop=0,
        )
    return step


def write_mp4(path: str | os.PathLike, frames: list[np.ndarray], fps: float) -> Path:
    """H.264 MP4 through imageio-ffmpeg (which ships its own ffmpeg).

    Frames are padded with black to multiples of 16 pixels, which H.264 encoders and
    players handle best, instead of being silently rescaled.
    """
    # imageio-ffmpeg runs os.setpgrp in the forked child (preexec_fn): Python code between
    # fork and exec, which can hang on a lock another thread held at the fork (seen under
    # tracemalloc in the test suite; imageio-ffmpeg issue #58). Its own switch turns it off.
    os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise FusionError("MP4 needs imageio-ffmpeg (pip install imageio-ffmpeg)") from exc
    path = Path(path)
    rows, cols = frames[0].shape[:2]
    pr, pc = (-rows) % 16, (-cols) % 16
    with atomic_file(path) as tmp:
        try:
            writer = imageio_ffmpeg.write_frames(
                str(tmp),
                (cols + pc, rows + pr),
                fps=fps,
                codec="libx264",
                pix_fmt_out="yuv420p",
                macro_block_size=1,
                ffmpeg_log_level="error",
                # The temporary name has no .mp4 suffix for ffmpeg to guess the container.
                output_params=["-f", "mp4"],
            )
            writer.send(None)
            for f in frames:
                writer.send(np.ascontiguousarray(np.pad(f, ((0, pr), (0, pc), (0, 0)))))
            writer.close()
        except Exception as exc:
            raise FusionError(f"{path}: video encoding failed ({exc})") from exc
    return path

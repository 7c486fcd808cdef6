"""Write fused frames: PNG, animated GIF, MP4 (H.264). Every file via a temporary name."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import FusionError

__all__ = ["write_png", "write_gif", "write_mp4", "atomic_path"]


def atomic_path(path: Path) -> Path:
    """The temporary name a file is written under before it is renamed into place."""
    return path.with_name(f".{path.name}.partial{path.suffix}")


def write_png(path: str | os.PathLike, rgb: np.ndarray, compress_level: int = 1) -> Path:
    """PNG of an RGB (or grey) uint8 image; fast compression (the frames are many)."""
    from PIL import Image

    path = Path(path)
    tmp = atomic_path(path)
    Image.fromarray(np.ascontiguousarray(rgb)).save(
        tmp, format="PNG", compress_level=compress_level
    )
    os.replace(tmp, path)
    return path


def write_gif(path: str | os.PathLike, frames: list[np.ndarray], fps: float) -> Path:
    """Looping animated GIF (for short previews)."""
    from PIL import Image

    path = Path(path)
    tmp = atomic_path(path)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(
        tmp,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=int(round(1000.0 / max(fps, 0.1))),
        loop=0,
    )
    os.replace(tmp, path)
    return path


def write_mp4(path: str | os.PathLike, frames: list[np.ndarray], fps: float) -> Path:
    """H.264 MP4 through imageio-ffmpeg (which ships its own ffmpeg).

    Frames are padded with black to multiples of 16 pixels, which H.264 encoders and
    players handle best, instead of being silently rescaled.
    """
    try:
        import imageio.v2 as imageio
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise FusionError("MP4 needs imageio and imageio-ffmpeg (pip install them)") from exc
    path = Path(path)
    tmp = atomic_path(path)
    rows, cols = frames[0].shape[:2]
    pr, pc = (-rows) % 16, (-cols) % 16
    try:
        with imageio.get_writer(
            tmp,
            format="FFMPEG",
            mode="I",
            fps=fps,
            codec="libx264",
            pixelformat="yuv420p",
            macro_block_size=1,
            ffmpeg_log_level="error",
        ) as writer:
            for f in frames:
                writer.append_data(np.pad(f, ((0, pr), (0, pc), (0, 0))))
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise FusionError(f"{path}: video encoding failed ({exc})") from exc
    os.replace(tmp, path)
    return path

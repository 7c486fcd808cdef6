"""Fuse a registered ultrasound cine onto a fluoroscopy run: frames, video, viewer, DICOM.

Time matching: each fluoroscopy frame is paired with the ultrasound frame nearest in
acquisition time (both files' start time + frame times). When either file has no
acquisition time, frames are paired by index from the frames named in the transform
(fixed frame i ↔ moving frame j + (i − fixed frame)). The pairing and each time
difference are written to ``fuse.json``.

All outputs are written into a temporary folder beside ``out_dir`` and renamed when
complete: an interrupted run leaves nothing that looks finished.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from registration import Transform
from registration.warp import warp_to_fixed

from ._atomic import atomic_directory
from ._image import Image
from .blend import BlendMode, blend
from .dicom_out import case_pseudonym, write_fused_sc
from .errors import InputError
from .export import write_gif, write_mp4, write_png
from .viewer import write_viewer

__all__ = ["pair_frames", "fuse_images"]


def pair_frames(
    fixed: Image, moving: Image, fixed_frames: list[int], transform_frames: tuple[int, int] = (0, 0)
) -> tuple[list[tuple], str]:
    """(fixed frame, moving frame, Δt seconds or None) per fixed frame, and the method."""
    if fixed.acquisition_datetime and moving.acquisition_datetime:
        offset = (moving.acquisition_datetime - fixed.acquisition_datetime).total_seconds()
        m_times = moving.frame_times_s + offset
        pairs = []
        for i in fixed_frames:
            t = fixed.frame_times_s[i]
            j = int(np.argmin(np.abs(m_times - t)))
            pairs.append((i, j, float(m_times[j] - t)))
        return pairs, "nearest acquisition time"
    fi0, mj0 = transform_frames
    pairs = [(i, int(np.clip(mj0 + (i - fi0), 0, moving.n_frames - 1)), None) for i in fixed_frames]
    return pairs, "by index from the transform's frames (no acquisition times)"


def _window(fixed: Image, frames: list[int], mask) -> tuple[float, float]:
    """Display window (0.5 and 99.5 percentiles inside the mask) over a few frames."""
    sample = frames[:: max(1, len(frames) // 4)][:4]
    vals = np.concatenate(
        [fixed.gray(i)[mask] if mask is not None else fixed.gray(i).ravel() for i in sample]
    )
    lo, hi = np.percentile(vals, (0.5, 99.5))
    return float(lo), float(max(hi, lo + 1.0))


def _apply_window(img: np.ndarray, lo_hi: tuple[float, float], mask) -> np.ndarray:
    lo, hi = lo_hi
    out = np.clip((img - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.float32)
    return np.where(mask, out, 0.0).astype(np.float32) if mask is not None else out


def _check_frames(frames, n, what) -> list[int]:
    if frames is None:
        return list(range(n))
    bad = [f for f in frames if not 0 <= f < n]
    if bad:
        raise InputError(f"{what} frame(s) {bad} out of range: the file has {n} frame(s)")
    return list(frames)


def fuse_images(
    fixed: Image,
    moving: Image,
    transform: Transform,
    out_dir: str | os.PathLike,
    *,
    mode: BlendMode | str = "alpha",
    opacity: float = 0.5,
    colormap: str = "hot",
    frames: list[int] | None = None,
    order: str = "linear",
    video: str = "mp4",
    dicom: bool = True,
    include_phi: bool = False,
    overwrite: bool = False,
    transform_frames: tuple[int, int] = (0, 0),
    landmarks: list[dict] | None = None,
    registration_dicom: bool = False,
    progress=None,
) -> dict:
    """Write fused_NNN.png, a video, viewer.html, fused_sc.dcm and fuse.json to ``out_dir``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass --overwrite")
    if video not in ("mp4", "gif", "none"):
        raise InputError(f"video must be mp4, gif or none, got {video!r}")
    mode = BlendMode(mode)
    if not fixed.modality.is_xray or fixed.modality.value in ("DX", "CR") and fixed.n_frames > 1:
        raise InputError(
            f"{fixed.source_path}: the fixed image must be fluoroscopy (XA/RF/DX), "
            f"got {fixed.modality.value}"
        )
    if moving.modality.value != "US" and moving.us_region is None:
        raise InputError(
            f"{moving.source_path}: the moving image must be ultrasound, got "
            f"{moving.modality.value}"
        )
    fixed_idx = _check_frames(frames, fixed.n_frames, "fluoroscopy")
    pairs, how = pair_frames(fixed, moving, fixed_idx, transform_frames)
    t0 = time.perf_counter()
    with atomic_directory(out_dir) as tmp:
        from concurrent.futures import ThreadPoolExecutor

        fused, fixed_disp, layers, valids = [], [], [], []
        fmask = fixed.mask
        # One display window for the whole run, so brightness does not flicker.
        lo_hi = _window(fixed, [i for i, _, _ in pairs], fmask)
        pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
        writes = []
        last: tuple[int, tuple] | None = None  # consecutive frames often share a US frame
        for k, (i, j, _dt) in enumerate(pairs):
            f = _apply_window(fixed.gray(i), lo_hi, fmask)
            if last is None or last[0] != j:
                last = (
                    j,
                    warp_to_fixed(
                        moving.gray(j),
                        transform.matrix,
                        fixed.shape,
                        moving_mask=moving.mask,
                        order=order,
                    ),
                )
            warped, valid = last[1]
            m = np.clip(warped, 0, 255)
            rgb = blend(f, m, valid, mode, opacity=opacity, colormap=colormap)
            # PNG encoding runs on the pool: zlib releases the GIL.
            writes.append(pool.submit(write_png, tmp / f"fused_{k:03d}.png", rgb))
            fused.append(rgb)
            fixed_disp.append(f.astype(np.uint8))
            layers.append(m.astype(np.uint8))
            valids.append(valid)
            if progress is not None:
                progress(k + 1, len(pairs))
        for w in writes:
            w.result()
        pool.shutdown()
        fuse_time = time.perf_counter() - t0
        times = [
            float(fixed.frame_times_s[i] - fixed.frame_times_s[pairs[0][0]]) for i, _, _ in pairs
        ]
        fps = (
            1.0 / np.median(np.diff(times))
            if len(times) > 1 and np.median(np.diff(times)) > 0
            else 4.0
        )
        fps = float(np.clip(fps, 1.0, 30.0))
        written = [f"fused_{k:03d}.png" for k in range(len(pairs))]
        if video == "mp4":
            write_mp4(tmp / "fused.mp4", fused, fps)
            written.append("fused.mp4")
        elif video == "gif":
            write_gif(tmp / "fused.gif", fused, fps)
            written.append("fused.gif")
        label = case_pseudonym(fixed.uids.get("study") or moving.uids.get("study"))
        iso = fixed.xray.isocenter_spacing_mm if fixed.xray else None
        write_viewer(
            tmp / "viewer.html",
            fixed_disp,
            layers,
            valids,
            times_s=times,
            mm_per_px=float(np.mean(iso)) if iso else None,
            landmarks=landmarks or [],
            case_label=label,
            fps=fps,
        )
        written.append("viewer.html")
        if dicom:
            import pydicom

            headers = [
                pydicom.dcmread(img.source_path, stop_before_pixels=True)
                if img.source_path and img.uids
                else None
                for img in (fixed, moving)
            ]
            write_fused_sc(
                tmp / "fused_sc.dcm",
                fused,
                fixed_ds=headers[0],
                moving_ds=headers[1],
                frame_time_ms=1000.0 / fps,
                include_phi=include_phi,
                burned_in=False,
                description=f"Ultrasound registered onto fluoroscopy (homography), "
                f"blend mode {mode.value}, opacity {opacity:g}",
            )
            written.append("fused_sc.dcm")
        if registration_dicom:
            from .registration_dicom import write_registration_dicom

            write_registration_dicom(
                tmp / "registration.dcm", transform, fixed, moving, include_phi=include_phi
            )
            written.append("registration.dcm")
        summary = {
            "schema": "hybridfuse.fuse/1",
            "case": label,
            "mode": mode.value,
            "opacity": opacity,
            "interpolation": order,
            "time_matching": how,
            "pairs": [
                {"output_frame": k, "fixed_frame": i, "moving_frame": j, "time_difference_s": dt}
                for k, (i, j, dt) in enumerate(pairs)
            ],
            "moving_to_fixed_pixel": transform.matrix.tolist(),
            "fuse_and_write_s": fuse_time,
            "frames_per_second": len(pairs) / fuse_time if fuse_time > 0 else None,
            "outputs": written,
            "phi_included": include_phi,
        }
        with open(tmp / "fuse.json", "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=1)
    return summary

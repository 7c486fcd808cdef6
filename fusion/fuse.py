"""Fuse a registered ultrasound cine onto a fluoroscopy run: frames, video, viewer, DICOM.

Time matching: each fluoroscopy frame is paired with the ultrasound frame nearest in
acquisition time (both files' start time + frame times). When either file has no
acquisition time, frames are paired by index from the frames named in the transform
(fixed frame i ↔ moving frame j + (i − fixed frame)). The pairing and each time
difference are written to ``fuse.json``.

All outputs are written into a temporary folder beside ``out_dir`` and renamed when
complete: an interrupted run leaves nothing that looks finished.

Bounded memory: frames are fused one at a time; each is written as a PNG and appended to
an unnamed spool file, from which the video and DICOM writers read them back, so no list
of fused frames is held. The viewer embeds a bounded, evenly subsampled set of frames
(:mod:`fusion.viewer`).

Before anything is warped, the transform must be plausible (:func:`check_transform`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from hybridfuse._safeio import (
    check_out_separate,
    check_out_target,
    file_record,
    json_safe,
    write_text,
)
from hybridfuse.dicom import is_dicom_stream
from hybridfuse.registration import Transform
from hybridfuse.registration.warp import warp_to_fixed

from ._image import Image
from .aspect import pixel_aspect
from .blend import BlendMode, blend
from .dicom_out import case_pseudonym, write_fused_sc
from .errors import InputError
from .export import write_gif, write_mp4, write_png
from .viewer import MAX_BYTES, MAX_FRAMES, ViewerFrames, render_viewer, viewer_context

__all__ = ["check_transform", "pair_frames", "fuse_images"]


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
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return 0.0, 255.0
    lo, hi = np.percentile(vals, (0.5, 99.5))
    return float(lo), float(max(hi, lo + 1.0))


def _apply_window(img: np.ndarray, lo_hi: tuple[float, float], mask) -> np.ndarray:
    lo, hi = lo_hi
    out = np.clip((img - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.float32)
    return np.where(mask, out, 0.0).astype(np.float32) if mask is not None else out


def check_frames(frames, n, what) -> list[int]:
    """The frames to fuse: each within ``0..n-1`` and given once, else InputError."""
    if frames is None:
        return list(range(n))
    bad = [f for f in frames if not 0 <= f < n]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise InputError(f"{what} frame(s) {bad[:5]}{more} out of range: the file has {n} frame(s)")
    seen: set[int] = set()
    repeated = sorted({f for f in frames if f in seen or seen.add(f)})
    if repeated:
        # Each repeat is another full frame in every output (1000 repeats: ~1 GB).
        more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
        raise InputError(f"{what} frame(s) {repeated[:5]}{more} given more than once")
    return list(frames)


_check_frames = check_frames


#: Limits of a plausible moving-to-fixed transform, checked over the ultrasound region
#: (the bounding box of the moving image's mask, else the whole image).
LIMITS = {
    # max |w| / min |w| of the denominator w = h31 x + h32 y + h33 over the region: how
    # much nearer one edge of the plane is to the source than the other.
    "max_foreshortening": 10.0,
    # condition number of the matrix in normalised coordinates (both images to [-1, 1]).
    "max_condition": 1e6,
    # fixed pixels per ultrasound pixel, each singular value of the local Jacobian.
    "min_scale": 1e-3,
    "max_scale": 100.0,
    # ratio of the Jacobian's singular values (a plane seen edge-on reaches ~40; 1000 is
    # within ~0.06 degrees of edge-on, where the layer collapses to a line).
    "max_anisotropy": 1000.0,
    # area of the mapped region / area of the fluoroscopy image.
    "min_area_ratio": 1e-4,
    "max_area_ratio": 100.0,
}


def moving_box(moving: Image) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) pixel centres bounding the ultrasound mask (else the image)."""
    mask = moving.mask
    if mask is not None and mask.any():
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        return float(cols[0]), float(rows[0]), float(cols[-1]), float(rows[-1])
    r, c = moving.shape
    return 0.0, 0.0, float(c - 1), float(r - 1)


def _to_box(x0, y0, x1, y1) -> np.ndarray:
    """Maps [-1, 1]² onto the box (half sizes at least half a pixel)."""
    hx, hy = max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
    return np.array([[hx, 0, (x0 + x1) / 2], [0, hy, (y0 + y1) / 2], [0, 0, 1.0]])


def _jacobian_svals(h: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Singular values (N, 2) of the homography's Jacobian at points (N, 2)."""
    u = np.c_[xy, np.ones(len(xy))] @ h.T
    w = u[:, 2]
    fx, fy = u[:, 0] / w, u[:, 1] / w
    jac = np.empty((len(xy), 2, 2))
    jac[:, 0, 0] = h[0, 0] - fx * h[2, 0]
    jac[:, 0, 1] = h[0, 1] - fx * h[2, 1]
    jac[:, 1, 0] = h[1, 0] - fy * h[2, 0]
    jac[:, 1, 1] = h[1, 1] - fy * h[2, 1]
    return np.linalg.svd(jac / w[:, None, None], compute_uv=False)


def check_transform(
    matrix, box: tuple[float, float, float, float], fixed_shape, source: str = "transform"
) -> dict:
    """Refuse a moving-to-fixed homography that cannot describe this pair of images.

    Checks, over the ultrasound region ``box`` (x0, y0, x1, y1): a finite 3x3 matrix; the
    denominator keeps one sign at every corner (the horizon does not cross the region)
    and varies by at most :data:`LIMITS` ``max_foreshortening``; the condition number in
    normalised coordinates; the local scale and anisotropy at the corners and the centre;
    the mapped area against the fluoroscopy image's; and that the region lands at least
    partly on the fluoroscopy image. A bad transform would otherwise warp into a blank
    or garbage layer, or an enormous allocation, without any error.

    Returns the measured values; raises :class:`InputError` naming ``source``.
    """
    lim = LIMITS
    h = np.asarray(matrix, dtype=float)
    if h.shape != (3, 3) or not np.isfinite(h).all():
        raise InputError(f"{source}: moving_to_fixed_pixel must be a finite 3x3 matrix")
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
    w = corners @ h[2, :2] + h[2, 2]
    if not (np.all(w > 0) or np.all(w < 0)):
        raise InputError(
            f"{source}: the homography's horizon (where its denominator is 0) crosses the "
            "ultrasound region; part of the region would map to infinity"
        )
    foreshortening = float(np.abs(w).max() / np.abs(w).min())
    if foreshortening > lim["max_foreshortening"]:
        raise InputError(
            f"{source}: perspective varies {foreshortening:.3g}x across the ultrasound "
            f"region (limit {lim['max_foreshortening']:g}x); not a plausible projection"
        )
    rows, cols = fixed_shape
    hn = np.linalg.inv(_to_box(0, 0, cols - 1, rows - 1)) @ h @ _to_box(*box)
    cond = float(np.linalg.cond(hn))
    if not np.isfinite(cond) or cond > lim["max_condition"]:
        raise InputError(
            f"{source}: the matrix is near-singular (condition number {cond:.3g} in "
            f"normalised coordinates, limit {lim['max_condition']:.0e})"
        )
    pts = np.vstack([corners, [[(x0 + x1) / 2, (y0 + y1) / 2]]])
    sv = _jacobian_svals(h, pts)
    smin, smax = float(sv.min()), float(sv.max())
    if smin < lim["min_scale"] or smax > lim["max_scale"]:
        raise InputError(
            f"{source}: scale {smin:.3g}-{smax:.3g} fixed pixels per ultrasound pixel, "
            f"outside {lim['min_scale']:g}-{lim['max_scale']:g}"
        )
    aniso = float((sv[:, 0] / sv[:, 1]).max())
    if aniso > lim["max_anisotropy"]:
        raise InputError(
            f"{source}: stretches one direction {aniso:.3g}x more than the other "
            f"(limit {lim['max_anisotropy']:g}x)"
        )
    u = np.c_[corners, np.ones(4)] @ h.T
    q = u[:, :2] / u[:, 2:3]
    area = 0.5 * abs(np.dot(q[:, 0], np.roll(q[:, 1], -1)) - np.dot(q[:, 1], np.roll(q[:, 0], -1)))
    ratio = float(area / (rows * cols))
    if not lim["min_area_ratio"] <= ratio <= lim["max_area_ratio"]:
        raise InputError(
            f"{source}: the ultrasound region would cover {ratio:.3g}x the fluoroscopy "
            f"image's area (limits {lim['min_area_ratio']:g}-{lim['max_area_ratio']:g})"
        )
    lo, hi = q.min(axis=0), q.max(axis=0)
    if hi[0] < -0.5 or hi[1] < -0.5 or lo[0] > cols - 0.5 or lo[1] > rows - 0.5:
        raise InputError(
            f"{source}: the ultrasound region maps entirely outside the fluoroscopy image"
        )
    return {
        "foreshortening": foreshortening,
        "condition_number": cond,
        "scale_range": [smin, smax],
        "anisotropy": aniso,
        "area_ratio": ratio,
    }


class FrameSpool(Sequence):
    """Fused RGB frames kept in an unnamed temporary file, read back one at a time.

    The video and DICOM writers take a sequence of frames; this one holds none of them
    in memory. The file has no name (``O_TMPFILE`` where available), so a killed run
    leaves nothing behind.
    """

    def __init__(self, folder: str | os.PathLike):
        self._fh = tempfile.TemporaryFile(dir=folder)
        self._shape: tuple[int, ...] | None = None
        self._n = 0

    def append(self, rgb: np.ndarray) -> None:
        """Add one frame (uint8, every frame the same shape)."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        if self._shape is None:
            self._shape = rgb.shape
        elif rgb.shape != self._shape:
            raise ValueError(f"frame shape {rgb.shape} != {self._shape}")
        self._fh.write(rgb.data)
        self._n += 1

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(self._n))]
        k = k + self._n if k < 0 else k
        if not 0 <= k < self._n:
            raise IndexError(k)
        self._fh.flush()
        size = math.prod(self._shape)
        buf = os.pread(self._fh.fileno(), size, k * size)
        return np.frombuffer(buf, np.uint8).reshape(self._shape)

    def close(self) -> None:
        """Release the file (its space is freed at once: it has no name)."""
        self._fh.close()


def _fuse_frames(fixed, moving, transform, pairs, tmp: Path, spool, viewer, opts, progress):
    """Fuse frame by frame: a PNG each, every RGB frame into ``spool``, some into ``viewer``.

    PNG writes and viewer encodings run on a pool, at most two per worker in flight, so
    memory does not grow with the number of frames when encoding is slower than fusing.
    """
    fmask = fixed.mask
    # One display window for the whole run, so brightness does not flicker.
    lo_hi = _window(fixed, [i for i, _, _ in pairs], fmask)
    workers = os.cpu_count() or 2
    pending: deque = deque()
    last: tuple[int, tuple] | None = None  # consecutive frames often share a US frame
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for k, (i, j, _dt) in enumerate(pairs):
            f = _apply_window(fixed.gray(i), lo_hi, fmask)
            if last is None or last[0] != j:
                warped = warp_to_fixed(
                    moving.gray(j),
                    transform.matrix,
                    fixed.shape,
                    moving_mask=moving.mask,
                    order=opts["order"],
                )
                last = (j, warped)
            warped, valid = last[1]
            m = np.clip(warped, 0, 255)
            rgb = blend(
                f, m, valid, opts["mode"], opacity=opts["opacity"], colormap=opts["colormap"]
            )
            spool.append(rgb)
            # PNG encoding runs on the pool: zlib releases the GIL.
            shown = opts["aspect"].to_display(rgb)  # square pixels on screen
            pending.append((None, pool.submit(write_png, tmp / f"fused_{k:03d}.png", shown)))
            if viewer.wants(k):
                layers = (f.astype(np.uint8), m.astype(np.uint8), valid)
                pending.append((k, pool.submit(viewer.encode, *layers)))
            while len(pending) > 2 * workers:
                _finish(pending.popleft(), viewer, fixed.shape)
            if progress is not None:
                progress(k + 1, len(pairs))
        while pending:
            _finish(pending.popleft(), viewer, fixed.shape)


def _finish(job, viewer, shape) -> None:
    """Wait for one pooled job; a viewer frame is kept in output order."""
    k, future = job
    result = future.result()
    if k is not None:
        viewer.keep(k, result, shape)


def _frame_rate(times: list[float]) -> float:
    """Frames per second from the frame times, within 1-30 (4 when unknown)."""
    steps = np.diff(np.asarray(times, float))
    steps = steps[np.isfinite(steps)]
    step = float(np.median(steps)) if steps.size else 0.0
    return float(np.clip(1.0 / step, 1.0, 30.0)) if step > 0 else 4.0


def _input_records(fixed, moving, transform_source, include_phi, file_hashes=None) -> dict:
    """Input files by label and sha256 (names and paths only with ``include_phi``).

    ``file_hashes`` (real path → sha256) reuses digests the caller has already taken.
    """
    known = file_hashes or {}
    out = {}
    for key, role, path in (
        ("fixed", "fluoroscopy", fixed.source_path),
        ("moving", "ultrasound", moving.source_path),
        ("transform", "transform", transform_source),
    ):
        if path and Path(path).is_file():
            digest = known.get(os.path.realpath(path))
            out[key] = file_record(path, include_phi=include_phi, role=role, sha256=digest)
    return out


def _validate(fixed, moving, video, mode, opacity):
    """Refuse options and images that cannot be fused, before anything is written."""
    if video not in ("mp4", "gif", "none"):
        raise InputError(f"video must be mp4, gif or none, got {video!r}")
    try:
        mode = BlendMode(mode)
    except ValueError as exc:
        modes = ", ".join(m.value for m in BlendMode)
        raise InputError(f"mode must be one of {modes}, got {mode!r}") from exc
    if not (isinstance(opacity, (int, float)) and 0.0 <= opacity <= 1.0):
        raise InputError(f"opacity must be within 0..1, got {opacity!r}")
    check_pair(fixed, moving)
    return mode


def check_pair(fixed: Image, moving: Image) -> None:
    """Refuse a pair whose fixed image is not fluoroscopy or moving not ultrasound.

    Shared by ``fuse`` and ``register``: swapped files are refused by both.
    """
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
    transform_source: str | os.PathLike | None = None,
    viewer_max_frames: int = MAX_FRAMES,
    viewer_max_bytes: int = MAX_BYTES,
    uid_map: bool = False,
    belonging: dict | None = None,
    quality: dict | None = None,
    file_hashes: dict | None = None,
) -> dict:
    """Write fused_NNN.png, a video, viewer.html, fused_sc.dcm and fuse.json to ``out_dir``.

    ``transform_source`` (the transform's file) names the culprit when the transform is
    refused by :func:`check_transform` and is recorded in ``fuse.json``;
    ``viewer_max_frames``/``viewer_max_bytes`` bound what ``viewer.html`` embeds.
    ``uid_map`` also writes ``uid_map.csv`` (source UID -> de-identified UID of the DICOM
    outputs), which re-identifies them: only when asked, never with ``include_phi``.
    ``belonging`` (the :mod:`fusion.belonging` record of the pair) is kept in fuse.json.
    ``quality`` (transform.json's, else read from ``transform_source``) feeds the viewer's
    confidence banner. ``file_hashes`` (real path → sha256) spares hashing an input twice.
    Returns the ``fuse.json`` record.
    """
    out_dir = Path(out_dir)
    sources = [p for p in (fixed.source_path, moving.source_path, transform_source) if p]
    check_out_separate(out_dir, sources)
    check_out_target(out_dir, overwrite)
    mode = _validate(fixed, moving, video, mode, opacity)
    fixed_idx = _check_frames(frames, fixed.n_frames, "fluoroscopy")
    if not fixed_idx:
        raise InputError("no fluoroscopy frames to fuse")
    plausibility = check_transform(
        transform.matrix,
        moving_box(moving),
        fixed.shape,
        str(transform_source or "the moving-to-fixed transform"),
    )
    pairs, how = pair_frames(fixed, moving, fixed_idx, transform_frames)
    inputs = _input_records(fixed, moving, transform_source, include_phi, file_hashes)
    aspect = pixel_aspect(fixed)
    opts = {
        "mode": mode,
        "opacity": opacity,
        "colormap": colormap,
        "order": order,
        "aspect": aspect,
    }
    t0 = time.perf_counter()
    from .pipeline import claim_out  # says so when a concurrent run took out_dir

    with claim_out(out_dir, overwrite=overwrite) as tmp:
        map_path = tmp / "uid_map.csv" if uid_map and not include_phi else None
        viewer = ViewerFrames(len(pairs), viewer_max_frames, viewer_max_bytes)
        viewer.context = viewer_context(
            fixed, moving, transform, pairs, opts, quality, transform_source
        )
        spool = FrameSpool(tmp)
        try:
            _fuse_frames(fixed, moving, transform, pairs, tmp, spool, viewer, opts, progress)
            fuse_time = time.perf_counter() - t0
            written, label, video_note = _write_products(
                tmp, spool, viewer, fixed, moving, pairs, landmarks, video, dicom,
                include_phi, f"blend mode {mode.value}, opacity {opacity:g}", map_path,
            )  # fmt: skip
        finally:
            spool.close()
        if registration_dicom:
            from .registration_dicom import write_registration_dicom

            write_registration_dicom(
                tmp / "registration.dcm",
                transform,
                fixed,
                moving,
                include_phi=include_phi,
                uid_map=map_path,
            )
            written.append("registration.dcm")
        if map_path is not None and map_path.is_file():
            written.append(map_path.name)
        summary = json_safe(
            {
                "schema": "hybridfuse.fuse/1",
                "case": label,
                "inputs": inputs,
                "mode": mode.value,
                "opacity": opacity,
                "interpolation": order,
                "time_matching": how,
                "pairs": [
                    {
                        "output_frame": k,
                        "fixed_frame": i,
                        "moving_frame": j,
                        "time_difference_s": dt,
                    }
                    for k, (i, j, dt) in enumerate(pairs)
                ],  # fmt: skip
                "moving_to_fixed_pixel": transform.matrix.tolist(),
                "transform_plausibility": plausibility,
                "viewer": viewer.summary(),
                "video": {"format": video, "frames": video_note},
                "display": aspect.record(),
                "fuse_and_write_s": fuse_time,
                "frames_per_second": len(pairs) / fuse_time if fuse_time > 0 else None,
                "outputs": written,
                "phi_included": include_phi,
                "belonging": belonging,
                "registration_verdict": _verdict(viewer.context.quality),
            }
        )
        write_text(tmp / "fuse.json", json.dumps(summary, indent=1, allow_nan=False))
    return summary


def _verdict(quality: dict | None) -> dict | None:
    """The registration's verdict as fuse.json records it (None without a quality record)."""
    if not quality or "verdict" not in quality:
        return None
    out = {"verdict": quality.get("verdict"), "reasons": quality.get("reasons")}
    if quality.get("accepted_unverified"):
        out["accepted_unverified"] = True
    return out


def _write_products(
    tmp, spool, viewer, fixed, moving, pairs, landmarks, video, dicom, include_phi, how, uid_map
) -> tuple[list[str], str, str | None]:
    """Video, viewer.html and fused_sc.dcm from the spooled frames.

    The video shows square pixels (:mod:`fusion.aspect`); the DICOM keeps the grid and
    says its pixels' shape. Returns the names written, the case label and what the video
    holds.
    """
    aspect = pixel_aspect(fixed)  # checked by fuse_images before anything was written
    t_first = fixed.frame_times_s[pairs[0][0]]
    times = [float(fixed.frame_times_s[i] - t_first) for i, _, _ in pairs]
    fps = _frame_rate(times)
    written = [f"fused_{k:03d}.png" for k in range(len(pairs))]
    video_note = "every frame" if video != "none" else None
    if video == "mp4":
        write_mp4(tmp / "fused.mp4", aspect.frames(spool), fps)
    elif video == "gif":
        step = write_gif(tmp / "fused.gif", aspect.frames(spool), fps)
        if step > 1:
            kept = len(range(0, len(spool), step))
            video_note = f"{kept} of {len(spool)} frames, one in {step} (a GIF's bound)"
    if video != "none":
        written.append(f"fused.{video}")
    label = case_pseudonym(fixed.uids.get("study") or moving.uids.get("study"))
    iso = fixed.xray.isocenter_spacing_mm if fixed.xray else None
    html = render_viewer(
        viewer,
        times_s=times,
        mm_per_px=float(np.mean(iso)) if iso else None,
        landmarks=landmarks or [],
        case_label=label,
        fps=fps,
    )
    write_text(tmp / "viewer.html", html)
    written.append("viewer.html")
    if dicom:
        _write_dicom(tmp, spool, fixed, moving, fps, include_phi, how, uid_map, aspect)
        written.append("fused_sc.dcm")
    return written, label, video_note


def _write_dicom(tmp, frames, fixed, moving, fps, include_phi, how, uid_map, aspect) -> None:
    import pydicom

    headers = [
        pydicom.dcmread(
            img.source_path, stop_before_pixels=True, force=is_dicom_stream(img.source_path)
        )
        if img.source_path and img.uids
        else None
        for img in (fixed, moving)
    ]
    write_fused_sc(
        tmp / "fused_sc.dcm",
        frames,
        fixed_ds=headers[0],
        moving_ds=headers[1],
        frame_time_ms=1000.0 / fps,
        include_phi=include_phi,
        burned_in=False,
        description=f"Ultrasound registered onto fluoroscopy (homography), {how}",
        uid_map=uid_map,
        pixel_aspect_ratio=aspect.dicom_ratio(),
    )

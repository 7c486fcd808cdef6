"""``viewer.html``: one self-contained file that blends the layers live in the browser.

No server, no network, no CDN: the fluoroscopy frames and the ultrasound frames (in their
own pixels, which the page warps as ``fuse`` did) are embedded as PNG data URLs, each
distinct image once, and composited on a canvas; a page written from in-memory layers
(:func:`write_viewer`) embeds those instead.
Nothing identifying is embedded: a case pseudonym and relative times only.

Safe by construction: every datum sits in a ``<script type="application/json">`` block
written by :func:`hybridfuse._safeio.script_json` (no ``</script>``, ``<!--`` or U+2028 can
survive it) and is read with ``JSON.parse``; the only executable script is the constant
below, which a Content-Security-Policy admits by its hash, so nothing else may run.

Bounded: at most :data:`MAX_FRAMES` frames and about :data:`MAX_BYTES` of images are
embedded, evenly subsampled; the viewer and ``fuse.json`` say which.
"""

from __future__ import annotations

import base64
import io
import math
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybridfuse._safeio import html_text, script_json, write_text
from hybridfuse.registration.transforms import Transform

from ._viewer_page import CSP, PAGE, SCRIPT
from .aspect import pixel_aspect

__all__ = [
    "MAX_BYTES",
    "MAX_FRAMES",
    "ViewerContext",
    "ViewerFrames",
    "read_quality",
    "render_viewer",
    "viewer_context",
    "write_viewer",
]

#: Most frames a viewer embeds (every k-th frame of a longer run).
MAX_FRAMES = 100
#: Budget for the embedded images (base64 PNG data URLs); the stride doubles past it.
MAX_BYTES = 20 * 2**20


def _png_data_url(arr: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    # Fast compression: zlib dominates the time of writing a viewer.
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class ViewerFrames:
    """The frames a viewer embeds, evenly subsampled to a frame count and a byte budget.

    Frames are offered one at a time in output order (:meth:`wants`, then :meth:`add`,
    or :meth:`encode` on a pool and :meth:`keep`), so a long run is never held in
    memory: only the encoded frames kept so far are.
    The stride starts at ``ceil(n_total / max_frames)``; whenever the kept images
    exceed ``max_bytes`` it doubles and the frames off the new stride are dropped, so
    the embedded frames stay evenly spaced (always including the first).

    Parameters
    ----------
    n_total : number of output frames of the run.
    max_frames : most frames embedded (>= 1).
    max_bytes : budget for the embedded images; one frame is kept even above it.
    """

    def __init__(self, n_total: int, max_frames: int = MAX_FRAMES, max_bytes: int = MAX_BYTES):
        if n_total < 1 or max_frames < 1 or max_bytes < 1:
            raise ValueError("n_total, max_frames and max_bytes must be >= 1")
        self.n_total = int(n_total)
        self.max_frames = int(max_frames)
        self.max_bytes = int(max_bytes)
        self.stride = math.ceil(self.n_total / self.max_frames)
        self._kept: dict[int, tuple[str, str]] = {}
        self._bytes = 0
        self.shape: tuple[int, int] | None = None
        #: What the page shows besides the frames (:class:`ViewerContext`), set by ``fuse``.
        self.context: ViewerContext | None = None

    def wants(self, k: int) -> bool:
        """Whether output frame ``k`` would be embedded at the current stride."""
        return k % self.stride == 0

    @property
    def warps_in_browser(self) -> bool:
        """Whether the page warps the ultrasound itself (``fuse``: frames and homography known).

        Then no warped layer is embedded: the ultrasound frames, embedded anyway for the
        side-by-side view, are resampled in the browser exactly as ``fuse`` does.
        """
        ctx = self.context
        if not ctx or ctx.moving_frame is None or len(ctx.pairs or []) < self.n_total:
            return False
        return _matrix(ctx.matrix) is not None

    def encode(self, fixed: np.ndarray, layer: np.ndarray, valid: np.ndarray) -> tuple[str, str]:
        """Data URLs of one frame: the fluoroscopy, and the layer with ``valid`` as alpha.

        The layer is "" when the page warps the ultrasound itself. Thread-safe and
        independent of the kept frames, so it may run on a pool.
        """
        if self.warps_in_browser:
            return _png_data_url(fixed), ""
        # Grey + alpha: the layer is grey (the viewer colours it), a third of RGBA's bytes.
        la = np.dstack([layer, np.where(valid, 255, 0).astype(np.uint8)])
        return _png_data_url(fixed), _png_data_url(la)

    def add(self, k: int, fixed: np.ndarray, layer: np.ndarray, valid: np.ndarray) -> None:
        """Encode output frame ``k`` (uint8 fluoroscopy, uint8 layer, bool valid) if wanted."""
        if self.wants(k):
            self.keep(k, self.encode(fixed, layer, valid), fixed.shape)

    def keep(self, k: int, urls: tuple[str, str], shape: tuple[int, ...]) -> None:
        """Keep frame ``k``'s encoded images (from :meth:`encode`), in output order."""
        if not self.wants(k):  # the stride may have grown since the frame was encoded
            return
        self.shape = self.shape or (int(shape[0]), int(shape[1]))
        self._kept[k] = urls
        self._bytes += len(urls[0]) + len(urls[1])
        if k == 0 and self._bytes * min(self.n_total, self.max_frames) > self.max_bytes:
            # The first frame predicts the rest: pick the stride now, not by doubling.
            fit = max(1, self.max_bytes // self._bytes)
            self.stride = max(self.stride, math.ceil(self.n_total / fit))
        while self._bytes > self.max_bytes and len(self._kept) > 1:
            self.stride *= 2
            for j in [j for j in self._kept if j % self.stride]:
                self._bytes -= sum(map(len, self._kept.pop(j)))

    @property
    def indices(self) -> list[int]:
        """Output frames embedded, in order."""
        return sorted(self._kept)

    @property
    def nbytes(self) -> int:
        """Size of the kept images (characters of their data URLs), as the budget counts it."""
        return self._bytes

    @property
    def page_bytes(self) -> int:
        """Size of these images as the page embeds them: identical ones once."""
        fixed = sum(map(len, {f for f, _ in self._kept.values()}))
        return fixed + sum(map(len, {layer for _, layer in self._kept.values()}))

    def summary(self) -> dict:
        """What the viewer shows, for ``fuse.json``."""
        n = len(self._kept)
        if n == self.n_total:
            note = f"showing all {n} frames"
        else:
            note = f"showing {n} of {self.n_total} frames, every {_ordinal(self.stride)}"
        return {
            "frames_shown": n,
            "frames_total": self.n_total,
            "every": self.stride,
            "output_frames": self.indices,
            "max_frames": self.max_frames,
            "max_bytes": self.max_bytes,
            "embedded_bytes": self.page_bytes,
            "note": note,
        }


def _finite(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _clean_landmarks(landmarks) -> list[dict]:
    """Landmarks as {"name", "x", "y"} (+ "mx", "my" when the ultrasound point is known).

    Non-finite positions are dropped; ``moving_x``/``moving_y`` (ultrasound pixels) let
    the viewer draw the residual vector through the homography.
    """
    out = []
    for lm in landmarks or []:
        x, y = _finite(lm.get("x")), _finite(lm.get("y"))
        if x is None or y is None:
            continue
        item = {"name": str(lm.get("name", "")), "x": x, "y": y}
        mx, my = _finite(lm.get("moving_x")), _finite(lm.get("moving_y"))
        if mx is not None and my is not None:
            item.update(mx=mx, my=my)
        out.append(item)
    return out


def _spacing(v) -> list[float] | None:
    """A (row, column) pixel spacing in mm as two positive finite numbers, else None."""
    try:
        row, col = (_finite(x) for x in v)
    except (TypeError, ValueError):
        return None
    return [row, col] if row and col and row > 0 and col > 0 else None


def _pixel_shape(v) -> list[float]:
    """An (x, y) drawn pixel size as two positive finite numbers, else a square's [1, 1]."""
    return _spacing(v) or [1.0, 1.0]


def _matrix(m) -> list[list[float]] | None:
    """A finite, invertible 3x3 matrix as nested lists, else None (no linked cursor)."""
    try:
        a = np.asarray(m, dtype=float)
    except (TypeError, ValueError):
        return None
    if a.shape != (3, 3) or not np.all(np.isfinite(a)) or abs(np.linalg.det(a)) < 1e-12:
        return None
    return a.tolist()


#: Piecewise-linear colour maps as matplotlib defines them ((x, value) per channel), so
#: the viewer offers them without loading matplotlib (a second of start-up).
_SEGMENTS = {
    "hot": (
        ((0.0, 0.0416), (0.365079, 1.0), (1.0, 1.0)),
        ((0.0, 0.0), (0.365079, 0.0), (0.746032, 1.0), (1.0, 1.0)),
        ((0.0, 0.0), (0.746032, 0.0), (1.0, 1.0)),
    ),
    "gray": (((0.0, 0.0), (1.0, 1.0)),) * 3,
    "cool": (((0.0, 0.0), (1.0, 1.0)), ((0.0, 1.0), (1.0, 0.0)), ((0.0, 1.0), (1.0, 1.0))),
}


def colormap_lut(name: str) -> list[int]:
    """256 RGB entries (flat, 0-255) of a matplotlib colour map, as ``fuse`` applies it."""
    x = np.linspace(0, 1, 256)
    if name in _SEGMENTS:
        rgb = np.stack([np.interp(x, *zip(*seg, strict=True)) for seg in _SEGMENTS[name]], 1)
    else:
        import matplotlib

        rgb = matplotlib.colormaps[name](x)[:, :3]
    return np.rint(rgb * 255).astype(int).ravel().tolist()


#: Colour maps the viewer offers for the ultrasound layer, besides the one ``fuse`` used.
COLORMAPS = ("hot", "gray", "cool")
#: Budget for the ultrasound frames embedded: the page warps them for the overlay (``fuse``)
#: and shows them side by side; a frame past it is shown without, and the page says so.
MAX_US_BYTES = 16 * 2**20
#: ``transform.json`` quality keys the confidence banner reads, by kind (others ignored).
QUALITY_SHOWN = {
    "verdict": str,
    "reasons": list,
    "predicted_tre_mm": float,
    "accepted_unverified": bool,
    "intensity_refinement": str,
    "landmark_fre_px": float,
    "landmark_loo_tre_px": float,
    "landmarks_rejected": list,
    "scale_ratio_to_calibration": float,
    "edge_on": bool,
    "model_used": str,
}


def _quality(q) -> dict | None:
    """The banner's part of a ``quality`` record: numbers finite or None, texts as text."""
    if not isinstance(q, dict):
        return None
    out = {}
    for key, kind in QUALITY_SHOWN.items():
        v = q.get(key)
        if key not in q:
            continue
        if kind is float:
            out[key] = None if isinstance(v, bool) else _finite(v)
        elif kind is list:
            out[key] = [str(x) for x in v][:20] if isinstance(v, list) else []
        elif kind is bool:
            out[key] = v is True
        else:
            out[key] = None if v is None else str(v)
    return out


def read_quality(path) -> dict | None:
    """``quality`` of a ``transform.json`` (None when absent or unreadable: no banner verdict).

    The transform itself was read and checked before; this only decorates the viewer, so
    a file without a quality record is no error.
    """
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            q = json.load(fh).get("quality")
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return q if isinstance(q, dict) else None


@dataclass
class ViewerContext:
    """What ``fuse`` knows beyond the frames: how it blended, the geometry, the timing.

    Parameters
    ----------
    mode, opacity, colormap : the ``fuse`` display settings the viewer opens in.
    matrix : moving→fixed pixel homography (3×3), for the linked cursor and residuals.
    pairs : per output frame, (ultrasound frame, its time minus the fluoroscopy's, s or None).
    moving_frame : the ultrasound frame ``j`` as display values (0-255), for side-by-side.
    moving_mask : where the ultrasound image is image (alpha of its embedded frames).
    fixed_spacing_mm : fluoroscopy pixel size at the isocentre plane (row, col).
    moving_spacing_mm : ultrasound pixel size in its scan plane (row, col).
    quality : ``transform.json``'s ``quality`` record, for the confidence banner.
    times_source : where the fluoroscopy frame times came from (DICOM attribute).
    model : the transform's model, for the predicted-error outline (:mod:`fusion.viewer_error`).
    order : ``fuse``'s interpolation (nearest, linear, cubic), which the page's warp repeats.
    fixed_pixel, moving_pixel : (x, y) size each image's pixel is drawn at, relative to a
        square (:meth:`fusion.aspect.DisplayAspect.viewer_scale`); pixel_note says why.
    """

    mode: str = "alpha"
    opacity: float = 0.5
    colormap: str = "hot"
    matrix: np.ndarray | None = None
    pairs: list[tuple[int, float | None]] | None = None
    moving_frame: Callable[[int], np.ndarray] | None = None
    moving_mask: np.ndarray | None = None
    fixed_spacing_mm: tuple[float, float] | None = None
    moving_spacing_mm: tuple[float, float] | None = None
    quality: dict | None = None
    times_source: str = ""
    model: str = "projective"
    order: str = "linear"
    fixed_pixel: tuple[float, float] = (1.0, 1.0)
    moving_pixel: tuple[float, float] = (1.0, 1.0)
    pixel_note: str = ""


def viewer_context(fixed, moving, transform, pairs, opts, quality=None, transform_source=None):
    """The :class:`ViewerContext` of a ``fuse`` run (``opts``: mode, opacity, colormap).

    ``quality`` defaults to the one in ``transform_source`` (a ``transform.json``).
    """
    if quality is None and transform_source:
        quality = read_quality(transform_source)
    us_plane = getattr(moving.spacing_plane, "value", "") == "ultrasound-scan-plane"
    fixed_aspect = opts.get("aspect") or pixel_aspect(fixed)
    moving_aspect = pixel_aspect(moving, limit=None)  # only drawn: no resampling to bound
    notes = (fixed_aspect.viewer_note("fluoroscopy"), moving_aspect.viewer_note("ultrasound"))
    return ViewerContext(
        mode=getattr(opts["mode"], "value", opts["mode"]),
        opacity=float(opts["opacity"]),
        colormap=str(opts["colormap"]),
        matrix=transform.matrix,
        pairs=[(j, dt) for _, j, dt in pairs],
        moving_frame=moving.gray,
        moving_mask=moving.mask,
        fixed_spacing_mm=fixed.xray.isocenter_spacing_mm if fixed.xray else None,
        moving_spacing_mm=moving.pixel_spacing_mm if us_plane else None,
        quality=quality,
        times_source=str(fixed.frame_times_source),
        model=getattr(transform.model, "value", str(transform.model)),
        order=str(opts.get("order", "linear")),
        fixed_pixel=tuple(fixed_aspect.viewer_scale()),
        moving_pixel=tuple(moving_aspect.viewer_scale()),
        pixel_note=" · ".join(n for n in notes if n),
    )


#: Pixels kept around the ultrasound mask: the cubic kernel reads two beyond the nearest.
US_MARGIN_PX = 2


def _moving_images(ctx: ViewerContext, frames_j: list[int]) -> tuple[dict, str, dict]:
    """Data URLs of the distinct ultrasound frames shown.

    Each frame is cropped to the bounding box of ``moving_mask`` plus
    :data:`US_MARGIN_PX` (what the page's warp reads; screen furniture further out is
    never shown) and stored as one grey channel, zero beyond that margin; the mask is
    embedded once. Returns {frame: URL}, a note when nothing can be embedded, and the geometry:
    full (rows, cols), the crop's (x, y) offset and the mask's data URL.
    """
    from scipy.ndimage import binary_dilation

    shape = np.shape(ctx.moving_frame(frames_j[0]))[:2]
    valid = ctx.moving_mask if ctx.moving_mask is not None else np.ones(shape, bool)
    ys, xs = np.nonzero(valid)
    geometry = {"shape": shape, "offset": (0, 0), "mask": ""}
    if not ys.size:
        return {}, "the ultrasound mask is empty: no ultrasound frames embedded", geometry
    m = US_MARGIN_PX
    y0, x0 = max(0, ys.min() - m), max(0, xs.min() - m)
    box = np.s_[y0 : min(shape[0], ys.max() + m + 1), x0 : min(shape[1], xs.max() + m + 1)]
    geometry.update(offset=(int(x0), int(y0)))
    geometry["mask"] = _png_data_url(np.where(valid[box], 255, 0).astype(np.uint8))
    read = binary_dilation(valid[box], np.ones((3, 3), bool), iterations=m)

    def encode(j: int) -> str:
        grey = np.clip(np.asarray(ctx.moving_frame(j), dtype=np.float32)[box], 0, 255)
        return _png_data_url(np.where(read, np.rint(grey), 0).astype(np.uint8))

    distinct = list(dict.fromkeys(frames_j))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # zlib frees the GIL
        urls = {str(j): url for j, url in zip(distinct, pool.map(encode, distinct), strict=True)}
    return urls, "", geometry


def _fit_ultrasound_budget(frames_j: list[int], urls: dict[str, str]) -> int:
    """The smallest stride over the shown frames whose ultrasound fits :data:`MAX_US_BYTES`.

    Thinning the shown frames evenly, rather than dropping the tail's ultrasound, keeps
    the overlay on every frame the page shows (it warps the ultrasound itself).
    """
    for stride in range(1, len(frames_j) + 1):
        kept = {str(j) for j in frames_j[::stride]}
        if len(kept) == 1 or sum(len(urls[k]) for k in kept) <= MAX_US_BYTES:
            return stride
    return len(frames_j)


def _ultrasound(ctx: ViewerContext, idx: list[int]) -> tuple[list[int], int, tuple]:
    """The shown output frames thinned to the ultrasound budget, and their ultrasound.

    Returns the frames, the thinning stride (1: none) and (frame numbers, data URLs, note,
    geometry).
    """
    pairs = ctx.pairs or []
    frames_j = [int(pairs[k][0]) for k in idx] if len(pairs) > max(idx) else []
    if not frames_j or ctx.moving_frame is None:
        return idx, 1, ([], {}, "", {"shape": (0, 0), "offset": (0, 0), "mask": ""})
    images, note, geometry = _moving_images(ctx, frames_j)
    stride = _fit_ultrasound_budget(frames_j, images) if images else 1
    if stride > 1:
        idx, frames_j = idx[::stride], frames_j[::stride]
        images = {k: v for k, v in images.items() if int(k) in set(frames_j)}
        note = (
            f"showing every {_ordinal(stride)} of these frames: their ultrasound frames "
            "exceed the byte budget"
        )
    return idx, stride, (frames_j, images, note, geometry)


def _context_data(ctx: ViewerContext, idx: list[int], us: tuple) -> dict:
    """The context's part of the viewer's data, for the shown output frames ``idx``."""
    pairs = ctx.pairs or []
    frames_j, images, note, geometry = us
    shape = geometry["shape"]
    luts = {name: colormap_lut(name) for name in dict.fromkeys((ctx.colormap, *COLORMAPS))}
    return {
        "mode": ctx.mode,
        "opacity": min(1.0, max(0.0, _finite(ctx.opacity) or 0.0)),
        "colormap": ctx.colormap,
        "colormaps": luts,
        "matrix": _matrix(ctx.matrix) if ctx.matrix is not None else None,
        "usFrame": frames_j,
        "dt": [None if _finite(pairs[k][1]) is None else round(pairs[k][1], 3) for k in idx]
        if frames_j
        else [],
        "usImages": images,
        "usNote": note,
        "usWidth": int(shape[1]),
        "usHeight": int(shape[0]),
        "usOffset": list(geometry["offset"]),
        "usMask": geometry["mask"],
        "order": ctx.order if ctx.order in ("nearest", "linear", "cubic") else "linear",
        "fixedSpacingMm": _spacing(ctx.fixed_spacing_mm),
        "usSpacingMm": _spacing(ctx.moving_spacing_mm),
        "fixedPixel": _pixel_shape(ctx.fixed_pixel),
        "usPixel": _pixel_shape(ctx.moving_pixel),
        "pixelNote": str(ctx.pixel_note),
        "quality": _quality(ctx.quality),
        "timesSource": str(ctx.times_source),
    }


def _error_model(ctx: ViewerContext, data: dict) -> dict:
    """The predicted-error outline of the page (:func:`fusion.viewer_error.error_model`)."""
    from .viewer_error import error_model

    shape = (data["usHeight"], data["usWidth"])
    if data["matrix"] is None or not all(shape):
        return error_model(None, [], ctx.quality, None, None)
    mask = ctx.moving_mask if ctx.moving_mask is not None else np.ones(shape, bool)
    try:
        transform = Transform(np.asarray(data["matrix"]), ctx.model)
    except ValueError:
        return error_model(None, [], ctx.quality, None, None)
    return error_model(transform, data["landmarks"], ctx.quality, data["fixedSpacingMm"], mask)


def render_viewer(
    frames: ViewerFrames,
    *,
    times_s,
    mm_per_px: float | None,
    landmarks: list[dict],
    case_label: str,
    fps: float = 4.0,
    context: ViewerContext | None = None,
) -> str:
    """The viewer page for the frames kept in ``frames``.

    Parameters
    ----------
    frames : the embedded frames (see :class:`ViewerFrames`); at least one.
    times_s : relative time (s) of every output frame of the run (not only those shown).
    mm_per_px : fixed pixel size at the isocentre plane, for the scale bar (None: no bar);
        ``context.fixed_spacing_mm`` (row, col) takes precedence when given.
    landmarks : [{"name", "x", "y"}] in fixed pixels, drawn when toggled on.
    case_label : a pseudonym shown in the title bar.
    fps : frame rate of the run; playback uses it when the frame times are unusable.
    context : what ``fuse`` knows besides the frames (default: ``frames.context``).
    """
    if not frames.indices:
        raise ValueError("the viewer needs at least one frame")
    ctx = context or frames.context or ViewerContext()
    idx, thinned, us = _ultrasound(ctx, frames.indices)
    info = frames.summary()
    mm = _finite(mm_per_px)
    # Identical images are embedded once: frames sharing an ultrasound frame share its
    # layer, and a run that repeats a fluoroscopy frame repeats its index only.
    images: dict[str, int] = {}
    frame_of = [images.setdefault(frames._kept[k][0], len(images)) for k in idx]
    layers: dict[str, int] = {}
    layer_of = [layers.setdefault(frames._kept[k][1], len(layers)) for k in idx]
    if list(layers) == [""]:  # the page warps the ultrasound frames itself
        layers, layer_of = {}, []
    data = {
        "frames": list(images),
        "frameOf": frame_of,
        "layers": list(layers),
        "layerOf": layer_of,
        "frameIndex": idx,
        "totalFrames": frames.n_total,
        "note": "" if info["frames_shown"] == info["frames_total"] else info["note"],
        "times": [
            None if _finite(times_s[k]) is None else round(float(times_s[k]), 4) for k in idx
        ],
        "mmPerPx": mm if mm and mm > 0 else None,
        "landmarks": _clean_landmarks(landmarks),
        "label": str(case_label),
        "fps": max(0.25, (_finite(fps) or 4.0) / (frames.stride * thinned)),
        "width": frames.shape[1],
        "height": frames.shape[0],
        **_context_data(ctx, idx, us),
    }
    if data["fixedSpacingMm"] is None and data["mmPerPx"]:
        data["fixedSpacingMm"] = [data["mmPerPx"], data["mmPerPx"]]
    data["errorModel"] = _error_model(ctx, data)
    fields = {
        "__CSP__": CSP,
        "__LABEL__": html_text(case_label),
        "__DATA__": script_json(data),
        "__SCRIPT__": SCRIPT,
    }
    # One pass, so a placeholder inside the data is never substituted again.
    return re.sub("__(?:CSP|LABEL|DATA|SCRIPT)__", lambda m: fields[m.group(0)], PAGE)


def write_viewer(
    path: str | os.PathLike,
    fixed_frames: list[np.ndarray],
    moving_layers: list[np.ndarray],
    valid_masks: list[np.ndarray],
    *,
    times_s: list[float],
    mm_per_px: float | None,
    landmarks: list[dict],
    case_label: str,
    fps: float = 4.0,
    max_frames: int = MAX_FRAMES,
    max_bytes: int = MAX_BYTES,
    context: ViewerContext | None = None,
) -> dict:
    """Write the viewer from in-memory frames; returns :meth:`ViewerFrames.summary`.

    ``fixed_frames``/``moving_layers`` are uint8 (rows, cols), ``valid_masks`` bool;
    the other parameters are those of :func:`render_viewer`. A long run is better
    streamed through :class:`ViewerFrames` and :func:`render_viewer` (as ``fuse`` does).
    """
    vf = ViewerFrames(len(fixed_frames), max_frames, max_bytes)
    for k, (f, m, v) in enumerate(zip(fixed_frames, moving_layers, valid_masks, strict=True)):
        vf.add(k, f, m, v)
    html = render_viewer(
        vf,
        times_s=times_s,
        mm_per_px=mm_per_px,
        landmarks=landmarks,
        case_label=case_label,
        fps=fps,
        context=context,
    )
    write_text(Path(path), html)
    return vf.summary()

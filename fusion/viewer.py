"""``viewer.html``: one self-contained file that blends the layers live in the browser.

No server, no network, no CDN: the fluoroscopy frames and the resampled ultrasound layer
(alpha = where it is valid) are embedded as PNG data URLs and composited on a canvas.
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
import hashlib
import io
import math
import os
import re
from pathlib import Path

import numpy as np

from hybridfuse._safeio import html_text, script_json, write_text

__all__ = ["MAX_BYTES", "MAX_FRAMES", "ViewerFrames", "write_viewer"]

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

    def wants(self, k: int) -> bool:
        """Whether output frame ``k`` would be embedded at the current stride."""
        return k % self.stride == 0

    @staticmethod
    def encode(fixed: np.ndarray, layer: np.ndarray, valid: np.ndarray) -> tuple[str, str]:
        """Data URLs of one frame: the fluoroscopy, and the layer with ``valid`` as alpha.

        Thread-safe and independent of the kept frames, so it may run on a pool.
        """
        rgba = np.dstack([layer, layer, layer, np.where(valid, 255, 0).astype(np.uint8)])
        return _png_data_url(fixed), _png_data_url(rgba)

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
        """Size of the embedded images (characters of their data URLs)."""
        return self._bytes

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
            "embedded_bytes": self._bytes,
            "note": note,
        }


def _finite(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _clean_landmarks(landmarks) -> list[dict]:
    """Landmarks as plain {"name": str, "x": float, "y": float}; non-finite ones dropped."""
    out = []
    for lm in landmarks or []:
        x, y = _finite(lm.get("x")), _finite(lm.get("y"))
        if x is not None and y is not None:
            out.append({"name": str(lm.get("name", "")), "x": x, "y": y})
    return out


def render_viewer(
    frames: ViewerFrames,
    *,
    times_s,
    mm_per_px: float | None,
    landmarks: list[dict],
    case_label: str,
    fps: float = 4.0,
) -> str:
    """The viewer page for the frames kept in ``frames``.

    Parameters
    ----------
    frames : the embedded frames (see :class:`ViewerFrames`); at least one.
    times_s : relative time (s) of every output frame of the run (not only those shown).
    mm_per_px : fixed pixel size at the isocentre plane, for the scale bar (None: no bar).
    landmarks : [{"name", "x", "y"}] in fixed pixels, drawn when toggled on.
    case_label : a pseudonym shown in the title bar.
    fps : frame rate of the run; playback steps through the shown frames in real time.
    """
    idx = frames.indices
    if not idx:
        raise ValueError("the viewer needs at least one frame")
    info = frames.summary()
    mm = _finite(mm_per_px)
    data = {
        "frames": [frames._kept[k][0] for k in idx],
        "layers": [frames._kept[k][1] for k in idx],
        "frameIndex": idx,
        "totalFrames": frames.n_total,
        "note": "" if info["frames_shown"] == info["frames_total"] else info["note"],
        "times": [
            None if _finite(times_s[k]) is None else round(float(times_s[k]), 3) for k in idx
        ],
        "mmPerPx": mm if mm and mm > 0 else None,
        "landmarks": _clean_landmarks(landmarks),
        "label": str(case_label),
        "fps": max(0.25, (_finite(fps) or 4.0) / frames.stride),
        "width": frames.shape[1],
        "height": frames.shape[0],
    }
    fields = {
        "__CSP__": _CSP,
        "__LABEL__": html_text(case_label),
        "__DATA__": script_json(data),
        "__SCRIPT__": _SCRIPT,
    }
    # One pass, so a placeholder inside the data is never substituted again.
    return re.sub("__(?:CSP|LABEL|DATA|SCRIPT)__", lambda m: fields[m.group(0)], _PAGE)


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
    )
    write_text(Path(path), html)
    return vf.summary()


_PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="__CSP__">
<title>hybridfuse viewer — __LABEL__</title>
<style>
 body { margin: 0; background: #111; color: #ddd; font-family: sans-serif; }
 #banner { background: #b00; color: #fff; text-align: center; font-weight: bold;
           padding: 4px; letter-spacing: 0.05em; }
 #bar { padding: 6px 10px; display: flex; gap: 14px; align-items: center; flex-wrap: wrap; }
 #stage { position: relative; display: inline-block; margin: 6px 10px; }
 canvas { image-rendering: pixelated; border: 1px solid #333; }
 label { font-size: 13px; }
 #info, #note { font-size: 12px; color: #aaa; }
</style></head><body>
<div id="banner">NOT FOR DIAGNOSTIC USE — research fusion of ultrasound and fluoroscopy</div>
<div id="bar">
 <label>mode <select id="mode">
   <option value="alpha">alpha</option><option value="color">colour overlay</option>
   <option value="checkerboard">checkerboard</option><option value="flicker">flicker</option>
   <option value="swipe">swipe</option></select></label>
 <label>opacity <input id="opacity" type="range" min="0" max="100" value="50"></label>
 <label>swipe <input id="swipe" type="range" min="0" max="100" value="50"></label>
 <label>frame <input id="frame" type="range" min="0" max="0" value="0"></label>
 <button id="play">play</button>
 <label><input id="landmarks" type="checkbox"> landmarks</label>
 <span id="info"></span>
 <span id="note"></span>
</div>
<div id="stage"><canvas id="view"></canvas></div>
<script type="application/json" id="viewer-data">__DATA__</script>
<script>__SCRIPT__</script></body></html>
"""

_SCRIPT = r"""
"use strict";
const DATA = JSON.parse(document.getElementById("viewer-data").textContent);
window.viewerData = DATA;
const canvas = document.getElementById("view");
const ctx = canvas.getContext("2d");
canvas.width = DATA.width; canvas.height = DATA.height;
const ui = id => document.getElementById(id);
ui("frame").max = DATA.frames.length - 1;
ui("note").textContent = DATA.note;
const state = { frame: 0, opacity: 0.5, mode: "alpha", swipe: 0.5, landmarks: false,
                playing: false, flickerOn: true, ready: false, draws: 0 };
window.viewerState = state;
const load = src => new Promise(ok => { const im = new Image(); im.onload = () => ok(im); im.src = src; });
let FR = [], LY = [];
const HOT = (() => { const t = []; for (let i = 0; i < 256; i++) {
  const v = i / 255; t.push([Math.min(1, v * 3) * 255, Math.min(1, Math.max(0, v * 3 - 1)) * 255,
  Math.min(1, Math.max(0, v * 3 - 2)) * 255]); } return t; })();
const off = document.createElement("canvas");
off.width = DATA.width; off.height = DATA.height;
const octx = off.getContext("2d");
function layerCanvas(i, colour) {
  octx.clearRect(0, 0, off.width, off.height);
  octx.drawImage(LY[i], 0, 0);
  if (colour) {
    const img = octx.getImageData(0, 0, off.width, off.height), d = img.data;
    for (let p = 0; p < d.length; p += 4) { const c = HOT[d[p]]; d[p] = c[0]; d[p+1] = c[1]; d[p+2] = c[2]; }
    octx.putImageData(img, 0, 0);
  }
  return off;
}
function draw() {
  if (!state.ready) return;
  const i = state.frame, w = canvas.width, h = canvas.height;
  ctx.globalAlpha = 1; ctx.drawImage(FR[i], 0, 0);
  if (state.mode === "alpha" || state.mode === "color") {
    ctx.globalAlpha = state.opacity; ctx.drawImage(layerCanvas(i, state.mode === "color"), 0, 0);
  } else if (state.mode === "checkerboard") {
    ctx.save(); ctx.beginPath(); const t = 32;
    for (let y = 0; y < h; y += t) for (let x = 0; x < w; x += t)
      if (((x / t) + (y / t)) % 2 === 1) ctx.rect(x, y, t, t);
    ctx.clip(); ctx.globalAlpha = 1; ctx.drawImage(LY[i], 0, 0); ctx.restore();
  } else if (state.mode === "flicker") {
    if (state.flickerOn) { ctx.globalAlpha = 1; ctx.drawImage(LY[i], 0, 0); }
  } else if (state.mode === "swipe") {
    ctx.save(); ctx.beginPath(); ctx.rect(0, 0, w * state.swipe, h); ctx.clip();
    ctx.globalAlpha = 1; ctx.drawImage(LY[i], 0, 0); ctx.restore();
  }
  ctx.globalAlpha = 1;
  if (state.landmarks) {
    ctx.strokeStyle = "#0f0"; ctx.fillStyle = "#0f0"; ctx.font = "11px sans-serif";
    for (const lm of DATA.landmarks) {
      ctx.beginPath(); ctx.arc(lm.x, lm.y, 5, 0, 2 * Math.PI); ctx.stroke();
      ctx.fillText(lm.name, lm.x + 7, lm.y - 7);
    }
  }
  if (DATA.mmPerPx) {
    const px = 10 / DATA.mmPerPx;
    ctx.fillStyle = "#fff"; ctx.fillRect(12, h - 18, px, 4);
    ctx.font = "12px sans-serif"; ctx.fillText("10 mm", 12, h - 24);
  }
  const t = DATA.times[i] === null ? "?" : DATA.times[i].toFixed(2);
  ui("info").textContent = `${DATA.label} · frame ${DATA.frameIndex[i] + 1}/${DATA.totalFrames} · t = ${t} s`;
  state.draws += 1;
}
ui("opacity").oninput = e => { state.opacity = e.target.value / 100; draw(); };
ui("swipe").oninput = e => { state.swipe = e.target.value / 100; draw(); };
ui("frame").oninput = e => { state.frame = +e.target.value; draw(); };
ui("mode").onchange = e => { state.mode = e.target.value; draw(); };
ui("landmarks").onchange = e => { state.landmarks = e.target.checked; draw(); };
function setFrame(i) { state.frame = (i + FR.length) % FR.length; ui("frame").value = state.frame; draw(); }
let timer = null;
ui("play").onclick = () => {
  state.playing = !state.playing; ui("play").textContent = state.playing ? "pause" : "play";
  if (timer) clearInterval(timer);
  if (state.playing) timer = setInterval(() => setFrame(state.frame + 1), 1000 / DATA.fps);
};
setInterval(() => { if (state.mode === "flicker") { state.flickerOn = !state.flickerOn; draw(); } }, 500);
document.addEventListener("keydown", e => {
  if (e.key === "ArrowRight") setFrame(state.frame + 1);
  else if (e.key === "ArrowLeft") setFrame(state.frame - 1);
  else if (e.key === "ArrowUp") { state.opacity = Math.min(1, state.opacity + 0.1); ui("opacity").value = state.opacity * 100; draw(); }
  else if (e.key === "ArrowDown") { state.opacity = Math.max(0, state.opacity - 0.1); ui("opacity").value = state.opacity * 100; draw(); }
  else if (e.key === " ") { ui("play").click(); e.preventDefault(); }
});
Promise.all([Promise.all(DATA.frames.map(load)), Promise.all(DATA.layers.map(load))]).then(([f, l]) => {
  FR = f; LY = l; state.ready = true; draw();
});
"""

_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-"
    + base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode()
    + "'"
)

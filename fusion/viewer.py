"""``viewer.html``: one self-contained file that blends the layers live in the browser.

No server, no network, no CDN: the fluoroscopy frames and the resampled ultrasound layer
(alpha = where it is valid) are embedded as PNG data URLs and composited on a canvas.
Nothing identifying is embedded: a case pseudonym and relative times only.
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import numpy as np

__all__ = ["write_viewer"]


def _png_data_url(arr: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    # Fast compression: a run has hundreds of these and zlib dominates the run time.
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _encode_all(images: list[np.ndarray]) -> list[str]:
    from concurrent.futures import ThreadPoolExecutor

    # zlib releases the GIL, so PNG encoding uses every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(_png_data_url, images))


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
) -> Path:
    """Write the viewer.

    Parameters
    ----------
    fixed_frames : list of uint8 (rows, cols) fluoroscopy display frames.
    moving_layers : list of uint8 (rows, cols) ultrasound resampled into the fixed grid.
    valid_masks : list of bool (rows, cols), where each layer is defined.
    times_s : relative time of each frame (s).
    mm_per_px : fixed pixel size at the isocentre plane, for the scale bar (None: no bar).
    landmarks : [{"name", "x", "y"}] in fixed pixels, drawn when toggled on.
    case_label : a pseudonym shown in the title bar.
    """
    frames = _encode_all(fixed_frames)
    layers = _encode_all(
        [
            np.dstack([m, m, m, np.where(v, 255, 0).astype(np.uint8)])
            for m, v in zip(moving_layers, valid_masks, strict=True)
        ]
    )
    data = {
        "frames": frames,
        "layers": layers,
        "times": [round(float(t), 3) for t in times_s],
        "mmPerPx": mm_per_px,
        "landmarks": landmarks,
        "label": case_label,
        "fps": fps,
        "width": int(fixed_frames[0].shape[1]),
        "height": int(fixed_frames[0].shape[0]),
    }
    html = _TEMPLATE.replace("__DATA__", json.dumps(data)).replace("__LABEL__", case_label)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>hybridfuse viewer — __LABEL__</title>
<style>
 body { margin: 0; background: #111; color: #ddd; font-family: sans-serif; }
 #banner { background: #b00; color: #fff; text-align: center; font-weight: bold;
           padding: 4px; letter-spacing: 0.05em; }
 #bar { padding: 6px 10px; display: flex; gap: 14px; align-items: center; flex-wrap: wrap; }
 #stage { position: relative; display: inline-block; margin: 6px 10px; }
 canvas { image-rendering: pixelated; border: 1px solid #333; }
 label { font-size: 13px; }
 #info { font-size: 12px; color: #aaa; }
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
</div>
<div id="stage"><canvas id="view"></canvas></div>
<script>
"use strict";
const DATA = __DATA__;
const canvas = document.getElementById("view");
const ctx = canvas.getContext("2d");
canvas.width = DATA.width; canvas.height = DATA.height;
const ui = id => document.getElementById(id);
ui("frame").max = DATA.frames.length - 1;
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
  ui("info").textContent = `${DATA.label} · frame ${i + 1}/${DATA.frames.length} · t = ${DATA.times[i].toFixed(2)} s`;
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
</script></body></html>
"""

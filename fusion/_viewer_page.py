"""The page and the one script of ``viewer.html`` (constants; :mod:`fusion.viewer` fills them).

The script is admitted by its hash in the page's Content-Security-Policy (:data:`CSP`), so
it must stay a constant: every datum reaches it through the JSON block, never as code.
Pixel convention as everywhere: (x, y) = (column, row), 0-based, pixel centres at integers;
an image pixel (x, y) is drawn centred at canvas ``origin + (x + 0.5) * scale``, the scale
of each axis in proportion to the pixel's size along it (``fixedPixel``/``usPixel``), so
pixels that are not square are drawn in their shape while every coordinate stays the grid's.
"""

from __future__ import annotations

import base64
import hashlib

__all__ = ["CSP", "PAGE", "SCRIPT"]

PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="__CSP__">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hybridfuse viewer — __LABEL__</title>
<style>
 html, body { margin: 0; height: 100%; }
 body { background: #111; color: #ddd; font-family: sans-serif; display: flex;
        flex-direction: column; }
 #banner { background: #b00; color: #fff; text-align: center; font-weight: bold;
           padding: 3px; letter-spacing: 0.05em; }
 #confidence { padding: 3px 10px; font-size: 13px; color: #fff; background: #555; }
 #confidence.accepted { background: #1d5e2e; }
 #confidence.refused { background: #8a1c1c; }
 #bar { padding: 4px 8px; display: flex; gap: 4px 12px; align-items: center;
        flex-wrap: wrap; font-size: 13px; }
 #bar label { white-space: nowrap; }
 #bar input[type=range] { width: 90px; vertical-align: middle; }
 #stage { flex: 1; min-height: 120px; position: relative; }
 #view { position: absolute; inset: 0; width: 100%; height: 100%; display: block;
         touch-action: none; cursor: crosshair; }
 #info, #note, #readout, #here { font-size: 12px; color: #bbb; }
 /* One line that never wraps: text changing under the pointer must not resize the image. */
 #status { padding: 2px 10px; display: flex; gap: 16px; white-space: nowrap; overflow: hidden;
           height: 15px; }
 /* The frame info gives way first: the measurement and the error under the pointer stay. */
 #info { flex: 0 1 auto; min-width: 0; overflow: hidden; text-overflow: ellipsis; }
 #readout, #here { flex: none; }
 #note { padding: 0 10px 2px; }
 :focus-visible { outline: 2px solid #4af; outline-offset: 1px; }
 button[aria-pressed=true] { background: #4af; color: #000; }
 #help { position: absolute; top: 10%; left: 50%; transform: translateX(-50%);
         background: #222; border: 1px solid #888; padding: 12px 20px; max-width: 640px;
         font-size: 14px; z-index: 2; }
 #help td { padding: 1px 10px 1px 0; }
 [hidden] { display: none !important; }
</style></head><body>
<div id="banner" role="note">NOT FOR DIAGNOSTIC USE — research fusion of ultrasound and
 fluoroscopy</div>
<div id="confidence" role="status"></div>
<div id="bar">
 <label>mode <select id="mode">
   <option value="alpha">alpha</option><option value="color">colour overlay</option>
   <option value="checkerboard">checkerboard</option><option value="edges">edges</option>
   <option value="side-by-side">side by side</option><option value="flicker">flicker</option>
   <option value="swipe">swipe</option></select></label>
 <label>opacity <input id="opacity" type="range" min="0" max="100" value="50"></label>
 <label id="swipe-control">swipe
  <input id="swipe" type="range" min="0" max="100" value="50"></label>
 <label>US gain <input id="gain" type="range" min="25" max="400" value="100"></label>
 <label>colour map <select id="colormap"></select></label>
 <label>window <input id="window" type="range" min="1" max="512" step="1" value="255"></label>
 <label>level <input id="level" type="range" min="-128" max="383" step="0.5" value="127.5"></label>
 <label>W/L preset <select id="wl-preset">
   <option value="fused">as fused</option><option value="auto">auto (1-99 %)</option>
   <option value="contrast">high contrast</option><option value="soft">low contrast</option>
   <option value="custom" hidden>custom</option></select></label>
 <label>frame <input id="frame" type="range" min="0" max="0" value="0"></label>
 <button id="prev" aria-label="previous frame">◀ step</button>
 <button id="play" aria-pressed="false">play</button>
 <button id="next" aria-label="next frame">step ▶</button>
 <label>speed <select id="speed">
   <option value="0.25">0.25×</option><option value="0.5">0.5×</option>
   <option value="1" selected>1×</option><option value="2">2×</option>
   <option value="4">4×</option></select></label>
 <button id="zoom-out" aria-label="zoom out">−</button>
 <button id="zoom-in" aria-label="zoom in">+</button>
 <button id="reset">reset view</button>
 <button id="measure" aria-pressed="false">measure</button>
 <label><input id="landmarks" type="checkbox"> landmarks</label>
 <label title="outline of where the registration's predicted error exceeds 1 mm"><input
   id="error-outline" type="checkbox"> error &gt; 1 mm</label>
 <button id="save">save PNG</button>
 <button id="help-button" aria-controls="help">help (?)</button>
</div>
<div id="status"><span id="info"></span><span id="readout" aria-live="polite"></span>
 <span id="here"></span></div>
<div id="note"></div>
<div id="stage">
 <canvas id="view" tabindex="0" aria-label="fused image; arrow keys step frames and opacity,
  + and − zoom, drag pans, shift-drag sets window and level"></canvas>
 <div id="help" role="dialog" aria-label="keys and mouse" hidden>
  <b>Keys</b> (when no slider or list has focus; Esc gives focus back)
  <table>
   <tr><td>← →</td><td>previous / next frame</td></tr>
   <tr><td>↑ ↓</td><td>ultrasound opacity ± 10 %</td></tr>
   <tr><td>space</td><td>play / pause at the acquisition's frame rate</td></tr>
   <tr><td>+ −  0</td><td>zoom in / out, reset zoom and pan</td></tr>
   <tr><td>m</td><td>measure: click two points (mm at the isocentre plane, or in the
     ultrasound plane on the ultrasound view)</td></tr>
   <tr><td>a  w</td><td>automatic window/level; back to the window as fused</td></tr>
   <tr><td>l</td><td>landmarks on/off</td></tr>
   <tr><td>e</td><td>outline where the predicted registration error exceeds 1 mm, on/off
     (pointing shows the predicted error there)</td></tr>
   <tr><td>s</td><td>save the view as PNG (banner and scale bar included)</td></tr>
   <tr><td>?  Esc</td><td>this help; close it</td></tr>
  </table>
  <b>Mouse</b>: wheel or pinch zooms, drag pans, shift-drag sets window (left-right) and
  level (up-down); pointing shows the corresponding point in every view (side by side).
  Distances hold in the plane named with them only: anatomy off the isocentre plane is
  magnified differently.
 </div>
</div>
<script type="application/json" id="viewer-data">__DATA__</script>
<script>__SCRIPT__</script></body></html>
"""

SCRIPT = r"""
"use strict";
const DATA = JSON.parse(document.getElementById("viewer-data").textContent);
window.viewerData = DATA;
const ui = id => document.getElementById(id);
const canvas = ui("view"), ctx = canvas.getContext("2d");
const W = DATA.width, H = DATA.height, N = DATA.frameOf.length;
const MODES = Array.from(ui("mode").options).map(o => o.value);
const state = {
  frame: 0, opacity: DATA.opacity ?? 0.5, mode: MODES.includes(DATA.mode) ? DATA.mode : "alpha",
  swipe: 0.5, landmarks: false, playing: false, speed: 1, flickerOn: true, ready: false,
  draws: 0, zoom: 1, panX: 0, panY: 0, window: 255, level: 127.5, gain: 1,
  colormap: DATA.colormap in (DATA.colormaps || {}) ? DATA.colormap : "hot",
  measuring: false, measure: null, cursor: null, playLog: [], scaleBarPx: null,
  lastExport: null, timing: "", errorOutline: false,
};
window.viewerState = state;
const mk = (w, h) => {
  const c = document.createElement("canvas"); c.width = w; c.height = h; return c;
};
const g2 = c => c.getContext("2d", { willReadFrequently: true });
const comp = mk(W, H), fcan = mk(W, H), lcan = mk(W, H);
const ucan = mk(DATA.usWidth || 1, DATA.usHeight || 1);
let FR = [], LY = [], US = {};
const HM = DATA.matrix, HI = HM ? inv3(HM) : null;

function inv3(m) {
  const [[a, b, c], [d, e, f], [g, h, i]] = m;
  const A = e * i - f * h, B = f * g - d * i, C = d * h - e * g, det = a * A + b * B + c * C;
  return [[A / det, (c * h - b * i) / det, (b * f - c * e) / det],
          [B / det, (a * i - c * g) / det, (c * d - a * f) / det],
          [C / det, (b * g - a * h) / det, (a * e - b * d) / det]];
}
function apply(M, x, y) {
  const w = M[2][0] * x + M[2][1] * y + M[2][2];
  return [(M[0][0] * x + M[0][1] * y + M[0][2]) / w, (M[1][0] * x + M[1][1] * y + M[1][2]) / w];
}

// --- the fused image, in fluoroscopy pixels --------------------------------------------
function wlIdentity() { return state.window === 255 && state.level === 127.5; }
function fluoro(i) {
  const g = g2(fcan); g.drawImage(FR[DATA.frameOf[i]], 0, 0);
  if (wlIdentity()) return fcan;
  const img = g.getImageData(0, 0, W, H), d = img.data, lo = state.level - state.window / 2;
  const t = new Uint8ClampedArray(256);
  for (let v = 0; v < 256; v++) t[v] = Math.round((v - lo) * 255 / state.window);
  for (let p = 0; p < d.length; p += 4) { const v = t[d[p]]; d[p] = v; d[p + 1] = v; d[p + 2] = v; }
  g.putImageData(img, 0, 0);
  return fcan;
}
function tint(src, c, cmap, dx = 0, dy = 0) {
  const g = g2(c); g.clearRect(0, 0, c.width, c.height); g.drawImage(src, dx, dy);
  if (state.gain === 1 && !cmap) return c;
  const img = g.getImageData(0, 0, c.width, c.height), d = img.data;
  const lut = cmap ? DATA.colormaps[cmap] : null;
  for (let p = 0; p < d.length; p += 4) {
    const v = Math.min(255, Math.round(d[p] * state.gain));
    if (lut) { d[p] = lut[3 * v]; d[p + 1] = lut[3 * v + 1]; d[p + 2] = lut[3 * v + 2]; }
    else { d[p] = v; d[p + 1] = v; d[p + 2] = v; }
  }
  g.putImageData(img, 0, 0);
  return c;
}
// --- the ultrasound layer: fuse's warp (registration/_warp_kernels.py) repeated here ------
// A fluoroscopy pixel takes the ultrasound value where the inverse homography puts it:
// valid when that lies in the image and its nearest pixel is in the mask; the value is
// nearest, bilinear or Keys-cubic as fuse interpolated, truncated to 0-255 as fuse's
// layer. The frames are cropped (usOffset) with the margin the kernels read.
const ORDER = { nearest: 0, linear: 1, cubic: 3 }[DATA.order] ?? 1;
const warpCache = new Map(), greyCache = new Map();
let MASK = null, MW = 0, MH = 0;
function grey(j) {  // the cropped ultrasound frame j as one byte per pixel, or null
  if (greyCache.has(j)) return greyCache.get(j);
  const im = US[j]; if (!im) return null;
  const c = mk(im.width, im.height), g = g2(c); g.drawImage(im, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data, v = new Uint8Array(d.length / 4);
  for (let p = 0; p < v.length; p++) v[p] = d[4 * p];
  greyCache.set(j, v);
  return v;
}
function keys(t) {
  const a = Math.abs(t);
  return a < 1 ? (1.5 * a - 2.5) * a * a + 1 : a < 2 ? ((-0.5 * a + 2.5) * a - 4) * a + 2 : 0;
}
function warpBox() {  // fluoroscopy pixels [x0, x1) x [y0, y1) the cropped frames can reach
  const [x0, y0] = DATA.usOffset, xs = [x0 - 0.5, x0 + MW - 0.5], ys = [y0 - 0.5, y0 + MH - 0.5];
  const q = [apply(HM, xs[0], ys[0]), apply(HM, xs[1], ys[0]), apply(HM, xs[0], ys[1]),
             apply(HM, xs[1], ys[1])];
  const lo = k => Math.max(0, Math.floor(Math.min(...q.map(p => p[k]))) - 1);
  const hi = (k, n) => Math.min(n, Math.ceil(Math.max(...q.map(p => p[k]))) + 2);
  return [lo(0), hi(0, W), lo(1), hi(1, H)];
}
function warpLayer(j) {
  if (warpCache.has(j)) return warpCache.get(j);
  const v = grey(j); if (!v || !HI || !MASK) return null;
  const [x0, y0] = DATA.usOffset, cols = DATA.usWidth, rows = DATA.usHeight, M = HI;
  const at = (x, y) => {
    x = Math.min(Math.max(x, 0), cols - 1) - x0; y = Math.min(Math.max(y, 0), rows - 1) - y0;
    return x >= 0 && y >= 0 && x < MW && y < MH ? v[y * MW + x] : 0;
  };
  const out = new ImageData(W, H), d = out.data, box = warpBox();
  for (let r = box[2]; r < box[3]; r++) for (let c = box[0]; c < box[1]; c++) {
    const w = M[2][0] * c + M[2][1] * r + M[2][2]; if (w <= 0) continue;
    const x = (M[0][0] * c + M[0][1] * r + M[0][2]) / w;
    const y = (M[1][0] * c + M[1][1] * r + M[1][2]) / w;
    if (!(x >= -0.5 && y >= -0.5 && x <= cols - 0.5 && y <= rows - 0.5)) continue;
    const xn = Math.min(Math.max(Math.floor(x + 0.5), 0), cols - 1) - x0;
    const yn = Math.min(Math.max(Math.floor(y + 0.5), 0), rows - 1) - y0;
    if (xn < 0 || yn < 0 || xn >= MW || yn >= MH || !MASK[yn * MW + xn]) continue;
    let val;
    if (ORDER === 0) val = v[yn * MW + xn];
    else if (ORDER === 1) {
      const xc = Math.min(Math.max(x, 0), cols - 1), yc = Math.min(Math.max(y, 0), rows - 1);
      const xa = cols > 1 ? Math.min(Math.floor(xc), cols - 2) : 0;
      const ya = rows > 1 ? Math.min(Math.floor(yc), rows - 2) : 0;
      const fx = xc - xa, fy = yc - ya;
      const xb = Math.min(xa + 1, cols - 1), yb = Math.min(ya + 1, rows - 1);
      val = (at(xa, ya) * (1 - fx) + at(xb, ya) * fx) * (1 - fy)
        + (at(xa, yb) * (1 - fx) + at(xb, yb) * fx) * fy;
    } else {
      const xf = Math.floor(x), yf = Math.floor(y);
      val = 0;
      for (let b = -1; b < 3; b++) {
        const wy = keys(y - (yf + b));
        for (let a = -1; a < 3; a++) val += wy * keys(x - (xf + a)) * at(xf + a, yf + b);
      }
    }
    const p = 4 * (r * W + c), m = Math.floor(Math.min(255, Math.max(0, Math.fround(val))));
    d[p] = m; d[p + 1] = m; d[p + 2] = m; d[p + 3] = 255;
  }
  const cv = mk(W, H); cv.getContext("2d").putImageData(out, 0, 0);
  warpCache.set(j, cv);  // kept, as the decoded layer images were before
  return cv;
}
const WARPS = !DATA.layers.length;
const layerImage = i => (WARPS ? warpLayer(DATA.usFrame[i]) : LY[DATA.layerOf[i]]);
const layerKey = i => (WARPS ? `u${DATA.usFrame[i]}` : `l${DATA.layerOf[i]}`);
const edgeCache = new Map();
function edgeMask(i) {
  const key = layerKey(i);
  if (edgeCache.has(key)) return edgeCache.get(key);
  const g = g2(lcan); g.clearRect(0, 0, W, H); g.drawImage(layerImage(i), 0, 0);
  const d = g.getImageData(0, 0, W, H).data;
  const m = new Float32Array(W * H), mag = new Float32Array(W * H);
  for (let p = 0; p < W * H; p++) m[p] = d[4 * p];
  const vals = [];
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    const p = y * W + x;
    // One-sided at the borders, central inside: numpy.gradient, as fuse's edges mode.
    const gx = x === 0 ? m[p + 1] - m[p] : x === W - 1 ? m[p] - m[p - 1]
      : (m[p + 1] - m[p - 1]) / 2;
    const gy = y === 0 ? m[p + W] - m[p] : y === H - 1 ? m[p] - m[p - W]
      : (m[p + W] - m[p - W]) / 2;
    mag[p] = d[4 * p + 3] ? Math.hypot(gx, gy) : 0;
    if (d[4 * p + 3]) vals.push(mag[p]);
  }
  vals.sort((a, b) => a - b);
  const q = 0.9 * (vals.length - 1), k = Math.floor(q);
  const thr = vals.length ? vals[k] + ((vals[k + 1] ?? vals[k]) - vals[k]) * (q - k) : Infinity;
  const strong = new Uint8Array(W * H);
  for (let p = 0; p < W * H; p++) strong[p] = mag[p] >= thr && mag[p] > 1e-6 ? 1 : 0;
  edgeCache.set(key, strong);
  return strong;
}
function drawEdges(g, i) {
  const strong = edgeMask(i), img = g.getImageData(0, 0, W, H), d = img.data, a = state.opacity;
  const col = [255, 200, 0];
  for (let p = 0; p < W * H; p++) if (strong[p])
    for (let c = 0; c < 3; c++) d[4 * p + c] = Math.round((1 - a) * d[4 * p + c] + a * col[c]);
  g.putImageData(img, 0, 0);
}
function compose(i) {
  const g = g2(comp), m = state.mode;
  g.globalAlpha = 1; g.drawImage(fluoro(i), 0, 0);
  if (!layerImage(i)) return comp;  // its ultrasound frame is not embedded (the page says so)
  if (m === "edges") { drawEdges(g, i); return comp; }
  const layer = tint(layerImage(i), lcan, m === "color" ? state.colormap : null);
  g.save();
  if (m === "alpha" || m === "color" || m === "side-by-side") g.globalAlpha = state.opacity;
  else if (m === "checkerboard") {
    g.beginPath(); const t = 32;
    for (let y = 0; y < H; y += t) for (let x = 0; x < W; x += t)
      if ((x / t + y / t) % 2 === 1) g.rect(x, y, t, t);
    g.clip();
  } else if (m === "swipe") { g.beginPath(); g.rect(0, 0, W * state.swipe, H); g.clip(); }
  if (m !== "flicker" || state.flickerOn) g.drawImage(layer, 0, 0);
  g.restore();
  return comp;
}

// --- panes: where each image sits on the canvas ----------------------------------------
function panes() {
  const cw = canvas.width, ch = canvas.height;
  if (state.mode !== "side-by-side") {
    return [{ kind: "fused", x: 0, y: 0, w: cw, h: ch, iw: W, ih: H }];
  }
  const w = cw / 3, uw = DATA.usWidth || W, uh = DATA.usHeight || H;
  return [{ kind: "fluoro", x: 0, y: 0, w, h: ch, iw: W, ih: H },
          { kind: "us", x: w, y: 0, w, h: ch, iw: uw, ih: uh },
          { kind: "fused", x: 2 * w, y: 0, w, h: ch, iw: W, ih: H }];
}
// A pane's scale: s per square pixel, sx and sy per image pixel along x and y.
function view(p, zoom = state.zoom, panX = state.panX, panY = state.panY) {
  const [ax, ay] = (p.kind === "us" ? DATA.usPixel : DATA.fixedPixel) || [1, 1];
  const s = Math.min(p.w / (p.iw * ax), p.h / (p.ih * ay)) * zoom, sx = s * ax, sy = s * ay;
  return { s, sx, sy, ox: p.x + (p.w - p.iw * sx) / 2 + panX,
           oy: p.y + (p.h - p.ih * sy) / 2 + panY };
}
const toCanvas = (v, x, y) => [v.ox + (x + 0.5) * v.sx, v.oy + (y + 0.5) * v.sy];
function paneAt(cx, cy) {
  return panes().find(p => cx >= p.x && cx < p.x + p.w && cy >= p.y && cy < p.y + p.h);
}
function pointAt(cx, cy) {
  const p = paneAt(cx, cy); if (!p) return null;
  const v = view(p);
  return { kind: p.kind, plane: p.kind === "us" ? "us" : "fixed",
           x: (cx - v.ox) / v.sx - 0.5, y: (cy - v.oy) / v.sy - 0.5 };
}
function usFrameCanvas(i) {  // the ultrasound frame in its own pixels, transparent off the mask
  const v = grey(DATA.usFrame[i]); if (!v) return null;
  const c = mk(MW, MH), g = c.getContext("2d"), img = g.createImageData(MW, MH), d = img.data;
  for (let p = 0; p < v.length; p++) {
    d[4 * p] = v[p]; d[4 * p + 1] = v[p]; d[4 * p + 2] = v[p]; d[4 * p + 3] = MASK[p] ? 255 : 0;
  }
  g.putImageData(img, 0, 0);
  return tint(c, ucan, null, ...(DATA.usOffset || [0, 0]));
}

// --- drawing ----------------------------------------------------------------------------
let composed = "";
function draw() {
  if (!state.ready) return;
  const i = state.frame;
  // Recompose only when the image changes, not for each cursor move, pan or zoom.
  const key = [i, state.mode, state.opacity, state.swipe, state.window, state.level,
               state.gain, state.colormap, state.flickerOn].join();
  if (key !== composed) { compose(i); usFrameCanvas(i); composed = key; }
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  state.scaleBarPx = null;
  for (const p of panes()) drawPane(p, i);
  updateInfo(i);
  state.draws += 1;
}
function drawPane(p, i) {
  const v = view(p);
  const src = p.kind === "fused" ? comp : p.kind === "fluoro" ? fcan : US[DATA.usFrame[i]] && ucan;
  ctx.save(); ctx.beginPath(); ctx.rect(p.x, p.y, p.w, p.h); ctx.clip();
  if (src) {
    ctx.imageSmoothingEnabled = false;
    ctx.setTransform(v.sx, 0, 0, v.sy, v.ox, v.oy); ctx.drawImage(src, 0, 0);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
  }
  ctx.font = "13px sans-serif"; ctx.fillStyle = "#ff0";
  const names = { fused: "fused", fluoro: "fluoroscopy", us: "ultrasound" };
  if (state.mode === "side-by-side") ctx.fillText(names[p.kind], p.x + 8, p.y + 16);
  if (!src || (p.kind === "fused" && !layerImage(i))) {
    ctx.fillText("ultrasound frame not embedded", p.x + 8, p.y + 34);
  }
  overlays(p, v);
  scaleBar(p, v);
  ctx.restore();
  if (p.x > 0) { ctx.fillStyle = "#444"; ctx.fillRect(p.x, 0, 1, p.h); }
}
function cross(c, colour) {
  ctx.strokeStyle = colour; ctx.lineWidth = 1; ctx.beginPath();
  ctx.moveTo(c[0] - 10, c[1]); ctx.lineTo(c[0] + 10, c[1]);
  ctx.moveTo(c[0], c[1] - 10); ctx.lineTo(c[0], c[1] + 10); ctx.stroke();
}
function overlays(p, v) {
  const fixedPane = p.kind !== "us";
  if (state.landmarks) drawLandmarks(p, v);
  if (state.errorOutline) drawOutline(p, v);
  const cur = state.cursor;
  const pt = cur ? (fixedPane ? cur.fixed : cur.moving) : null;
  if (pt) cross(toCanvas(v, pt[0], pt[1]), "#0ff");
  const m = state.measure;
  if (m && (m.plane === "us") === !fixedPane) {
    const a = toCanvas(v, ...m.a), end = m.b || m.hover, b = end ? toCanvas(v, ...end) : a;
    ctx.strokeStyle = "#ff0"; ctx.fillStyle = "#ff0"; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.moveTo(...a); ctx.lineTo(...b); ctx.stroke();
    ctx.font = "bold 14px sans-serif";
    const t = m.b ? measureText(m) : "", tw = ctx.measureText(t).width;
    if (m.b) ctx.fillText(t, Math.max(p.x + 4, Math.min(b[0] + 8, p.x + p.w - tw - 4)), b[1] - 8);
  }
}
function drawLandmarks(p, v) {
  ctx.strokeStyle = "#0f0"; ctx.fillStyle = "#0f0"; ctx.font = "11px sans-serif"; ctx.lineWidth = 1;
  for (const lm of DATA.landmarks) {
    const pt = p.kind === "us" ? (lm.mx !== undefined ? [lm.mx, lm.my] : null) : [lm.x, lm.y];
    if (!pt) continue;
    const c = toCanvas(v, pt[0], pt[1]);
    ctx.beginPath(); ctx.arc(c[0], c[1], 5, 0, 2 * Math.PI); ctx.stroke();
    ctx.fillText(lm.name, c[0] + 7, c[1] - 7);
    if (p.kind !== "us" && HM && lm.mx !== undefined) {  // residual: where the homography puts it
      const r = toCanvas(v, ...apply(HM, lm.mx, lm.my));
      ctx.strokeStyle = "#f0f"; ctx.beginPath(); ctx.moveTo(...c); ctx.lineTo(...r); ctx.stroke();
      ctx.fillStyle = "#f0f"; ctx.fillRect(r[0] - 2, r[1] - 2, 4, 4);
      ctx.strokeStyle = "#0f0"; ctx.fillStyle = "#0f0";
    }
  }
}
// The predicted-error outline: segments in ultrasound pixels, through the homography on the
// fluoroscopy and fused panes.
const EM = DATA.errorModel || { kind: "none", text: "", segments: [] };
function drawOutline(p, v) {
  if (!EM.segments.length || (p.kind !== "us" && !HM)) return;
  const at = q => toCanvas(v, ...(p.kind === "us" ? q : apply(HM, q[0], q[1])));
  ctx.strokeStyle = "#f80"; ctx.lineWidth = 2; ctx.lineCap = "round"; ctx.beginPath();
  for (const [a, b] of EM.segments) { ctx.moveTo(...at(a)); ctx.lineTo(...at(b)); }
  ctx.stroke();
}
function errorAt(q) {  // bilinear on the grid; null outside it
  const xs = EM.xs, ys = EM.ys;
  if (!q || !xs || q[0] < xs[0] || q[1] < ys[0] || q[0] > xs[xs.length - 1]
      || q[1] > ys[ys.length - 1]) return null;
  const cell = (g, v) => {
    const k = g.findIndex(u => u > v);  // -1: at the last grid line
    return k < 0 ? g.length - 2 : Math.min(g.length - 2, Math.max(0, k - 1));
  };
  const c = cell(xs, q[0]), r = cell(ys, q[1]);
  const tx = (q[0] - xs[c]) / (xs[c + 1] - xs[c]), ty = (q[1] - ys[r]) / (ys[r + 1] - ys[r]);
  const m = EM.mm, top = m[r][c] * (1 - tx) + m[r][c + 1] * tx;
  return top * (1 - ty) + (m[r + 1][c] * (1 - tx) + m[r + 1][c + 1] * tx) * ty;
}
function scaleBar(p, v) {
  const us = p.kind === "us", sp = us ? DATA.usSpacingMm : DATA.fixedSpacingMm;
  if (!sp) return;
  const len = 10 / sp[1] * v.sx, y = p.y + p.h - 16;
  if (!us) state.scaleBarPx = len;
  ctx.fillStyle = "#fff"; ctx.fillRect(p.x + 12, y, len, 4);
  ctx.font = "12px sans-serif";
  ctx.fillText(`10 mm (${us ? "ultrasound plane" : "isocentre plane"})`, p.x + 12, y - 6);
}
function updateInfo(i) {
  const t = DATA.times[i];
  let s = `${DATA.label} · frame ${DATA.frameIndex[i] + 1}/${DATA.totalFrames}`;
  s += ` · t = ${t === null ? "?" : t.toFixed(2)} s`;
  if (DATA.usFrame.length) {
    const dt = DATA.dt[i];
    s += ` · ultrasound frame ${DATA.usFrame[i] + 1} · Δt ` +
      (dt === null ? "unknown (paired by index)"
        : `${dt >= 0 ? "+" : "−"}${Math.abs(dt).toFixed(2)} s`);
  }
  ui("info").textContent = s;
}

// --- confidence --------------------------------------------------------------------------
function confidence() {
  const q = DATA.quality;
  const num = (v, d) => (v === null || v === undefined ? null : Number(v).toFixed(d));
  if (!q) {
    return { level: "unknown", text: "registration quality: not recorded with this transform;"
             + " judge the overlay by eye" };
  }
  const parts = [];
  let level = "unknown";
  if (q.verdict) {
    const v = String(q.verdict);
    level = /^accept/i.test(v) && !q.accepted_unverified ? "accepted"
      : /refus|reject/i.test(v) ? "refused" : "unknown";
    parts.push(`registration ${v}${q.accepted_unverified ? " (kept unverified)" : ""}`);
  } else parts.push("registration verdict: none recorded");
  const figures = [["predicted_tre_mm", 1, "predicted error", " mm"],
    ["landmark_fre_px", 2, "landmark residual (FRE)", " px"],
    ["landmark_loo_tre_px", 2, "leave-one-out error", " px"],
    ["scale_ratio_to_calibration", 3, "scale / calibration", ""]];
  for (const [key, d, what, unit] of figures) {
    if (num(q[key], d) !== null) parts.push(`${what} ${num(q[key], d)}${unit}`);
  }
  if (q.intensity_refinement) parts.push(`intensity refinement: ${q.intensity_refinement}`);
  const rejected = (q.landmarks_rejected || []).length;
  if (rejected) parts.push(`${rejected} landmark(s) rejected`);
  if (q.edge_on) parts.push("ultrasound plane seen edge-on");
  if (q.reasons && q.reasons.length) parts.push(`reasons: ${q.reasons.join("; ")}`);
  return { level, text: parts.join(" · ") };
}
function showConfidence() {
  const c = confidence(), el = ui("confidence");
  el.textContent = c.text; el.className = c.level;
}

// --- view changes --------------------------------------------------------------------------
function setFrame(i) { state.frame = ((i % N) + N) % N; ui("frame").value = state.frame; draw(); }
function setOpacity(a) {
  state.opacity = Math.min(1, Math.max(0, a));
  ui("opacity").value = Math.round(state.opacity * 100); draw();
}
function setMode(m) {
  state.mode = MODES.includes(m) ? m : "alpha"; ui("mode").value = state.mode;
  ui("swipe-control").hidden = state.mode !== "swipe";
  state.cursor = null; draw();
}
function zoomAt(cx, cy, z) {
  z = Math.min(40, Math.max(0.1, z));
  const p = paneAt(cx, cy) || panes()[0], v = view(p), v2 = view(p, z, 0, 0);
  const ix = (cx - v.ox) / v.sx, iy = (cy - v.oy) / v.sy;  // the image point kept under (cx, cy)
  state.panX = cx - ix * v2.sx - v2.ox;
  state.panY = cy - iy * v2.sy - v2.oy;
  state.zoom = z; draw();
}
function zoomBy(f) { const p = panes()[0]; zoomAt(p.x + p.w / 2, p.y + p.h / 2, state.zoom * f); }
function resetView() { state.zoom = 1; state.panX = 0; state.panY = 0; draw(); }
function setWL(w, l, preset) {
  state.window = Math.min(1024, Math.max(1, w)); state.level = Math.min(512, Math.max(-256, l));
  ui("window").value = state.window; ui("level").value = state.level;
  ui("wl-preset").value = preset || "custom"; draw();
}
function autoWL() {
  const g = g2(mk(W, H)); g.drawImage(FR[DATA.frameOf[state.frame]], 0, 0);
  const d = g.getImageData(0, 0, W, H).data, hist = new Array(256).fill(0);
  for (let p = 0; p < d.length; p += 4) if (d[p] > 0) hist[d[p]]++;  // 0: outside the field
  const n = hist.reduce((a, b) => a + b, 0), at = f => { let c = 0;
    for (let v = 0; v < 256; v++) { c += hist[v]; if (c >= f * n) return v; } return 255; };
  const lo = at(0.01), hi = Math.max(at(0.99), lo + 1);
  setWL(hi - lo, (lo + hi) / 2, "auto");
}
const PRESETS = { fused: [255, 127.5], contrast: [128, 128], soft: [384, 128] };
function preset(name) {
  if (name === "auto") autoWL(); else if (PRESETS[name]) setWL(...PRESETS[name], name);
}

// --- cine at the acquisition's frame rate ---------------------------------------------------
const PT = (() => {
  const t = DATA.times, ok = N > 1 && t.every((v, k) => v !== null && (k === 0 || v > t[k - 1]));
  state.timing = ok ? `frame times from ${DATA.timesSource || "the file"}`
    : `${DATA.fps.toFixed(2)} frames/s (no usable frame times)`;
  return ok ? t.slice() : t.map((_, k) => k / DATA.fps);
})();
let timer = null, anchor = null;
function play(on) {
  state.playing = on && N > 1; clearTimeout(timer);
  ui("play").textContent = state.playing ? "pause" : "play";
  ui("play").setAttribute("aria-pressed", String(state.playing));
  if (!state.playing) return;
  layerImage((state.frame + 1) % N);  // warped before the clock starts
  anchor = { wall: performance.now(), t: PT[state.frame] };
  state.playLog = [{ frame: state.frame, wall: anchor.wall }];
  tick();
}
function tick() {
  let next = state.frame + 1, target;
  if (next >= N) {  // wrap after one mean frame interval, then count from the first frame
    const gap = (PT[N - 1] - PT[0]) / (N - 1);
    anchor = { wall: anchor.wall + (PT[N - 1] - anchor.t + gap) * 1000 / state.speed, t: PT[0] };
    next = 0; target = anchor.wall;
  } else target = anchor.wall + (PT[next] - anchor.t) * 1000 / state.speed;
  timer = setTimeout(() => {
    setFrame(next); state.playLog.push({ frame: next, wall: performance.now() }); tick();
    setTimeout(() => layerImage((next + 1) % N), 0);  // warp the next one while waiting
  }, Math.max(0, target - performance.now()));
}
function step(d) { play(false); setFrame(state.frame + d); }

// --- measurement ----------------------------------------------------------------------------
const PLANES = { fixed: "isocentre plane", us: "ultrasound plane" };
function measureText(m) {
  return m.mm === null ? `${m.px.toFixed(1)} px (no calibration for the ${PLANES[m.plane]})`
                       : `${m.mm.toFixed(1)} mm (${PLANES[m.plane]})`;
}
function measureClick(cx, cy) {
  const pt = pointAt(cx, cy), m = state.measure;
  if (!pt) return;
  if (!m || m.b || m.plane !== pt.plane) {
    state.measure = { plane: pt.plane, a: [pt.x, pt.y], b: null };
  }
  else {
    m.b = [pt.x, pt.y];
    const sp = m.plane === "us" ? DATA.usSpacingMm : DATA.fixedSpacingMm;
    const dx = m.b[0] - m.a[0], dy = m.b[1] - m.a[1];
    m.px = Math.hypot(dx, dy); m.mm = sp ? Math.hypot(dx * sp[1], dy * sp[0]) : null;
    ui("readout").textContent = `distance ${measureText(m)}`;
  }
  draw();
}
function setMeasuring(on) {
  state.measuring = on; ui("measure").setAttribute("aria-pressed", String(on));
  if (!on) state.measure = null;
  draw();
}

// --- export -----------------------------------------------------------------------------
function exportPng() {
  const head = 44, out = mk(canvas.width, canvas.height + head), g = out.getContext("2d");
  const c = confidence(), colours = { accepted: "#1d5e2e", refused: "#8a1c1c", unknown: "#555" };
  g.fillStyle = "#b00"; g.fillRect(0, 0, out.width, 22);
  g.fillStyle = "#fff"; g.font = "bold 14px sans-serif"; g.textAlign = "center";
  g.fillText("NOT FOR DIAGNOSTIC USE — research fusion", out.width / 2, 16);
  g.fillStyle = colours[c.level]; g.fillRect(0, 22, out.width, 22);
  g.fillStyle = "#fff"; g.font = "12px sans-serif"; g.textAlign = "left";
  g.fillText(`${c.text} | ${ui("info").textContent}`, 6, 37);
  g.drawImage(canvas, 0, head);
  const url = out.toDataURL("image/png");
  state.lastExport = url;
  const a = document.createElement("a");
  a.href = url; a.download = `${DATA.label}-frame-${DATA.frameIndex[state.frame] + 1}.png`;
  a.click();
  return url;
}

// --- input ------------------------------------------------------------------------------------
function canvasPoint(e) {
  const r = canvas.getBoundingClientRect();
  return [(e.clientX - r.left) * canvas.width / r.width,
          (e.clientY - r.top) * canvas.height / r.height];
}
function setCursor(pt) {
  const fixed = pt.plane === "fixed" ? [pt.x, pt.y] : HM ? apply(HM, pt.x, pt.y) : null;
  const moving = pt.plane === "us" ? [pt.x, pt.y] : HI ? apply(HI, pt.x, pt.y) : null;
  state.cursor = { from: pt.plane, fixed, moving };
  const e = errorAt(moving);
  ui("here").textContent = e === null ? "" : `predicted error here ${e.toFixed(1)} mm`;
}
const pointers = new Map();
let drag = null;
const spread = () => {
  const [a, b] = [...pointers.values()]; return Math.hypot(a[0] - b[0], a[1] - b[1]);
};
canvas.addEventListener("pointerdown", e => {
  canvas.focus();
  const c = canvasPoint(e); pointers.set(e.pointerId, c);
  if (pointers.size === 2) { drag = { pinch: spread(), zoom: state.zoom }; return; }
  if (state.measuring) { measureClick(...c); return; }
  drag = { c, panX: state.panX, panY: state.panY, wl: e.shiftKey || e.ctrlKey,
           window: state.window, level: state.level };
});
canvas.addEventListener("pointermove", e => {
  const c = canvasPoint(e);
  if (pointers.has(e.pointerId)) pointers.set(e.pointerId, c);
  if (drag && drag.pinch && pointers.size === 2) {
    const [a, b] = [...pointers.values()];
    zoomAt((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, drag.zoom * spread() / drag.pinch); return;
  }
  if (drag && !drag.pinch) {
    const dx = c[0] - drag.c[0], dy = c[1] - drag.c[1];
    if (drag.wl) { setWL(drag.window + dx, drag.level - dy); return; }
    state.panX = drag.panX + dx; state.panY = drag.panY + dy; draw(); return;
  }
  const pt = pointAt(...c);
  if (pt) setCursor(pt);
  const m = state.measure;
  if (m && !m.b && pt && pt.plane === m.plane) m.hover = [pt.x, pt.y];
  draw();
});
const release = e => { pointers.delete(e.pointerId); if (pointers.size < 2) drag = null; };
canvas.addEventListener("pointerup", release);
canvas.addEventListener("pointercancel", release);
canvas.addEventListener("pointerleave", () => { state.cursor = null; draw(); });
canvas.addEventListener("wheel", e => {
  e.preventDefault();
  const c = canvasPoint(e); zoomAt(c[0], c[1], state.zoom * Math.pow(1.0015, -e.deltaY));
}, { passive: false });

ui("opacity").oninput = e => setOpacity(e.target.value / 100);
ui("swipe").oninput = e => { state.swipe = e.target.value / 100; draw(); };
ui("gain").oninput = e => { state.gain = e.target.value / 100; draw(); };
ui("frame").oninput = e => { state.frame = +e.target.value; draw(); };
ui("mode").onchange = e => setMode(e.target.value);
ui("colormap").onchange = e => { state.colormap = e.target.value; draw(); };
ui("window").oninput = e => setWL(+e.target.value, state.level);
ui("level").oninput = e => setWL(state.window, +e.target.value);
ui("wl-preset").onchange = e => preset(e.target.value);
ui("landmarks").onchange = e => { state.landmarks = e.target.checked; draw(); };
ui("error-outline").onchange = e => { state.errorOutline = e.target.checked; draw(); };
ui("speed").onchange = e => { state.speed = +e.target.value; if (state.playing) play(true); };
ui("play").onclick = () => play(!state.playing);
ui("prev").onclick = () => step(-1);
ui("next").onclick = () => step(1);
ui("zoom-in").onclick = () => zoomBy(1.25);
ui("zoom-out").onclick = () => zoomBy(1 / 1.25);
ui("reset").onclick = resetView;
ui("measure").onclick = () => setMeasuring(!state.measuring);
ui("save").onclick = exportPng;
ui("help-button").onclick = () => { ui("help").hidden = !ui("help").hidden; };

// Keys belong to the focused control when it uses them (sliders, lists: every key; buttons
// and checkboxes: space and enter); otherwise they act on the viewer, once.
function ownsKey(t, key) {
  if (!t || !t.tagName) return false;
  if (t.tagName === "SELECT" || t.tagName === "TEXTAREA") return true;
  if (t.tagName === "INPUT") return t.type !== "checkbox" || key === " " || key === "Enter";
  if (t.tagName === "BUTTON") return key === " " || key === "Enter";
  return false;
}
const KEYS = {
  ArrowRight: () => step(1), ArrowLeft: () => step(-1),
  ArrowUp: () => setOpacity(state.opacity + 0.1), ArrowDown: () => setOpacity(state.opacity - 0.1),
  " ": () => play(!state.playing), "+": () => zoomBy(1.25), "=": () => zoomBy(1.25),
  "-": () => zoomBy(1 / 1.25), "0": resetView, m: () => setMeasuring(!state.measuring),
  l: () => ui("landmarks").click(), e: () => ui("error-outline").click(), a: autoWL,
  w: () => preset("fused"), s: exportPng,
  "?": () => { ui("help").hidden = !ui("help").hidden; },
};
document.addEventListener("keydown", e => {
  if (e.key === "Escape") {
    ui("help").hidden = true;
    if (ownsKey(e.target, e.key) || e.target.tagName === "BUTTON") e.target.blur();
    else if (state.measuring) setMeasuring(false);
    return;
  }
  if (ownsKey(e.target, e.key) || e.ctrlKey || e.metaKey || e.altKey || !KEYS[e.key]) return;
  e.preventDefault();
  KEYS[e.key]();
});

// --- start ---------------------------------------------------------------------------------
function fit() {
  const r = canvas.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(r.width * dpr)), h = Math.max(1, Math.round(r.height * dpr));
  if (w !== canvas.width || h !== canvas.height) { canvas.width = w; canvas.height = h; }
  draw();
}
for (const name of Object.keys(DATA.colormaps || {})) {
  const o = document.createElement("option"); o.value = name; o.textContent = name;
  ui("colormap").appendChild(o);
}
ui("colormap").value = state.colormap;
ui("frame").max = N - 1;
ui("opacity").value = Math.round(state.opacity * 100);
const notes = [DATA.note, DATA.usNote, DATA.pixelNote, `cine: ${state.timing}`, EM.text];
ui("note").textContent = notes.filter(Boolean).join(" · ");
setMode(state.mode);
showConfidence();
setInterval(() => {
  if (state.mode === "flicker") { state.flickerOn = !state.flickerOn; draw(); }
}, 500);
new ResizeObserver(fit).observe(ui("stage"));
const load = src => new Promise(ok => {
  const im = new Image(); im.onload = () => ok(im); im.onerror = () => ok(null); im.src = src;
});
const usKeys = Object.keys(DATA.usImages || {});
Promise.all([Promise.all(DATA.frames.map(load)), Promise.all(DATA.layers.map(load)),
             Promise.all(usKeys.map(k => load(DATA.usImages[k]))),
             DATA.usMask ? load(DATA.usMask) : null]).then(([f, l, u, mask]) => {
  FR = f; LY = l; usKeys.forEach((k, n) => { US[k] = u[n]; });
  if (mask) {
    MW = mask.width; MH = mask.height;
    const g = g2(mk(MW, MH)); g.drawImage(mask, 0, 0);
    const d = g.getImageData(0, 0, MW, MH).data;
    MASK = new Uint8Array(MW * MH); for (let p = 0; p < MASK.length; p++) MASK[p] = d[4 * p] > 127;
  }
  state.ready = true; fit();
});
window.viewerApi = {
  panes: () => panes().map(p => ({ ...p, ...view(p) })),
  imageToCanvas: (x, y, pane = 0) => toCanvas(view(panes()[pane]), x, y),
  canvasToImage: (cx, cy) => pointAt(cx, cy),
  pixel: (cx, cy) => Array.from(ctx.getImageData(cx, cy, 1, 1).data),
  composite: (x, y) => Array.from(g2(comp).getImageData(x, y, 1, 1).data),
  compositePng: () => comp.toDataURL("image/png"),
  canvasPng: () => canvas.toDataURL("image/png"),
  errorAt,
  raw: (x, y) => {
    const g = g2(mk(W, H)); g.drawImage(FR[DATA.frameOf[state.frame]], 0, 0);
    return g.getImageData(x, y, 1, 1).data[0];
  },
  confidence, exportPng,
};
"""

#: The page's Content-Security-Policy: no network, and only :data:`SCRIPT` may run.
CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-"
    + base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode()
    + "'"
)

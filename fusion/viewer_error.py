"""The viewer's predicted-error outline: where the registration's error may exceed 1 mm.

With landmark positions in both images, :mod:`registration.uncertainty` propagates the
landmark noise σ (the one the registration used, from ``transform.json``'s
``quality.model_selection``, else the landmarks' residuals) through the fit to a
90th-percentile error in mm at the isocentre plane on a grid over the ultrasound image.
Without them, ``quality.predicted_tre_mm`` holds for the whole field (said so); without
either, nothing is drawn and the page says why. The outline is given as line segments
in ultrasound pixels: the 1 mm iso-line inside the imaged area, and the part of the
area's edge where the error exceeds 1 mm, so together they enclose the region.
"""

from __future__ import annotations

import math

import numpy as np

from hybridfuse.registration.landmarks import LandmarkFit, estimate_sigma
from hybridfuse.registration.transforms import Transform, TransformModel
from hybridfuse.registration.uncertainty import error_grid

__all__ = ["LIMIT_MM", "error_model", "iso_segments"]

#: The predicted error the outline encloses (mm at the isocentre plane).
LIMIT_MM = 1.0
#: Grid step of the error (smooth: the error is a low-order function of position) and of
#: the imaged area's edge (ultrasound pixels).
ERROR_STEP_PX = 16
MASK_STEP_PX = 4
#: A predicted error beyond this (mm) is no estimate; it would also overflow the page's
#: rounding to 0.001 mm.
MAX_MM = 1e6


def iso_segments(xs, ys, f, level: float) -> np.ndarray:
    """Marching squares: segments (k, 2, 2) of ``f`` (rows = ``ys``) crossing ``level``.

    Points are (x, y) pixels, linearly interpolated along the grid edges; a saddle cell
    is split by the value at its centre (the mean of its corners).
    """
    f = np.asarray(f, float)
    above = f > level
    segs = []
    for r, c in zip(*_mixed(above), strict=True):
        corners = [(r, c), (r, c + 1), (r + 1, c + 1), (r + 1, c)]  # a b c d, clockwise
        pts = []
        for (r0, c0), (r1, c1) in zip(corners, corners[1:] + corners[:1], strict=True):
            v0, v1 = f[r0, c0], f[r1, c1]
            if (v0 > level) != (v1 > level):
                t = (level - v0) / (v1 - v0)
                pts.append((xs[c0] + t * (xs[c1] - xs[c0]), ys[r0] + t * (ys[r1] - ys[r0])))
        if len(pts) == 2:
            segs.append(pts)
        elif len(pts) == 4:  # top, right, bottom, left crossings
            joined = (np.mean([f[p] for p in corners]) > level) == above[r, c]
            order = ((0, 1), (2, 3)) if joined else ((0, 3), (1, 2))
            segs.extend([[pts[i], pts[j]] for i, j in order])
    return np.asarray(segs, float).reshape(-1, 2, 2)


def _mixed(above: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cells (rows, cols) whose four corners are not all on one side."""
    a, b, c, d = above[:-1, :-1], above[:-1, 1:], above[1:, 1:], above[1:, :-1]
    return np.nonzero((a != b) | (b != c) | (c != d))


def _bilinear(xs, ys, f, pts) -> np.ndarray:
    """``f`` on the grid (``xs``, ``ys``) interpolated at points (k, 2)."""
    pts = np.asarray(pts, float).reshape(-1, 2)
    ci = np.clip(np.searchsorted(xs, pts[:, 0]) - 1, 0, len(xs) - 2)
    ri = np.clip(np.searchsorted(ys, pts[:, 1]) - 1, 0, len(ys) - 2)
    tx = np.clip((pts[:, 0] - xs[ci]) / (xs[ci + 1] - xs[ci]), 0, 1)
    ty = np.clip((pts[:, 1] - ys[ri]) / (ys[ri + 1] - ys[ri]), 0, 1)
    top = f[ri, ci] * (1 - tx) + f[ri, ci + 1] * tx
    bottom = f[ri + 1, ci] * (1 - tx) + f[ri + 1, ci + 1] * tx
    return top * (1 - ty) + bottom * ty


def _outline(xs, ys, err, mask) -> np.ndarray:
    """Segments enclosing {error > LIMIT_MM} within ``mask`` (bool, ultrasound pixels)."""
    iso = iso_segments(xs, ys, err, LIMIT_MM)
    mid = np.rint(iso.mean(axis=1)).astype(int)
    iso = iso[mask[mid[:, 1], mid[:, 0]]] if len(iso) else iso
    # The imaged area's edge (the mask padded, so an edge on the image border closes).
    pad = np.pad(mask[::MASK_STEP_PX, ::MASK_STEP_PX], 1).astype(float)
    mx = np.arange(-1, pad.shape[1] - 1) * MASK_STEP_PX
    my = np.arange(-1, pad.shape[0] - 1) * MASK_STEP_PX
    rim = iso_segments(mx.astype(float), my.astype(float), pad, 0.5)
    if len(rim):
        rim = np.clip(rim, 0, [mask.shape[1] - 1, mask.shape[0] - 1])
        rim = rim[_bilinear(xs, ys, err, rim.mean(axis=1)) > LIMIT_MM]
    return np.concatenate([iso, rim]).reshape(-1, 2, 2)


def _sigma(quality: dict, transform: Transform, lms: list[dict]) -> tuple[float, str] | None:
    """The landmark noise (fixed px) and where it came from; None when nothing gives it."""
    note = quality.get("model_selection") if isinstance(quality, dict) else None
    s = note.get("landmark_sigma_px") if isinstance(note, dict) else None
    if isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0:
        how = "estimated from the residuals" if note.get("landmark_sigma_estimated") else "given"
        return float(s), f"σ {s:.2f} px ({how}, transform.json)"
    mov = np.array([[lm["mx"], lm["my"]] for lm in lms])
    fix = np.array([[lm["x"], lm["y"]] for lm in lms])
    resid = np.linalg.norm(transform.apply(mov) - fix, axis=1)
    # The registration's own rule: the residuals pooled with its prior, within its bounds.
    fit = LandmarkFit(transform, np.ones(len(lms), bool), resid, 0.0, np.full(len(lms), np.nan))
    s, _ = estimate_sigma(fit)
    return s, f"σ {s:.2f} px (from the landmarks' residuals and the prior)"


def _none(reason: str) -> dict:
    return {"kind": "none", "text": f"no error outline: {reason}", "segments": []}


def error_model(transform, landmarks, quality, fixed_spacing_mm, mask) -> dict:
    """The page's ``errorModel``: kind, a one-line description, grid and outline segments.

    ``landmarks`` as the viewer embeds them ({"name", "x", "y", "mx", "my"}); those the
    registration rejected (``quality.landmarks_rejected``) are left out.
    """
    quality = quality if isinstance(quality, dict) else {}
    listed = quality.get("landmarks_rejected")  # a list in our files; anything else: none
    rejected = {str(n) for n in listed} if isinstance(listed, list) else set()
    lms = [lm for lm in landmarks if "mx" in lm and str(lm["name"]) not in rejected]
    model = TransformModel(getattr(transform, "model", TransformModel.PROJECTIVE))
    if fixed_spacing_mm is None or mask is None or not mask.any():
        return _none("no fluoroscopy pixel size at the isocentre or no imaged area")
    sigma = _sigma(quality, transform, lms) if len(lms) else None
    if sigma is not None:
        moving_xy = [[lm["mx"], lm["my"]] for lm in lms]
        try:
            with np.errstate(all="ignore"):  # overflow is refused below, not printed
                xs, ys, err = error_grid(
                    transform.matrix, model, moving_xy, sigma[0], mask.shape,
                    fixed_spacing_mm, ERROR_STEP_PX,
                )  # fmt: skip
        except (ValueError, ArithmeticError) as exc:
            return _none(str(exc))
        if not np.all(np.isfinite(err) & (err <= MAX_MM)):
            return _none(f"the predicted error is not finite or beyond {MAX_MM:g} mm ({sigma[1]})")
        text = (
            f"predicted error (90th percentile, isocentre plane) of the {model.value} "
            f"landmark fit: {len(lms)} landmarks, {sigma[1]}"
        )
        return _record("landmarks", text, xs, ys, err, mask)
    tre = quality.get("predicted_tre_mm")
    number = isinstance(tre, (int, float)) and not isinstance(tre, bool)
    if number and not (math.isfinite(tre) and 0 <= tre <= MAX_MM):
        return _none(f"transform.json's predicted error {tre!r} mm is not from 0 to {MAX_MM:g}")
    if number:
        rows, cols = mask.shape
        xs, ys = np.array([0.0, cols - 1.0]), np.array([0.0, rows - 1.0])
        err = np.full((2, 2), float(tre))
        text = (
            f"no landmark positions: transform.json's predicted error {tre:.2f} mm "
            "taken for the whole field"
        )
        return _record("uniform", text, xs, ys, err, mask)
    return _none("no landmark positions and no predicted error in transform.json")


def _record(kind, text, xs, ys, err, mask) -> dict:
    """The page's record: the grid (mm, 3 decimals) and the outline (0.01 px)."""
    segments = np.round(_outline(xs, ys, err, np.asarray(mask, bool)), 2).tolist()
    return {"kind": kind, "text": text, "xs": xs.tolist(), "ys": ys.tolist(),
            "mm": np.round(err, 3).tolist(), "segments": segments}  # fmt: skip

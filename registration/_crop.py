"""Cropping: the image regions a registration needs, so the rest is never smoothed or read.

The moving mask's box, and the fixed region where the start maps it plus a margin for
the coarsest smoothing and the search range; after the search, a tighter fixed window
around where the match maps the ultrasound.
"""

from __future__ import annotations

import numpy as np

from .errors import RegistrationError
from .landmarks import fit_model
from .optimise import grain
from .preprocess import mask_extent
from .transforms import Transform

__all__ = ["crop_boxes", "mapped_box", "refine_box"]


def crop_boxes(
    fixed, moving, moving_mask, *, landmarks, initial, opts, do_search, fixed_spacing_mm
):
    """Regions worth computing on, or None when cropping would not pay.

    The moving mask's box, and where the start maps it in the fixed image plus a margin
    for the coarsest smoothing and the search range.
    """
    if fixed.ndim != 2 or moving.ndim != 2:
        return None
    mmask = np.ones(moving.shape, bool) if moving_mask is None else np.asarray(moving_mask, bool)
    if mmask.shape != moving.shape or not mmask.any():
        return None
    ext = mask_extent(mmask)
    mx0, mx1, my0, my1 = int(ext[0]), int(ext[1]) + 1, int(ext[2]), int(ext[3]) + 1
    corners = np.array([[mx0, my0], [mx1, my0], [mx1, my1], [mx0, my1]], float)
    if initial is not None:
        h0 = initial.matrix if isinstance(initial, Transform) else np.asarray(initial, float)
        mapped = Transform(h0).apply(corners)
    elif landmarks is not None and len(landmarks.moving_xy) >= 3:
        try:
            mapped = Transform(fit_model("affine", landmarks.moving_xy, landmarks.fixed_xy)).apply(
                corners
            )
        except RegistrationError:
            return None
    else:
        return None
    if not np.all(np.isfinite(mapped)):
        return None
    search = opts.grid
    margin = 1.5 * max(opts.pyramid.levels) * grain(opts, fixed_spacing_mm) + 16.0
    if do_search and opts.metric:
        margin += search.search_translation_mm / (fixed_spacing_mm or 0.3)
        # Rotation and scale of the search move corners too.
        half = 0.5 * np.ptp(mapped, axis=0).max()
        margin += half * (
            np.radians(search.search_rotation_deg) + max(abs(s - 1) for s in search.search_scales)
        )
    rows, cols = fixed.shape
    # Box edges on a 32-pixel grid: frames of a clip then share their crop (and the
    # cached mask weights of the smoothing) while the probe moves a little.
    box = mapped_box(mapped, margin, fixed.shape, grid=32)
    if box is None:
        return None
    fy0, fy1, fx0, fx1 = box
    saved = 1.0 - ((fx1 - fx0) * (fy1 - fy0)) / (rows * cols)
    saved_m = 1.0 - ((mx1 - mx0) * (my1 - my0)) / mmask.size
    if saved < 0.2 and saved_m < 0.2:
        return None
    return (fy0, fy1, fx0, fx1), (int(my0), int(my1), int(mx0), int(mx1))


def refine_box(h, ext, shape, factors, grain: float = 1.0) -> tuple[int, int, int, int] | None:
    """Fixed-image rows and columns (y0, y1, x0, x1) that refining ``h`` needs.

    The moving mask's box (``ext`` from :func:`mask_extent`) mapped by ``h``, plus room
    for the coarsest remaining smoothing (3 sigma, its factors counting ``grain`` detector
    pixels) and 24 detector pixels of movement; None when that saves under a fifth of the
    image or the box degenerates.
    """
    if not len(factors):
        return None
    x0, x1, y0, y1 = (float(v) for v in ext[:4])
    corners = Transform(h).apply(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
    if not np.all(np.isfinite(corners)):
        return None
    box = mapped_box(corners, 1.5 * max(factors) * grain + 24.0, shape)
    if box is None or (box[1] - box[0]) * (box[3] - box[2]) > 0.8 * shape[0] * shape[1]:
        return None
    return box


def mapped_box(points, margin, shape, grid=1) -> tuple[int, int, int, int] | None:
    """Rows and columns (y0, y1, x0, x1) around fixed ``points`` plus ``margin`` px.

    Edges lie on a ``grid``-pixel lattice and are clipped to ``shape``; None when a side
    is under 16 px.
    """
    rows, cols = shape
    x0 = int(max(0, grid * np.floor((points[:, 0].min() - margin) / grid)))
    x1 = int(min(cols, grid * np.ceil((points[:, 0].max() + margin + 1) / grid)))
    y0 = int(max(0, grid * np.floor((points[:, 1].min() - margin) / grid)))
    y1 = int(min(rows, grid * np.ceil((points[:, 1].max() + margin + 1) / grid)))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return None
    return y0, y1, x0, x1

"""The tissue an ultrasound image actually shows, inside its calibrated region.

A region of the Sequence of Ultrasound Regions is a rectangle; a curvilinear or phased
probe images a sector inside it, and vendors draw rulers, markers and text in the
corners. The imaged area is found from the region plus the display pixels:

1. tissue candidates: greyscale pixels above black in at least half of up to 8 frames
   (coloured pixels are annotations in a tissue region);
2. an opening (3 x 3, twice) cuts thin text strokes and JPEG specks off; the largest
   connected piece, holes filled, is the content;
3. its left and right edges, row by row over its upper half (nearest the apex, where
   screens rarely clip), are fitted with lines (least squares, points more than 2 px
   off dropped, three rounds); lines that meet above the content (or within 2 % of
   its height below its top, where a label sits on the apex) at an
   opening angle of at least 10 degrees make a sector (apex, radius range, angles), cut
   to the content's convex hull (a screen may clip a sector's sides); otherwise the
   shape is the content's bounding rectangle, or the region itself when the content
   reaches within 2 px of each of its sides (a linear probe). A rectangle is not cut to
   the hull: acoustic shadows are black tissue and often reach a corner;
4. the mask is that shape within the region, less coloured pixels, eroded by 1 px
   (unless it is the region itself) so that no edge pixel of the screen is taken.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ImagedArea", "find_imaged_area", "region_area"]

#: Opening angle (degrees) from which converging edges are taken as a sector.
MIN_SECTOR_DEG = 10.0
#: How far below the content's top (a fraction of its height) the edges may still meet.
APEX_SLACK = 0.02
#: Largest gap (px) between the content and a side of the region that still counts as
#: the content filling the region.
FILL_GAP_PX = 2
#: Largest difference of channels (0-255) that is still grey; above it, an annotation.
MAX_GREY_CHROMA = 40
#: Smallest content, as a fraction of the region, worth fitting a shape to.
MIN_CONTENT_FRACTION = 0.05
#: On a whole screen (no region), a second piece at least this fraction of the largest
#: (and of :data:`MIN_CONTENT_FRACTION` of the screen) competes with it: a grey panel or
#: another view may be the larger. The real ALOKA screen's grey bars are 0.11 of its image.
RIVAL_FRACTION = 0.25


@dataclass(frozen=True)
class ImagedArea:
    """Where the tissue is: its shape, the mask, and the sector's parameters if any.

    Parameters
    ----------
    shape : {"sector", "rectangle", "region"}
        ``region``: the region's bounds, taken as they are (no pixels to look at, or too
        little content to fit).
    mask : ndarray of bool, shape (rows, cols)
    bounds_xy : tuple of int
        (x0, y0, x1, y1) inclusive bounds of the mask.
    apex_xy : tuple of float or None
        Sector apex (x, y) in pixels (may lie above the image).
    radius_px : tuple of float or None
        (inner, outer) sector radius in row pixels (columns scaled to rows' spacing).
    angles_deg : tuple of float or None
        (left, right) edge angles from straight down, positive towards +x, in
        millimetres' geometry (equal to the pixels' when the spacing is isotropic).
    source : str
    """

    shape: str
    mask: np.ndarray
    bounds_xy: tuple[int, int, int, int]
    apex_xy: tuple[float, float] | None = None
    radius_px: tuple[float, float] | None = None
    angles_deg: tuple[float, float] | None = None
    source: str = ""

    def to_dict(self, spacing_mm: tuple[float, float] | None = None) -> dict:
        """JSON-ready description; radii also in mm when the row spacing is given."""
        out = {
            "shape": self.shape,
            "bounds_xy": list(self.bounds_xy),
            "fraction_of_pixels": round(float(self.mask.mean()), 4),
            "source": self.source,
        }
        if self.apex_xy is not None:
            out["apex_xy"] = [round(v, 1) for v in self.apex_xy]
            out["radius_px"] = [round(v, 1) for v in self.radius_px]
            out["angles_deg"] = [round(v, 1) for v in self.angles_deg]
            out["opening_deg"] = round(self.angles_deg[1] - self.angles_deg[0], 1)
            if spacing_mm is not None:
                out["radius_mm"] = [round(v * spacing_mm[0], 1) for v in self.radius_px]
        return out


def _box_mask(shape, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    out = np.zeros(shape, dtype=bool)
    out[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
    return out


def _bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0, 0, -1, -1)
    return (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))


def region_area(shape, box, source: str) -> ImagedArea:
    """The region's rectangle as the imaged area (nothing better is known)."""
    mask = _box_mask(shape, box)
    return ImagedArea("region", mask, _bounds(mask), source=source)


def _content(frames: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
    """(tissue candidates, coloured pixels) over up to 8 frames, inside ``box``."""
    n = frames.shape[0]
    picks = np.unique(np.linspace(0, n - 1, min(n, 8)).round().astype(int))
    votes = np.zeros(frames.shape[1:3], dtype=np.int32)
    colour = np.zeros(frames.shape[1:3], dtype=bool)
    for k in picks:
        frame = np.asarray(frames[k])
        if frame.ndim == 3:
            wide = frame.astype(np.int16)
            chroma = wide.max(axis=2) - wide.min(axis=2)
            colour |= chroma > MAX_GREY_CHROMA
            frame = frame.max(axis=2)
        votes += frame > 0
    inside = _box_mask(votes.shape, box)
    return (2 * votes >= len(picks)) & inside & ~colour, colour


def _largest_piece(candidates: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest connected piece (holes filled), and the size of the next largest."""
    from scipy import ndimage

    opened = ndimage.binary_opening(candidates, structure=np.ones((3, 3)), iterations=2)
    labels, n = ndimage.label(opened)
    if n == 0:
        return opened, 0
    sizes = np.bincount(labels.ravel())[1:]
    rival = int(np.sort(sizes)[-2]) if n > 1 else 0
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes))), rival


def _fit_edge(ys: np.ndarray, xs: np.ndarray) -> tuple[float, float] | None:
    """Line x = a + b y through edge points, outliers (> 2 px) dropped over three rounds."""
    keep = np.ones(ys.size, dtype=bool)
    fit = None
    for _ in range(3):
        if keep.sum() < 10:
            return fit
        b, a = np.polyfit(ys[keep], xs[keep], 1)
        fit = (float(a), float(b))
        keep = np.abs(xs - (a + b * ys)) <= 2.0
    return fit


def _edges(piece: np.ndarray):
    """Left and right edge lines of ``piece``, fitted on its rows 10-50 % down."""
    rows = np.flatnonzero(piece.any(axis=1))
    lo, hi = rows[0], rows[-1]
    ys = rows[(rows >= lo + 0.1 * (hi - lo)) & (rows <= lo + 0.5 * (hi - lo))]
    if ys.size < 10:
        return None, None
    left = np.argmax(piece[ys], axis=1)
    right = piece.shape[1] - 1 - np.argmax(piece[ys, ::-1], axis=1)
    return _fit_edge(ys.astype(float), left.astype(float)), _fit_edge(
        ys.astype(float), right.astype(float)
    )


def _hull_mask(piece: np.ndarray) -> np.ndarray:
    """Pixels inside the convex hull of ``piece`` (pixel centres)."""
    from scipy import ndimage
    from scipy.spatial import ConvexHull, QhullError

    # The hull of the outline is the hull of the piece, from far fewer points.
    ys, xs = np.nonzero(piece & ~ndimage.binary_erosion(piece))
    try:
        hull = ConvexHull(np.c_[xs, ys].astype(float))
    except (QhullError, ValueError):
        return piece.copy()
    yy = np.arange(piece.shape[0], dtype=float)[:, None]
    xx = np.arange(piece.shape[1], dtype=float)[None, :]
    inside = np.ones(piece.shape, dtype=bool)
    for a, b, c in hull.equations:  # a x + b y + c <= 0 on the inner side of each facet
        inside &= a * xx + b * yy + c <= 1e-9
    return inside | piece


def _sector(piece: np.ndarray, left, right, aspect: float):
    """(mask, apex, radii, angles) when the edges meet above the piece, else None.

    Radii and angles are measured with x scaled by ``aspect`` (column / row spacing), so
    that arcs of anisotropic pixels are circles; radii are in row pixels.
    """
    (al, bl), (ar, br) = left, right
    a0, a1 = float(np.degrees(np.arctan(bl * aspect))), float(np.degrees(np.arctan(br * aspect)))
    opening = a1 - a0
    if opening < MIN_SECTOR_DEG:
        return None
    apex_y = (al - ar) / (br - bl)
    apex_x = al + bl * apex_y
    rows = np.flatnonzero(piece.any(axis=1))
    # A label drawn at the apex (a screen capture has no region to cut it off) lifts the
    # content's top a few rows above where the edges meet.
    if apex_y > rows[0] + max(2.0, APEX_SLACK * (rows[-1] - rows[0])):
        return None
    yy, xx = np.mgrid[0 : piece.shape[0], 0 : piece.shape[1]]
    radius = np.hypot((xx - apex_x) * aspect, yy - apex_y)
    # Angle from straight down, positive towards +x (image x grows to the right).
    angle = np.degrees(np.arctan2((xx - apex_x) * aspect, yy - apex_y))
    r_in = radius[piece]
    r0, r1 = float(np.percentile(r_in, 0.5)), float(np.percentile(r_in, 99.9))
    mask = (radius >= r0) & (radius <= r1) & (angle >= a0) & (angle <= a1)
    return mask, (float(apex_x), float(apex_y)), (r0, r1), (a0, a1)


def _rectangle(piece: np.ndarray, box, keep: np.ndarray) -> ImagedArea:
    """The content's bounding rectangle; the region itself when the content fills it."""
    from scipy import ndimage

    x0, y0, x1, y1 = _bounds(piece)
    gaps = (x0 - box[0], y0 - box[1], box[2] - x1, box[3] - y1)
    if max(gaps) <= FILL_GAP_PX and keep[_box_mask(piece.shape, box)].all():
        mask = keep.copy()
        return ImagedArea(
            "rectangle", mask, _bounds(mask), source="region bounds, filled by the image"
        )
    mask = ndimage.binary_erosion(_box_mask(piece.shape, (x0, y0, x1, y1)) & keep)
    return ImagedArea(
        "rectangle", mask, _bounds(mask), source="rectangle of the image content within the region"
    )


def find_imaged_area(frames: np.ndarray, box, spacing_mm=None, *, screen=False) -> ImagedArea:
    """The imaged area inside ``box`` = (x0, y0, x1, y1) of display ``frames``.

    ``frames`` are 0-255 display pixels, (frames, rows, cols) or (frames, rows, cols, 3);
    ``spacing_mm`` (row, col) makes a sector's arcs circles in millimetres. ``screen``:
    ``box`` is a whole screen, not a region; where a second piece (a grey panel, another
    view) competes with the largest (:data:`RIVAL_FRACTION`), none is chosen and the box
    is taken as it is.
    """
    from scipy import ndimage

    shape = frames.shape[1:3]
    region = _box_mask(shape, box)
    candidates, colour = _content(frames, box)
    piece, rival = _largest_piece(candidates)
    if piece.sum() < MIN_CONTENT_FRACTION * region.sum():
        return region_area(shape, box, "region bounds: too little image content to fit")
    if screen and rival >= max(MIN_CONTENT_FRACTION * region.sum(), RIVAL_FRACTION * piece.sum()):
        return region_area(
            shape, box, "region bounds: separate areas look like an image (a panel, "
            "another view), none chosen",
        )  # fmt: skip
    left, right = _edges(piece)
    aspect = 1.0 if spacing_mm is None else float(spacing_mm[1]) / float(spacing_mm[0])
    found = _sector(piece, left, right, aspect) if left is not None and right is not None else None
    keep = region & ~ndimage.binary_dilation(colour)
    if found is None:
        return _rectangle(piece, box, keep)
    sector, apex, radii, angles = found
    mask = ndimage.binary_erosion(sector & keep & _hull_mask(piece))
    return ImagedArea(
        "sector",
        mask,
        _bounds(mask),
        apex_xy=apex,
        radius_px=radii,
        angles_deg=angles,
        source="sector fitted to the image content within the region",
    )

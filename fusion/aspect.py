"""Square pixels on screen for an image whose pixels are not square.

A fluoroscopy (or ultrasound) grid may have rows and columns of different sizes
(ImagerPixelSpacing or PixelSpacing row != column, or PixelAspectRatio (0028,0034) not
1:1); an image written pixel for pixel then shows the anatomy stretched. The pictures
meant for eyes (PNG, video) are resampled along the coarser axis to the finer spacing
(:meth:`DisplayAspect.to_display`); the viewer draws each grid pixel as a rectangle of
the same shape, so every coordinate it shows stays the grid's; DICOM outputs keep the
grid and declare PixelAspectRatio (:meth:`DisplayAspect.dicom_ratio`).

A grid whose resampled size would be the same number of pixels on both axes is shown as
it is (square within half a pixel over the image): its outputs are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .errors import InputError

__all__ = ["MAX_STRETCH", "DisplayAspect", "pixel_aspect"]

#: Most a display may stretch one axis: beyond it the pixel shape is implausible for an
#: X-ray detector or scanner, and the resampled frames would grow without bound.
MAX_STRETCH = 4.0


@dataclass(frozen=True)
class DisplayAspect:
    """The display size (rows, columns) of one grid pixel of a ``shape`` grid; finer axis 1.

    ``source`` says where the pixel shape came from, for the outputs' notes.
    """

    shape: tuple[int, int]
    row: float = 1.0
    col: float = 1.0
    source: str = "square pixels (no spacing or PixelAspectRatio)"

    @property
    def display_shape(self) -> tuple[int, int]:
        """(rows, cols) of the resampled picture: each axis stretched by its factor."""
        return round(self.shape[0] * self.row), round(self.shape[1] * self.col)

    @property
    def resampled(self) -> bool:
        """Whether pictures are resampled (False: square pixels, outputs as they were)."""
        return self.display_shape != tuple(self.shape)

    def viewer_scale(self) -> list[float]:
        """[x, y] size the viewer draws one grid pixel at, relative to a square pixel."""
        return [self.col, self.row] if self.resampled else [1.0, 1.0]

    def viewer_note(self, what: str) -> str:
        """The viewer's line on ``what`` pixels ("" when square)."""
        if not self.resampled:
            return ""
        return (
            f"{what} pixels {max(self.row, self.col):.3g} times as {_longer(self)} as "
            f"{_shorter(self)} ({self.source}): drawn in that shape"
        )

    def dicom_ratio(self) -> list[int] | None:
        """PixelAspectRatio (vertical, horizontal) to declare; None for square pixels."""
        if not self.resampled:
            return None
        ratio = Fraction(self.row / self.col).limit_denominator(1000)
        return [ratio.numerator, ratio.denominator]

    def record(self) -> dict:
        """What ``fuse.json`` says of the display: the pixel shape and any resampling."""
        rows, cols = self.display_shape
        if not self.resampled:
            note = "square pixels (within half a pixel over the image): written pixel for pixel"
        else:
            note = (
                f"pixels {max(self.row, self.col):.4g} times as {_longer(self)} as "
                f"{_shorter(self)}: PNG and video resampled from {self.shape[1]}x"
                f"{self.shape[0]} to {cols}x{rows} (columns x rows) to show square pixels; "
                "the viewer draws each pixel with this shape; the DICOM keeps the grid "
                "and declares PixelAspectRatio"
            )
        return {
            "pixel_shape_row_col": [self.row, self.col],
            "source": self.source,
            "resampled": self.resampled,
            "grid_cols_rows": [self.shape[1], self.shape[0]],
            "display_cols_rows": [cols, rows],
            "note": note,
        }

    def to_display(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb`` (rows, k*cols[, 3]) with square pixels; itself when nothing is resampled.

        A picture k grids wide (side by side) is resampled one grid at a time, so its
        panes do not bleed into each other.
        """
        if not self.resampled:
            return rgb
        rows, cols = self.display_shape
        panes = np.split(np.asarray(rgb), max(1, rgb.shape[1] // self.shape[1]), axis=1)
        out = [_resample(_resample(p, rows, axis=0), cols, axis=1) for p in panes]
        return np.concatenate(out, axis=1) if len(out) > 1 else out[0]

    def frames(self, frames: Sequence) -> Sequence:
        """The sequence ``frames`` as shown (read and resampled one at a time)."""
        return _Displayed(frames, self) if self.resampled else frames


def _longer(a: DisplayAspect) -> str:
    return "tall" if a.row > a.col else "wide"


def _shorter(a: DisplayAspect) -> str:
    return "wide" if a.row > a.col else "tall"


def _resample(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Linear resampling of ``a`` to ``n`` samples along ``axis``, pixel edges kept.

    Pixel centres sit at integers, so output sample i lies at (i + 0.5) m / n - 0.5 of the
    m input samples: the first and last pixels' outer edges stay the picture's edges.
    """
    m = a.shape[axis]
    if n == m:
        return a
    pos = np.clip((np.arange(n) + 0.5) * (m / n) - 0.5, 0, m - 1)
    i0 = np.minimum(np.floor(pos).astype(np.intp), m - 2) if m > 1 else np.zeros(n, np.intp)
    w = (pos - i0).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis] = n
    w = w.reshape(shape)
    lo = np.take(a, i0, axis=axis).astype(np.float32)
    hi = np.take(a, np.minimum(i0 + 1, m - 1), axis=axis).astype(np.float32)
    return np.clip(np.rint(lo * (1 - w) + hi * w), 0, 255).astype(np.uint8)


class _Displayed(Sequence):
    """A sequence of frames seen through :meth:`DisplayAspect.to_display`."""

    def __init__(self, frames: Sequence, aspect: DisplayAspect):
        self._frames, self._aspect = frames, aspect

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        return self._aspect.to_display(self._frames[k])


def pixel_aspect(image, *, limit: float | None = MAX_STRETCH) -> DisplayAspect:
    """The :class:`DisplayAspect` of ``image``'s grid, from its spacing, else PixelAspectRatio.

    The spacing wins where both are given (it is what every millimetre uses); a
    disagreement is named in ``source``. A stretch beyond ``limit`` is refused naming
    the file (None: no limit, for a picture the viewer only draws).
    """
    shape = tuple(int(n) for n in image.shape)
    spacing, ratio = image.pixel_spacing_mm, image.pixel_aspect_ratio
    if spacing is not None:
        (dy, dx), source = spacing, f"pixel spacing {spacing[0]:g} x {spacing[1]:g} mm"
        if ratio is not None and abs(ratio[0] / ratio[1] - dy / dx) > 0.01 * dy / dx:
            source += f" (PixelAspectRatio {ratio[0]:g}:{ratio[1]:g} disagrees; spacing used)"
    elif ratio is not None:
        (dy, dx), source = ratio, f"PixelAspectRatio (0028,0034) {ratio[0]:g}:{ratio[1]:g}"
    else:
        return DisplayAspect(shape)
    fine = min(dy, dx)
    aspect = DisplayAspect(shape, dy / fine, dx / fine, source)
    stretch = max(aspect.row, aspect.col)
    if limit is not None and aspect.resampled and stretch > limit:
        raise InputError(
            f"{image.source_path or 'image'}: {source} makes pixels {stretch:.3g} times as "
            f"{_longer(aspect)} as {_shorter(aspect)} (at most {limit:g} is plausible)"
        )
    return aspect

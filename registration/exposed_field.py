"""The exposed field of a fluoroscopy read from its pixels: what the collimator let through.

Outside the collimator nothing arrives, and the stored image holds one constant value
there (the display's black), reaching the image's border. The shutter attributes that
give the field (:func:`fusion.io`'s collimator mask) are often missing; without a field
the collimator's edge against the body reads as a sharp dense-to-air step, which
structure detectors (the probe's silhouette) take for an object. :func:`exposed_field`
finds the constant border region and returns the field inside it, shrunk by a margin for
the collimator's soft edge. See docs/registration-method.md, "The probe's silhouette".
"""

from __future__ import annotations

import numpy as np

__all__ = ["exposed_field"]

#: Least share of the image the constant border must cover to count as the outside.
MIN_OUTSIDE = 0.005
#: Least share of the border pixels holding the border's value.
MIN_BORDER_SHARE = 0.5
#: Pixels the field is shrunk by: the collimator's penumbra, and the blur of the image.
EDGE_PX = 4
#: Opening radius (px) that cuts burned-in text off the field before its largest part is kept.
OPEN_PX = 2


def _border_value(img: np.ndarray) -> float | None:
    """The value most of the image's outermost rows and columns hold, or None."""
    edge = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
    values, counts = np.unique(edge, return_counts=True)
    k = int(np.argmax(counts))
    return float(values[k]) if counts[k] >= MIN_BORDER_SHARE * edge.size else None


def exposed_field(img: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray | None:
    """The exposed field (bool, image shape), within ``mask`` if given; None if unknown.

    The outside is the image's border value where it reaches the border; the field is
    the largest part of the rest (burned-in text and labels in the black border are cut
    off), holes filled, shrunk by :data:`EDGE_PX`. Where no such border is found, the
    given ``mask`` (or None) is returned unchanged.
    """
    from scipy import ndimage as ndi

    a = np.asarray(img)
    if a.ndim != 2 or min(a.shape) < 4 * EDGE_PX:
        return mask
    value = _border_value(a)
    if value is None:
        return mask
    labels, _ = ndi.label(a == value)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    outside = np.isin(labels, edge[edge > 0])
    if outside.mean() < MIN_OUTSIDE:
        return mask
    disk = _disk(OPEN_PX)
    inside = ndi.binary_opening(~outside, structure=disk)
    labels, n = ndi.label(inside)
    if n == 0:
        return np.zeros(a.shape, bool)
    sizes = np.bincount(labels.ravel())[1:]
    field = ndi.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    field = ndi.binary_erosion(field, structure=_disk(EDGE_PX), border_value=0)
    return field if mask is None else field & np.asarray(mask, bool)


def _disk(r: int) -> np.ndarray:
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return xx * xx + yy * yy <= r * r

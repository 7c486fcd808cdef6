"""Whether an answer's perspective is one that an X-ray point source can give a plane.

The third row of the homography of a plane seen by a point source is its depth: the
projective denominator w(p) = h₃·(x, y, 1) is proportional to the distance of the plane
point p from the source along the beam axis, whatever the pixels on either side. A plane
climbs towards the source at most as fast as one moves along it, so the relative slope of
w per mm of plane, times the plane's distance from the source (from the answer's
magnification and the source-to-isocentre distance), is the sine of the plane's tilt
against the detector: at most 1, for a plane seen edge-on. Phantom truths give it exactly
(docs/registration-method.md, *Plausible perspective*). Intensity refinement leaves the
perspective loosely pinned down (right answers on the family's tuning seeds reach 1.02
where their truth has 0.19), so the limit leaves room above 1; past it, a wrong projective
fit bent the perspective (an up-down-mirrored start on ``hybridfuse synth --seed 3``,
accepted 33 mm off with 1.25).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SHORTEST_SOURCE_OBJECT_MM",
    "perspective_figures",
    "perspective_reason",
]

#: Source-to-isocentre distance (mm) taken when the fluoroscopy does not give one: shorter
#: than C-arms have (their isocentres lie about 600-800 mm from the source). A distance
#: shorter than the true one understates the slope, so the test is then only more lenient.
SHORTEST_SOURCE_OBJECT_MM = 500.0


def perspective_figures(
    h: np.ndarray,
    centre_xy,
    field_xy: np.ndarray,
    scale_xy: tuple[float, float],
    px_mm: float,
    source_object_mm: float | None = None,
    limit: float | None = None,
) -> dict:
    """How steeply the answer's perspective says the plane climbs towards the source.

    Parameters
    ----------
    h : ndarray (3, 3)
        The moving (ultrasound px) → fixed (fluoroscopy px) homography.
    centre_xy : (float, float)
        The ultrasound field's centre (moving px), where the slope is taken.
    field_xy : ndarray (n, 2)
        Moving points spanning the field (its corners), for the depth ratio across it.
    scale_xy : (float, float)
        Fixed px per moving px along moving x and y for a plane at the isocentre facing
        the detector (the calibration).
    px_mm : float
        A fixed pixel at the isocentre, mm.
    source_object_mm : float, optional
        The source-to-isocentre distance (SOD); :data:`SHORTEST_SOURCE_OBJECT_MM` if None
        or shorter than that (no C-arm has it: a tag in the wrong unit).
    limit : float, optional
        The most ``depth_slope`` allowed (``max_depth_slope``); None: nothing is refused.

    Returns
    -------
    dict
        ``depth_slope`` (the sine of the plane's tilt by the perspective; above 1 no
        plane gives it; None, like the tilt and the depth ratio, when the horizon crosses
        the field) and its ``depth_slope_limit``, ``tilt_from_perspective_deg``,
        ``depth_ratio_across_field`` (the largest over the smallest depth, i.e.
        magnification, at ``field_xy``; None when the horizon crosses the field),
        ``plane_distance_mm`` (source to the field's centre, by the answer's
        magnification), ``source_object_mm`` and ``source_object_from`` ("fluoroscopy"
        or "shortest assumed").
    """
    h = np.asarray(h, float)
    given = source_object_mm is not None and np.isfinite(source_object_mm) and source_object_mm > 0
    # A distance under the shortest a C-arm has (an SOD tag written in cm: 72 for 720 mm)
    # would shrink every slope with it and pass a mirrored answer 30 mm off: the shortest
    # is taken instead, as without a tag.
    given = given and source_object_mm >= SHORTEST_SOURCE_OBJECT_MM
    sod = float(source_object_mm) if given else SHORTEST_SOURCE_OBJECT_MM
    ex, ey = (float(v) for v in scale_xy)
    # The larger local scale in isocentre units is the magnification along the plane's
    # line parallel to the detector: SOD over the plane's distance.
    magnification = float(np.linalg.svd(_jacobian(h, centre_xy) / [ex, ey])[1][0])
    distance = sod / magnification
    w_c = float(h[2] @ [centre_xy[0], centre_xy[1], 1.0])
    w_field = np.c_[np.asarray(field_xy, float), np.ones(len(field_xy))] @ h[2]
    same_side = bool(np.all(w_field * w_c > 0))  # the horizon does not cross the field
    per_mm = np.hypot(h[2, 0] / (ex * px_mm), h[2, 1] / (ey * px_mm)) / abs(w_c)
    slope = float(distance * per_mm) if same_side else None
    depth = np.abs(w_field)
    return {
        "depth_slope": slope,
        "depth_slope_limit": limit,
        "tilt_from_perspective_deg": (
            float(np.degrees(np.arcsin(min(slope, 1.0)))) if same_side else None
        ),
        "depth_ratio_across_field": float(depth.max() / depth.min()) if same_side else None,
        "plane_distance_mm": float(distance),
        "source_object_mm": sod,
        "source_object_from": "fluoroscopy" if given else "shortest assumed",
    }


def perspective_reason(figures: dict | None) -> str | None:
    """Why ``figures`` (:func:`perspective_figures`) refuse the answer, or None."""
    if not figures or figures["depth_slope_limit"] is None:
        return None
    if figures["depth_slope"] is None:
        return (
            "the answer puts its horizon across the ultrasound field (points map to "
            "infinity): no X-ray source gives a plane this perspective"
        )
    if not figures["depth_slope"] > figures["depth_slope_limit"]:
        return None
    varies = f"varies {figures['depth_ratio_across_field']:.3f}x"
    return (
        f"no X-ray source gives a plane this perspective: its magnification {varies} "
        f"across the ultrasound field, a depth slope of {figures['depth_slope']:.2f} at "
        f"{figures['plane_distance_mm']:.0f} mm from the source (> max_depth_slope "
        f"{figures['depth_slope_limit']:g}; a plane seen edge-on has 1): a wrong, often "
        "mirrored, projective fit"
    )


def _jacobian(h: np.ndarray, xy) -> np.ndarray:
    """The 2 × 2 derivative of the homography ``h`` at the moving point ``xy``."""
    u = h @ [xy[0], xy[1], 1.0]
    mapped = u[:2] / u[2]
    return (h[:2, :2] - np.outer(mapped, h[2, :2])) / u[2]

"""The automatic start from the probe's silhouette, where the beads give no accepted answer.

:func:`registration.silhouette.detect_silhouette` finds the transducer face in the
fluoroscopy; its two placements (one per handedness) each go through the ordinary start
route (``register_images(initial=...)``, every check included). One is accepted only if
it verifies and clearly beats the other: the other ends at the same answer, or its refined
cost is worse by more than the ambiguity gate (``search_min_margin``). Otherwise the beads'
outcome stands as it was. See docs/registration-method.md, "The probe's silhouette".
"""

from __future__ import annotations

import numpy as np

from hybridfuse.registration import RegistrationOptions
from hybridfuse.registration.errors import (
    IllPosedGeometryError,
    RegistrationError,
    UnverifiedResultError,
)
from hybridfuse.registration.silhouette import Face, detect_silhouette, placements

from ._image import Image

__all__ = ["probe_face", "register_or_silhouette"]

#: Two placements ending within this (median over the region, mm) reached one answer.
SAME_ANSWER_MM = 2.0


def probe_face(moving: Image) -> Face | None:
    """The transducer face from the ultrasound calibration and imaged area, or None."""
    area, spacing = moving.imaged_area, moving.pixel_spacing_mm
    if area is None or spacing is None:
        return None
    row_mm, col_mm = spacing
    x0, y0, x1, _ = area.bounds_xy
    if area.apex_xy is None or area.radius_px is None or area.angles_deg is None:
        return Face((x1 - x0 + 1) * col_mm, None, ((x0 + x1) / 2, float(y0)), spacing)
    r = area.radius_px[0]  # row pixels; columns scaled by the aspect
    a0, a1 = np.radians(area.angles_deg)
    mid = (a0 + a1) / 2
    centre = (
        area.apex_xy[0] + r * np.sin(mid) * row_mm / col_mm,
        area.apex_xy[1] + r * np.cos(mid),
    )
    return Face(2 * r * row_mm * np.sin((a1 - a0) / 2), r * row_mm, centre, spacing)


def _dense_bright(f: np.ndarray, mask, opts: RegistrationOptions) -> bool:
    """Whether dense matter shows bright: the quantum noise where it says so clearly.

    A wrong polarity turns the probe's band into air beside it, so the noise decides
    whenever it is clear, either way; otherwise the option ``fluoro_dense`` does.
    """
    from hybridfuse.registration.polarity import DENSE_BRIGHT_MIN_LOG_RATIO, noise_polarity

    ratio = noise_polarity(f, mask)
    if ratio is not None and abs(ratio) >= DENSE_BRIGHT_MIN_LOG_RATIO:
        return ratio > 0
    return opts.fluoro_dense == "bright"


def _attempt(run, **kw):
    """(result or None, exception or None) of one registration."""
    try:
        return run(**kw), None
    except UnverifiedResultError as exc:
        return exc.result, exc
    except RegistrationError as exc:
        return None, exc


def register_or_silhouette(run, fixed: Image, moving: Image, options, **kw):
    """``run(fixed, moving, options=..., **kw)`` (the beads' route); the silhouette's if that fails.

    ``run`` is :func:`fusion.coregister.register_images`; it is called with the silhouette
    turned off, so that it does not come back here.
    """
    opts = options or RegistrationOptions()
    off = opts.with_values(probe_silhouette="off")
    first, error = _attempt(run, fixed=fixed, moving=moving, options=off, **kw)
    if first is not None and first.quality.verdict == "accepted":
        return _restore(first, opts)
    if isinstance(error, IllPosedGeometryError):
        raise error  # an edge-on plane stays refused, whatever the silhouette says
    # Where the beads' placements were judged and none was singled out, the images hold
    # rival answers: a silhouette placement must not pick one of them unchecked.
    judged = first is not None and "placements" in (first.quality.verification or {})
    if not judged and "single out a placement" not in str(error or ""):
        found = _silhouette(run, fixed, moving, opts, off, kw)
    else:
        found = None
    if found is not None:
        return found
    if error is not None:
        raise error
    return _restore(first, opts)


def _restore(result, opts: RegistrationOptions):
    result.options = opts.to_dict()
    return result


def _silhouette(run, fixed: Image, moving: Image, opts, off, kw):
    """The accepted result of a silhouette placement that beats the other, or None."""
    iso = fixed.xray.isocenter_spacing_mm if fixed.xray else None
    face = probe_face(moving)
    if iso is None or face is None:
        return None
    f = fixed.gray(kw.get("fixed_frame", 0))
    iso_mm = float(np.mean(iso))
    dense = _dense_bright(f, fixed.mask, opts)
    sil = detect_silhouette(f, fixed.mask, iso_mm, face, dense_bright=dense)
    if sil is None:
        return None
    tries = [
        _attempt(run, fixed=fixed, moving=moving, options=off, initial=h, **kw)[0]
        for h in placements(sil, face, iso_mm)
    ]
    best = _winner(tries, moving, iso_mm, opts.grid.search_min_margin)
    if best is None:
        return None
    which, margin = best
    result = tries[which]
    record = {
        **sil.to_dict(),
        "placement": ("proper", "mirrored")[which],
        "other_placement_margin": margin,
    }
    verification = {**(result.quality.verification or {}), "probe_silhouette": record}
    result.quality = result.quality.replace(verification=verification)
    return _restore(result, opts)


def _winner(tries: list, moving: Image, iso_mm: float, gate: float):
    """(index, margin) of the accepted placement that beats the other, or None.

    ``margin`` is the other's relative cost excess (None: it ended at the same answer).
    An other placement that gave no result is not ruled out: None.
    """
    ok = [i for i, r in enumerate(tries) if r is not None and r.quality.verdict == "accepted"]
    if not ok:
        return None
    i = min(ok, key=lambda k: tries[k].metric_value)
    other = tries[1 - i]
    if other is None:
        return None
    if _apart_mm(tries[i], other, moving, iso_mm) < SAME_ANSWER_MM:
        return i, None
    if len(ok) == 2:
        return None  # two different accepted answers: the handedness is not decided
    a, b = tries[i].metric_value, other.metric_value
    margin = (b - a) / max(abs(a), 1e-12)
    return (i, float(margin)) if margin > gate else None


def _apart_mm(r1, r2, moving: Image, iso_mm: float) -> float:
    """Median distance (mm at the isocentre) of the two maps over the ultrasound region."""
    mask = moving.mask if moving.mask is not None else np.ones(moving.shape[:2], bool)
    ys, xs = np.nonzero(mask)
    gx, gy = np.meshgrid(np.linspace(xs.min(), xs.max(), 8), np.linspace(ys.min(), ys.max(), 8))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    d = r1.transform.apply(grid) - r2.transform.apply(grid)
    return float(np.median(np.linalg.norm(d, axis=1)) * iso_mm)

"""The automatic start from the probe's silhouette, where the beads give no accepted answer.

:func:`registration.silhouette.detect_silhouette` finds the transducer face inside the
fluoroscopy's exposed field (:func:`registration.exposed_field.exposed_field`); its two
placements (one per handedness) each go through the ordinary start route
(``register_images(initial=...)``, every check included). They and the beads' own refused
answer are judged as the beads' placements are (:mod:`registration.hypotheses`): costed
at one standard, one accepted, every other ending in its basin or worse by more than the
ambiguity gate. Otherwise the beads' outcome stands, with the silhouette's reason added.
See docs/registration-method.md, "The probe's silhouette".
"""

from __future__ import annotations

import numpy as np

from hybridfuse.registration import RegistrationOptions
from hybridfuse.registration.errors import (
    IllPosedGeometryError,
    RegistrationError,
    UnverifiedResultError,
)
from hybridfuse.registration.exposed_field import exposed_field
from hybridfuse.registration.guards import scale_range
from hybridfuse.registration.hypotheses import Candidate, _Bench, _verdict
from hybridfuse.registration.silhouette import Face, detect_silhouette, placements

from ._image import Image

__all__ = ["find_silhouette", "judge", "probe_face", "register_or_silhouette"]

#: Items a silhouette placement counts (the face's two ends), as the beads' placements do.
SILHOUETTE_ITEMS = 2


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
    # Where the beads' placements were judged and none was singled out, or a few-item
    # match lost to its rivals, the images hold rival answers: a silhouette placement
    # must not pick one of them unchecked (its judgement sees only the beads' answer).
    check = {} if first is None else first.quality.verification or {}
    beaten = (check.get("judged_match") or {}).get("singled_out") is False
    judged = "placements" in check or beaten
    found = why = None
    if not judged and "single out a placement" not in str(error or ""):
        found, why = _silhouette(run, fixed, moving, opts, first, kw)
    if found is not None:
        return found
    note = None if why is None else f"the probe's silhouette was found, but {why}"
    if error is not None:
        if note is not None:  # the beads' refusal, and why the silhouette did not answer
            error.args = (f"{error}; {note}",)
        raise error
    if note is not None:
        first.quality = first.quality.replace(reasons=[*first.quality.reasons, note])
    return _restore(first, opts)


def _restore(result, opts: RegistrationOptions):
    result.options = opts.to_dict()
    return result


def find_silhouette(fixed: Image, moving: Image, opts: RegistrationOptions, frame: int = 0):
    """(silhouette, face, iso mm) of the probe in the fluoroscopy's exposed field, or None.

    Only inside the field read from the shutter attributes and the pixels
    (:func:`registration.exposed_field.exposed_field`); none where no field is known.
    """
    iso = fixed.xray.isocenter_spacing_mm if fixed.xray else None
    face = probe_face(moving)
    if iso is None or face is None:
        return None
    f = fixed.gray(frame)
    field = exposed_field(f, fixed.mask)
    if field is None:
        return None  # no field known: its edge against the body reads as a face
    iso_mm = float(np.mean(iso))
    dense = _dense_bright(f, field, opts)
    sil = detect_silhouette(f, field, iso_mm, face, dense_bright=dense)
    return None if sil is None else (sil, face, iso_mm)


def _silhouette(run, fixed: Image, moving: Image, opts, first, kw):
    """(result, None) of the silhouette placement the images single out, else (None, why).

    ``why`` is None where no silhouette was found.

    Both handedness placements run through the start route; they and the beads' own
    answer (``first``, refused, if any) are judged as the beads' placements are
    (:mod:`registration.hypotheses`): at one cost standard, one accepted, every other
    in its basin or worse by more than the ambiguity gate.
    """
    from .coregister import expected_scale, expected_scale_xy

    found = find_silhouette(fixed, moving, opts, kw.get("fixed_frame", 0))
    expected = scale_range(expected_scale_xy(fixed, moving))
    if found is None or expected is None or opts.metric is None:
        return None, None
    sil, face, iso_mm = found
    frames = (fixed.gray(kw.get("fixed_frame", 0)), moving.gray(kw.get("moving_frame", 0)))
    bench = _Bench(
        *frames, (fixed.mask, moving.mask), opts, expected, expected_scale(fixed, moving)[1]
    )
    trial = opts.with_values(probe_silhouette="off", accept_unverified=True)
    cands = [Candidate(h, sil.contrast, SILHOUETTE_ITEMS) for h in placements(sil, face, iso_mm)]
    for cand in cands:
        cand.result, err = _attempt(
            run, fixed=fixed, moving=moving, options=trial, initial=cand.matrix, **kw
        )
        if cand.result is None:
            cand.error = str(err)[:200]
    rivals = [] if first is None else [Candidate(first.transform.matrix, 0.0, 0, result=first)]
    winner, why = judge(cands, rivals, bench, opts)
    return (None, why) if winner is None else (_record(winner, cands, rivals, sil, opts), None)


def judge(cands: list[Candidate], rivals: list[Candidate], bench, opts: RegistrationOptions):
    """(winner, None): the silhouette candidate the images single out; else (None, why).

    Every run that ended is costed at ``bench``'s standard (:class:`hypotheses._Bench`);
    :func:`hypotheses._verdict` then asks for one accepted answer with every other in its
    basin or worse by more than the ambiguity gate. A rival (the beads' answer) can refuse
    the silhouette's answer but is never taken here.
    """
    for cand in cands + rivals:
        if cand.result is not None:
            cand.end_cost = bench.standard_cost(cand.result.transform.matrix)
    winner, why = _verdict(cands + rivals, [], bench, opts)
    if winner is None or why is not None:
        return None, why or "no placement ended"
    if not any(winner is c for c in cands):
        return None, "the beads' answer is the one the images single out"
    return winner, None


def _record(winner, cands, rivals, sil, opts: RegistrationOptions):
    """The winner's result, the silhouette and every judged placement recorded."""
    names = ["proper", "mirrored"] + ["beads"] * len(rivals)
    judged = [
        {"placement": n, **c.to_dict(winner)} for n, c in zip(names, cands + rivals, strict=True)
    ]
    record = {
        **sil.to_dict(),
        "placement": names[next(k for k, c in enumerate(cands) if c is winner)],
        "judged": judged,
    }
    result = winner.result
    verification = {**(result.quality.verification or {}), "probe_silhouette": record}
    result.quality = result.quality.replace(verification=verification)
    return _restore(result, opts)

"""What a registration result is judged by, and when it is refused.

:class:`Quality` is the typed record of those figures; its :meth:`Quality.to_dict` is the
``quality`` object of ``transform.json``. The guards refuse a result whose plane is seen
edge-on or whose magnification contradicts the calibration, and keep the landmark fit when
intensity refinement moved the landmarks more than their fit allows: a wrong answer that
looks confident is worse than none.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .errors import IllPosedGeometryError, UnverifiedResultError
from .landmarks import is_automatic
from .options import RegistrationOptions
from .plausible import perspective_figures, perspective_reason
from .preprocess import mask_extent
from .transforms import Transform

__all__ = [
    "MIN_CLICK_SPAN",
    "QUALITY_KEYS",
    "Quality",
    "raise_if_refused",
    "refusal_hint",
    "refusal_reasons",
    "with_perspective",
]


@dataclass(frozen=True, kw_only=True)
class Quality:
    """Figures to judge a registration by; ``None`` fields are absent from the record.

    The fields are declared in the order ``transform.json`` writes them.

    ``local_scale_min``/``max``: local scales (fluoroscopy px per ultrasound px) at the
    ultrasound field's corners. With an expected scale: ``expected_scale`` (geometric mean
    of ``expected_scale_range``, given for anisotropic pixels), ``scale_ratio_min`` and
    ``scale_ratio_to_calibration``; without: ``anisotropy``. ``edge_on``: the edge-on
    test's verdict. With landmarks: ``landmark_fre_px``, ``landmark_loo_tre_px`` (median
    leave-one-out, present but ``None`` when none could be computed),
    ``landmarks_rejected``, coverage of the field, ``clicks_on_beads`` (fluoroscopy clicks
    moved to a detected bead's centre, :mod:`registration.clicks`), and with an intensity metric
    ``landmark_shift_by_intensity_px`` and ``intensity_refinement`` (accepted or why
    rejected). ``model_selection`` and ``search`` summarise those steps when they ran;
    ``crop_fixed_px_x0_y0_x1_y1`` is the fluoroscopy crop computed on.

    ``verdict`` (``accepted``/``refused``) with its ``reasons`` (one short sentence each),
    ``predicted_tre_mm`` (a calibrated 90th-percentile bound, ``None`` where nothing
    estimates it), ``accepted_unverified`` (true only on a refused result written on
    request) and ``verification`` (the restarts' figures, :mod:`registration.verify`;
    ``perspective``: :mod:`registration.plausible`). ``notes``: what the caller did not
    use, one sentence each (a start given with landmarks).
    """

    verdict: str = "accepted"
    reasons: list[str] = dataclasses.field(default_factory=list)
    predicted_tre_mm: float | None = None
    accepted_unverified: bool | None = None
    local_scale_min: float
    local_scale_max: float
    expected_scale: float | None = None
    expected_scale_range: list[float] | None = None
    scale_ratio_min: float | None = None
    anisotropy: float | None = None
    edge_on: bool
    landmark_fre_px: float | None = None
    landmark_loo_tre_px: float | None = None
    landmarks_rejected: list | None = None
    landmark_hull_fraction_of_field: float | None = None
    landmark_farthest_field_px: float | None = None
    clicks_on_beads: dict | None = None
    model_used: str | None = None
    scale_ratio_to_calibration: float | None = None
    model_selection: dict | None = None
    search: dict | None = None
    verification: dict | None = None
    landmark_shift_by_intensity_px: float | None = None
    intensity_refinement: str | None = None
    crop_fixed_px_x0_y0_x1_y1: list[int] | None = None
    notes: list[str] | None = None

    def to_dict(self) -> dict:
        """The ``quality`` object of ``transform.json``, keys in :data:`QUALITY_KEYS` order."""
        # The leave-one-out median is reported, maybe as None, whenever the FRE is.
        kept_as_none = {"predicted_tre_mm"}
        if self.landmark_fre_px is not None:
            kept_as_none.add("landmark_loo_tre_px")
        return {
            key: getattr(self, key)
            for key in QUALITY_KEYS
            if getattr(self, key) is not None or key in kept_as_none
        }

    def replace(self, **changes) -> Quality:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


#: Least area (fraction of the ultrasound field) the convex hull of clicked landmarks must
#: cover: five clicks within 1 % of the field were accepted at a predicted 18.7 mm; the
#: family's tuning seeds' accepted clicks cover 10 % or more
#: (docs/registration-method.md, *Clicks in a corner*).
MIN_CLICK_SPAN = 0.02

#: Keys of the ``quality`` record, in the order ``transform.json`` writes them.
QUALITY_KEYS = tuple(f.name for f in dataclasses.fields(Quality))


def measure(
    tr: Transform, landmarks, lm_fit, mmask, scale_range, opts: RegistrationOptions
) -> Quality:
    """Scales, the edge-on verdict and landmark figures of ``tr`` (``opts``: the options)."""
    x0, x1, y0, y1 = mask_extent(mmask)[:4]
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
    scales = tr.local_scales(corners)
    out = {"local_scale_min": float(scales.min()), "local_scale_max": float(scales.max())}
    ratio = opts.guards.edge_on_ratio
    if scale_range:
        e_lo, e_hi = scale_range
        out["expected_scale"] = float(np.sqrt(e_lo * e_hi))
        if e_lo < e_hi:
            out["expected_scale_range"] = [e_lo, e_hi]  # anisotropic ultrasound pixels
        out["scale_ratio_min"] = float(scales.min() / e_lo)
        out["edge_on"] = bool(scales.min() / e_lo < ratio)
    else:
        out["anisotropy"] = float(scales[:, 1].min() / scales[:, 0].max())
        out["edge_on"] = bool(out["anisotropy"] < ratio)
    if lm_fit is not None and landmarks is not None and len(landmarks.moving_xy):
        resid = np.linalg.norm(tr.apply(landmarks.moving_xy) - landmarks.fixed_xy, axis=1)
        out["landmark_fre_px"] = float(np.sqrt(np.mean(resid**2)))
        loo = lm_fit.loo_tre_px[np.isfinite(lm_fit.loo_tre_px)]
        out["landmark_loo_tre_px"] = float(np.median(loo)) if len(loo) else None
        out["landmarks_rejected"] = lm_fit.rejected
        ys, xs = np.nonzero(mmask)
        out.update(_landmark_coverage(landmarks.moving_xy, xs, ys))
    return Quality(**out)


def _landmark_coverage(moving_xy, xs, ys) -> dict:
    """How much of the ultrasound field the landmarks span, and how far they leave it.

    A fit is an interpolation inside the landmarks' hull and an extrapolation outside
    it, where errors grow with the distance: figures for a reader to weigh the
    landmark errors (FRE, leave-one-out) against, not a verdict.
    """
    from scipy.spatial import ConvexHull, QhullError, cKDTree

    pts = np.asarray(moving_xy, float)
    area = float(len(xs))
    try:
        hull = ConvexHull(pts).volume if len(pts) >= 3 else 0.0  # 2D: volume is the area
    except QhullError:
        hull = 0.0  # collinear landmarks span no area
    step = max(1, len(xs) // 4000)
    field = np.column_stack([xs[::step], ys[::step]]).astype(float)
    farthest = float(cKDTree(pts).query(field)[0].max())
    return {
        "landmark_hull_fraction_of_field": min(1.0, hull / area),
        "landmark_farthest_field_px": farthest,
    }


def landmark_shift_guard(final: Transform, landmarks, lm_fit, opts: RegistrationOptions):
    """How far intensity refinement moved the landmarks, and whether that is accepted.

    The intensity term may only refine what the landmarks say: a move beyond
    ``landmark_sigma_px`` or twice the fit's FRE rejects it. Returns the transform to
    keep (the landmark fit when rejected), the largest shift (px) and the verdict text.
    """
    moved = np.linalg.norm(
        final.apply(landmarks.moving_xy) - lm_fit.transform.apply(landmarks.moving_xy), axis=1
    )
    allowed = max(opts.landmarks.landmark_sigma_px, 2.0 * lm_fit.fre_px)
    shift = float(moved.max()) if len(moved) else 0.0
    if len(moved) and moved.max() > allowed:
        verdict = (
            f"rejected: it moved landmarks by {moved.max():.2f} px (> {allowed:.2f} px "
            "allowed by their fit); the landmark-only transform is kept"
        )
        return lm_fit.transform, shift, verdict
    return final, shift, "accepted"


def with_perspective(result, moving_mask, geometry, opts: RegistrationOptions):
    """``result`` with ``verification.perspective``, refused when no plane gives it.

    ``moving_mask``: the ultrasound field (its box's corners and its centre are used).
    ``geometry``: ``register``'s ``expected_scale``, ``fixed_spacing_mm`` and
    ``source_object_mm``. Nothing is added without the calibration or the isocentre pixel
    size: the plane's distance from the source is then unknown.
    """
    expected_scale, px_mm, sod_mm = geometry
    scale_xy = scale_axes(expected_scale)
    if scale_xy is None or px_mm is None or not np.isfinite(px_mm) or px_mm <= 0:
        return result
    x0, x1, y0, y1, cx, cy = mask_extent(np.asarray(moving_mask, bool))[:6]
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
    limit = opts.guards.max_depth_slope
    h = result.transform.matrix
    figures = perspective_figures(h, (cx, cy), corners, scale_xy, float(px_mm), sod_mm, limit)
    quality = result.quality
    quality = quality.replace(verification={**(quality.verification or {}), "perspective": figures})
    reason = perspective_reason(figures)
    if reason:
        unverified = True if opts.guards.accept_unverified else None
        quality = quality.replace(
            verdict="refused", reasons=[*quality.reasons, reason], accepted_unverified=unverified
        )
    result.quality = quality
    return result


def scale_axes(expected_scale) -> tuple[float, float] | None:
    """(along moving x, along moving y) expected fixed px per moving px, or None."""
    if scale_range(expected_scale) is None:
        return None
    e = np.atleast_1d(np.asarray(expected_scale, dtype=float)).ravel()
    return (float(e[0]), float(e[-1]))


def refusal_reasons(
    quality: Quality,
    opts: RegistrationOptions,
    scale_prior,
    with_metric: bool,
    *,
    clicked: int = 0,
) -> list[str]:
    """Why ``quality`` refuses its result (an empty list: it is accepted).

    The plane seen edge-on, the scale off the calibration, a predicted TRE over
    ``max_predicted_tre_mm``, three or more clicked landmarks (``clicked``: how many)
    spanning less than
    :data:`MIN_CLICK_SPAN` of the field, an ambiguous search,
    restarts that do not come back to the answer, clicks too few to check each other.

    ``scale_prior = (expected_min, expected_max, tolerance)`` applies with a metric only.
    """
    reasons = _geometry_reasons(quality, opts, scale_prior, with_metric)
    reasons += _evidence_reasons(quality, opts, clicked)
    search = quality.search or {}
    if search.get("ambiguous"):
        reasons.append(search["ambiguous"])
    check = quality.verification or {}
    if check.get("unverified"):
        reasons.append(check["unverified"])
    few_clicks = (quality.model_selection or {}).get("unchecked_clicks")
    if few_clicks:  # registration.start.few_clicks_reason
        reasons.append(few_clicks)
    return reasons


def _geometry_reasons(quality: Quality, opts, scale_prior, with_metric: bool) -> list[str]:
    """The plane seen edge-on; a scale off the calibration (with a metric only)."""
    reasons = []
    if quality.edge_on:
        if quality.scale_ratio_min is not None:
            measured = f"local scale ratio {quality.scale_ratio_min:.2f}"
        else:  # no expected scale: the transform's own anisotropy was tested
            measured = f"anisotropy {quality.anisotropy:.2f}"
        reasons.append(
            f"the transform collapses the ultrasound plane ({measured} < "
            f"{opts.guards.edge_on_ratio}): the plane is seen nearly edge-on by the X-ray "
            "beam, so a 2D-2D registration is ill-posed"
        )
    ratio = quality.scale_ratio_to_calibration
    if scale_prior is not None and with_metric and abs(ratio - 1.0) > scale_prior[2]:
        reasons.append(
            f"the match's scale is {100 * (ratio - 1):+.1f} % off what the calibration "
            f"and magnification predict (±{100 * scale_prior[2]:.0f} % allowed): a wrong "
            "match"
        )
    return reasons


def _evidence_reasons(quality: Quality, opts, clicked: int) -> list[str]:
    """A predicted TRE over the ceiling; three or more clicks spanning too little."""
    reasons = []
    ceiling = opts.guards.max_predicted_tre_mm
    predicted = quality.predicted_tre_mm
    if ceiling is not None and predicted is not None and predicted > ceiling:
        # Without landmarks (the images from a start) the clustered-clicks reading misleads.
        why = (
            "landmarks clustered in a small part of the field, or noisy"
            if quality.landmark_fre_px is not None
            else "the images alone leave it loose"
        )
        reasons.append(
            f"the predicted TRE is {predicted:.1f} mm (> max_predicted_tre_mm {ceiling:g}): "
            f"the evidence does not pin the answer down ({why})"
        )
    span = quality.landmark_hull_fraction_of_field
    # Two points span no area whatever their distance: their extrapolation is the predicted
    # TRE's to judge (the ceiling above) and the exact fit's refusal says what would help.
    if clicked >= 3 and span is not None and span < MIN_CLICK_SPAN:
        reasons.append(
            f"the landmarks span {100 * span:.1f} % of the ultrasound field (< "
            f"{100 * MIN_CLICK_SPAN:g} %): the fit extrapolates from them to the rest, where "
            "a fraction of a pixel of click noise grows to millimetres; click points spread "
            "over the field"
        )
    return reasons


def raise_if_refused(result, opts: RegistrationOptions) -> None:
    """Raise unless ``result.quality`` is accepted or ``accept_unverified`` is set.

    Raises
    ------
    IllPosedGeometryError
        The plane is seen edge-on (bad geometry, exit 2), with the other reasons.
    UnverifiedResultError
        Any other refusal; it carries ``result``.
    """
    quality = result.quality
    if quality.verdict == "accepted":
        return
    text = "refused: " + "; ".join(quality.reasons)
    if quality.edge_on:  # a collapsed map is never written, accepted or not
        raise IllPosedGeometryError(text)
    if opts.guards.accept_unverified:
        return
    raise UnverifiedResultError(text + "; " + refusal_hint(result), result)


def refusal_hint(result) -> str:
    """What the user can give to get past a refusal, by the route the answer took.

    Clicked landmarks: more of them ("give landmarks" would read as if none had been
    given). Beads matched automatically (``--init auto``): clicks or a start, since there
    was neither. Beads matched near a given start, or the images alone: clicks or a
    closer start.
    """
    fit = getattr(result, "landmark_fit", None)
    if fit is not None and not is_automatic(fit.names):
        return "give more landmark pairs"
    near_start = "structures_near_start" in (result.quality.verification or {})
    if fit is not None and not near_start:
        return "give landmarks (--landmarks) or a starting transform (--init-transform)"
    return "give landmarks or a closer start"


def centre_scale(h: np.ndarray, center) -> float:
    """Magnification of ``h`` at the moving point ``center``: the larger local scale.

    A plane tilted against the detector is foreshortened along one direction (the
    smaller singular value, which the edge-on test watches); along the other it keeps
    the magnification of its depth, which is what the calibration predicts.
    """
    return float(Transform(h).local_scales(np.array([center]))[0].max())


def scale_range(expected_scale) -> tuple[float, float] | None:
    """(smaller, larger) expected fixed px per moving px, or None when unknown."""
    if expected_scale is None:
        return None
    e = np.atleast_1d(np.asarray(expected_scale, dtype=float)).ravel()
    if e.size not in (1, 2) or not np.all(np.isfinite(e)) or not np.all(e > 0):
        return None
    return float(e.min()), float(e.max())


def scale_ratio(magnification: float, expected: tuple[float, float]) -> float:
    """Magnification against the calibration's: 1 inside its range, else past the edge.

    With isotropic ultrasound pixels the range is one value and this is the plain
    ratio; with anisotropic ones a plane parallel to the detector has the larger
    expected scale as its magnification, a tilted one anything down to the smaller.
    """
    e_lo, e_hi = expected
    if magnification > e_hi:
        return magnification / e_hi
    if magnification < e_lo:
        return magnification / e_lo
    return 1.0 if e_lo < e_hi else magnification / e_hi

"""Settings of :func:`registration.register`, defined once and grouped by what they configure.

Every option is a field declared with :func:`hybridfuse._options.option`: its flat name is
the command-line flag, the TOML key and the key in ``transform.json``'s ``options``; its
help is the ``--help`` text. What the images are compared by (model, metric and its
parameters, preprocessing) sits at the top, because every registration sets it; the groups
say how the optimum is found (:class:`PyramidOptions`, :class:`SearchOptions`), how
landmarks weigh in (:class:`LandmarkOptions`) and when a result is refused
(:class:`GuardOptions`). The evidence behind each default is in
``docs/registration-method.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hybridfuse._options import build, flat, group, option, specs

from .preprocess import FLUORO_DENSE

__all__ = [
    "GuardOptions",
    "LandmarkOptions",
    "PyramidOptions",
    "RegistrationOptions",
    "SearchOptions",
]

_MODELS = ("rigid", "similarity", "affine", "projective")

#: Most candidates the global search may score (the default grid scores 2,160; a wide
#: ``--init moments`` search a few ten thousand). Finer steps ran for hours or out of memory.
MAX_SEARCH_GRID = 1_000_000


@dataclass(frozen=True)
class PyramidOptions:
    """The coarse-to-fine optimisation: levels, iteration caps and trust region."""

    levels: tuple[int, ...] = option(
        (16, 8, 4, 2, 1),
        "Pyramid smoothing factors, coarse to fine (sigma = factor / 2 fluoroscopy pixels); "
        "coarse levels widen the capture range, fine ones give the accuracy.",
        minimum=1,
        advanced=True,
    )
    max_iterations: tuple[int, ...] = option(
        (60, 60, 30, 25, 20),
        "L-BFGS-B iteration cap of each pyramid level (one per level); it bounds the time "
        "a level may take.",
        minimum=1,
        advanced=True,
    )
    coarse_model: str = option(
        "similarity",
        "Transform model of the coarse levels; fewer degrees of freedom give a wider "
        "capture range before the full model is fitted.",
        choices=_MODELS,
        advanced=True,
    )
    fine_levels: int = option(
        2,
        "How many of the finest levels optimise the full model (the others use coarse_model).",
        minimum=0,
        advanced=True,
    )
    max_samples: int = option(
        12000,
        "Most ultrasound samples per level (the sample stride grows to respect it); it "
        "bounds the time of the fine levels.",
        minimum=100,  # fewer leave coarse levels below the 16 samples a metric needs
        advanced=True,
    )
    cost_tolerance: float = option(
        1e-5,
        "L-BFGS-B stops when an iteration lowers the cost by less than this fraction (its "
        "ftol); below the metrics' interpolation noise more iterations change nothing.",
        minimum=0.0,
        advanced=True,
    )
    line_search_steps: int = option(
        5,
        "Most cost evaluations in one L-BFGS-B line search (its maxls); near the noise "
        "floor longer searches only chase noise.",
        minimum=1,
        advanced=True,
    )
    max_linear_change: float = option(
        0.15,
        "Trust region of a level: how much each linear-part entry (scale, shear) may change, "
        "relative; it stops a metric from shrinking the ultrasound onto one bright structure.",
        minimum=0.0,
        maximum=0.99,
        advanced=True,
    )
    max_perspective_change: float = option(
        0.05,
        "Trust region of a projective level: how much each perspective term may change "
        "(distortion across half the ultrasound field); a real plane stays near 1 %.",
        minimum=0.0,
        advanced=True,
    )
    finest_pixel_mm: float | None = option(
        0.27,
        "Smoothing factors, feature scales and shadow depths count fluoroscopy pixels no "
        "finer than this (mm at the isocentre): on a finer detector they are scaled up, so "
        "they cover the same millimetres as on the detectors they were chosen on; none: "
        "the detector's own pixels.",
        minimum=0.0,
        advanced=True,
    )
    decimate_coarse_levels: bool = option(
        True,
        "Keep the fluoroscopy of levels whose factor (in detector pixels, after "
        "finest_pixel_mm) is 8 or more on a grid factor/4 times coarser; it makes setting up "
        "those levels cheap without moving the result.",
        advanced=True,
    )


@dataclass(frozen=True)
class SearchOptions:
    """The global search: a similarity grid around the start, scored before the pyramid."""

    search: bool | None = option(
        None,
        "Search a grid of positions, rotations and scales around the start before refining "
        "(auto: on without landmarks, off with them); it finds the match from a start that "
        "is centimetres off.",
    )
    search_structures: bool = option(
        True,
        "From a start (--init-transform) with the search on: match the beads and needle both "
        "images show among the placements within the search range of the start and use them "
        "as landmarks (three or more agreeing items); the beads left over check the answer.",
        advanced=True,
    )
    search_level: int = option(
        16,
        "Pyramid factor at which the grid candidates are scored; coarse smoothing makes "
        "each candidate's basin as wide as the grid step.",
        minimum=1,
        advanced=True,
    )
    search_translation_mm: float = option(
        20.0,
        "Half-width of the searched shifts (mm at the isocentre); how far from the start "
        "the match may lie.",
        minimum=0.0,
        advanced=True,
    )
    search_step_mm: float = option(
        3.5,
        "Step of the searched shifts (mm); matched to the basin of the coarsest level.",
        minimum=0.01,
        advanced=True,
    )
    search_rotation_deg: float = option(
        20.0,
        "Half-width of the searched rotations (degrees); how far the start's rotation may be off.",
        minimum=0.0,
        maximum=180.0,
        advanced=True,
    )
    search_rotation_step_deg: float = option(
        10.0,
        "Step of the searched rotations (degrees); matched to the basin of the coarsest level.",
        minimum=0.01,
        advanced=True,
    )
    search_scales: tuple[float, ...] = option(
        (0.9, 1.0, 1.1),
        "Searched scales relative to the start's, when no calibrated scale is known.",
        minimum=0.01,
        advanced=True,
    )
    search_scales_calibrated: tuple[float, ...] = option(
        (0.96, 1.04),
        "Searched scales relative to the calibrated one (clipped to scale_tolerance); two "
        "scales leave any magnification in the window close to a candidate.",
        minimum=0.01,
        advanced=True,
    )
    search_keep: int = option(
        8,
        "How many of the best grid candidates that lie apart are refined; more keep the "
        "true basin among them when the coarse scores mislead.",
        minimum=1,
        advanced=True,
    )
    search_separation_mm: float = option(
        5.0,
        "Least distance (mm) between kept candidates, so that they are other basins, not "
        "neighbours.",
        minimum=0.0,
        advanced=True,
    )
    search_finalists: int = option(
        8,
        "How many distinct optima of the first level are refined at the second level, "
        "where they compete.",
        minimum=1,
        advanced=True,
    )
    search_min_margin: float = option(
        0.12,
        "Least relative cost margin of the best match over the best optimum > 3 mm away; "
        "below it the match is ambiguous and refused (a second line of defence).",
        minimum=0.0,
        advanced=True,
    )
    auto_placements: int = option(
        4,
        "Automatic start (--init auto) where the beads match two ways or only two items "
        "agree: how many of their placements (best after a short coarse-level screen) the "
        "start route runs from with its verification; an answer is accepted only when the "
        "images single one out; 0: refuse such cases as before.",
        minimum=0,
        advanced=True,
    )


@dataclass(frozen=True)
class LandmarkOptions:
    """How landmark pairs are fitted, kept in the cost and compared between models."""

    landmark_sigma_px: float | None = option(
        None,
        "How precisely a landmark is placed (fluoroscopy pixels per coordinate; none or "
        "auto, the default: estimated from the landmark fit's residuals); the landmark "
        "term is measured in this unit and intensity refinement may not move landmarks "
        "further; a given value is also what the held-out test checks each pair against.",
        minimum=0.01,
        # Wider than any detector: beyond it a landmark says nothing, and its square
        # overflows a float near 1e154 (an internal error before this bound).
        maximum=1e4,
    )
    landmark_weight: float = option(
        1.0,
        "Weight of the landmark term against the intensity metric, where the landmark term is "
        "in the metric's cost (intensity_sigma_px none).",
        minimum=0.0,
        advanced=True,
    )
    intensity_sigma_px: float | None = option(
        3.0,
        "How far the intensity metric's own optimum lies from the truth (fluoroscopy pixels "
        "per coordinate). With landmarks, the intensity refinement runs without the landmark "
        "term and is combined with the landmark fit point by point, each weighed by the "
        "inverse of its variance, so precise clicks stay and coarse ones are pulled; none: "
        "the landmark term inside the metric's cost (landmark_weight).",
        minimum=0.01,
        maximum=1e4,  # as landmark_sigma_px: its square is taken
        advanced=True,
    )
    snap_to_beads_mm: float | None = option(
        2.0,
        "A clicked fluoroscopy point with exactly one detected bead within this distance "
        "(mm at the isocentre) moves to the bead's centre, which the image gives far more "
        "precisely than a click; clicks all off their beads the same way are refused. "
        "none: clicks are used as placed, and beads are not looked at.",
        minimum=0.01,
        maximum=50.0,
    )
    reject_threshold_px: float = option(
        6.0,
        "A landmark pair whose residual exceeds this (fluoroscopy pixels) is rejected as "
        "inconsistent with the others, so one mis-clicked pair cannot bend the fit.",
        minimum=0.0,
    )
    select_model: bool = option(
        True,
        "With landmarks and the projective model, fit affine too and keep projective only "
        "when its leave-one-out landmark error is lower; few landmarks overfit perspective.",
        advanced=True,
    )
    landmark_start_factor: int = option(
        4,
        "With landmarks, pyramid levels coarser than this factor are skipped: the landmark "
        "fit already starts within pixels.",
        minimum=1,
        advanced=True,
    )
    landmark_max_iterations: int = option(
        12,
        "With landmarks, the iteration cap of every level is at most this: from a landmark "
        "fit the intensity term only refines.",
        minimum=1,
        advanced=True,
    )


@dataclass(frozen=True)
class GuardOptions:
    """When a result is refused instead of returned."""

    edge_on_ratio: float = option(
        0.2,
        "A result whose smaller local scale falls below this fraction of the expected one "
        "is refused: the plane is seen nearly edge-on and 2D-2D registration is ill-posed.",
        minimum=0.0,
        maximum=1.0,
        advanced=True,
    )
    scale_tolerance: float | None = option(
        0.08,
        "How far (relative) the match's magnification may stray from what the calibration "
        "predicts before an intensity-only result is refused; 0.08 allows a plane about "
        "60 mm off the isocentre. 0 or none: off.",
        minimum=0.0,
        maximum=0.99,
    )

    verify_restarts: int = option(
        4,
        "Intensity-only, after the search: how many restarts from around the answer must "
        "come back to it before it is accepted (its own cost cannot tell a confident wrong "
        "optimum); 0: off.",
        minimum=0,
        advanced=True,
    )
    verify_shift_mm: float = option(
        3.0,
        "How far (mm at the isocentre) each verification restart starts from the answer.",
        minimum=0.0,
        advanced=True,
    )
    verify_rotation_deg: float = option(
        3.0,
        "How far (degrees) each verification restart is rotated from the answer.",
        minimum=0.0,
        maximum=45.0,
        advanced=True,
    )
    verify_max_spread_mm: float = option(
        1.0,
        "A verification restart that ends within this (median mm over the ultrasound field) "
        "of the answer came back, whatever its cost; one farther away at a cost within "
        "search_min_margin is the same answer up to verify_basin_mm (it widens "
        "predicted_tre_mm) and a distinct optimum beyond it, which refuses; the intensity "
        "route of few matched structures keeps this as its limit, eased to verify_basin_mm "
        "where the match is then judged among its structures' other placements "
        "(judge_few_match).",
        minimum=0.0,
        advanced=True,
    )
    verify_basin_mm: float = option(
        1.6,
        "Intensity-only: a verification restart that ends within this (median mm over the "
        "ultrasound field) of the answer, at a cost within search_min_margin of it and not "
        "more than 1 % better, is the same answer in a flat basin: it widens "
        "predicted_tre_mm instead of refusing; farther ends within the margin refuse, and "
        "clearly better ends hop. The second metric may move the answer this far too. "
        "1.6 = sqrt(2^2 - 1.2^2): such an end and the metric's own 1.2 mm bias, if "
        "independent, stay within the 2 mm a right answer must meet. At least "
        "verify_max_spread_mm (the point-optimum test).",
        minimum=0.0,
        advanced=True,
    )
    verify_max_metric_drift_mm: float = option(
        0.85,
        "Refuse an intensity-only answer that a second metric (MI; LC2 when the metric is "
        "MI), run from it at the two finest levels, moves by more than this or "
        "verify_basin_mm, whichever is larger (median mm); the few-structures route uses "
        "this alone, eased to verify_basin_mm where the match is then judged among its "
        "structures' other placements (judge_few_match).",
        minimum=0.0,
        advanced=True,
    )
    verify_max_hops: int = option(
        3,
        "A verification restart (or the mirror run) that ends elsewhere at a cost better "
        "than the answer's by more than 1 % shows the optimiser stopped short: its end "
        "replaces the answer (refused, marked, as unverified) and the check runs again, at "
        "most this many times; 0: the answer stays and the rival refuses it.",
        minimum=0,
        advanced=True,
    )
    verify_mirror_margin: float = option(
        0.3,
        "Refuse an intensity-only answer when the levels re-run from its left-right mirror "
        "image end at a cost less than this fraction worse than the answer's: the images do "
        "not single it out (a wrong optimum's mirror fits about as well); 0: off.",
        minimum=0.0,
        advanced=True,
    )
    max_predicted_tre_mm: float | None = option(
        10.0,
        "Refuse an answer whose predicted TRE (quality.predicted_tre_mm, a 90th-percentile "
        "bound) exceeds this (mm): landmarks bunched in a corner of the field, or too noisy "
        "to pin it down; none: off.",
        minimum=0.0,
        advanced=True,
    )
    max_depth_slope: float | None = option(
        1.2,
        "Refuse an answer whose perspective climbs towards the X-ray source faster than "
        "this (the sine of the plane's tilt it implies; 1 is a plane seen edge-on, so no "
        "plane gives more): a wrong projective fit (quality.verification.perspective); "
        "none: record the figures only.",
        minimum=0.0,
        advanced=True,
    )
    accept_unverified: bool = option(
        False,
        "Write a result the verification or a guard refused, marked verdict refused and "
        "accepted_unverified true, instead of stopping with exit 1 (edge-on: exit 2).",
    )

    def __post_init__(self):
        if self.scale_tolerance == 0:  # the flag's meaning since it exists: 0 turns it off
            object.__setattr__(self, "scale_tolerance", None)


@dataclass(frozen=True)
class RegistrationOptions:
    """Settings of :func:`registration.register`; every one is written into the result.

    Build one with :meth:`with_values` (flat names) or :func:`hybridfuse._options.build`;
    :meth:`to_dict` gives the flat names and values that ``transform.json`` records.
    """

    model: str = option(
        "projective",
        "Transform model of the ultrasound plane in the fluoroscopy: projective is the "
        "exact plane-induced homography, affine and similarity are stiffer.",
        choices=_MODELS,
    )
    metric: str | None = option(
        "lc2",
        "Intensity similarity that is optimised (none: landmarks only); lc2 models "
        "ultrasound as a mix of the X-ray intensity and its gradient.",
        choices=("ncc", "mi", "nmi", "ngf", "lc2"),
    )
    preprocess: str = option(
        "structures",
        "How both images are turned into comparable features before matching; structures "
        "keeps needles and beads and drops echoes behind which the beam is shadowed.",
        choices=("none", "structures", "gradient"),
    )
    fluoro_dense: str = option(
        "dark",
        "structures preprocessing: how the fluoroscopy shows dense matter (needle, beads, "
        "bone): dark (fluoroscopy's convention, after the header's MONOCHROME1/2), bright "
        "(the radiograph look), or auto (read from the quantum noise, which is larger "
        "behind dense matter; unreliable on processed clinical images). It sets the "
        "metric's features; bead and needle detection still look for dark structures.",
        choices=FLUORO_DENSE,
        advanced=True,
    )
    n_bins: int = option(
        32,
        "Histogram bins of the mutual-information metrics (mi, nmi, and the search's scoring).",
        minimum=8,  # what the mutual-information context accepts
        maximum=1024,
        advanced=True,
    )
    lc2_patch_samples: int = option(
        7,
        "Side of the LC2 patch in samples of the level's grid; the patch grows in pixels "
        "with the stride at coarse levels.",
        minimum=2,
        advanced=True,
    )
    shadow_px: tuple[float, float] | None = option(
        (2.0, 10.0),
        "structures preprocessing: an echo is weighed by how bright the image stays this "
        "many fluoroscopy pixels below it, so bone surfaces drop out (none: keep every "
        "echo).",
        minimum=0.0,
        advanced=True,
    )
    probe_silhouette: str = option(
        "auto",
        "Automatic start (--init auto) where the beads give no accepted answer: auto looks "
        "for the probe itself inside the fluoroscopy's exposed field (a linear probe's "
        "transducer face at the calibrated width) and registers from both handedness "
        "placements, accepting one only if the images single it out among them and the "
        "beads' answer.",
        choices=("auto", "off"),
        advanced=True,
    )
    pyramid: PyramidOptions = group(PyramidOptions)
    grid: SearchOptions = group(SearchOptions)
    landmarks: LandmarkOptions = group(LandmarkOptions)
    guards: GuardOptions = group(GuardOptions)

    def to_dict(self) -> dict:
        """Flat ``{name: value}``, JSON-ready: the ``options`` object of ``transform.json``."""
        return flat(self)

    def contradictions(self) -> list[str]:
        """Options that are each valid but contradict each other (one sentence each)."""
        out = []
        levels, caps = self.pyramid.levels, self.pyramid.max_iterations
        if len(levels) != len(caps):
            out.append(
                f"levels has {len(levels)} value(s) but max_iterations has {len(caps)}: "
                "give one iteration cap per pyramid level"
            )
        if any(a < b for a, b in zip(levels[:-1], levels[1:], strict=True)):
            out.append(
                f"levels = {', '.join(map(str, levels))} is not ordered coarse to fine "
                "(each factor at least the next)"
            )
        if self.shadow_px is not None and self.shadow_px[0] > self.shadow_px[1]:
            near, far = self.shadow_px
            out.append(
                f"shadow_px = {near:g}, {far:g}: the depth window below an echo goes from "
                "near to far (the first at most the second)"
            )
        grid = self.search_grid_size()
        if self.grid.search is not False and self.metric is not None and grid > MAX_SEARCH_GRID:
            out.append(
                f"the search grid would score {grid:,} candidates (shifts from "
                "search_translation_mm / search_step_mm, squared, times rotations from "
                "search_rotation_deg / search_rotation_step_deg, times scales); at most "
                f"{MAX_SEARCH_GRID:,}: widen the steps"
            )
        if self.grid.search is True and self.metric is None:
            out.append(
                "search = true needs an intensity metric; metric = none registers by "
                "landmarks only, without a search"
            )
        return out

    def search_grid_size(self) -> int:
        """How many candidates the global search scores (the most of its two scale lists)."""
        o = self.grid

        def count(half: float, step: float) -> int:
            return math.ceil((2.0 * half + 1e-9) / step)

        shifts = count(o.search_translation_mm, o.search_step_mm)
        angles = count(o.search_rotation_deg, o.search_rotation_step_deg)
        scales = max(len(o.search_scales), len(o.search_scales_calibrated))
        return shifts * shifts * angles * scales

    def runs_search(self, with_landmarks: bool) -> bool:
        """Whether :func:`register` runs the global search (auto: only without landmarks)."""
        return self.grid.search if self.grid.search is not None else not with_landmarks

    def unused_by(self, with_landmarks: bool) -> list[str]:
        """Options set away from their default that :func:`register` would not use.

        With landmarks the scale check only reports; the search settings act only when the
        search runs. A caller refuses these rather than record settings that did nothing.
        """
        default = flat(type(self)())
        mine = flat(self)
        changed = {k for k in mine if mine[k] != default[k]}
        unused = set()
        if with_landmarks:
            unused |= {"scale_tolerance"}
        if not self.runs_search(with_landmarks):
            unused |= {s.name for s in specs(SearchOptions)} - {"search"}
        return sorted(changed & unused)

    def with_values(self, **values) -> RegistrationOptions:
        """A copy with the options named by flat name changed (checked like a config file).

        Raises
        ------
        hybridfuse._options.OptionError
            An unknown name or a value the definition does not allow.
        """
        return build(type(self), values, base=self)

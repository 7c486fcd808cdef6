"""RegistrationOptions is defined once (grouped, with help and limits); Quality is the schema."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hybridfuse._options import OptionError, specs
from hybridfuse.registration import (
    QUALITY_KEYS,
    IllPosedGeometryError,
    Landmarks,
    Metric,
    Preprocess,
    Quality,
    RegistrationOptions,
    Transform,
    TransformModel,
    register,
)
from hybridfuse.registration.preprocess import FLUORO_DENSE

#: The flat names before the options were grouped: transform.json keys, TOML keys, flags.
FLAT_NAMES = [
    "snap_to_beads_mm",
    "probe_silhouette",
    "auto_placements",
    "intensity_sigma_px",
    "accept_unverified",
    "max_predicted_tre_mm",
    "max_depth_slope",
    "verify_mirror_margin",
    "verify_restarts",
    "verify_shift_mm",
    "verify_rotation_deg",
    "verify_max_spread_mm",
    "verify_basin_mm",
    "verify_max_metric_drift_mm",
    "verify_max_hops",
    "search_structures",
    "model",
    "metric",
    "levels",
    "max_iterations",
    "coarse_model",
    "fine_levels",
    "n_bins",
    "preprocess",
    "fluoro_dense",
    "landmark_sigma_px",
    "landmark_weight",
    "reject_threshold_px",
    "max_samples",
    "edge_on_ratio",
    "search",
    "search_level",
    "search_translation_mm",
    "search_step_mm",
    "search_rotation_deg",
    "search_rotation_step_deg",
    "search_scales",
    "search_scales_calibrated",
    "search_keep",
    "search_separation_mm",
    "search_finalists",
    "search_min_margin",
    "select_model",
    "landmark_start_factor",
    "landmark_max_iterations",
    "max_linear_change",
    "max_perspective_change",
    "lc2_patch_samples",
    "scale_tolerance",
    "shadow_px",
    "cost_tolerance",
    "line_search_steps",
    "decimate_coarse_levels",
    "finest_pixel_mm",
]

EVERYDAY = {
    "model",
    "metric",
    "preprocess",
    "search",
    "scale_tolerance",
    "landmark_sigma_px",
    "reject_threshold_px",
    "snap_to_beads_mm",
    "accept_unverified",
}


def test_every_option_has_help_and_the_flat_names_are_kept():
    by = {s.name: s for s in specs(RegistrationOptions)}
    assert sorted(by) == sorted(FLAT_NAMES)
    assert sorted(RegistrationOptions().to_dict()) == sorted(FLAT_NAMES)
    for spec in by.values():
        assert len(spec.help) > 30 and spec.help.endswith("."), spec.name
    assert {n for n, s in by.items() if not s.advanced} == EVERYDAY


def test_the_choice_options_offer_exactly_what_the_library_accepts():
    by = {s.name: s for s in specs(RegistrationOptions)}
    models = tuple(m.value for m in TransformModel)
    assert by["model"].choices == models and by["coarse_model"].choices == models
    assert set(by["metric"].choices) == {m.value for m in Metric}
    assert set(by["preprocess"].choices) == {p.value for p in Preprocess}
    assert [n for n, s in by.items() if s.choices] == [
        "model",
        "metric",
        "preprocess",
        "fluoro_dense",
        "probe_silhouette",
        "coarse_model",
    ]
    assert by["fluoro_dense"].choices == FLUORO_DENSE


def test_with_values_sets_a_grouped_option_by_its_flat_name_and_checks_it():
    base = RegistrationOptions(metric="mi")
    opts = base.with_values(search_keep=3, scale_tolerance=None)
    assert opts.grid.search_keep == 3 and opts.guards.scale_tolerance is None
    assert opts.metric == "mi" and base.grid.search_keep == 8  # base kept, unchanged
    assert opts.to_dict()["search_keep"] == 3
    with pytest.raises(OptionError, match="unknown option.*'search_kep'"):
        base.with_values(search_kep=3)
    with pytest.raises(OptionError, match="coarse_model = 'bspline'"):
        base.with_values(coarse_model="bspline")
    with pytest.raises(OptionError, match="search_keep = 0: below the minimum"):
        base.with_values(search_keep=0)


def test_to_dict_is_the_transform_json_options_object():
    d = RegistrationOptions().to_dict()
    assert d["levels"] == [16, 8, 4, 2, 1] and d["shadow_px"] == [2.0, 10.0]
    assert d["search"] is None and d["scale_tolerance"] == 0.08
    assert json.loads(json.dumps(d)) == d


def _landmark_result(**values):
    img = np.zeros((200, 200))
    mask = np.zeros((200, 200), bool)
    mask[20:181, 20:181] = True
    h = np.array([[1.2, 0.05, 30.0], [-0.04, 1.15, 20.0], [0.0, 0.0, 1.0]])
    moving = np.array([[20, 20], [180, 20], [180, 180], [20, 180], [100, 100], [60, 140]], float)
    lm = Landmarks(moving, Transform(h).apply(moving), tuple("abcdef"))
    opts = RegistrationOptions(metric=None).with_values(**values)
    return register(img, img, moving_mask=mask, landmarks=lm, options=opts, expected_scale=1.2)


def test_quality_to_dict_is_the_documented_schema():
    q = _landmark_result().quality
    assert isinstance(q, Quality)
    assert list(q.to_dict()) == [
        "verdict",
        "reasons",
        "predicted_tre_mm",
        "local_scale_min",
        "local_scale_max",
        "expected_scale",
        "scale_ratio_min",
        "edge_on",
        "landmark_fre_px",
        "landmark_loo_tre_px",
        "landmarks_rejected",
        "landmark_hull_fraction_of_field",
        "landmark_farthest_field_px",
        "model_used",
        "scale_ratio_to_calibration",
        "model_selection",
        "verification",
        "crop_fixed_px_x0_y0_x1_y1",
    ]
    assert q.model_used == q.to_dict()["model_used"] == q.model_selection["chosen"]
    assert set(QUALITY_KEYS) == {f for f in Quality.__dataclass_fields__}
    assert json.loads(json.dumps(q.to_dict())) == q.to_dict()


def test_quality_keeps_an_unknown_leave_one_out_error_as_none_but_drops_other_nones():
    q = Quality(local_scale_min=1.0, local_scale_max=1.1, edge_on=False)
    assert list(q.to_dict()) == [
        "verdict",
        "reasons",
        "predicted_tre_mm",
        "local_scale_min",
        "local_scale_max",
        "edge_on",
    ]
    with_fre = q.replace(landmark_fre_px=0.5)
    assert with_fre.to_dict()["landmark_loo_tre_px"] is None
    assert list(with_fre.to_dict())[-2:] == ["landmark_fre_px", "landmark_loo_tre_px"]


def test_an_edge_on_plane_without_an_expected_scale_is_refused_by_its_anisotropy():
    # Without the calibration the edge-on test reads the transform's anisotropy; the
    # refusal must say so (it used to fail formatting the missing scale ratio).
    img = np.zeros((120, 120))
    squash = np.array([[1.0, 0.0, 5.0], [0.0, 0.1, 40.0], [0.0, 0.0, 1.0]])
    moving = np.array([[10, 10], [110, 10], [110, 110], [10, 110], [60, 60]], float)
    lm = Landmarks(moving, Transform(squash).apply(moving), tuple("abcde"))
    opts = RegistrationOptions(model="affine", metric=None)
    with pytest.raises(IllPosedGeometryError, match=r"\(anisotropy 0\.10 < 0\.2\)"):
        register(img, img, landmarks=lm, options=opts)

"""Fusion: resampling convention, blend modes on hand-made images, outputs, PHI, DICOM."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from numpy.testing import assert_allclose

from hybridfuse.fusion.blend import blend
from hybridfuse.fusion.fuse import fuse_images
from hybridfuse.registration import Transform
from hybridfuse.registration.warp import warp_to_fixed

# --- resampling ------------------------------------------------------------------------


def test_warp_puts_a_moving_point_on_its_fixed_position():
    h = np.array([[0.55, 0.04, 101.3], [-0.03, 0.57, 62.7], [2e-5, -1e-5, 1.0]])
    moving = np.zeros((200, 260), np.float32)
    moving[120, 80] = 1000.0  # a point at moving pixel (x=80, y=120)
    warped, valid = warp_to_fixed(moving, h, (300, 300))
    yy, xx = np.nonzero(warped > 0)
    w = warped[yy, xx]
    centroid = np.array([(xx * w).sum(), (yy * w).sum()]) / w.sum()
    assert_allclose(centroid, Transform(h).apply([[80, 120]])[0], atol=0.6)


def test_nearest_resampling_is_exact_under_an_integer_shift():
    moving = np.arange(60, dtype=np.float32).reshape(6, 10)
    h = np.array([[1, 0, 3], [0, 1, 2], [0, 0, 1.0]])  # moving (x, y) -> (x+3, y+2)
    warped, valid = warp_to_fixed(moving, h, (10, 15), order="nearest")
    assert_allclose(warped[2:8, 3:13], moving)
    assert valid[2:8, 3:13].all() and not valid[:2].any()


def test_masked_out_screen_pixels_never_reach_the_output():
    moving = np.full((50, 50), 200.0, np.float32)
    mask = np.zeros((50, 50), bool)
    mask[10:40, 10:40] = True
    moving[~mask] = 255.0  # burned-in banner and borders outside the calibrated region
    warped, valid = warp_to_fixed(moving, np.eye(3), (50, 50), moving_mask=mask)
    assert valid.sum() == mask.sum()
    assert warped[valid].max() == 200.0


# --- blend modes on tiny images -----------------------------------------------------------

F = np.full((4, 4), 100.0, np.float32)
M = np.full((4, 4), 200.0, np.float32)
V = np.ones((4, 4), bool)
V[0, 0] = False


def test_alpha_blend_values():
    out = blend(F, M, V, "alpha", opacity=0.25)
    assert out.shape == (4, 4, 3)
    assert (out[1, 1] == 125).all()  # 0.75 * 100 + 0.25 * 200
    assert (out[0, 0] == 100).all()  # outside the layer: fluoroscopy only


def test_checkerboard_alternates_tiles():
    out = blend(F, M, np.ones((4, 4), bool), "checkerboard", tile_px=2)
    assert out[0, 0, 0] == 100 and out[0, 2, 0] == 200 and out[2, 0, 0] == 200
    assert out[2, 2, 0] == 100


def test_side_by_side_is_twice_as_wide():
    out = blend(F, M, V, "side-by-side", opacity=1.0)
    assert out.shape == (4, 8, 3)
    assert (out[:, :4] == 100).all() and out[1, 5, 0] == 200


def test_colour_overlay_uses_the_colour_map():
    out = blend(F, np.full((4, 4), 255.0, np.float32), V, "color", opacity=1.0, colormap="gray")
    assert (out[1, 1] == 255).all()


def test_edges_mark_only_strong_ultrasound_edges():
    m = np.zeros((8, 8), np.float32)
    m[:, 4:] = 255.0
    out = blend(np.full((8, 8), 50.0, np.float32), m, np.ones((8, 8), bool), "edges", opacity=1.0)
    coloured = out[..., 0] != out[..., 2]
    assert coloured[:, 3:5].all() and not coloured[:, 0].any()


# --- end to end on the sample case ---------------------------------------------------------


def test_outputs_complete_and_nothing_partial(fused):
    out, summary, *_ = fused
    names = {p.name for p in out.iterdir()}
    assert {"viewer.html", "fused_sc.dcm", "fuse.json", "fused.gif", "fused_000.png"} <= names
    assert not list(out.parent.glob(".out.partial-*"))
    assert json.loads((out / "fuse.json").read_text())["schema"] == "hybridfuse.fuse/1"


def test_frames_are_paired_by_acquisition_time(fused):
    _, summary, truth, pair, *_ = fused
    assert summary["time_matching"] == "nearest acquisition time"
    # The confirmation run was acquired with the probe on: simultaneous frames.
    assert all(abs(p["time_difference_s"]) < 1e-3 for p in summary["pairs"])
    first = summary["pairs"][pair["fluoro_frame"]]
    assert first["moving_frame"] == pair["us_frame"]


def test_needle_tip_of_the_us_layer_lands_on_the_fluoro_tip(fused):
    _, _, truth, pair, fixed, moving = fused
    tip = next(lm for lm in pair["landmarks"] if lm["name"] == "needle_tip")
    h = np.asarray(pair["moving_to_fixed_pixel"])
    spot = np.zeros(moving.shape, np.float32)
    x, y = (int(round(v)) for v in tip["moving_xy"])
    spot[y - 1 : y + 2, x - 1 : x + 2] = 1.0
    warped, _ = warp_to_fixed(spot, h, fixed.shape, moving_mask=moving.mask)
    yy, xx = np.nonzero(warped > 0)
    w = warped[yy, xx]
    centroid = np.array([(xx * w).sum(), (yy * w).sum()]) / w.sum()
    # The 3x3 spot was placed at the rounded US tip: carry the rounding through.
    expected = Transform(h).apply([[x, y]])[0]
    assert np.hypot(*(centroid - expected)) < 1.0
    assert np.hypot(*(expected - np.asarray(tip["fixed_xy"]))) < 1.0


def test_no_patient_data_in_images_viewer_or_summary(fused):
    out, *_ = fused
    for name in ("viewer.html", "fuse.json", "fused_000.png", "fused.gif"):
        data = (out / name).read_bytes()
        for secret in (b"PHANTOM", b"SYN000001", b"20260115"):
            assert secret not in data, (name, secret)


def test_dicom_secondary_capture_is_a_derived_object(fused):
    out, _, truth, pair, fixed, _ = fused
    ds = pydicom.dcmread(out / "fused_sc.dcm")
    src = pydicom.dcmread(fixed.source_path, stop_before_pixels=True)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7.4"
    # De-identified (no include_phi): keyed replacements of the study and the sources.
    assert ds.StudyInstanceUID != src.StudyInstanceUID
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert ds.BurnedInAnnotation == "NO" and ds.ConversionType == "WSD"
    refs = {r.ReferencedSOPInstanceUID for r in ds.SourceImageSequence}
    assert len(refs) == 2 and src.SOPInstanceUID not in refs
    assert ds.PatientIdentityRemoved == "YES" and "PHANTOM" not in str(ds.PatientName)
    assert int(ds.NumberOfFrames) == fixed.n_frames and float(ds.FrameTime) > 0


@pytest.mark.skipif(
    shutil.which("dciodvfy") is None,
    reason="dciodvfy (Debian dicom3tools) not installed; .ci/run installs it",
)
def test_secondary_capture_passes_dciodvfy(fused):
    out, *_ = fused
    res = subprocess.run(
        ["dciodvfy", str(out / "fused_sc.dcm")], capture_output=True, text=True, check=False
    )
    errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
    assert errors == []


def test_existing_output_is_not_overwritten(fused, tmp_path):
    _, _, truth, pair, fixed, moving = fused
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        fuse_images(fixed, moving, Transform(np.eye(3)), tmp_path / "o")
    assert (tmp_path / "o" / "keep.txt").exists()


def test_bad_frame_index_is_refused(fused, tmp_path):
    from hybridfuse.fusion import InputError

    _, _, _, _, fixed, moving = fused
    with pytest.raises(InputError, match="out of range"):
        fuse_images(fixed, moving, Transform(np.eye(3)), tmp_path / "o", frames=[99])


def _affine_of(pair):
    from hybridfuse.registration import fit_model

    lms = [lm for lm in pair["landmarks"] if lm["in_us_region"] and lm["in_fluoro_field"]]
    mov = np.array([lm["moving_xy"] for lm in lms])
    fix = np.array([lm["fixed_xy"] for lm in lms])
    return Transform(fit_model("affine", mov, fix), "affine")


def test_spatial_registration_round_trip(fused, tmp_path):
    from hybridfuse.fusion.registration_dicom import (
        read_registration_dicom,
        write_registration_dicom,
    )

    _, _, truth, pair, fixed, moving = fused
    tr = _affine_of(pair)
    path = write_registration_dicom(tmp_path / "registration.dcm", tr, fixed, moving)
    m4, moving_for, fixed_for = read_registration_dicom(path)
    mm = tr.in_mm(moving.pixel_spacing_mm, fixed.xray.isocenter_spacing_mm)
    assert_allclose(m4[:2, :2], mm[:2, :2], rtol=1e-9)
    assert_allclose(m4[:2, 3], mm[:2, 2], rtol=1e-9)
    assert moving_for != fixed_for
    ds = pydicom.dcmread(path)
    assert ds.Modality == "REG" and ds.FrameOfReferenceUID == fixed_for
    assert "PHANTOM" not in str(ds.PatientName)


def test_projective_transform_is_not_squeezed_into_a_spatial_registration(fused, tmp_path):
    from hybridfuse.fusion import InputError
    from hybridfuse.fusion.registration_dicom import write_registration_dicom

    _, _, truth, pair, fixed, moving = fused
    with pytest.raises(InputError, match="rigid, similarity or affine only"):
        write_registration_dicom(
            tmp_path / "r.dcm", Transform(np.asarray(pair["moving_to_fixed_pixel"])), fixed, moving
        )


@pytest.mark.skipif(
    shutil.which("dciodvfy") is None,
    reason="dciodvfy (Debian dicom3tools) not installed; .ci/run installs it",
)
def test_spatial_registration_passes_dciodvfy(fused, tmp_path):
    from hybridfuse.fusion.registration_dicom import write_registration_dicom

    _, _, truth, pair, fixed, moving = fused
    path = write_registration_dicom(tmp_path / "r.dcm", _affine_of(pair), fixed, moving)
    res = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    assert [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")] == []


def test_swapped_inputs_are_refused(fused, tmp_path):
    from hybridfuse.fusion import InputError

    _, _, _, _, fixed, moving = fused
    with pytest.raises(InputError, match="fixed image must be fluoroscopy"):
        fuse_images(moving, fixed, Transform(np.eye(3)), tmp_path / "o")
    assert not (tmp_path / "o").exists()

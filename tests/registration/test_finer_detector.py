"""On a finer detector the pixel scales of the registration cover the same millimetres.

Smoothing factors, feature scales and shadow depths are given in fluoroscopy pixels and
were chosen on detectors of 0.12-0.41 mm at the isocentre (median 0.27). The same scene
on a grid 2x finer lost half the automatic route's right answers
(docs/registration-method.md, *Finer detectors (session 19)*). Here the same fluoroscopy
on a grid 3x finer (pixel centres 3x + 1, so every original centre is a centre of the
fine grid) must give the same features and pyramid levels at the original centres.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from hybridfuse.registration.optimise import Pyramid, grain
from hybridfuse.registration.options import RegistrationOptions
from hybridfuse.registration.preprocess import Preprocess, preprocess_pair

K = 3


def _finer(a: np.ndarray, k: int = K) -> np.ndarray:
    """``a`` resampled (linear) onto a grid ``k`` times finer, centres at k·x + (k-1)/2."""
    img = sitk.GetImageFromArray(a.astype(np.float32))
    ref = sitk.Image(a.shape[1] * k, a.shape[0] * k, sitk.sitkFloat32)
    ref.SetSpacing((1 / k, 1 / k))
    ref.SetOrigin((-0.5 + 0.5 / k, -0.5 + 0.5 / k))
    return sitk.GetArrayFromImage(sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, 0.0))


def _at_original_centres(fine: np.ndarray, k: int = K) -> np.ndarray:
    c = (k - 1) // 2
    return fine[c::k, c::k]


def _difference(a: np.ndarray, b: np.ndarray, inner: np.ndarray) -> float:
    """RMS of a - b over ``inner``, relative to the RMS of a there."""
    return float(np.sqrt(np.mean((a - b)[inner] ** 2)) / np.sqrt(np.mean(a[inner] ** 2)))


@pytest.fixture(scope="module")
def pair(family_case_of):
    case = family_case_of(3, 320)
    fixed = pydicom.dcmread(case / "fluoro.dcm").pixel_array.astype(np.float64)
    moving = pydicom.dcmread(case / "us.dcm").pixel_array.astype(np.float64)
    if moving.ndim == 3:
        moving = moving.mean(axis=-1) if moving.shape[-1] == 3 else moving[0]
    inner = np.zeros(fixed.shape, bool)
    inner[40:-40, 40:-40] = True  # away from the image edges the smoothing treats alike
    return fixed, moving, inner


def test_grain_counts_pixels_no_finer_than_the_option():
    opts = RegistrationOptions()
    finest = opts.pyramid.finest_pixel_mm
    assert grain(opts, 2 * finest) == 1.0 and grain(opts, None) == 1.0
    assert grain(opts, finest / 3) == pytest.approx(3.0)
    assert grain(opts.with_values(finest_pixel_mm=None), finest / 3) == 1.0


@pytest.mark.parametrize("mode", [Preprocess.STRUCTURES, Preprocess.GRADIENT])
def test_features_on_a_finer_detector_are_the_same_in_millimetres(pair, mode):
    fixed, moving, inner = pair
    masks = (np.ones(fixed.shape, bool), np.ones(moving.shape, bool))
    fine_mask = np.ones((fixed.shape[0] * K, fixed.shape[1] * K), bool)
    coarse, _ = preprocess_pair(fixed, masks[0], moving, masks[1], mode, scale=1.0)
    fine = _finer(fixed)
    scaled, _ = preprocess_pair(fine, fine_mask, moving, masks[1], mode, scale=K, grain=K)
    unscaled, _ = preprocess_pair(fine, fine_mask, moving, masks[1], mode, scale=K)
    # The gradient's magnitude is per pixel: K times smaller on the finer grid.
    per = K if mode is Preprocess.GRADIENT else 1
    same = _difference(coarse, per * _at_original_centres(scaled), inner)
    other = _difference(coarse, per * _at_original_centres(unscaled), inner)
    assert same < 0.15, (same, other)
    assert other > 2 * same, (same, other)  # what the grain changes


def test_pyramid_levels_on_a_finer_detector_smooth_the_same_millimetres(pair):
    fixed, moving, inner = pair
    opts = RegistrationOptions()
    mmask = np.ones(moving.shape, bool)
    fine = _finer(fixed)
    fine_mask = np.ones(fine.shape, bool)
    for factor in (16, 4):  # the coarse levels, whose smoothing sets the capture range
        ctx = Pyramid(fixed, np.ones(fixed.shape, bool), moving, mmask, 1.0, opts).level(factor)
        a = _level_image(ctx, fixed.shape)
        diff = {}
        for g in (float(K), 1.0):
            big = Pyramid(fine, fine_mask, moving, mmask, float(K), opts, g).level(factor)
            diff[g] = _difference(a, _at_original_centres(_level_image(big, fine.shape)), inner)
        assert diff[K] < 0.002 and diff[1.0] > 10 * diff[K], (factor, diff)


def _level_image(ctx, shape) -> np.ndarray:
    """The level's fluoroscopy on the full grid (a decimated level is interpolated back)."""
    f = np.asarray(ctx.fixed, float)
    if f.shape == tuple(shape):
        return f
    d = shape[0] / f.shape[0]
    img = sitk.GetImageFromArray(f.astype(np.float32))
    img.SetSpacing((d, d))
    img.SetOrigin(((d - 1) / 2, (d - 1) / 2))
    ref = sitk.Image(shape[1], shape[0], sitk.sitkFloat32)
    out = sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, 0.0)
    return sitk.GetArrayFromImage(out).astype(float)


def test_every_route_builds_its_features_and_pyramid_at_the_grain(pair, monkeypatch):
    # The review of session 19 found the moments start left out: each route is checked.
    from hybridfuse.registration import _register, hypotheses
    from hybridfuse.registration.errors import RegistrationError

    fixed, moving, _ = pair
    opts = RegistrationOptions()
    px_mm = opts.pyramid.finest_pixel_mm / 2
    seen = []
    for module in (_register, hypotheses):
        real = module.preprocess_pair
        monkeypatch.setattr(
            module,
            "preprocess_pair",
            lambda *a, _real=real, _m=module.__name__, **k: (
                seen.append((_m, k.get("grain"))) or _real(*a, **k)
            ),
        )
    start = np.array([[1.0, 0.0, 20.0], [0.0, 1.0, 20.0], [0.0, 0.0, 1.0]])
    try:
        _register.register(fixed, moving[:200, :200], initial=start, fixed_spacing_mm=px_mm)
    except RegistrationError:
        pass  # refused or not: the features were built
    masks = (None, None)
    bench = hypotheses._Bench(fixed, moving[:200, :200], masks, opts, (1.0, 1.0), px_mm)
    assert bench.pyramid.grain == pytest.approx(2.0)
    assert ("hybridfuse.registration._register", pytest.approx(2.0)) in seen
    assert ("hybridfuse.registration.hypotheses", pytest.approx(2.0)) in seen


def test_the_moments_start_builds_its_features_at_the_grain(monkeypatch):
    from hybridfuse.fusion import coregister, read_image
    from hybridfuse.testdata import sample_case

    class Seen(Exception):
        pass

    def spy(*args, grain=1.0, **kw):
        raise Seen(grain)

    case = sample_case()
    fixed = read_image(case / "fluoro_run02_confirm_lateral.dcm")
    moving = read_image(case / "us_clip.dcm")
    opts = RegistrationOptions().with_values(finest_pixel_mm=0.5)
    monkeypatch.setattr(coregister, "moments_start", spy)
    with pytest.raises(Seen) as seen:
        coregister.register_images(
            fixed, moving, moving_frame=6, init="moments", options=opts, plane_faces_detector=True
        )
    iso_mm = coregister.expected_scale(fixed, moving)[1]
    assert seen.value.args[0] == pytest.approx(0.5 / iso_mm) and 0.5 / iso_mm > 1.5

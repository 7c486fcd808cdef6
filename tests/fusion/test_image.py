"""The Image type: validation, spacing, SimpleITK round trip."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from hybridfuse.fusion import Image, InputError, MissingCalibrationError, Modality


def test_frame_axis_is_required():
    with pytest.raises(InputError, match="frames, rows, cols"):
        Image(array=np.zeros((4, 5)), modality="US")


def test_one_time_per_frame():
    with pytest.raises(InputError, match="one time per frame"):
        Image(array=np.zeros((3, 4, 5)), modality="US", frame_times_s=[0.0, 1.0])


def test_spacing_must_be_positive():
    with pytest.raises(InputError, match="pixel_spacing_mm"):
        Image(array=np.zeros((1, 4, 5)), modality="XA", pixel_spacing_mm=(0.0, 1.0))


def test_mask_must_match_frame_shape():
    with pytest.raises(InputError, match="mask shape"):
        Image(array=np.zeros((1, 4, 5)), modality="XA", mask=np.ones((5, 4), bool))


def test_missing_spacing_names_the_flag():
    img = Image(array=np.zeros((1, 4, 5)), modality=Modality.US, source_path="a.dcm")
    with pytest.raises(MissingCalibrationError, match="--us-spacing-mm"):
        img.require_spacing("--us-spacing-mm")


def test_frame_index_out_of_range_is_a_clear_error():
    img = Image(array=np.zeros((2, 4, 5)), modality="XA", source_path="run.dcm")
    with pytest.raises(InputError, match="frame index 2 out of range: run.dcm has 2 frame"):
        img.frame(2)


def test_gray_of_rgb_uses_luminance_weights():
    rgb = np.zeros((1, 2, 2, 3), np.uint8)
    rgb[..., 1] = 100
    img = Image(array=rgb, modality="US")
    assert_allclose(img.gray(0), 58.7, rtol=1e-6)


def test_sitk_round_trip_keeps_spacing_order(rng):
    arr = rng.uniform(0, 255, size=(1, 6, 9)).astype(np.float32)
    img = Image(array=arr, modality="US", pixel_spacing_mm=(0.2, 0.3))
    sitk_img = img.to_sitk(0)
    assert sitk_img.GetSpacing() == pytest.approx((0.3, 0.2))  # SimpleITK orders (x, y)
    assert sitk_img.GetSize() == (9, 6)
    back = Image.from_sitk(sitk_img, modality="US")
    assert back.pixel_spacing_mm == pytest.approx((0.2, 0.3))
    assert_allclose(back.array, arr, atol=1e-6)

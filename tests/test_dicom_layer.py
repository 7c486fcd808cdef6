"""The DICOM layer: one reading of numbers, date-times and frame times for fusion and dose."""

from __future__ import annotations

import datetime as _dt
import re
import types

import pydicom
import pytest
from numpy.testing import assert_allclose
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import DT

from hybridfuse import dicom
from hybridfuse.dose.errors import DoseInputError
from hybridfuse.dose.rdsr import read_rdsr
from hybridfuse.dose.saved import (
    Interval,
    saved_counterfactual,
    ultrasound_intervals_from_clips,
)
from hybridfuse.fusion import read_image
from hybridfuse.testdata import sample_case
from tests.conftest import REALDATA, realdata_rows
from tests.fusion.test_io import US_SOP, make_dicom

START = "20240301101500.000000"

# --- lenient numbers ------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("1.5 ", 1.5),
        (" 1,5", 1.5),
        ("1e3", 1000.0),
        (3, 3.0),
        ("", None),
        ("   ", None),
        ("abc", None),
        ("nan", None),
        ("inf", None),
        (None, None),
        ([], None),
        (MultiValue(str, ["2.5", "7"]), 2.5),
    ],
)
def test_lenient_number_keeps_the_accepted_forms(raw, expected):
    assert dicom.parse_number(raw) == expected


def test_number_pair_and_code():
    assert dicom.parse_number_pair(MultiValue(str, ["0.1", "0,2"])) == (0.1, 0.2)
    assert dicom.parse_number_pair(MultiValue(str, ["0.1"])) is None
    assert dicom.parse_number_pair(MultiValue(str, ["0.1", "x"])) is None
    assert dicom.parse_code("3") == 3
    assert dicom.parse_code("3.5") == 0
    assert dicom.parse_code(MultiValue(str, ["3", "4"])) == 0


# --- date-times -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("20240301101500.25+0100", _dt.datetime(2024, 3, 1, 10, 15, 0, 250000)),
        # The offset's minus sign must not eat into the fraction (.5, not .505).
        ("20240301101500.5-0500", _dt.datetime(2024, 3, 1, 10, 15, 0, 500000)),
        ("20240301101500.1234567", _dt.datetime(2024, 3, 1, 10, 15, 0, 123456)),
        ("20240301101500", _dt.datetime(2024, 3, 1, 10, 15, 0)),
        ("2024030110", _dt.datetime(2024, 3, 1, 10)),
        ("20240301", _dt.datetime(2024, 3, 1)),
        ("2024-03-01 ", _dt.datetime(2024, 3, 1)),
        ("2024030110:15:00.5", _dt.datetime(2024, 3, 1, 10, 15, 0, 500000)),
        ("", None),
        ("2024", None),
        ("20241301", None),
        ("20240301250000", None),
        ("20240301 101500", None),
        ("junk", None),
    ],
)
def test_datetime_with_offsets_and_fractions(text, expected):
    assert dicom.parse_datetime(text) == expected


def test_aware_datetime_keeps_the_offset():
    east = dicom.parse_datetime("20240301101500.25+0130", aware=True)
    west = dicom.parse_datetime("20240301101500-0500", aware=True)
    assert east.utcoffset() == _dt.timedelta(hours=1, minutes=30)
    assert west.utcoffset() == -_dt.timedelta(hours=5)
    assert (west - east).total_seconds() == pytest.approx(6.5 * 3600 - 0.25)
    assert dicom.parse_datetime("20240301101500+2500", aware=True) is None


@pytest.mark.parametrize(
    "text",
    ["20240301101500", "20240301101500.25", "20240301101500.123456+0100", "20240301235959-1100"],
)
def test_datetime_agrees_with_pydicom_on_full_dicom_values(text):
    # dose read event times with pydicom's DT (offset dropped) before the layer existed.
    assert dicom.parse_datetime(text) == DT(text).replace(tzinfo=None)


def test_acquisition_start_falls_back_to_date_and_time_pairs():
    ds = Dataset()
    ds.ContentDate, ds.ContentTime = "20240301", "101500.5"
    assert dicom.acquisition_start(ds) == (
        _dt.datetime(2024, 3, 1, 10, 15, 0, 500000),
        "ContentDate/ContentTime",
    )
    ds.AcquisitionDateTime = "20240301101400"
    assert dicom.acquisition_start(ds)[1] == "AcquisitionDateTime (0008,002A)"
    assert dicom.acquisition_start(Dataset()) == (None, "none")


# --- frame times: fusion and dose read the same -----------------------------------------

FRAMES = 4


def _per_frame_groups(stamps):
    groups = []
    for stamp in stamps:
        content = Dataset()
        content.FrameAcquisitionDateTime = stamp
        item = Dataset()
        item.FrameContentSequence = Sequence([content])
        groups.append(item)
    return Sequence(groups)


#: One clip per timing source; each gives (attributes, expected frame times in s or None).
VARIANTS = {
    "frame-time-vector": (
        {"FrameTimeVector": ["0", "33.3", "40", "50"]},
        [0, 0.0333, 0.0733, 0.1233],
    ),
    "per-frame-datetime": (
        {
            "PerFrameFunctionalGroupsSequence": _per_frame_groups(
                [f"20240301101500.{ms:03d}-0500" for ms in (0, 40, 80, 200)]
            )
        },
        [0, 0.04, 0.08, 0.2],
    ),
    "frame-time": ({"FrameTime": "33.3"}, [0, 0.0333, 0.0666, 0.0999]),
    "cine-rate": ({"CineRate": "25"}, [0, 0.04, 0.08, 0.12]),
    "acquisition-datetime-only": ({}, None),
}


def _variant_clip(tmp_path, name):
    attrs, _ = VARIANTS[name]
    return make_dicom(
        tmp_path / f"{name}.dcm",
        sop=US_SOP,
        modality="US",
        frames=FRAMES,
        AcquisitionDateTime=START,
        **attrs,
    )


def _us_files() -> list:
    """Every ultrasound file of testdata/ and, where present, ../shared/realdata/images."""
    params = [
        pytest.param(p, id=f"testdata:{p.name}")
        for p in sorted(sample_case().rglob("*.dcm"))
        if pydicom.dcmread(p, stop_before_pixels=True).get("Modality") == "US"
    ]
    for param in realdata_rows("images"):
        row = param.values[0]
        if row is None:
            params.append(param)  # the explicit skip: ../shared/realdata absent
        elif row["modality"] == "US":
            path = REALDATA / "images" / row["filename"]
            params.append(pytest.param(path, id=f"realdata:{row['filename']}"))
    return params


def _dose_interval(path, t0):
    """The interval dose derives from a clip, with no fluoroscopy to cut it short."""
    record = types.SimpleNamespace(events=[])
    (interval,) = ultrasound_intervals_from_clips([path], t0, record)
    return interval


def _assert_same_times(path):
    """Dose's interval runs exactly from fusion's first frame time to its last."""
    img = read_image(path, decode=False)
    times = img.frame_times_s
    if img.acquisition_datetime is None:
        with pytest.raises(DoseInputError, match="no acquisition date/time"):
            _dose_interval(path, _dt.datetime(2024, 1, 1))
        return img
    interval = _dose_interval(path, img.acquisition_datetime)
    assert interval.span_known == (img.frame_times_source.split(";")[0] != "none")
    assert interval.start_s == times[0]
    if interval.span_known:
        assert interval.end_s == times[-1]
    return img


@pytest.mark.parametrize("path", _us_files())
def test_fusion_and_dose_read_the_same_frame_times_from_every_us_file(path):
    _assert_same_times(path)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_fusion_and_dose_read_the_same_frame_times_from_every_source(tmp_path, name):
    img = _assert_same_times(_variant_clip(tmp_path, name))
    expected = VARIANTS[name][1]
    if expected is None:
        assert img.frame_times_source.startswith("none")
    else:
        assert_allclose(img.frame_times_s, expected, atol=1e-9)


def test_fusion_and_dose_read_the_same_frame_times_from_a_generated_case(synthetic_case):
    case, _ = synthetic_case
    clips = [
        p
        for p in sorted(case.rglob("*.dcm"))
        if pydicom.dcmread(p, stop_before_pixels=True).get("Modality") == "US"
    ]
    assert clips
    for path in clips:
        assert _assert_same_times(path).n_frames > 1


def test_single_frame_clip_has_a_zero_length_interval(tmp_path):
    path = make_dicom(tmp_path / "still.dcm", sop=US_SOP, modality="US", AcquisitionDateTime=START)
    img = _assert_same_times(path)
    assert img.frame_times_source.startswith("single frame")


def test_clip_without_a_start_is_refused_by_dose_and_unknown_to_fusion(tmp_path):
    path = make_dicom(tmp_path / "nostart.dcm", sop=US_SOP, modality="US", frames=FRAMES)
    assert _assert_same_times(path).acquisition_datetime is None


def test_implausible_source_is_passed_over_by_fusion_and_refused_by_dose(tmp_path):
    path = make_dicom(
        tmp_path / "back.dcm",
        sop=US_SOP,
        modality="US",
        frames=FRAMES,
        AcquisitionDateTime=START,
        FrameTimeVector=["0", "-40", "40", "40"],
        FrameTime="40",
    )
    img = read_image(path, decode=False)
    assert img.frame_times_source.startswith("FrameTime (0018,1063)")
    with pytest.raises(DoseInputError, match=r"FrameTimeVector \(0018,1065\) holds -40.0"):
        _dose_interval(path, img.acquisition_datetime)


def test_untimed_clip_is_flagged_in_the_saved_estimate_never_zero(tmp_path):
    case = sample_case()
    record = read_rdsr(case / "rdsr.dcm")
    t0 = min(e.start for e in record.events if e.start is not None)
    clip = _variant_clip(tmp_path, "acquisition-datetime-only")
    untimed = _dose_interval(clip, t0)
    assert not untimed.span_known
    given = Interval(10.0, 40.0)
    saved = saved_counterfactual(record, [untimed, given], n_samples=200)
    assert saved["us_guided_time_s"] == given.duration_s
    assert any("interval is unknown and not counted" in f for f in saved["flags"])
    # The refusal goes to the user's terminal: it names the clip as given (flags do not).
    with pytest.raises(DoseInputError, match=f"^{re.escape(str(clip))}: 4 frames without"):
        saved_counterfactual(record, [untimed], n_samples=200)


def test_a_rate_from_recommended_display_frame_rate_names_that_attribute():
    from pydicom.dataset import Dataset

    from hybridfuse.dicom import frame_times

    ds = Dataset()
    ds.RecommendedDisplayFrameRate = "25"
    got = frame_times(ds, 3)
    assert got.source.startswith("RecommendedDisplayFrameRate (0008,2144)")
    assert list(got.seconds) == [0.0, 0.04, 0.08]
    ds.CineRate = "50"
    assert frame_times(ds, 3).source.startswith("CineRate (0018,0040)")

"""Attacks on the DICOM layer (issue #14): leap seconds, a written NumberOfFrames of 0."""

from __future__ import annotations

import datetime as _dt
import types

import pydicom
import pytest

from hybridfuse import dicom
from hybridfuse.dose.errors import DoseInputError
from hybridfuse.dose.saved import ultrasound_intervals_from_clips
from hybridfuse.fusion import read_image
from tests.fusion.test_io import US_SOP, make_dicom

START = "20240301101500.000000"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("20161231235960", _dt.datetime(2017, 1, 1, 0, 0, 0)),
        ("20161231235960.5", _dt.datetime(2017, 1, 1, 0, 0, 0, 500000)),
        ("20240301101560", _dt.datetime(2024, 3, 1, 10, 16, 0)),
        ("2024-03-01 10:15:60", None),  # a blank inside is not a DT (unchanged)
    ],
)
def test_a_leap_second_is_read_as_the_next_second(text, expected):
    """DICOM allows SS = 60 (a leap second); it was read as no date-time at all."""
    assert dicom.parse_datetime(text) == expected


def test_a_leap_second_keeps_its_utc_offset_when_aware():
    when = dicom.parse_datetime("20161231235960+0100", aware=True)
    assert when == _dt.datetime(2017, 1, 1, tzinfo=_dt.timezone(_dt.timedelta(hours=1)))


def test_a_clip_acquired_on_a_leap_second_has_a_start(tmp_path):
    path = make_dicom(
        tmp_path / "leap.dcm",
        sop=US_SOP,
        modality="US",
        frames=4,
        AcquisitionDateTime="20161231235960",
        FrameTime="40",
    )
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    start, source = dicom.acquisition_start(ds)
    assert start == _dt.datetime(2017, 1, 1)
    assert source.startswith("AcquisitionDateTime")
    assert read_image(path, decode=False).acquisition_datetime == start


def test_a_written_number_of_frames_of_zero_is_refused_by_dose(tmp_path):
    """NumberOfFrames 0 was read as one frame: a zero-length interval, silently no saving."""
    path = make_dicom(
        tmp_path / "zero.dcm",
        sop=US_SOP,
        modality="US",
        frames=4,
        AcquisitionDateTime=START,
        FrameTime="40",
    )
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 0
    ds.save_as(path)
    record = types.SimpleNamespace(events=[])
    with pytest.raises(DoseInputError, match=r"NumberOfFrames .*not a whole number from 1"):
        ultrasound_intervals_from_clips([path], _dt.datetime(2024, 3, 1, 10, 15), record)


def test_an_absent_number_of_frames_is_still_one_frame(tmp_path):
    path = make_dicom(tmp_path / "one.dcm", sop=US_SOP, modality="US", AcquisitionDateTime=START)
    ds = pydicom.dcmread(path)
    if "NumberOfFrames" in ds:
        del ds.NumberOfFrames
    ds.save_as(path)
    record = types.SimpleNamespace(events=[])
    (interval,) = ultrasound_intervals_from_clips([path], _dt.datetime(2024, 3, 1, 10, 15), record)
    assert interval.start_s == interval.end_s == 0.0


def _groups(stamps):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    items = []
    for stamp in stamps:
        item = Dataset()
        if stamp is not None:
            content = Dataset()
            content.FrameAcquisitionDateTime = stamp
            item.FrameContentSequence = Sequence([content])
        items.append(item)
    return Sequence(items)


@pytest.mark.parametrize(
    "stamps, says",
    [
        (["20240301101500.000", None, "20240301101500.080"], "3 item(s), 2 with a readable"),
        (["20240301101500.000", "20240301101500.040"], "2 item(s), 2 with a readable"),
    ],
)
def test_incomplete_per_frame_times_are_passed_over_with_a_note(stamps, says):
    """Like a FrameTimeVector of the wrong length (the docs promise a note for both)."""
    ds = pydicom.Dataset()
    ds.PerFrameFunctionalGroupsSequence = _groups(stamps)
    ds.FrameTime = "40"
    timing = dicom.frame_times(ds, 3)
    assert timing.source.startswith("FrameTime (0018,1063)")
    assert any(says in note and "for 3 frames; ignored" in note for note in timing.notes)


def test_per_frame_groups_without_any_time_add_no_note():
    ds = pydicom.Dataset()
    ds.PerFrameFunctionalGroupsSequence = _groups([None, None, None])
    ds.FrameTime = "40"
    assert not dicom.frame_times(ds, 3).notes


def test_an_acquisition_datetime_cut_to_its_date_is_no_start():
    """'20260115' (a valid DT) was taken as the start: midnight, hours before the clip."""
    ds = pydicom.Dataset()
    ds.AcquisitionDateTime = "20260115"
    ds.AcquisitionDate = "20260115"
    ds.AcquisitionTime = "090432"
    assert dicom.acquisition_start(ds) == (
        _dt.datetime(2026, 1, 15, 9, 4, 32),
        "AcquisitionDate/AcquisitionTime",
    )
    del ds.AcquisitionDate, ds.AcquisitionTime
    assert dicom.acquisition_start(ds) == (None, "none")
    ds.AcquisitionDateTime = "2026011509"  # the hour is enough
    assert dicom.acquisition_start(ds)[0] == _dt.datetime(2026, 1, 15, 9)

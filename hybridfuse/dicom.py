"""The DICOM layer under ``fusion`` and ``dose``: values, date-times and frame timing.

Both packages read the same ultrasound clips and dose reports; reading a number, a
date-time or a clip's frame times in one place keeps the viewer and the dose estimate in
agreement. The reading policy (bounded reads of deflated data sets, pydicom kept quiet)
lives in :mod:`hybridfuse._dicomread` and is re-exported here, as is the file hash. This
module imports nothing of the subpackages.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass

import numpy as np

from hybridfuse._dicomread import (
    MAX_DECODED_ENV,
    deflated_size_exceeds,
    is_deflated,
    is_dicom_file,
    is_dicom_stream,
    max_decoded_bytes,
    quiet_pydicom,
)
from hybridfuse._safeio import sha256_file

__all__ = [
    "MAX_DECODED_ENV",
    "MAX_FRAME_TIME_MS",
    "FrameTimes",
    "acquisition_start",
    "as_list",
    "deflated_size_exceeds",
    "frame_times",
    "is_deflated",
    "is_dicom_file",
    "is_dicom_stream",
    "max_decoded_bytes",
    "parse_code",
    "parse_datetime",
    "parse_number",
    "parse_number_pair",
    "quiet_pydicom",
    "sha256_file",
]

#: Longest time between two frames of a clip (ms): a day. More is a corrupt header.
MAX_FRAME_TIME_MS = 86_400_000.0


# --- values ---------------------------------------------------------------------------


def _is_multi(value) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"


def as_list(value) -> list:
    """The values of a multi-valued element as a list; a single value as a one-item list."""
    return list(value) if _is_multi(value) else [value]


def parse_number(value) -> float | None:
    """A DS/IS/FD value (or its first value) as float; None when absent or not finite.

    Lenient as files are: surrounding blanks and a decimal comma are accepted.
    """
    if value is None:
        return None
    if hasattr(value, "value"):
        value = value.value
    if _is_multi(value):
        if len(value) == 0:
            return None
        value = value[0]
    text = str(value).strip().replace(",", ".")
    if not text:
        return None
    try:
        out = float(text)
    except ValueError:
        return None
    return out if math.isfinite(out) else None


def parse_number_pair(value) -> tuple[float, float] | None:
    """Two finite numbers from a DS pair, or None when absent or not two numbers."""
    if value is None:
        return None
    nums = [parse_number(v) for v in as_list(value.value if hasattr(value, "value") else value)]
    if len(nums) != 2 or any(v is None for v in nums):
        return None
    return (nums[0], nums[1])


def parse_code(value) -> int:
    """An enumerated value as int; 0 (unknown) when absent, multi-valued or junk."""
    number = parse_number(value) if not isinstance(value, (list, tuple)) else None
    if type(value).__name__ == "MultiValue" and len(value) != 1:
        return 0
    return int(number) if number is not None and number == int(number) else 0


# --- date-times -----------------------------------------------------------------------

# YYYYMMDD, then up to HHMMSS (short forms padded), a fraction, a UTC offset &ZZXX.
_DT = re.compile(r"(\d{8})(\d*)(?:\.(\d*))?(?:([+-])(\d{2})(\d{2}))?")
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def parse_datetime(text, *, aware: bool = False) -> _dt.datetime | None:
    """A DICOM DT, or a DA and a TM joined, as a datetime; None when it is not one.

    Also read: dashes in the date and colons in the time (as some writers put them),
    fractions of any length (cut to microseconds). The UTC offset is dropped unless
    ``aware``: clips and dose reports of one procedure are compared on the wall clock of
    the units that wrote them, and many omit the offset.
    """
    if text is None:
        return None
    text = str(text).strip()
    iso = _ISO_DATE.match(text)
    if iso:
        text = "".join(iso.groups()) + text[iso.end() :]
    match = _DT.fullmatch(text.replace(":", ""))
    if match is None:
        return None
    date, clock, frac, sign, off_h, off_m = match.groups()
    clock = (clock + "000000")[:6]
    leap = clock[4:6] == "60"  # a leap second (DICOM allows SS = 60): 59 s plus one
    if leap:
        clock = clock[:4] + "59"
    try:
        when = _dt.datetime.strptime(date + clock, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    if leap:
        when += _dt.timedelta(seconds=1)
    if frac:
        when += _dt.timedelta(microseconds=int((frac + "000000")[:6]))
    if aware and sign:
        offset = _dt.timedelta(hours=int(off_h), minutes=int(off_m))
        try:
            when = when.replace(tzinfo=_dt.timezone(offset if sign == "+" else -offset))
        except ValueError:  # an offset of a day or more
            return None
    return when


def _has_clock(text: str) -> bool:
    """Whether a DT that :func:`parse_datetime` reads holds at least the hour."""
    text = str(text).strip()
    iso = _ISO_DATE.match(text)
    if iso:
        text = "".join(iso.groups()) + text[iso.end() :]
    match = _DT.fullmatch(text.replace(":", ""))
    return bool(match and match.group(2))


def acquisition_start(ds) -> tuple[_dt.datetime | None, str]:
    """When an image's acquisition began (wall clock), and the attributes it came from.

    AcquisitionDateTime first, then the Acquisition, Content, Series and Study date/time
    pairs: the first pair that parses wins. A time without its date is anchored on the
    study date. ``(None, "none")`` when nothing parses.
    """
    text = str(ds.get("AcquisitionDateTime", "") or "")
    when = parse_datetime(text)
    # A DT cut to its date (YYYYMMDD is a valid DT) says the day, not when the clip
    # began: like a date without its time below, it is no start (it would be midnight).
    if when is not None and _has_clock(text):
        return when, "AcquisitionDateTime (0008,002A)"
    for date_attr, time_attr in (
        ("AcquisitionDate", "AcquisitionTime"),
        ("ContentDate", "ContentTime"),
        ("SeriesDate", "SeriesTime"),
        ("StudyDate", "StudyTime"),
    ):
        date = str(ds.get(date_attr, "") or "")
        time = str(ds.get(time_attr, "") or "")
        if time:
            when = parse_datetime(date + time) if date else None
            if when is None and date == "":
                study = str(ds.get("StudyDate", "") or "")
                when = parse_datetime(study + time) if study else None
            if when is not None:
                return when, f"{date_attr}/{time_attr}"
    return None, "none"


# --- frame times ----------------------------------------------------------------------


@dataclass(frozen=True)
class FrameTimes:
    """Acquisition time of each frame of a clip, and where it was read from.

    Attributes
    ----------
    seconds : time of each frame in seconds after the clip's acquisition start.
    source : the attribute used; ``"single frame"`` for one frame, ``"none"`` for a
        multi-frame clip without any timing (then every time is 0 and not to be trusted).
    notes : sources passed over, and why.
    implausible : the first source present whose values cannot be frame times (negative
        or day-long intervals); it was passed over. None when there was none.
    """

    seconds: np.ndarray
    source: str
    notes: tuple[str, ...] = ()
    implausible: str | None = None

    @property
    def known(self) -> bool:
        """False for a multi-frame clip without any frame timing."""
        return self.source != "none"


def frame_times(ds, n: int) -> FrameTimes:
    """Frame times of an ``n``-frame image from the first source that holds them.

    In order: FrameTimeVector (per-frame intervals as written), the per-frame functional
    groups' FrameAcquisitionDateTime (enhanced objects), FrameTime (a constant interval),
    then CineRate or RecommendedDisplayFrameRate (a nominal rate, least exact). A source
    with the wrong number of values is passed over with a note; one whose intervals are
    negative or longer than :data:`MAX_FRAME_TIME_MS` is passed over and reported in
    :attr:`FrameTimes.implausible`.
    """
    notes: list[str] = []
    bad: list[str] = []
    for reader in (_from_vector, _from_per_frame, _from_frame_time, _from_cine_rate):
        found = reader(ds, n, notes, bad)
        if found is not None:
            seconds, source = found
            return FrameTimes(seconds, source, tuple(notes), bad[0] if bad else None)
    implausible = bad[0] if bad else None
    if n > 1:
        notes.append("multi-frame without frame timing; frames given time 0")
        return FrameTimes(np.zeros(n), "none", tuple(notes), implausible)
    return FrameTimes(np.zeros(1), "single frame", tuple(notes), implausible)


def _from_vector(ds, n, notes, bad):
    if "FrameTimeVector" not in ds:
        return None
    values = [parse_number(v) for v in as_list(ds.FrameTimeVector)]
    if len(values) != n:
        notes.append(f"FrameTimeVector has {len(values)} entries for {n} frames; ignored")
        return None
    if any(v is None for v in values):  # NaN, text: the count was right, the values not
        notes.append("FrameTimeVector (0018,1065) holds a value that is not a number; ignored")
        return None
    wrong = [v for v in values if not 0 <= v <= MAX_FRAME_TIME_MS]
    if wrong:
        bad.append(
            f"FrameTimeVector (0018,1065) holds {wrong[0]!r}; frame intervals must be "
            f"finite, >= 0 and at most {MAX_FRAME_TIME_MS:g} ms"
        )
        notes.append(bad[-1] + "; ignored")
        return None
    return np.cumsum(values) / 1000.0, "FrameTimeVector (0018,1065) increments, ms"


def _from_per_frame(ds, n, notes, bad):
    if "PerFrameFunctionalGroupsSequence" not in ds:
        return None
    stamps = []
    for item in ds.PerFrameFunctionalGroupsSequence:
        content = item.get("FrameContentSequence")
        stamps.append(
            parse_datetime(str(content[0].get("FrameAcquisitionDateTime", ""))) if content else None
        )
    if len(stamps) != n or any(s is None for s in stamps):
        found = sum(s is not None for s in stamps)
        if found or len(stamps) != n:  # a source present but incomplete: say so
            notes.append(
                f"PerFrameFunctionalGroupsSequence has {len(stamps)} item(s), {found} with a "
                f"readable FrameAcquisitionDateTime (0018,9074), for {n} frames; ignored"
            )
        return None
    seconds = np.array([(s - stamps[0]).total_seconds() for s in stamps])
    steps_ms = np.diff(seconds) * 1000.0
    if np.any((steps_ms < 0) | (steps_ms > MAX_FRAME_TIME_MS)):
        bad.append(
            "FrameAcquisitionDateTime (0018,9074) per frame goes back in time or jumps by "
            f"more than {MAX_FRAME_TIME_MS:g} ms"
        )
        notes.append(bad[-1] + "; ignored")
        return None
    return seconds, "FrameAcquisitionDateTime (0018,9074) per frame"


def _from_frame_time(ds, n, notes, bad):
    frame_time = parse_number(ds.get("FrameTime"))
    if frame_time is None:
        return None
    if not 0 < frame_time <= MAX_FRAME_TIME_MS:
        bad.append(
            f"FrameTime (0018,1063) {frame_time!r} is not a finite number of ms in "
            f"(0, {MAX_FRAME_TIME_MS:g}]"
        )
        notes.append(bad[-1] + "; ignored")
        return None
    return np.arange(n) * frame_time / 1000.0, "FrameTime (0018,1063), ms"


def _from_cine_rate(ds, n, notes, bad):
    rate, source = parse_number(ds.get("CineRate")), "CineRate (0018,0040)"
    if not rate:
        rate = parse_number(ds.get("RecommendedDisplayFrameRate"))
        source = "RecommendedDisplayFrameRate (0008,2144)"
    if n <= 1 or not rate:
        return None
    if not 1000.0 / MAX_FRAME_TIME_MS <= rate:
        bad.append(f"{source} {rate!r} is not a positive number of frames/s")
        notes.append(bad[-1] + "; ignored")
        return None
    notes.append("no FrameTime/FrameTimeVector; frame times from the cine rate")
    return np.arange(n) / rate, f"{source}, frames/s"

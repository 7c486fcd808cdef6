"""Ultrasound clips stored one file per frame, gathered back into the clip they were cut from.

Some scanners and archives store a cine loop as single-frame images of one series. Each
file alone spans 0 s, so the guided time the loop covered was counted as none (and
flagged). Single-frame files of one series whose acquisition times follow each other
within :data:`MAX_FRAME_GAP_S` are one clip: from the first frame's time to the last's,
plus one frame time when the files state it.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import numpy as np

from hybridfuse.dicom import parse_number

__all__ = ["MAX_FRAME_GAP_S", "ClipFile", "group_frame_files", "series_span"]

#: Largest gap (s) between consecutive frames of one series still counted as one clip.
#: B-mode imaging runs at about 10-80 frames/s (the low end for deep, compounded or
#: multi-focus imaging), 12-100 ms between frames, so a live loop never leaves 1 s without
#: a frame; 1 s also keeps a loop whose times are stored to the whole second (consecutive
#: frames then 0 or 1 s apart) together. A longer pause is a frozen image or separate
#: stills, and the time between them is not known to be guided.
MAX_FRAME_GAP_S = 1.0
#: Longest frame time (ms) taken from FrameTime: 1 frame/s, well below any live imaging.
MAX_STATED_FRAME_MS = 1000.0


@dataclass(frozen=True)
class ClipFile:
    """One ultrasound file as read for the dose estimate."""

    path: str
    ds: object  # its header
    frames: int
    start: _dt.datetime  # acquisition start
    offset_s: float  # acquisition start, in s from the first irradiation event
    record: dict  # its input record (label, sha256; name only with include_phi)
    name: str  # how written outputs name it


def group_frame_files(clips: list[ClipFile]) -> list[list[ClipFile]]:
    """The clips, single-frame files of one series in a row within the gap joined.

    A multi-frame file, or a file without a SeriesInstanceUID, is a group of its own;
    groups are ordered by their first file as given, frames within one by time.
    """
    position = {id(c): k for k, c in enumerate(clips)}
    groups, by_series = [], {}
    for c in clips:
        series = str(c.ds.get("SeriesInstanceUID", "") or "").strip()
        if c.frames == 1 and series:
            by_series.setdefault(series, []).append(c)
        else:
            groups.append([c])
    for members in by_series.values():
        members.sort(key=lambda c: c.offset_s)
        groups.append([members[0]])
        for prev, cur in zip(members, members[1:], strict=False):
            if cur.offset_s - prev.offset_s <= MAX_FRAME_GAP_S:
                groups[-1].append(cur)
            else:
                groups.append([cur])
    return sorted(groups, key=lambda g: min(position[id(c)] for c in g))


def stated_frame_s(group: list[ClipFile]) -> tuple[float | None, str]:
    """The frame time the files state (median over them), in s, and where it came from."""
    found, source = [], ""
    for c in group:
        ms = parse_number(c.ds.get("FrameTime"))
        if ms is not None and 0 < ms <= MAX_STATED_FRAME_MS:
            found.append(ms / 1000.0)
            source = "FrameTime (0018,1063)"
            continue
        rate = parse_number(c.ds.get("CineRate"))
        if rate is not None and 1000.0 / MAX_STATED_FRAME_MS <= rate:
            found.append(1.0 / rate)
            source = source or "CineRate (0018,0040)"
    return (float(np.median(found)), source) if found else (None, "")


def series_span(group: list[ClipFile], fluoro_starts) -> tuple[float, float, float, str]:
    """(start s, end s, tolerance s, how) of a group of frame files taken as one clip.

    First frame to last plus a stated frame time, cut where the first fluoroscopy event
    after the first frame begins (as a clip is); tolerance one frame interval, at least 1 s.
    """
    times = [c.offset_s for c in group]
    begin = times[0]
    frame_s, frame_source = stated_frame_s(group)
    end = times[-1] + (frame_s or 0.0)
    later = [s for s in fluoro_starts if begin < s < end]
    if later:
        end = later[0]
    step = float(np.median(np.diff(times)))
    frame = (
        f" plus one frame time ({frame_s * 1000:g} ms, {frame_source})"
        if frame_s
        else " (no frame time stated)"
    )
    how = (
        f"{group[0].name}: first of {len(group)} single-frame files of one series "
        f"(SeriesInstanceUID), consecutive frames at most {MAX_FRAME_GAP_S:g} s apart, taken "
        f"as one clip: first frame to last frame{frame}"
        + (f" (cut at the fluoroscopy event starting at {end:.1f} s)" if later else "")
    )
    return begin, end, max(step, 1.0), how

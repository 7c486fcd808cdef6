"""Cases rewritten from the sample case: its runs and clip moved in time, its clip split.

The sample's clip has frames 6-9 beside run02's frames 0-3 (80.5 s after its start) and
frames 10-11 beside run03's (91 s after), which its landmark files name; a clip moved with
a run keeps those frame pairs.
"""

from __future__ import annotations

import datetime as _dt
import shutil
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from hybridfuse.testdata import sample_case

RUNS = ("run01_scout_lateral", "run02_confirm_lateral", "run03_confirm_ap")
#: Seconds from the clip's start to the frame beside each run's first frame.
CLIP_LEAD_S = {"run01_scout_lateral": 80.5, "run02_confirm_lateral": 80.5, "run03_confirm_ap": 91.0}
DAY = _dt.datetime(2026, 1, 15)


def set_start(ds, when: _dt.datetime) -> None:
    """Every acquisition start a reader may take, moved to ``when``."""
    stamp = when.strftime("%H%M%S.%f")
    ds.AcquisitionDateTime = when.strftime("%Y%m%d") + stamp
    ds.AcquisitionDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.AcquisitionTime = ds.ContentTime = stamp


def new_instance(ds, series: bool = True) -> None:
    """New SOP Instance (and Series) UIDs: another file, not a copy of the sample's."""
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if series:
        ds.SeriesInstanceUID = generate_uid()


def moved_run(folder: Path, run: str, when: _dt.datetime) -> Path:
    """The sample's run ``run`` starting at ``when``, written into ``folder``."""
    ds = pydicom.dcmread(sample_case() / f"fluoro_{run}.dcm")
    set_start(ds, when)
    path = folder / f"fluoro_{run}.dcm"
    ds.save_as(path)
    return path


def clip_beside(folder: Path, name: str, run: str, run_start: _dt.datetime) -> Path:
    """The sample's clip moved so that its frames lie beside run ``run``'s as in the sample."""
    ds = pydicom.dcmread(sample_case() / "us_clip.dcm")
    set_start(ds, run_start - _dt.timedelta(seconds=CLIP_LEAD_S[run]))
    new_instance(ds)
    path = folder / name
    ds.save_as(path)
    return path


def three_run_case(folder: Path, clips: dict[str, str]) -> dict[str, _dt.datetime]:
    """Runs at 10:00, 10:05 and 10:12 (landmarks kept), a clip beside each run in ``clips``.

    ``clips`` maps a clip's file name to the run it is acquired beside. No RDSR (its
    events would be an hour off) and no truth.json (it names the sample's times).
    """
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(sample_case() / "landmarks", folder / "landmarks")
    starts = dict(zip(RUNS, (DAY.replace(hour=10, minute=m) for m in (0, 5, 12)), strict=True))
    for run, when in starts.items():
        moved_run(folder, run, when)
    for name, run in clips.items():
        clip_beside(folder, name, run, starts[run])
    return starts


def split_clip(folder: Path, offsets_s, *, frame_ms: float | None = None, stem="us_f") -> list:
    """The sample's clip as single-frame files of one series, at ``offsets_s`` (s).

    File ``k`` holds frame ``k`` of the clip (cycled) acquired ``offsets_s[k]`` after the
    clip's start; ``FrameTime`` is written only when ``frame_ms`` is given.
    """
    from hybridfuse import dicom

    src = sample_case() / "us_clip.dcm"
    whole = pydicom.dcmread(src)
    start, _ = dicom.acquisition_start(whole)
    pixels = whole.pixel_array
    series = generate_uid()
    paths = []
    for k, offset in enumerate(offsets_s):
        frame = pixels[k % len(pixels)]
        ds = pydicom.dcmread(src, stop_before_pixels=True)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian  # one frame, raw
        for tag in ("NumberOfFrames", "FrameTimeVector", "FrameIncrementPointer", "FrameTime"):
            if tag in ds:
                delattr(ds, tag)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
        ds.PixelData = frame.tobytes()
        ds["PixelData"].VR = "OB" if whole.BitsAllocated == 8 else "OW"
        set_start(ds, start + _dt.timedelta(seconds=offset))
        new_instance(ds, series=False)
        ds.SeriesInstanceUID = series
        ds.InstanceNumber = k + 1
        if frame_ms is not None:
            ds.FrameTime = f"{frame_ms:g}"
        path = folder / f"{stem}{k:03d}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths

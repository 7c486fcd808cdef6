"""A clip stored one file per frame is one ultrasound-guided interval (session 20).

Each single-frame file was its own 0-second interval: the loop's guided time counted
as none, so nothing was saved by it (flagged in dose.json).
"""

from __future__ import annotations

import pytest

from hybridfuse.dose.report import build_dose_report
from hybridfuse.testdata import sample_case
from tests.sample_rewrite import split_clip

#: The sample clip's start (09:02:32), in s from the RDSR's first irradiation event.
CLIP_START_S = 92.0


def _report(files, include_phi=False):
    return build_dose_report(
        sample_case() / "rdsr.dcm", us_clips=files, include_phi=include_phi, seed=0
    )


def _intervals(files, include_phi=False):
    report = _report(files, include_phi)
    return report["saved"]["counterfactual"], report["flags"]


def test_frames_of_one_series_at_a_clinical_frame_rate_are_one_interval(tmp_path):
    files = split_clip(tmp_path, [k * 0.05 for k in range(40)], frame_ms=50)  # 20 frames/s
    cf, flags = _intervals(files)
    [iv] = cf["us_guided_intervals_s"]
    assert iv["start_s"] == pytest.approx(CLIP_START_S)
    assert iv["end_s"] == pytest.approx(CLIP_START_S + 39 * 0.05 + 0.05)  # plus a frame
    assert "first of 40 single-frame files of one series" in iv["source"]
    assert "plus one frame time (50 ms, FrameTime (0018,1063))" in iv["source"]
    assert len(iv["files"]) == len(cf["clips"]) == 40  # every file recorded, by label
    assert iv["files"][0] == cf["clips"][0]["input"]
    assert cf["us_guided_time_s"] > 0
    assert not [f for f in flags if "of 0 s" in f]


def test_the_methods_say_when_frame_files_were_joined(tmp_path):
    from hybridfuse.dose.methods import assumption_rows

    joined = _report(split_clip(tmp_path, [0.0, 0.05], frame_ms=50))
    alone = _report([sample_case() / "us_clip.dcm"])
    rule = "Frame files joined into one clip"
    assert [r[0] for r in assumption_rows(joined)].count(rule) == 1
    assert rule not in [r[0] for r in assumption_rows(alone)]


def test_whole_second_time_stamps_keep_a_loop_together(tmp_path):
    # A scanner writing times to the second: 30 frames/s read as 0, 0, ..., 1, 1, ..., 2.
    files = split_clip(tmp_path, [k // 30 for k in range(61)])
    cf, _ = _intervals(files)
    [iv] = cf["us_guided_intervals_s"]
    assert (iv["start_s"], iv["end_s"]) == pytest.approx((CLIP_START_S, CLIP_START_S + 2))
    assert "(no frame time stated)" in iv["source"]


@pytest.mark.parametrize(("gap_s", "intervals"), [(1.0, 1), (1.01, 3)])
def test_frames_more_than_a_second_apart_are_separate_stills(tmp_path, gap_s, intervals):
    files = split_clip(tmp_path, [0.0, gap_s, 2 * gap_s])
    cf, flags = _intervals(files)
    assert len(cf["us_guided_intervals_s"]) == intervals
    assert len([f for f in flags if "ultrasound interval of 0 s" in f]) == (intervals > 1) * 3


def test_frames_of_two_series_are_not_joined(tmp_path):
    first = split_clip(tmp_path, [0.0, 0.05], stem="a")
    second = split_clip(tmp_path, [0.1, 0.15], stem="b")  # another SeriesInstanceUID
    cf, _ = _intervals([*first, *second])
    ends = [t for iv in cf["us_guided_intervals_s"] for t in (iv["start_s"], iv["end_s"])]
    assert ends == pytest.approx([92.0, 92.05, 92.1, 92.15])


def test_a_series_is_named_by_its_first_file_with_phi(tmp_path):
    files = split_clip(tmp_path, [0.0, 0.05, 0.1], frame_ms=50)
    cf, _ = _intervals(files, include_phi=True)
    [iv] = cf["us_guided_intervals_s"]
    assert iv["source"].startswith("us_f000.dcm: first of 3 single-frame files")
    assert [c["file"] for c in cf["clips"]] == ["us_f000.dcm", "us_f001.dcm", "us_f002.dcm"]

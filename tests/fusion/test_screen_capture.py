"""An ultrasound with PixelSpacing and no ultrasound regions (a screen capture).

Nothing in such a file says where the image lies among the screen's text and rulers; the
imaged area is found in the whole frame, as inside a region. Before, the whole screen
was fused as tissue (session 19's well-formed sweep).
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from hybridfuse.fusion.imaged_area import find_imaged_area
from hybridfuse.fusion.io import read_image
from tests.conftest import ROOT, realdata_rows
from tests.fusion.test_imaged_area import _screen, _sector_truth

SAMPLE_US = ROOT / "testdata" / "sample" / "lumbar-mbb-seed1" / "us_clip.dcm"


def _without_regions(src, dst, annotate=None):
    """``src`` rewritten as a screen capture: its region's spacing as PixelSpacing."""
    ds = pydicom.dcmread(src)
    reg = ds.SequenceOfUltrasoundRegions[read_image(src).us_region_index]
    del ds.SequenceOfUltrasoundRegions
    dy_mm, dx_mm = 10 * float(reg.PhysicalDeltaY), 10 * float(reg.PhysicalDeltaX)
    ds.PixelSpacing = [f"{dy_mm:.6g}", f"{dx_mm:.6g}"]
    if annotate is not None:
        ds.decompress()
        pixels = ds.pixel_array.copy()
        annotate(pixels)
        ds.PixelData = pixels.tobytes()
    ds.save_as(dst)
    return dst


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_sample_clip_without_regions_masks_the_same_tissue(tmp_path):
    with_regions = read_image(SAMPLE_US)
    capture = read_image(_without_regions(SAMPLE_US, tmp_path / "us.dcm"))
    assert capture.mask is not None
    assert _iou(capture.mask, with_regions.mask) >= 0.95
    assert "no ultrasound regions" in capture.mask_source
    assert any("no ultrasound regions" in n for n in capture.notes)
    assert capture.pixel_spacing_mm == pytest.approx(with_regions.pixel_spacing_mm)


def test_screen_text_outside_the_image_is_not_tissue(tmp_path):
    def banner(pixels):  # white text strokes, a ruler on the right edge
        pixels[:, 4:6, 10:200] = 255
        pixels[:, 4:9, 10:12] = 255
        pixels[:, 100:300:10, -8:-2] = 200

    capture = read_image(_without_regions(SAMPLE_US, tmp_path / "us.dcm", banner))
    screen = np.zeros(capture.mask.shape, bool)
    banner(screen[None])
    assert screen.sum() > 300
    assert not (capture.mask & screen).any()
    assert capture.mask.mean() < 0.6


def test_a_label_at_the_apex_still_gives_a_sector(rng):
    """A phased array whose apex is the screen's top, with the depth mark drawn above it."""
    rows, cols = 300, 400
    apex = (200.0, 3.0)
    truth = _sector_truth(apex, 0.0, 280.0, -40.0, 40.0)
    frames = _screen(truth, rng)
    frames[:, 0:7, 188:214] = 230  # the label touching the apex
    area = find_imaged_area(frames, (0, 0, cols - 1, rows - 1))
    assert area.shape == "sector"
    np.testing.assert_allclose(area.apex_xy, apex, atol=3.0)
    assert not (area.mask & ~truth).any()


def _single_view_us_rows():
    return [
        p
        for p in realdata_rows("images")
        if p.values[0] is None
        or (p.values[0]["modality"] == "US" and "ALOKA" not in p.values[0]["filename"])
    ]


@pytest.mark.parametrize("row", _single_view_us_rows())
def test_real_single_view_captures_mask_as_with_regions(row, tmp_path):
    """The real single-view screens, rewritten without regions (ALOKA is a dual view)."""
    from tests.conftest import REALDATA

    src = REALDATA / "images" / row["filename"]
    with_regions = read_image(src)
    capture = read_image(_without_regions(src, tmp_path / "us.dcm"))
    assert capture.imaged_area.shape == with_regions.imaged_area.shape == "sector"
    assert _iou(capture.mask, with_regions.mask) >= 0.95


# Review of session 20 (wt20-review).


def test_a_grey_panel_larger_than_the_image_does_not_mask_the_tissue_away(rng):
    """A screen with a uniform grey UI panel, apart from the image and larger than it:
    the largest piece was the panel, so the mask held the panel and none of the tissue
    (the old whole-screen mask at least held the tissue)."""
    from hybridfuse.fusion.io import _screen_area

    rows, cols = 300, 400
    truth = _sector_truth((100.0, -20.0), 40.0, 200.0, -35.0, 35.0)[:rows, :cols]
    frames = _screen(truth, rng)
    frames[:, 20:290, 230:395] = 60  # the panel: 270 x 165 px, grey
    assert (frames[0, 20:290, 230:395, 0] == 60).sum() > truth.sum()
    notes = []
    area = _screen_area(frames, (0.2, 0.2), notes)
    if area is None:  # the whole screen, as before, and a note says why
        assert "no one imaged area" in notes[0]
    else:
        assert (area.mask & truth).sum() >= 0.9 * truth.sum(), area.source

"""The imaged area: the sector or rectangle of tissue inside an ultrasound region."""

from __future__ import annotations

import numpy as np
import pytest

from hybridfuse.fusion.imaged_area import find_imaged_area
from tests.conftest import realdata_rows
from tests.fusion.test_display import real_file

ROWS, COLS = 300, 400


def _sector_truth(apex, r0, r1, a0, a1, aspect=1.0) -> np.ndarray:
    yy, xx = np.mgrid[0:ROWS, 0:COLS]
    dx, dy = (xx - apex[0]) * aspect, yy - apex[1]
    radius = np.hypot(dx, dy)
    angle = np.degrees(np.arctan2(dx, dy))
    return (radius >= r0) & (radius <= r1) & (angle >= a0) & (angle <= a1)


def _screen(truth: np.ndarray, rng, frames: int = 1) -> np.ndarray:
    """Speckle (1-255) inside ``truth``; white text, a ruler and a green marker around it."""
    out = np.zeros((frames, ROWS, COLS, 3), np.uint8)
    speckle = rng.integers(1, 256, (frames, ROWS, COLS), dtype=np.uint8)
    out[truth[None].repeat(frames, 0)] = speckle[truth[None].repeat(frames, 0)][:, None]
    out[:, 10:12, 20:120] = 255  # text strokes, 2 px thick, in the screen's banner
    out[:, 20:60:6, 360:372] = 200  # ruler ticks inside the region's right margin
    out[:, 30:80, 364:366] = 200
    out[:, 100:106, 40:46] = (0, 220, 0)  # a green marker in the region's left margin
    return out


#: A curvilinear probe: apex above the image, 70 degrees open.
APEX, R0, R1, A0, A1 = (200.0, -60.0), 90.0, 330.0, -35.0, 35.0
BOX = (10, 5, 390, 295)


@pytest.fixture
def sector_screen(rng):
    truth = _sector_truth(APEX, R0, R1, A0, A1)
    return truth, _screen(truth, rng)


def test_sector_parameters_are_found(sector_screen):
    truth, frames = sector_screen
    area = find_imaged_area(frames, BOX)
    assert area.shape == "sector"
    np.testing.assert_allclose(area.apex_xy, APEX, atol=3.0)
    np.testing.assert_allclose(area.angles_deg, (A0, A1), atol=1.0)
    np.testing.assert_allclose(area.radius_px, (R0, R1), atol=3.0)


def test_sector_mask_is_inside_the_fan_and_covers_it(sector_screen):
    truth, frames = sector_screen
    area = find_imaged_area(frames, BOX)
    assert not (area.mask & ~truth).any()
    assert area.mask.sum() >= 0.97 * truth.sum()


def test_text_rulers_and_markers_never_enter_the_mask(sector_screen):
    truth, frames = sector_screen
    area = find_imaged_area(frames, BOX)
    annotation = (frames[0].max(axis=2) > 0) & ~truth
    assert annotation.sum() > 300  # the screen does carry them
    assert not (area.mask & annotation).any()


def test_phased_array_apex_inside_the_image(rng):
    apex = (200.0, 8.0)
    truth = _sector_truth(apex, 0.0, 280.0, -40.0, 40.0)
    area = find_imaged_area(_screen(truth, rng), BOX)
    assert area.shape == "sector"
    np.testing.assert_allclose(area.apex_xy, apex, atol=3.0)
    assert not (area.mask & ~truth).any()


def test_anisotropic_pixels_give_circular_arcs_in_mm(rng):
    aspect = 1.25  # columns 1.25 times as wide as rows
    truth = _sector_truth(APEX, R0, R1, A0, A1, aspect=aspect)
    frames = _screen(truth, rng)
    area = find_imaged_area(frames, BOX, spacing_mm=(0.2, 0.25))
    assert area.shape == "sector"
    np.testing.assert_allclose(area.radius_px, (R0, R1), atol=3.0)
    assert not (area.mask & ~truth).any()
    assert area.mask.sum() >= 0.97 * truth.sum()


def test_linear_probe_filling_the_region_is_the_region(rng):
    frames = np.zeros((1, ROWS, COLS), np.uint8)
    x0, y0, x1, y1 = 50, 40, 349, 279
    frames[0, y0 : y1 + 1, x0 : x1 + 1] = rng.integers(1, 256, (y1 - y0 + 1, x1 - x0 + 1))
    frames[0, 10:12, 20:120] = 255
    area = find_imaged_area(frames, (x0, y0, x1, y1))
    assert area.shape == "rectangle"
    assert area.bounds_xy == (x0, y0, x1, y1)
    assert area.mask.sum() == (x1 - x0 + 1) * (y1 - y0 + 1)


def test_linear_probe_inside_a_wider_region_keeps_its_shadowed_corner(rng):
    frames = np.zeros((1, ROWS, COLS), np.uint8)
    x0, y0, x1, y1 = 80, 40, 319, 279
    frames[0, y0 : y1 + 1, x0 : x1 + 1] = rng.integers(1, 256, (y1 - y0 + 1, x1 - x0 + 1))
    frames[0, 200 : y1 + 1, x0:140] = 0  # an acoustic shadow reaching the corner
    frames[0, 100:102, 20:70] = 255  # text in the region's margin
    area = find_imaged_area(frames, (10, 10, 389, 289))
    assert area.shape == "rectangle"
    assert area.bounds_xy == (x0 + 1, y0 + 1, x1 - 1, y1 - 1)
    assert area.mask[y1 - 1, x0 + 1]  # the shadow is tissue
    assert not area.mask[100:102, 20:70].any()


def test_black_region_falls_back_to_its_bounds_and_says_so():
    area = find_imaged_area(np.zeros((1, ROWS, COLS), np.uint8), BOX)
    assert area.shape == "region"
    assert "too little image content" in area.source
    assert area.bounds_xy == BOX


def test_cine_frames_vote(rng):
    truth = _sector_truth(APEX, R0, R1, A0, A1)
    frames = _screen(truth, rng, frames=5)
    frames[2, 150:160, 20:40] = 255  # a blob in one frame only (a cursor) is not tissue
    area = find_imaged_area(frames, BOX)
    assert area.shape == "sector"
    assert not (area.mask & ~truth).any()


# --- the real ultrasound files -------------------------------------------------------------


def _us_rows():
    return [
        p for p in realdata_rows("images") if p.values[0] is None or p.values[0]["modality"] == "US"
    ]


@pytest.mark.parametrize("row", _us_rows())
def test_real_ultrasound_imaged_area_is_tissue_only(row):
    image = real_file(row["filename"])[0]
    area = image.imaged_area
    reg = image.us_region
    assert area is not None and area.shape in ("sector", "rectangle")
    assert area.mask is image.mask
    region = reg.mask(image.shape)
    assert not (area.mask & ~region).any()
    rgb = image.array
    chroma = rgb.max(axis=3).astype(int) - rgb.min(axis=3) if image.is_color else 0 * rgb
    # No coloured annotation in any frame, and (nearly) no black screen: inside a fan,
    # even anechoic tissue is above 0 on these scanners.
    assert not (np.asarray(chroma > 40).any(axis=0) & area.mask).any()
    lit = (image.array.max(axis=0) > 0).reshape(image.shape + (-1,)).any(axis=2)
    assert lit[area.mask].mean() >= 0.99
    # The region is mostly screen for these vendors: the area is a real part of it.
    assert 0.3 <= area.mask.sum() / region.sum() <= 1.0

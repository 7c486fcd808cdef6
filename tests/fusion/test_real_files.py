"""Issue #16's check: each real ultrasound file fused onto the real fluoroscopy file; info.

The ultrasound part of the overlay must look like pydicom's rendering of the source
(correlation >= 0.9 inside the imaged area) and hold no pixel from outside that area.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage

from hybridfuse.fusion.fuse import fuse_images
from hybridfuse.fusion.io import read_image
from hybridfuse.registration import Transform
from hybridfuse.registration.landmarks import fit_model
from hybridfuse.registration.warp import warp_to_fixed
from tests.conftest import REALDATA, realdata_rows
from tests.fusion.test_display import real_file, real_rendering

RF_FILE = REALDATA / "images" / "orthanc-tests__KarstenHilbertRF.dcm"


def _us_rows():
    return [
        p for p in realdata_rows("images") if p.values[0] is None or p.values[0]["modality"] == "US"
    ]


def _landmarks(moving, fixed) -> Transform:
    """Corners of the imaged area placed on a box in the middle of the fluoroscopy."""
    x0, y0, x1, y1 = moving.imaged_area.bounds_xy
    rows, cols = fixed.shape
    scale = 0.6 * min(cols / (x1 - x0), rows / (y1 - y0))
    cx, cy = cols / 2, rows / 2
    hw, hh = scale * (x1 - x0) / 2, scale * (y1 - y0) / 2
    mov = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
    fix = [[cx - hw, cy - hh], [cx + hw, cy - hh], [cx + hw, cy + hh], [cx - hw, cy + hh]]
    return Transform(fit_model("similarity", mov, fix), "similarity")


def _fused(fixed, moving, transform, out, opacity) -> tuple[np.ndarray, int]:
    record = fuse_images(fixed, moving, transform, out, opacity=opacity, video="none", dicom=False)
    frame = json.loads((out / "fuse.json").read_text())["pairs"][0]
    assert frame == record["pairs"][0]
    rgb = np.asarray(PILImage.open(out / "fused_000.png")).astype(float)
    return rgb, int(frame["moving_frame"])


@pytest.fixture(scope="module")
def fluoroscopy():
    if not RF_FILE.is_file():
        pytest.skip(f"{RF_FILE} is absent: real vendor files are read from ../shared")
    return read_image(RF_FILE)


@pytest.mark.parametrize("row", _us_rows())
def test_real_ultrasound_fuses_as_pydicom_renders_it(row, fluoroscopy, tmp_path):
    moving = real_file(row["filename"])[0]
    transform = _landmarks(moving, fluoroscopy)
    overlay, j = _fused(fluoroscopy, moving, transform, tmp_path / "a", opacity=1.0)
    alone, _ = _fused(fluoroscopy, moving, transform, tmp_path / "b", opacity=0.0)

    reference = real_rendering(row["filename"], j)
    ref_w, _ = warp_to_fixed(
        reference.astype(np.float32), transform.matrix, fluoroscopy.shape, order="linear"
    )
    _, area_w = warp_to_fixed(
        moving.mask.astype(np.float32),
        transform.matrix,
        fluoroscopy.shape,
        moving_mask=moving.mask,
        order="nearest",
    )
    # The ultrasound part: alpha 1 shows the ultrasound alone where it lands.
    corr = np.corrcoef(overlay[area_w][:, 0], ref_w[area_w])[0, 1]
    assert corr >= 0.9, f"{row['filename']}: correlation {corr:.3f}"
    # Nothing from outside the imaged area: there the overlay is the fluoroscopy alone.
    changed = np.abs(overlay - alone).max(axis=2) > 0
    assert changed.any()
    assert not (changed & ~area_w).any()


@pytest.mark.parametrize("row", _us_rows())
def test_info_reports_the_imaged_area(row):
    from click.testing import CliRunner

    from hybridfuse.cli.main import cli

    path = str(REALDATA / "images" / row["filename"])
    decoded = CliRunner().invoke(cli, ["info", "--decode", "--json", path])
    assert decoded.exit_code == 0, decoded.output
    area = json.loads(decoded.output)[0]["image"]["imaged_area"]
    assert area["shape"] == "sector"  # all three real probes are curvilinear or phased
    assert area["radius_mm"][0] < area["radius_mm"][1]
    assert area["angles_deg"][0] < 0 < area["angles_deg"][1]
    text = CliRunner().invoke(cli, ["info", "--decode", path]).output
    assert "Imaged area    sector, x " in text and " deg open)" in text
    header_only = CliRunner().invoke(cli, ["info", path]).output
    assert "the region's bounds only (--decode finds the tissue" in header_only


def test_real_pixel_shapes_are_read():
    """Issue16's ultrasound: 0.2857 x 0.2286 mm, PixelAspectRatio 536:670 (agreeing); the RF 1:1."""
    from hybridfuse.fusion.aspect import pixel_aspect

    us_file = REALDATA / "images" / "orthanc-tests__Issue16.dcm"
    if not (us_file.is_file() and RF_FILE.is_file()):
        pytest.skip("real vendor files are read from ../shared")
    us = read_image(us_file, decode=False)
    assert us.pixel_aspect_ratio == (536.0, 670.0)
    aspect = pixel_aspect(us, limit=None)
    assert aspect.viewer_scale() == pytest.approx([1.25, 1.0], rel=1e-6)
    assert "disagrees" not in aspect.source
    rf = read_image(RF_FILE, decode=False)
    assert rf.pixel_aspect_ratio == (1.0, 1.0) and not pixel_aspect(rf).resampled

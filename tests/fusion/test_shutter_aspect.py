"""A circular shutter on pixels that are not square is a circle in millimetres.

PS3.3 C.7.6.11 gives its radius in pixels along the row direction; it was taken in pixels
of both axes, a circle of pixels (session 20's aspect work left it).
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from hybridfuse.fusion.io import read_image
from tests.conftest import ROOT

RUN02 = ROOT / "testdata" / "sample" / "lumbar-mbb-seed1" / "fluoro_run02_confirm_lateral.dcm"


def _extent(mask):
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1


@pytest.mark.parametrize(
    ("tags", "rows_per_col"),
    [
        ({"ImagerPixelSpacing": ["0.2", "0.3"]}, 1.5),
        ({"ImagerPixelSpacing": ["0.37", "0.37"]}, 1.0),
        ({"PixelAspectRatio": [2, 3]}, 1.5),  # no spacing: the ratio alone
    ],
)
def test_circular_shutter_is_round_in_millimetres(tmp_path, tags, rows_per_col):
    ds = pydicom.dcmread(RUN02)
    if "PixelAspectRatio" in tags:
        del ds.ImagerPixelSpacing
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.RadiusOfCircularShutter = 100
    ds.save_as(tmp_path / "xa.dcm")
    width, height = _extent(read_image(tmp_path / "xa.dcm").mask)
    assert width == 201
    assert height == pytest.approx(200 * rows_per_col + 1, abs=2)  # edge rows: rounding

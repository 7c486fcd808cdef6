"""Figures of docs/dicom-layer.md (display pixels, imaged area) on the real files.

``python benchmarks/display_real_files.py`` prints, for each file in
``../shared/realdata/images``, the correlation of our display with pydicom's rendering
(inside the imaged area for ultrasound), the overlay's correlation after fusing each
ultrasound file onto the Siemens RF file as ``tests/fusion/test_real_files.py`` does, and
the imaged area found. About 30 s.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hybridfuse.fusion import display  # noqa: E402
from hybridfuse.fusion.io import read_image  # noqa: E402
from hybridfuse.registration.warp import warp_to_fixed  # noqa: E402
from tests.conftest import REALDATA  # noqa: E402
from tests.fusion.test_display import _pydicom_rendering, real_file  # noqa: E402
from tests.fusion.test_real_files import RF_FILE, _fused, _landmarks  # noqa: E402


def _corr(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _overlay_corr(moving, path: Path) -> float:
    fixed = read_image(RF_FILE)
    transform = _landmarks(moving, fixed)
    with tempfile.TemporaryDirectory() as tmp:
        overlay, j = _fused(fixed, moving, transform, Path(tmp) / "a", opacity=1.0)
    ref = _pydicom_rendering(pydicom.dcmread(path), frame=j).astype(np.float32)
    ref_w, _ = warp_to_fixed(ref, transform.matrix, fixed.shape)
    _, area_w = warp_to_fixed(
        moving.mask.astype(np.float32),
        transform.matrix,
        fixed.shape,
        moving_mask=moving.mask,
        order="nearest",
    )
    return _corr(overlay[area_w][:, 0], ref_w[area_w])


def main() -> None:
    for path in sorted((REALDATA / "images").glob("*.dcm")):
        image, ds = real_file(path.name)
        reference = _pydicom_rendering(ds)
        if image.modality.value == "US":
            mask = image.mask
            shown = _corr(image.gray(0)[mask], reference[mask])
            area = image.imaged_area.to_dict(image.pixel_spacing_mm)
            print(f"{path.name}: display {shown:.4f}, overlay {_overlay_corr(image, path):.4f}")
            print(f"    imaged area {area}")
        else:
            frame = ds.pixel_array
            plan = display.plan_display(
                ds, ds.PhotometricInterpretation, display.stored_range([frame], ds)
            )
            shown = _corr(display.to_display(frame, ds, plan), reference)
            print(f"{path.name}: display {shown:.4f} ({plan.description})")


if __name__ == "__main__":
    main()

"""Options of the image pair: pixel spacing given by hand, and the belonging-together checks.

``--fixed-spacing-mm`` is the fluoroscopy's pixel spacing *at the detector*, the plane of
*Imager Pixel Spacing* (0018,1164), which it stands for: the isocentre spacing the
registration uses follows from it and the file's SID/SOD (or estimated magnification),
exactly as for a file that carries the attribute. ``--moving-spacing-mm`` is the
ultrasound's spacing in its scan plane, as a calibrated ultrasound region gives it.
The checks themselves are in :mod:`fusion.belonging`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hybridfuse._options import option

from ._image import Image, SpacingPlane, XRayGeometry

__all__ = ["PairOptions", "with_given_spacing"]


@dataclass(frozen=True)
class PairOptions:
    """What ``register``, ``fuse``, ``run`` and ``batch`` need to know of the two images."""

    fixed_spacing_mm: tuple[float, float] | None = option(
        None,
        "Fluoroscopy pixel spacing ROW_MM,COL_MM at the detector, as Imager Pixel Spacing "
        "(0018,1164) gives it, for a file without one (replaces the file's); the isocentre "
        "spacing follows from the file's SID/SOD.",
        minimum=0.01,
        maximum=5.0,
    )
    moving_spacing_mm: tuple[float, float] | None = option(
        None,
        "Ultrasound pixel spacing ROW_MM,COL_MM in the scan plane, for an uncalibrated "
        "ultrasound (replaces the file's calibration).",
        minimum=0.005,
        maximum=5.0,
    )
    max_acquisition_gap_s: float = option(
        3600.0,
        "Largest time between the two images' acquisition starts, in seconds; further "
        "apart they are refused as not belonging together (see --allow-mismatch).",
        minimum=0.0,
    )
    allow_mismatch: bool = option(
        False,
        "Go on when the two images differ in patient, study or acquisition time; the "
        "checks overridden are recorded in the outputs.",
    )


def with_given_spacing(image: Image, spacing_mm, *, fixed: bool) -> Image:
    """``image`` with the pixel spacing given by hand, or ``image`` itself when None.

    The fixed (fluoroscopy) spacing replaces the imager spacing at the detector, so the
    isocentre spacing is derived from it as from the DICOM attribute; the moving spacing
    is the ultrasound scan plane's. What the file said is kept as a note.
    """
    if spacing_mm is None:
        return image
    spacing = (float(spacing_mm[0]), float(spacing_mm[1]))
    flag = "--fixed-spacing-mm" if fixed else "--moving-spacing-mm"
    notes = image.notes
    if image.pixel_spacing_mm is not None:
        notes += (
            f"file spacing {image.pixel_spacing_mm} mm ({image.spacing_source}) replaced by {flag}",
        )
    changes: dict = {"pixel_spacing_mm": spacing, "notes": notes}
    if fixed:
        changes["spacing_plane"] = SpacingPlane.DETECTOR
        changes["spacing_source"] = f"given by hand ({flag}), detector plane"
        if image.modality.is_xray:
            xray = image.xray or XRayGeometry()
            changes["xray"] = dataclasses.replace(xray, imager_pixel_spacing_mm=spacing)
    else:
        changes["spacing_plane"] = SpacingPlane.ULTRASOUND
        changes["spacing_source"] = f"given by hand ({flag}), ultrasound scan plane"
    return dataclasses.replace(image, **changes)

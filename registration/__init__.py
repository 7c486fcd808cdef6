"""Registration of ultrasound frames to fluoroscopy: a numeric library.

Arrays and geometry in, transforms out. Nothing here reads DICOM or imports another
hybridfuse package; :mod:`fusion`, the phantom generator and the CLI build on it.
"""

from .errors import ConvergenceError, IllPosedGeometryError, RegistrationError
from .geometry import (
    ConeBeamGeometry,
    ImagePlane,
    apply_homography,
    check_not_edge_on,
    plane_homography,
    plane_obliquity_deg,
    rotation_from_axes,
)

__all__ = [
    "ConeBeamGeometry",
    "ConvergenceError",
    "IllPosedGeometryError",
    "ImagePlane",
    "RegistrationError",
    "apply_homography",
    "check_not_edge_on",
    "plane_homography",
    "plane_obliquity_deg",
    "rotation_from_axes",
]

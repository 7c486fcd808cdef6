"""Registration of ultrasound frames to fluoroscopy: a numeric library.

Arrays and geometry in, transforms out. Nothing here reads DICOM or imports another
hybridfuse package; :mod:`fusion`, the phantom generator and the CLI build on it.
"""

from .errors import (
    ConvergenceError,
    IllPosedGeometryError,
    LandmarkInputError,
    RegistrationError,
    StartTransformError,
)
from .geometry import (
    ConeBeamGeometry,
    ImagePlane,
    apply_homography,
    check_not_edge_on,
    plane_homography,
    plane_obliquity_deg,
    rotation_from_axes,
)
from .landmarks import LandmarkFit, fit_landmarks, fit_model
from .metrics import Metric, MetricContext, metric_cost
from .preprocess import Preprocess
from .register import Landmarks, RegistrationOptions, RegistrationResult, register
from .transforms import Parameterization, Transform, TransformModel

__all__ = [
    "ConeBeamGeometry",
    "ConvergenceError",
    "IllPosedGeometryError",
    "LandmarkInputError",
    "ImagePlane",
    "LandmarkFit",
    "Landmarks",
    "Metric",
    "MetricContext",
    "Parameterization",
    "Preprocess",
    "RegistrationError",
    "RegistrationOptions",
    "RegistrationResult",
    "StartTransformError",
    "Transform",
    "TransformModel",
    "apply_homography",
    "check_not_edge_on",
    "fit_landmarks",
    "fit_model",
    "metric_cost",
    "plane_homography",
    "plane_obliquity_deg",
    "register",
    "rotation_from_axes",
]

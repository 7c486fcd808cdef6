"""Registration of ultrasound frames to fluoroscopy: a numeric library.

Arrays and geometry in, transforms out. Nothing here reads DICOM or imports another
hybridfuse package; :mod:`fusion`, the phantom generator and the CLI build on it.
"""

from ._register import RegistrationResult, register
from .errors import (
    ConvergenceError,
    IllPosedGeometryError,
    LandmarkInputError,
    RegistrationError,
    StartTransformError,
    UnverifiedResultError,
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
from .guards import QUALITY_KEYS, Quality
from .landmarks import LandmarkFit, fit_landmarks, fit_model
from .metrics import Metric, MetricContext, metric_cost
from .options import (
    GuardOptions,
    LandmarkOptions,
    PyramidOptions,
    RegistrationOptions,
    SearchOptions,
)
from .preprocess import Preprocess
from .start import Landmarks
from .transforms import Parameterization, Transform, TransformModel

__all__ = [
    "ConeBeamGeometry",
    "ConvergenceError",
    "GuardOptions",
    "IllPosedGeometryError",
    "LandmarkInputError",
    "ImagePlane",
    "LandmarkFit",
    "LandmarkOptions",
    "Landmarks",
    "Metric",
    "MetricContext",
    "Parameterization",
    "Preprocess",
    "PyramidOptions",
    "QUALITY_KEYS",
    "Quality",
    "RegistrationError",
    "RegistrationOptions",
    "RegistrationResult",
    "SearchOptions",
    "StartTransformError",
    "UnverifiedResultError",
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

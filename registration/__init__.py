"""Registration of ultrasound frames to fluoroscopy: a numeric library.

Arrays and geometry in, transforms out. Nothing here reads DICOM or imports another
hybridfuse package; :mod:`fusion`, the phantom generator and the CLI build on it.
"""

import importlib

# Submodules load on first use: the command line imports the option definitions
# without paying for Numba and the readers (PEP 562).
_WHERE = {
    "ConeBeamGeometry": "geometry",
    "ConvergenceError": "errors",
    "GuardOptions": "options",
    "IllPosedGeometryError": "errors",
    "ImagePlane": "geometry",
    "LandmarkFit": "landmarks",
    "LandmarkInputError": "errors",
    "LandmarkOptions": "options",
    "Landmarks": "start",
    "Metric": "metrics",
    "MetricContext": "metrics",
    "Parameterization": "transforms",
    "Preprocess": "preprocess",
    "PyramidOptions": "options",
    "QUALITY_KEYS": "guards",
    "Quality": "guards",
    "RegistrationError": "errors",
    "RegistrationOptions": "options",
    "RegistrationResult": "_register",
    "SearchOptions": "options",
    "StartTransformError": "errors",
    "Transform": "transforms",
    "TransformModel": "transforms",
    "apply_homography": "geometry",
    "check_not_edge_on": "geometry",
    "fit_landmarks": "landmarks",
    "fit_model": "landmarks",
    "metric_cost": "metrics",
    "plane_homography": "geometry",
    "plane_obliquity_deg": "geometry",
    "register": "_register",
    "rotation_from_axes": "geometry",
}


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_WHERE))


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

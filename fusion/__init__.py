"""Reading images and producing what clinicians see.

The image type :class:`Image` (pixels with spacing, times, masks and X-ray geometry)
lives here because reading files is this package's job; :mod:`registration` sees only
the arrays and geometry taken from it.
"""

import importlib

# Submodules load on first use: the command line imports the option definitions
# without paying for Numba and the readers (PEP 562).
_WHERE = {
    "CollimatorShape": "_image",
    "CorruptFileError": "errors",
    "DecoderMissingError": "errors",
    "FusionError": "errors",
    "IMAGE_SOP_CLASSES": "io",
    "Image": "_image",
    "InputError": "errors",
    "MissingCalibrationError": "errors",
    "Modality": "_image",
    "NotAnImageError": "errors",
    "SpacingPlane": "_image",
    "UltrasoundRegion": "_image",
    "UnsupportedSOPClassError": "errors",
    "XRayGeometry": "_image",
    "is_dicom_file": "io",
    "read_header": "io",
    "read_image": "io",
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
    "IMAGE_SOP_CLASSES",
    "CollimatorShape",
    "CorruptFileError",
    "DecoderMissingError",
    "FusionError",
    "Image",
    "InputError",
    "MissingCalibrationError",
    "Modality",
    "NotAnImageError",
    "SpacingPlane",
    "UltrasoundRegion",
    "UnsupportedSOPClassError",
    "XRayGeometry",
    "is_dicom_file",
    "read_header",
    "read_image",
]

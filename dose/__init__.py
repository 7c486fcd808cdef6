"""Radiation dose: what the X-ray unit recorded and what ultrasound guidance saved.

Stands alone: it reads its own DICOM and imports nothing of :mod:`fusion` or
:mod:`registration`.
"""

from .errors import DoseError, DoseInputError
from .image_tags import ImageDoseTags, parse_number, read_image_dose_tags
from .rdsr import DoseRecord, IrradiationEvent, PlaneTotals, read_rdsr, summarize_dose_report
from .units import UnitError, convert, normalise_unit

__all__ = [
    "DoseError",
    "DoseInputError",
    "DoseRecord",
    "ImageDoseTags",
    "IrradiationEvent",
    "PlaneTotals",
    "UnitError",
    "convert",
    "normalise_unit",
    "parse_number",
    "read_image_dose_tags",
    "read_rdsr",
    "summarize_dose_report",
]

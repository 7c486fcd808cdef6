"""Human labels and number formatting for the dose outputs people read (HTML, CSV).

JSON keeps full floats for programs; what a physicist reads shows each number to the
precision it carries, with its unit, and never as conversion noise ("0.79899999999999",
"-1.73e-14 %").
"""

from __future__ import annotations

import math

__all__ = ["LABELS", "label", "number", "quantity", "relative", "csv_number"]

#: key (as in dose.json) -> (label, unit)
LABELS = {
    "dap_total_gy_cm2": ("DAP, total", "Gy·cm²"),
    "fluoro_dap_gy_cm2": ("DAP, fluoroscopy", "Gy·cm²"),
    "acquisition_dap_gy_cm2": ("DAP, acquisition", "Gy·cm²"),
    "ka_r_total_mgy": ("Air kerma at the reference point (Ka,r), total", "mGy"),
    "fluoro_ka_r_mgy": ("Ka,r, fluoroscopy", "mGy"),
    "acquisition_ka_r_mgy": ("Ka,r, acquisition", "mGy"),
    "fluoro_time_s": ("Fluoroscopy time", "s"),
    "acquisition_time_s": ("Acquisition time", "s"),
    "pulses": ("Fluoroscopy pulses", "pulses"),
    "dap_gy_cm2": ("DAP", "Gy·cm²"),
    "ka_r_mgy": ("Ka,r", "mGy"),
    "entrance_kerma_mgy": ("Entrance air kerma (Ka,r × table transmission)", "mGy"),
}

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def label(key: str) -> str:
    """The human label of a dose.json key, with its unit: "DAP, total (Gy·cm²)"."""
    name, unit = LABELS.get(key, (key.replace("_", " "), ""))
    return f"{name} ({unit})" if unit else name


def number(value, sig: int = 4) -> str:
    """``value`` to ``sig`` significant digits, fixed-point unless very small or large.

    Trailing zeros are dropped (the digits shown are the ones the value carries), a
    rounded zero is "0" (never "-0.000"), and 1.2e-5 reads "1.2 × 10⁻⁵".
    """
    if value is None:
        return "unknown"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    try:
        v = float(value)
    except (TypeError, ValueError):  # not a number: shown as the text it is (escaped by callers)
        return str(value)
    if not math.isfinite(v):
        return "not a number"
    if v == 0:
        return "0"
    exp = math.floor(math.log10(abs(float(f"{v:.{sig - 1}e}"))))
    if -4 <= exp < 6:
        text = f"{v:.{max(0, sig - 1 - exp)}f}"
        text = text.rstrip("0").rstrip(".") if "." in text else text
        return "0" if float(text) == 0 else text
    mantissa = f"{v / 10**exp:.{sig - 1}f}".rstrip("0").rstrip(".")
    return f"{mantissa} × 10{str(exp).translate(_SUPERSCRIPT)}"


def quantity(value, unit: str, sig: int = 4) -> str:
    """A number with its unit, or "unknown" (never "None")."""
    return "unknown" if value is None else f"{number(value, sig)} {unit}".rstrip()


def relative(rel) -> str:
    """A relative difference for reading: "+11.7 %", "0 %", or "96 × the total" when huge."""
    if rel is None:
        return "total is 0"
    if abs(rel) < 5e-4:
        return "0 %"
    if abs(rel) >= 10:
        return f"event sum {number(1 + rel, 3)} × the total"
    return f"{100 * rel:+.1f} %"


def csv_number(value: float) -> str:
    """A float for a CSV cell: 12 significant digits, which drops unit-conversion noise.

    Recorded values carry far fewer digits (a DICOM decimal string holds at most 16
    characters), so nothing recorded is lost.
    """
    return repr(float(f"{value:.12g}"))

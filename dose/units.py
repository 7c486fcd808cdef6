"""Measurement units of dose reports, normalised from the unit code, never assumed.

Vendors write UCUM (``Gy.m2``) and near-UCUM variants (``Gym2``, ``Gy*m2``, ``µGy.m2``);
the table below accepts those spellings for each kind of quantity and converts to the
project's canonical units: DAP in Gy·cm², air kerma in mGy, time in s, length in mm,
area in cm². A unit that is not in the table makes the value unknown (None) and is
reported, rather than guessed.
"""

from __future__ import annotations

import math

__all__ = ["normalise_unit", "convert", "CANONICAL", "DELIVERED_KEYS", "UnitError"]


class UnitError(ValueError):
    """A unit that the table does not know for that kind of quantity."""


#: Canonical unit per quantity kind.
CANONICAL = {
    "dap": "Gy.cm2",
    "dose": "mGy",
    "time": "s",
    "length": "mm",
    "area": "cm2",
    "voltage": "kV",
    "current": "mA",
    "charge": "mAs",
    "short_time": "ms",
    "rate": "/s",
    "angle": "deg",
    "count": "1",
}

_FACTORS: dict[str, dict[str, float]] = {
    "dap": {
        "gy.m2": 1e4,
        "gy.cm2": 1.0,
        "dgy.cm2": 0.1,
        "cgy.cm2": 1e-2,
        "mgy.cm2": 1e-3,
        "ugy.cm2": 1e-6,
        "ugy.m2": 1e-2,
        "mgy.m2": 10.0,
        "dgy.m2": 1e3,
        "cgy.m2": 1e2,
        "gy.dm2": 1e2,
    },
    "dose": {"gy": 1e3, "dgy": 1e2, "cgy": 10.0, "mgy": 1.0, "ugy": 1e-3},
    "time": {"s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "min": 60.0, "h": 3600.0},
    "short_time": {"ms": 1.0, "s": 1e3, "us": 1e-3},
    "length": {"mm": 1.0, "cm": 10.0, "m": 1e3, "um": 1e-3},
    "area": {"cm2": 1.0, "m2": 1e4, "mm2": 1e-2, "dm2": 1e2},
    "voltage": {"kv": 1.0, "v": 1e-3},
    "current": {"ma": 1.0, "ua": 1e-3, "a": 1e3},
    "charge": {"mas": 1.0, "uas": 1e-3, "as": 1e3},
    "rate": {
        "/s": 1.0,
        "{pulse}/s": 1.0,
        "1/s": 1.0,
        "hz": 1.0,
        "{pulses}/s": 1.0,
        "pulse/s": 1.0,
        "{frame}/s": 1.0,
    },
    "angle": {"deg": 1.0, "°": 1.0, "rad": 57.29577951308232},
    "count": {
        "1": 1.0,
        "{pulses}": 1.0,
        "{pulse}": 1.0,
        "{frames}": 1.0,
        "{frame}": 1.0,
        "no units": 1.0,
    },
}


def normalise_unit(code: str) -> str:
    """Lower-case a unit code and fold the common misspellings into UCUM form.

    ``Gym2`` → ``gy.m2``, ``Gy*m2``/``Gy·m2``/``Gy m2`` → ``gy.m2``, ``µGy`` → ``ugy``,
    ``dGy.cm^2`` → ``dgy.cm2``.
    """
    text = str(code).strip().lower()
    text = text.replace("µ", "u").replace("μ", "u").replace("^", "")
    for sep in ("*", "·", " ", "x"):
        if sep == "x" and not text.startswith(("gy", "mgy", "ugy", "dgy", "cgy")):
            continue
        text = text.replace(sep, ".")
    # Gym2 / Gycm2 written without a separator.
    for prefix in ("ugy", "mgy", "dgy", "cgy", "gy"):
        if text.startswith(prefix) and len(text) > len(prefix) and text[len(prefix)] != ".":
            rest = text[len(prefix) :]
            if rest in ("m2", "cm2", "dm2"):
                text = f"{prefix}.{rest}"
            break
    return text


def convert(value: float, unit_code: str, kind: str) -> float:
    """Convert ``value`` recorded in ``unit_code`` to the canonical unit of ``kind``.

    Raises
    ------
    UnitError
        When the unit is not one the table knows for that kind of quantity.
    """
    table = _FACTORS[kind]
    key = normalise_unit(unit_code)
    if key not in table:
        raise UnitError(
            f"unit {unit_code!r} is not a known {kind} unit (expected one of "
            f"{', '.join(sorted(table))})"
        )
    return float(value) * table[key]


#: Largest plausible value of a dose quantity in its canonical unit. A value beyond it (or
#: below 0) is a corrupt record: read as unknown and flagged, refused by ``dose ingest``.
#: DAP 1e4 Gy·cm² is ~100 times the largest interventional procedures; Ka,r 1e6 mGy
#: (1,000 Gy) is far beyond any survivable skin dose; 1e6 s is 11.6 days of beam time;
#: medical X-ray tubes run at 20-150 kV, so 300 kV is past any of them (a kVp of 5000 was
#: read as real; hostile-input sweep).
#: The delivered totals of a dose record (``dose.json``'s ``delivered``), in report order.
DELIVERED_KEYS = (
    "dap_total_gy_cm2",
    "fluoro_dap_gy_cm2",
    "acquisition_dap_gy_cm2",
    "ka_r_total_mgy",
    "fluoro_ka_r_mgy",
    "acquisition_ka_r_mgy",
    "fluoro_time_s",
    "acquisition_time_s",
)

PLAUSIBLE_MAX: dict[str, float] = {
    "dap": 1e4,
    "dose": 1e6,
    "time": 1e6,
    "short_time": 1e9,
    "length": 1e5,
    "area": 1e5,
    "voltage": 300.0,
    "current": 1e5,
    "charge": 1e7,
    "rate": 1e5,
    "count": 1e9,
}


def implausible(value: float, kind: str) -> str | None:
    """Why ``value`` (canonical unit of ``kind``) cannot be a real measurement, or None."""
    if kind not in PLAUSIBLE_MAX:
        return None
    if not math.isfinite(value) or value < 0:
        return f"{value:g} is negative or not finite"
    if value > PLAUSIBLE_MAX[kind]:
        return f"{value:g} {CANONICAL.get(kind, '')} exceeds the plausible {PLAUSIBLE_MAX[kind]:g}"
    return None

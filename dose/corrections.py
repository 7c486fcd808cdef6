"""Per-unit corrections of the recorded dose: DAP-meter calibration and table transmission.

A department measures, per X-ray unit, how far its DAP meter reads from a calibrated
chamber and how much the table and mattress transmit. Given in a TOML file, these are
applied to the recorded figures and the report shows both, so nothing recorded is
replaced silently:

.. code-block:: toml

    [[unit]]
    manufacturer = "CANON_MEC"
    model = "DFP-8000D"
    dap_calibration = 0.93          # true DAP / displayed DAP
    table_transmission = [0.66, 0.76]
    source = "annual QA, 2026-03, chamber SN 1234"
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hybridfuse._safeio import settings_file_problem

from .errors import DoseInputError

__all__ = ["UnitCorrection", "load_corrections", "apply_corrections"]

#: A calibration factor outside this range is a wrong meter, not a calibration.
CALIBRATION_RANGE = (0.5, 2.0)
#: Delivered figures corrected (dose.json keys).
_DELIVERED = ("dap_total_gy_cm2", "fluoro_dap_gy_cm2", "ka_r_total_mgy", "fluoro_ka_r_mgy")


@dataclass(frozen=True)
class UnitCorrection:
    """The corrections measured for one X-ray unit (manufacturer and model as recorded)."""

    manufacturer: str
    model: str
    dap_calibration: float = 1.0
    table_transmission: tuple[float, float] | None = None
    source: str = ""


def _unit(path: Path, i: int, raw) -> UnitCorrection:
    where = f"{path}: [[unit]] {i + 1}"
    if not isinstance(raw, dict):
        raise DoseInputError(f"{where}: not a table")
    unknown = set(raw) - {
        "manufacturer",
        "model",
        "dap_calibration",
        "table_transmission",
        "source",
    }
    if unknown:
        raise DoseInputError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("manufacturer", "model", "source"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise DoseInputError(f"{where}: {key} must be non-empty text")
    factor = raw.get("dap_calibration", 1.0)
    lo, hi = CALIBRATION_RANGE
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not lo <= factor <= hi:
        raise DoseInputError(f"{where}: dap_calibration must be a number from {lo:g} to {hi:g}")
    tt = raw.get("table_transmission")
    if tt is not None:
        ok = isinstance(tt, list) and len(tt) == 2
        ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in tt)
        if not ok or not 0 < tt[0] <= tt[1] <= 1:
            raise DoseInputError(f"{where}: table_transmission must be [LO, HI], 0 < LO <= HI <= 1")
        tt = (float(tt[0]), float(tt[1]))
    return UnitCorrection(
        raw["manufacturer"].strip(), raw["model"].strip(), float(factor), tt, raw["source"].strip()
    )


def load_corrections(path: str | os.PathLike) -> list[UnitCorrection]:
    """Every ``[[unit]]`` of a corrections file, validated (one-line error naming the file)."""
    import tomllib

    path = Path(path)
    problem = settings_file_problem(path)
    if problem:
        raise DoseInputError(f"{path}: {problem}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DoseInputError(f"{path}: not a readable TOML corrections file ({exc})") from exc
    units = data.get("unit")
    if set(data) - {"unit"} or not isinstance(units, list) or not units:
        raise DoseInputError(f"{path}: expected one or more [[unit]] tables and nothing else")
    corrections = [_unit(path, i, raw) for i, raw in enumerate(units)]
    seen: dict[tuple[str, str], int] = {}
    for i, unit in enumerate(corrections):
        key = (_norm(unit.manufacturer), _norm(unit.model))
        if key in seen:  # which of two calibrations is the unit's would be a guess
            raise DoseInputError(
                f"{path}: [[unit]] {i + 1} repeats [[unit]] {seen[key] + 1} "
                f"(manufacturer and model {unit.manufacturer!r} {unit.model!r}); keep one"
            )
        seen[key] = i
    return corrections


def _norm(value) -> str:
    """Manufacturer or model as matched: case and runs of spaces ignored."""
    return " ".join(str(value or "").split()).casefold()


def _match(corrections, device: dict) -> UnitCorrection | None:
    key = (_norm(device.get("manufacturer")), _norm(device.get("model")))
    return next((c for c in corrections if (_norm(c.manufacturer), _norm(c.model)) == key), None)


def _row(recorded, factor: float, table) -> dict:
    if recorded is None:
        return {"recorded": None, "calibrated": None, "after_table": None}
    calibrated = recorded * factor
    row = {"recorded": recorded, "calibrated": calibrated, "after_table": None}
    if table is not None:
        row["after_table"] = [calibrated * table[0], calibrated * table[1]]
    return row


def apply_corrections(report: dict, corrections: list[UnitCorrection], path) -> dict:
    """The ``corrections`` block: each figure recorded, calibrated, and after the table.

    Recorded figures elsewhere in the report are left as recorded; a unit without an
    entry in the file is flagged and nothing is corrected.
    """
    from .inputs import input_record, shown_name

    device = report["device"]
    unit = _match(corrections, device)
    # Named like every input: its label, its file name only with --include-phi.
    rec = input_record(path, role="corrections", include_phi=bool(report.get("_include_phi")))
    if unit is None:
        report["flags"].append(
            f"{shown_name(rec)}: no [[unit]] for this X-ray unit in the corrections file "
            "(manufacturer and model as recorded): figures are uncorrected"
        )
        return {**rec, "applied": False}
    figures = {k: _row(report["delivered"].get(k), unit.dap_calibration, None) for k in _DELIVERED}
    for k in ("dap_total_gy_cm2", "ka_r_total_mgy"):
        figures[k] = _row(report["delivered"].get(k), unit.dap_calibration, unit.table_transmission)
    cf = (report.get("saved") or {}).get("counterfactual")
    if cf:
        for q in ("dap_gy_cm2", "ka_r_mgy"):
            figures[f"saved_{q}"] = _row(cf["point"].get(q), unit.dap_calibration, None)
    return {
        **rec,
        "applied": True,
        "source": unit.source,
        "dap_calibration_factor": unit.dap_calibration,
        "table_transmission": list(unit.table_transmission) if unit.table_transmission else None,
        "figures": figures,
        "note": "calibrated = recorded × dap_calibration_factor (applies to DAP and Ka,r, "
        "which the unit derives from the same meter); after_table = calibrated × the "
        "table transmission range (what enters the patient with an under-couch tube). "
        "Fluoroscopy time is not corrected.",
    }

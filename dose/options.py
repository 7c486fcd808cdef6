"""Options of the dose report: ``dose report``, and the dose step of ``run`` and ``batch``."""

from __future__ import annotations

from dataclasses import dataclass

from hybridfuse._options import option

__all__ = ["DoseOptions"]


@dataclass(frozen=True)
class DoseOptions:
    """What the dose report compares against and how its uncertainty is sampled."""

    procedure: str | None = option(
        None,
        "Procedure type: the dose report also compares the delivered dose with the "
        "fluoroscopy-only baseline of this procedure ('none': a synthetic case's "
        "truth.json names it, otherwise no baseline comparison).",
    )
    region: str | None = option(
        None,
        "Body region: selects the effective-dose conversion coefficient "
        "('none': from a synthetic case's truth.json, else not computed).",
    )
    seed: int = option(
        0,
        "Seed of the Monte Carlo sampling behind the dose-saved 95 % intervals (the same "
        "seed gives the same figures).",
        minimum=0,
        maximum=2**32 - 1,
    )
    corrections: str | None = option(
        None,
        "TOML file of per-unit DAP-meter calibration and table transmission "
        "([[unit]] manufacturer, model, dap_calibration, table_transmission, source); "
        "the report shows each figure before and after.",
    )
    force: bool = option(
        False,
        "Compute the dose saved even with an ultrasound interval outside the procedure "
        "(flagged; without it such an interval is refused, exit 2).",
    )

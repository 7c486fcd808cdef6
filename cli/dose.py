"""``hybridfuse dose ...``: dose reports from X-ray dose records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .options import json_option, overwrite_option


@click.group()
def dose() -> None:
    """Radiation dose: what the X-ray unit recorded (and, later, what ultrasound saved)."""


@dose.command("report")
@click.option(
    "--rdsr",
    "rdsr_path",
    required=True,
    type=click.Path(path_type=Path),
    help="X-Ray Radiation Dose SR (TID 10001).",
)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--procedure", default=None, help="Procedure type, recorded in dose.json.")
@click.option("--region", default=None, help="Body region (lumbar, cervical, pelvis, ...).")
@click.option("--include-phi", is_flag=True, help="Keep patient name, ID and birth date.")
@overwrite_option
@json_option
def report(rdsr_path, out_dir, procedure, region, include_phi, overwrite, as_json):
    """Write OUT/dose.json and OUT/events.csv for one dose report.

    Delivered totals come from the unit's accumulated totals; event sums are reconciled
    against them per plane and contradictions are flagged.
    """
    from dose.report import build_dose_report, write_dose_outputs

    target = out_dir / "dose.json"
    if target.exists() and not overwrite:
        raise click.UsageError(f"{target} exists; pass --overwrite to replace it")
    rep = build_dose_report(rdsr_path, include_phi=include_phi, procedure=procedure, region=region)
    written = write_dose_outputs(rep, out_dir)
    d = rep["delivered"]
    if as_json:
        json.dump(
            {k: v for k, v in rep.items() if k != "_events"}, sys.stdout, indent=1, default=str
        )
        sys.stdout.write("\n")
        return
    click.echo(f"dose report written: {', '.join(str(p) for p in written)}")

    def fmt(v, unit):
        return "unknown" if v is None else f"{v:.4g} {unit}"

    click.echo(
        f"  DAP {fmt(d['dap_total_gy_cm2'], 'Gy·cm²')} (fluoro "
        f"{fmt(d['fluoro_dap_gy_cm2'], 'Gy·cm²')}), Ka,r {fmt(d['ka_r_total_mgy'], 'mGy')},"
        f" fluoro time {fmt(d['fluoro_time_s'], 's')}, {d['n_events']} events, "
        f"{d['n_planes']} plane(s)"
    )
    for flag in rep["flags"]:
        click.echo(f"  flag: {flag}")

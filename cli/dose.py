"""``hybridfuse dose ...``: dose reports from X-ray dose records."""

from __future__ import annotations

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
@click.option(
    "--us",
    "us_clips",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Ultrasound cine whose times give an ultrasound-guided interval (repeat).",
)
@click.option(
    "--us-interval",
    "us_intervals",
    multiple=True,
    help="START,END seconds from the first irradiation event (repeat).",
)
@click.option(
    "--guided-phase",
    default=None,
    help="START,END of the fluoroscopy-guided phase (default: found from the taps).",
)
@click.option(
    "--coefficients",
    type=click.Path(path_type=Path),
    help="CSV region,coefficient_msv_per_gy_cm2,source for effective dose.",
)
@click.option(
    "--table-transmission",
    default=None,
    help="LO,HI table transmission for an entrance-kerma estimate.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Monte Carlo seed.")
@click.option("--include-phi", is_flag=True, help="Keep patient name, ID and birth date.")
@overwrite_option
@json_option
def report(
    rdsr_path,
    out_dir,
    procedure,
    region,
    us_clips,
    us_intervals,
    guided_phase,
    coefficients,
    table_transmission,
    seed,
    include_phi,
    overwrite,
    as_json,
):
    """Write OUT/dose.json and OUT/events.csv for one dose report.

    Delivered totals come from the unit's accumulated totals; event sums are reconciled
    against them per plane and contradictions are flagged.
    """
    from dose.report import build_dose_report, load_coefficients, write_dose_outputs

    target = out_dir / "dose.json"
    if target.exists() and not overwrite:
        raise click.UsageError(f"{target} exists; pass --overwrite to replace it")
    rep = build_dose_report(
        rdsr_path,
        include_phi=include_phi,
        procedure=procedure,
        region=region,
        us_clips=us_clips,
        us_intervals=[_pair(v, "--us-interval") for v in us_intervals],
        guided_phase=_pair(guided_phase, "--guided-phase") if guided_phase else None,
        coefficients=load_coefficients(coefficients) if coefficients else None,
        table_transmission=(
            _pair(table_transmission, "--table-transmission") if table_transmission else None
        ),
        seed=seed,
    )
    written = write_dose_outputs(rep, out_dir)
    d = rep["delivered"]
    if as_json:
        # Exactly what was written, so the two never disagree.
        sys.stdout.write(target.read_text(encoding="utf-8") + "\n")
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
    cf = (rep.get("saved") or {}).get("counterfactual")
    if cf:
        p, iv = cf["point"], cf["interval_95"]
        click.echo(
            f"  saved by ultrasound: DAP {fmt(p['dap_gy_cm2'], 'Gy·cm²')} "
            f"[{iv['dap_gy_cm2'][0]:.3g}-{iv['dap_gy_cm2'][1]:.3g}], fluoro time "
            f"{fmt(p['fluoro_time_s'], 's')} [{iv['fluoro_time_s'][0]:.3g}-"
            f"{iv['fluoro_time_s'][1]:.3g}] (95 %)"
        )
    for flag in rep["flags"]:
        click.echo(f"  flag: {flag}")


def _pair(text: str, flag: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise click.BadParameter(
            f"expected START,END numbers, got {text!r}", param_hint=flag
        ) from exc
    if b < a:
        raise click.BadParameter(f"END before START in {text!r}", param_hint=flag)
    return (a, b)

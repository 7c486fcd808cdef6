"""``hybridfuse synth``: write a synthetic hybrid procedure with known ground truth."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .options import json_option, overwrite_option

_PROCEDURES = ["lumbar-mbb", "lumbar-facet", "cervical-mbb", "si-joint"]


@click.command()
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder to create for the case.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seed: the same seed writes identical files.",
)
@click.option(
    "--procedure",
    default="lumbar-mbb",
    show_default=True,
    type=click.Choice(_PROCEDURES),
    help="Procedure type (anatomy, probe, dose).",
)
@click.option(
    "--compress-us/--no-compress-us",
    default=True,
    show_default=True,
    help="Store the ultrasound cine JPEG-compressed, as scanners usually do.",
)
@overwrite_option
@json_option
@click.pass_context
def synth(
    ctx: click.Context,
    out_dir: Path,
    seed: int,
    procedure: str,
    compress_us: bool,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Write a synthetic hybrid procedure (fluoro runs, US cine, RDSR, truth.json) to OUT.

    The phantom is physical: a 3D spine region projected by a cone-beam C-arm
    (Beer-Lambert, Poisson noise) and scanned by a linear ultrasound probe (speckle,
    bone shadows, needle, beads). truth.json holds the US-to-fluoro homography of every
    frame pair, landmark positions in both images and the dose that ultrasound saved.
    """
    from hybridfuse.testdata.phantom import generate_procedure

    quiet = ctx.obj.get("verbosity", 0) < 0 or as_json
    if out_dir.exists() and not overwrite:
        raise click.UsageError(f"{out_dir} exists; pass --overwrite to replace it")

    def progress(msg: str) -> None:
        if not quiet:
            click.echo(f"  writing {msg}", err=True)

    truth = generate_procedure(
        out_dir,
        seed=seed,
        procedure=procedure,
        compress_us=compress_us,
        overwrite=overwrite,
        progress=progress,
    )
    delivered = truth["dose"]["delivered"]
    saved = truth["dose"]["saved"]
    well_posed = [p for p in truth["pairs"] if not p["edge_on"]]
    summary = {
        "out": str(out_dir),
        "procedure": procedure,
        "seed": seed,
        "files": sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file()),
        "pairs": len(truth["pairs"]),
        "well_posed_pairs": len(well_posed),
        "delivered_dap_gy_cm2": delivered["dap_total_gy_cm2"],
        "delivered_ka_r_mgy": delivered["ka_r_total_mgy"],
        "delivered_fluoro_time_s": delivered["fluoro_time_s"],
        "saved_dap_gy_cm2": saved["dap_gy_cm2"],
        "saved_fluoro_time_s": saved["fluoro_time_s"],
    }
    if as_json:
        json.dump(summary, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    click.echo(f"Synthetic {procedure} (seed {seed}) written to {out_dir}")
    click.echo(f"  fluoro runs   {', '.join(truth['files']['fluoro'])}")
    click.echo(f"  ultrasound    {', '.join(truth['files']['ultrasound'])}")
    click.echo(f"  dose report   {truth['files']['rdsr']}")
    click.echo(
        f"  ground truth  truth.json ({len(truth['pairs'])} frame pairs, "
        f"{len(well_posed)} well posed, {len(truth['pairs']) - len(well_posed)} edge-on)"
    )
    click.echo(
        f"  delivered     DAP {delivered['dap_total_gy_cm2']:.3f} Gy·cm², "
        f"Ka,r {delivered['ka_r_total_mgy']:.2f} mGy, "
        f"fluoro {delivered['fluoro_time_s']:.1f} s"
    )
    click.echo(
        f"  US saved      DAP {saved['dap_gy_cm2']:.3f} Gy·cm², "
        f"fluoro {saved['fluoro_time_s']:.1f} s (by construction; see truth.json)"
    )

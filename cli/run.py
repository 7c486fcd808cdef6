"""``hybridfuse run``, ``demo`` and ``batch``: cases end to end."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import click

from .errors import EXIT_FAILURE, EXIT_OK
from .options import (
    check_pseudonym_key,
    config_option,
    definition_options,
    given_values,
    json_option,
    overwrite_option,
    report_stale,
    run_config,
    say_stale,
)

#: --workers above this is refused outright; below it, capped at the CPUs.
MAX_WORKERS = 1024


def config_options(func):
    """Decorate a command with ``--config`` and every registration, fusion, dose and pair option."""
    from hybridfuse.fusion.pipeline import GROUPS

    for cls in reversed(GROUPS.values()):  # decorators apply bottom-up: keep --help's order
        func = definition_options(cls)(func)
    return config_option("[registration], [fusion], [dose] and [pair] tables")(func)


def _given(path) -> list:
    """``[path]`` when an optional input file was given, else ``[]``."""
    return [path] if path else []


def _config(config_path, options: dict):
    """The run configuration: the definitions, the TOML file (if any), the options given."""
    from hybridfuse.fusion.pipeline import GROUPS, dose_corrections

    config = run_config(config_path, given_values(options, *GROUPS.values()))
    config.check_effective()
    dose_corrections(config)  # a bad corrections file is refused before any work
    return config


@click.command()
@click.argument("case", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@config_options
@overwrite_option
@json_option
@click.pass_context
def run(ctx, case, out_dir, config_path, overwrite, as_json, **opts):
    """Run one CASE folder end to end: register, fuse, dose report, index.html.

    OUT may not be CASE or contain it; --overwrite replaces only a folder hybridfuse wrote.
    """
    from hybridfuse.fusion.pipeline import (
        anonymous_case_id,
        case_from_folder,
        check_out,
        run_case,
    )

    # the --config file too: an --overwrite would delete it with the old folder
    check_out(out_dir, [case, *_given(config_path)], overwrite=overwrite)  # before any work
    report_stale(out_dir)
    config = _config(config_path, opts)
    check_pseudonym_key(config.fusion.include_phi)
    spec = case_from_folder(case)
    if not config.fusion.include_phi:  # the folder may be named after the patient
        spec = dataclasses.replace(spec, case_id=anonymous_case_id(spec))
    quiet = ctx.obj.get("verbosity", 0) < 0 or as_json
    summary = run_case(
        spec,
        out_dir,
        config,
        overwrite=overwrite,
        progress=None if quiet else lambda m: click.echo(f"  {m}", err=True),
    )
    _report(summary, out_dir, as_json)


def _report(summary, out_dir, as_json):
    from hybridfuse._safeio import terminal_text
    from hybridfuse.fusion.pipeline import unpaired_runs
    from hybridfuse.fusion.us_pairing import PAIRING_LIMIT_S

    if as_json:
        click.echo(json.dumps(summary, indent=1, default=str))
        return
    reg = summary["registration"]
    tre = reg.get("tre")
    click.echo(terminal_text(f"case {summary['case_id']} done: {out_dir}"))
    click.echo(f"  open first: {out_dir / 'index.html'} (links the viewer and the dose report)")
    if reg.get("ultrasound"):  # several ultrasound files: the one registered
        click.echo(terminal_text(f"  registered: {reg['fluoroscopy']} with {reg['ultrasound']}"))
    for run in unpaired_runs(summary):
        click.echo(
            terminal_text(f"  {run}: no ultrasound file within {PAIRING_LIMIT_S:g} s; not fused")
        )
    if tre:
        click.echo(f"  registration TRE vs truth: median {tre['median_mm']:.3f} mm")
    d = summary["dose"]
    if d["saved_dap_gy_cm2"] is not None:
        lo, hi = d["saved_dap_interval_95"]
        click.echo(
            f"  dose saved by ultrasound: DAP {d['saved_dap_gy_cm2']:.3g} Gy·cm² "
            f"(95 %: {lo:.3g}-{hi:.3g})"
        )


@click.command()
@click.option(
    "--out",
    "out_dir",
    default=Path("hybridfuse-demo"),
    show_default=True,
    type=click.Path(path_type=Path),
)
@json_option
@click.pass_context
def demo(ctx, out_dir, as_json):
    """Run the committed sample case end to end and say what to open first."""
    from hybridfuse.fusion.pipeline import RunConfig, case_from_folder, check_out, run_case
    from hybridfuse.testdata import SAMPLE_CASE, sample_case

    summary_file = out_dir / "summary.json"
    try:
        existing = out_dir.is_dir() and not out_dir.is_symlink() and any(out_dir.iterdir())
    except OSError:
        existing = False  # check_out below names what is wrong with it
    if existing:
        is_demo = False
        if summary_file.is_file():
            try:
                is_demo = (
                    json.loads(summary_file.read_text(encoding="utf-8")).get("case_id")
                    == SAMPLE_CASE
                )
            except ValueError:
                is_demo = False
        if not is_demo:
            raise click.UsageError(
                f"{out_dir} exists and is not a previous demo; choose another --out"
            )
    check_out(out_dir, [sample_case()], overwrite=True)
    report_stale(out_dir)
    check_pseudonym_key(False)
    quiet = ctx.obj.get("verbosity", 0) < 0 or as_json
    spec = case_from_folder(sample_case(), SAMPLE_CASE)
    summary = run_case(
        spec,
        out_dir,
        RunConfig(),
        overwrite=True,
        progress=None if quiet else lambda m: click.echo(f"  {m}", err=True),
    )
    _report(summary, out_dir, as_json)


@click.command()
@click.argument("manifest", type=click.Path(path_type=Path, exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1, max=MAX_WORKERS),
    help="Local worker processes (at most the number of CPUs).",
)
@click.option(
    "--scheduler",
    default=None,
    help="Address of a dask.distributed scheduler, e.g. tcp://10.0.0.5:8786.",
)
@click.option(
    "--retries",
    default=1,
    show_default=True,
    type=click.IntRange(min=0),
    help="Retries of a case whose worker died.",
)
@config_options
@json_option
@click.pass_context
def batch(ctx, manifest, out_dir, workers, scheduler, retries, config_path, as_json, **opts):
    """Run every case of MANIFEST (CSV or a folder of case folders) into OUT/<case_id>.

    Cases already complete with unchanged inputs and configuration are skipped. One bad
    case (an unsafe or repeated case id, an unreadable case folder) never stops the batch.
    OUT/batch_summary.csv gets a row after every case. OUT may not be or contain an input;
    if it exists it must be empty or an earlier batch's output.
    Exit 0 when every case is ok or up to date, 1 when any failed, 2 for a bad OUT.
    """
    from hybridfuse._safeio import terminal_text
    from hybridfuse.fusion.batch import check_out_root, read_manifest, run_batch
    from hybridfuse.fusion.pipeline import dose_files

    check_out_root(out_dir, [manifest, *_given(config_path)])  # before discovery
    if scheduler:
        from hybridfuse.fusion.batch import check_scheduler_address

        check_scheduler_address(scheduler)
    else:
        workers = _cap_workers(workers)
    config = _config(config_path, opts)
    check_pseudonym_key(config.fusion.include_phi)
    specs, problems = read_manifest(manifest)
    quiet = ctx.obj.get("verbosity", 0) < 0 or as_json
    start = time.perf_counter()
    counts = {"ok": 0, "failed": 0, "skipped": 0}

    def progress(row, done, total):
        key = row["status"].split()[0]
        counts[key] = counts.get(key, 0) + 1
        if quiet:
            return
        elapsed = time.perf_counter() - start
        rate = done / elapsed * 60 if elapsed > 0 else 0.0
        eta = (total - done) / (done / elapsed) if done and elapsed > 0 else 0.0
        click.echo(
            f"\r  cases {done}/{total}: {counts['ok']} ok, {counts['failed']} failed, "
            f"{counts['skipped']} up to date · {rate:.1f} cases/min · ETA {eta:.0f} s   ",
            err=True,
            nl=done == total,
        )

    rows = run_batch(
        specs,
        out_dir,
        config,
        workers=workers,
        scheduler=scheduler,
        retries=retries,
        problems=problems,
        progress=progress,
        inputs=[manifest, *dose_files(config)],
        on_stale=lambda removed: say_stale(out_dir, removed),
    )
    failed = [r for r in rows if r["status"] == "failed"]
    if as_json:
        click.echo(json.dumps(rows, indent=1, default=str))
    else:
        for r in failed:
            click.echo(
                terminal_text(
                    f"hybridfuse: case {r['case_id']} failed: {r.get('said') or r['message']}"
                ),
                err=True,
            )
        click.echo(
            f"{len(rows)} case(s): {len(rows) - len(failed)} ok or up to date, "
            f"{len(failed)} failed; summary in {out_dir / 'batch_summary.csv'}"
        )
    sys.exit(EXIT_FAILURE if failed else EXIT_OK)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cap_workers(workers: int) -> int:
    """At most one worker per CPU: each holds a case in memory (24 on 2 cores: 8 GB)."""
    cpus = _cpus()
    if workers > cpus:
        click.echo(
            f"hybridfuse: --workers {workers} capped at {cpus} (the CPUs of this machine)",
            err=True,
        )
        return cpus
    return workers

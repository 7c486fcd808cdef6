"""``hybridfuse pacs``: check a DICOM archive, send files to it, fetch a study as a case."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import json_option, overwrite_option, report_stale

#: Seconds each network step may wait (connect, association, each DICOM message).
DEFAULT_TIMEOUT_S = 30.0


def _finite(_ctx, param, value):
    """Refuse NaN, which click's FloatRange lets through (every comparison with it is false)."""
    import math

    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds", param=param)
    return value


def _node_options(address_flag: str):
    """Decorate a command with the address (``--to`` or ``--from``), AE titles and timeout."""

    def decorate(func):
        func = click.option(
            "--timeout",
            "timeout_s",
            default=DEFAULT_TIMEOUT_S,
            show_default=True,
            type=click.FloatRange(min=0.1, max=3600),
            callback=_finite,
            help="Seconds to wait for the connection, the association and each answer.",
        )(func)
        func = click.option(
            "--called-aet",
            default="ANY-SCP",
            show_default=True,
            help="AE title of the archive (Orthanc's default: ORTHANC).",
        )(func)
        func = click.option(
            "--aet",
            "calling_aet",
            default="HYBRIDFUSE",
            show_default=True,
            help="Our AE title (the archive must know it to answer C-FIND, C-GET, C-MOVE).",
        )(func)
        return click.option(
            address_flag, "address", required=True, metavar="HOST:PORT", help="The archive."
        )(func)

    return decorate


def _node(address: str, calling_aet: str, called_aet: str, timeout_s: float, flag: str):
    from hybridfuse.fusion.pacs import Node, check_aet, parse_address

    host, port = parse_address(address, flag)
    return Node(
        host,
        port,
        called_aet=check_aet(called_aet, "--called-aet"),
        calling_aet=check_aet(calling_aet, "--aet"),
        timeout_s=timeout_s,
    )


def _say(ctx, as_json: bool):
    """A progress printer for stderr, or None when quiet or printing JSON."""
    if as_json or ctx.obj.get("verbosity", 0) < 0:
        return None
    from hybridfuse._safeio import terminal_text

    return lambda text: click.echo(terminal_text(f"  {text}"), err=True)


@click.group()
def pacs() -> None:
    """Talk to a DICOM archive: C-ECHO, send files (C-STORE), fetch a study (C-GET).

    Exit codes besides 0/1/2: 3 cannot connect, 4 association rejected or aborted,
    5 a failure status (or no such study), 6 no answer within --timeout.
    """


@pacs.command()
@_node_options("--to")
@json_option
def echo(address, calling_aet, called_aet, timeout_s, as_json):
    """Check that the archive at HOST:PORT answers (C-ECHO)."""
    from hybridfuse.fusion.pacs import echo as c_echo

    node = _node(address, calling_aet, called_aet, timeout_s, "--to")
    result = c_echo(node)
    if as_json:
        click.echo(json.dumps(result, indent=1))
    else:
        click.echo(f"{node}: C-ECHO ok ({result['round_trip_s'] * 1000:.0f} ms)")


@pacs.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@_node_options("--to")
@json_option
@click.pass_context
def send(ctx, files, address, calling_aet, called_aet, timeout_s, as_json):
    """Send DICOM FILES to the archive (C-STORE), each in its SOP class's context.

    Every file is read first: one unreadable file stops the command before any is sent.
    """
    from hybridfuse.fusion.pacs import send as c_store

    node = _node(address, calling_aet, called_aet, timeout_s, "--to")
    say = _say(ctx, as_json)

    def progress(done, total, rec):
        if say:
            say(f"sent {done}/{total}: {rec['file']} ({rec['sop_class']}, {rec['status']})")

    records = c_store(files, node, progress=progress)
    if as_json:
        click.echo(json.dumps(records, indent=1))
    else:
        warned = sum(r["category"] == "Warning" for r in records)
        click.echo(
            f"sent {len(records)} file(s) to {node}"
            + (f", {warned} with a warning" if warned else "")
        )


@pacs.command()
@click.option("--study", "study_uid", required=True, help="Study Instance UID to fetch.")
@_node_options("--from")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Case folder to create (absent, empty, or an earlier get's with --overwrite).",
)
@click.option(
    "--move-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="C-MOVE instead of C-GET: receive on this port (the archive must map --aet to "
    "this machine and port).",
)
@overwrite_option
@json_option
@click.pass_context
def get(ctx, study_uid, address, calling_aet, called_aet, timeout_s, out_dir, move_port, **flags):
    """Fetch a study (C-GET) into OUT, a case folder that 'hybridfuse run OUT' reads.

    Each instance becomes OUT/MODALITY_SERIES_INSTANCE_SOPUID.dcm; OUT appears only once
    the whole study has arrived. --overwrite replaces only a folder an earlier 'pacs get'
    wrote.
    """
    from hybridfuse._safeio import terminal_text
    from hybridfuse.fusion.pacs import check_study_uid, get_study

    study_uid = check_study_uid(study_uid)
    node = _node(address, calling_aet, called_aet, timeout_s, "--from")
    report_stale(out_dir)  # a killed get's temporary folder
    as_json = flags["as_json"]
    say = _say(ctx, as_json)

    def progress(done, total, rec):
        if say:
            say(f"received {done}/{total or '?'}: {rec['file']}")

    result = get_study(
        study_uid,
        node,
        out_dir,
        overwrite=flags["overwrite"],
        move_port=move_port,
        progress=progress,
    )
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    case = result["case"]
    click.echo(terminal_text(f"study {study_uid}: {len(result['files'])} file(s) in {out_dir}"))
    if case["runnable"]:
        click.echo(
            f"  a case: {len(case['fluoroscopy'])} fluoroscopy, {len(case['ultrasound'])} "
            f"ultrasound, dose report {'yes' if case['dose_report'] else 'no'}; "
            f"run it with: hybridfuse run {out_dir} --out RESULTS"
        )
    else:
        missing = "fluoroscopy (XA/RF)" if not case["fluoroscopy"] else "ultrasound (US)"
        click.echo(f"  not a complete case for 'hybridfuse run': no {missing} image")

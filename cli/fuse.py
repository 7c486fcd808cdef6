"""``hybridfuse fuse``: overlay a registered ultrasound cine on a fluoroscopy run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .options import (
    check_pseudonym_key,
    fixed_option,
    json_option,
    moving_option,
    overwrite_option,
    report_stale,
    uid_map_option,
)


@click.command()
@fixed_option
@moving_option
@click.option(
    "--transform",
    "transform_path",
    required=True,
    type=click.Path(path_type=Path),
    help="transform.json from 'hybridfuse register'.",
)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option(
    "--mode",
    default="alpha",
    show_default=True,
    type=click.Choice(["alpha", "color", "checkerboard", "edges", "side-by-side"]),
)
@click.option("--opacity", default=0.5, show_default=True, type=click.FloatRange(0, 1))
@click.option("--colormap", default="hot", show_default=True, help="For --mode color.")
@click.option("--frames", default=None, help="Fluoroscopy frames, e.g. 0,2,3 (default all).")
@click.option(
    "--interpolation",
    default="linear",
    show_default=True,
    type=click.Choice(["nearest", "linear", "cubic"]),
)
@click.option(
    "--video", default="mp4", show_default=True, type=click.Choice(["mp4", "gif", "none"])
)
@click.option(
    "--dicom/--no-dicom",
    default=True,
    show_default=True,
    help="Write fused_sc.dcm (multi-frame true colour secondary capture).",
)
@click.option(
    "--registration-dicom",
    is_flag=True,
    help="Also write registration.dcm (Spatial Registration; rigid/similarity/affine).",
)
@click.option(
    "--include-phi",
    is_flag=True,
    help="Keep the patient's name, ID, dates and the source UIDs in the DICOM output.",
)
@uid_map_option
@overwrite_option
@json_option
@click.pass_context
def fuse(
    ctx,
    fixed_path,
    moving_path,
    transform_path,
    out_dir,
    mode,
    opacity,
    colormap,
    frames,
    interpolation,
    video,
    dicom,
    registration_dicom,
    include_phi,
    uid_map,
    overwrite,
    as_json,
):
    """Fuse MOVING (ultrasound) onto FIXED (fluoroscopy) with a registration transform.

    Writes fused_NNN.png per frame, fused.mp4 (or .gif), viewer.html (one self-contained
    file), fused_sc.dcm and fuse.json into OUT, all at once when complete. OUT may not be
    or contain an input; --overwrite replaces only a folder hybridfuse wrote.
    """
    from hybridfuse.fusion import read_image
    from hybridfuse.fusion.coregister import read_transform_frames, read_transform_json
    from hybridfuse.fusion.errors import InputError
    from hybridfuse.fusion.fuse import check_frames, fuse_images
    from hybridfuse.fusion.options import FusionOptions, build_options
    from hybridfuse.fusion.pipeline import check_out

    from hybridfuse._options import OptionError

    # The same checks as run's and batch's fusion options (NaN opacity, an unknown colour
    # map, in any mode), before any reading.
    given = {"mode": mode, "opacity": opacity, "colormap": colormap}
    given |= {"interpolation": interpolation, "video": video, "dicom": dicom}
    try:
        build_options(FusionOptions, given, source="command line")
    except OptionError as exc:
        raise click.UsageError(str(exc)) from exc
    frame_list = None
    if frames is not None:
        try:
            parts = frames.split(",")
            if any(not v.strip() for v in parts):  # '', '0,,1', '0,': a value left out
                raise ValueError(frames)
            frame_list = [int(v) for v in parts]
        except ValueError as exc:
            raise click.BadParameter(
                f"expected comma-separated integers, got {frames[:60]!r}", param_hint="--frames"
            ) from exc
    # Before any reading: OUT may not be an input or hold one, a link, a file, a
    # read-only place or (even with --overwrite) a folder hybridfuse did not write.
    check_out(out_dir, [fixed_path, moving_path, transform_path], overwrite=overwrite)
    report_stale(out_dir)
    check_pseudonym_key(include_phi)
    transform = read_transform_json(transform_path)
    registered_on = read_transform_frames(transform_path)
    fixed = read_image(fixed_path).require_min_size()
    moving = read_image(moving_path)
    for (side, img), k in zip((("fixed", fixed), ("moving", moving)), registered_on, strict=True):
        if k >= img.n_frames:
            raise InputError(
                f"{transform_path}: registered on {side} frame {k}, but "
                f"{img.source_path} has {img.n_frames} frame(s)"
            )
    if frame_list is not None:
        frame_list = check_frames(frame_list, fixed.n_frames, "fluoroscopy")  # before output
    quiet = ctx.obj.get("verbosity", 0) < 0 or as_json
    with click.progressbar(
        length=fixed.n_frames if frame_list is None else len(frame_list),
        label="fusing",
        file=sys.stderr,
        show_eta=True,
    ) as bar:

        def progress(done, total):
            if not quiet:
                bar.update(1)

        summary = fuse_images(
            fixed,
            moving,
            transform,
            out_dir,
            mode=mode,
            opacity=opacity,
            colormap=colormap,
            frames=frame_list,
            order=interpolation,
            video=video,
            dicom=dicom,
            include_phi=include_phi,
            uid_map=uid_map,
            registration_dicom=registration_dicom,
            overwrite=overwrite,
            transform_frames=registered_on,
            progress=progress,
            transform_source=transform_path,
        )
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    click.echo(
        f"fused {len(summary['pairs'])} frame(s) into {out_dir} "
        f"({summary['frames_per_second']:.0f} frames/s fuse+write, "
        f"time matching: {summary['time_matching']})"
    )
    click.echo(f"  open {out_dir / 'viewer.html'} in a browser first")

"""``hybridfuse fuse``: overlay a registered ultrasound cine on a fluoroscopy run."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import click

from hybridfuse._safeio import input_label, sha256_file, terminal_text
from hybridfuse.fusion.options import FusionOptions
from hybridfuse.fusion.pair import PairOptions
from hybridfuse.registration import RegistrationOptions

from .options import (
    built,
    check_pseudonym_key,
    definition_options,
    fixed_option,
    json_option,
    moving_option,
    overwrite_option,
    pair_options,
    report_stale,
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
@definition_options(FusionOptions)
@definition_options(RegistrationOptions, only=("accept_unverified",))
@pair_options
@click.option("--frames", default=None, help="Fluoroscopy frames, e.g. 0,2,3 (default all).")
@click.option(
    "--registration-dicom",
    is_flag=True,
    help="Also write registration.dcm (Spatial Registration; rigid/similarity/affine).",
)
@overwrite_option
@json_option
@click.pass_context
def fuse(
    ctx,
    fixed_path,
    moving_path,
    transform_path,
    out_dir,
    frames,
    registration_dicom,
    overwrite,
    as_json,
    **options,
):
    """Fuse MOVING (ultrasound) onto FIXED (fluoroscopy) with a registration transform.

    Writes fused_NNN.png per frame, fused.mp4 (or .gif), viewer.html (one self-contained
    file), fused_sc.dcm and fuse.json into OUT, all at once when complete. OUT may not be
    or contain an input; --overwrite replaces only a folder hybridfuse wrote.
    """
    from hybridfuse.fusion import read_image
    from hybridfuse.fusion.belonging import check_belonging
    from hybridfuse.fusion.coregister import read_transform_frames, read_transform_json
    from hybridfuse.fusion.errors import InputError
    from hybridfuse.fusion.fuse import check_frames, fuse_images
    from hybridfuse.fusion.pair import with_given_spacing
    from hybridfuse.fusion.pipeline import check_out

    fo = built(FusionOptions, options)
    pair = built(PairOptions, options)
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
    check_pseudonym_key(fo.include_phi)
    transform = read_transform_json(transform_path)
    _check_verdict(transform_path, built(RegistrationOptions, options).guards.accept_unverified)
    registered_on = read_transform_frames(transform_path)
    fixed = with_given_spacing(read_image(fixed_path), pair.fixed_spacing_mm, fixed=True)
    fixed = fixed.require_min_size()
    moving = with_given_spacing(read_image(moving_path), pair.moving_spacing_mm, fixed=False)
    # Each input hashed once: for the belonging labels, the transform's record, fuse.json.
    hashes = {os.path.realpath(p): sha256_file(p) for p in (fixed_path, moving_path)}
    labels = tuple(
        input_label(hashes[os.path.realpath(p)], role)
        for p, role in ((fixed_path, "fluoroscopy"), (moving_path, "ultrasound"))
    )
    belonging = check_belonging(fixed, moving, pair, include_phi=fo.include_phi, labels=labels)
    other = _registered_on_other_files(transform_path, hashes, fixed_path, moving_path)
    if other and not pair.allow_mismatch:
        raise InputError(
            f"{transform_path}: registered on another {' and '.join(other)} file than the "
            "one given (sha256 differs): its overlay would be placed wrongly; register "
            "these files, or pass --allow-mismatch to fuse anyway"
        )
    if other:
        click.echo(
            f"hybridfuse: warning: {transform_path}: registered on another "
            f"{' and '.join(other)} file; fused anyway (--allow-mismatch)",
            err=True,
        )
    belonging_record = belonging.to_dict()
    belonging_record["transform_registered_on_other"] = other
    for (side, img), k in zip((("fixed", fixed), ("moving", moving)), registered_on, strict=True):
        if k >= img.n_frames:
            raise InputError(
                f"{transform_path}: registered on {side} frame {k}, but "
                f"{img.source_path} has {img.n_frames} frame(s)"
            )
    if frame_list is not None:
        frame_list = check_frames(frame_list, fixed.n_frames, "fluoroscopy")  # before output
    quiet = ctx.obj.get("verbosity", 0) < 0 or as_json
    with (
        contextlib.nullcontext()  # -q: errors only (the bar's label was printed)
        if quiet
        else click.progressbar(
            length=fixed.n_frames if frame_list is None else len(frame_list),
            label="fusing",
            file=sys.stderr,
            show_eta=True,
        )
    ) as bar:

        def progress(done, total):
            if not quiet:
                bar.update(1)

        summary = fuse_images(
            fixed,
            moving,
            transform,
            out_dir,
            mode=fo.mode,
            opacity=fo.opacity,
            colormap=fo.colormap,
            frames=frame_list,
            order=fo.interpolation,
            video=fo.video,
            dicom=fo.dicom,
            include_phi=fo.include_phi,
            uid_map=fo.uid_map,
            registration_dicom=registration_dicom,
            overwrite=overwrite,
            transform_frames=registered_on,
            progress=progress,
            transform_source=transform_path,
            belonging=belonging_record,
            file_hashes=hashes,
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


def _registered_on_other_files(transform_path, hashes, fixed_path, moving_path) -> list[str]:
    """The sides whose file is not the one the transform was registered on.

    By the sha256 ``transform.json`` records (a side without one, as in a hand-written
    transform, is not checked). A transform registered on the lateral run was fused
    onto the AP run without a word. ``hashes``: real path → sha256 of the inputs.
    """
    try:
        data = json.loads(Path(transform_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # read_transform_json has read it already
        return []
    other = []
    for side, name, path in (
        ("fixed", "fluoroscopy", fixed_path),
        ("moving", "ultrasound", moving_path),
    ):
        entry = data.get(side) if isinstance(data, dict) else None
        recorded = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(recorded, str):
            continue
        if recorded != hashes[os.path.realpath(path)]:
            other.append(name)
    return other


def _check_verdict(transform_path, accept_unverified: bool) -> None:
    """Refuse a transform whose registration was refused, unless the user accepts it.

    ``register --accept-unverified`` writes such a transform marked; fusing it silently
    would put an overlay the evidence contradicts in front of a clinician.
    """
    from hybridfuse.fusion.errors import InputError
    from hybridfuse.fusion.viewer import read_quality

    quality = read_quality(transform_path) or {}
    if quality.get("verdict") != "refused":
        return
    reasons = "; ".join(str(r) for r in quality.get("reasons") or []) or "no reason recorded"
    if not accept_unverified:
        raise InputError(
            f"{transform_path}: its registration was refused ({terminal_text(reasons)[:300]}); "
            "give --accept-unverified to fuse it anyway (fuse.json and the viewer mark it)"
        )
    click.echo(
        f"hybridfuse: warning: fusing an unverified registration: {terminal_text(reasons)}",
        err=True,
    )

"""``hybridfuse register``: one ultrasound frame onto one fluoroscopy frame."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from hybridfuse._safeio import json_safe
from hybridfuse.fusion.pair import PairOptions
from hybridfuse.registration import RegistrationOptions
from hybridfuse.registration.hypotheses import CANDIDATE_LEVEL, RIVAL_LEVEL

from .options import (
    config_option,
    definition_options,
    deprecated_spacing,
    fixed_option,
    given_values,
    json_option,
    merge_deprecated,
    moving_option,
    overwrite_option,
    pair_options,
    run_config,
)


@click.command()
@fixed_option
@moving_option
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder for transform.json.",
)
@click.option(
    "--landmarks",
    "landmarks_path",
    type=click.Path(path_type=Path),
    help="CSV name,moving_x,moving_y,fixed_x,fixed_y (pixels).",
)
@click.option("--fixed-frame", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--moving-frame", default=0, show_default=True, type=click.IntRange(min=0))
@click.option(
    "--init",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "geometry", "landmarks", "moments", "identity"]),
    help="Without landmarks or --init-transform: match the beads both images show and use "
    "them as landmarks (auto), the calibrated scale only (geometry: refused, it needs a "
    "start), the feature centroids at the calibrated scale then a field-wide search "
    "(moments), or identity.",
)
@click.option(
    "--plane-faces-detector",
    is_flag=True,
    help="With --init moments: confirm that the ultrasound plane faces the X-ray "
    "detector (not seen edge-on), which the images alone cannot tell.",
)
@click.option(
    "--init-transform",
    "init_transform",
    type=click.Path(path_type=Path),
    help="Start from this transform.json (within ~20 mm / 20 degrees).",
)
@deprecated_spacing("--us-spacing-mm", "deprecated_us_spacing")
@click.option(
    "--truth",
    "truth_path",
    type=click.Path(path_type=Path),
    help="truth.json (a synthetic case's, or one pair's moving_to_fixed_pixel): report the TRE.",
)
@click.option(
    "--include-phi",
    is_flag=True,
    help="Record the input files' names, full paths and SOP Instance UIDs in transform.json "
    "(otherwise by role and sha256 only).",
)
@config_option("its [registration] and [pair] tables ([fusion], [dose] checked, not used)")
@definition_options(RegistrationOptions)
@pair_options
@overwrite_option
@json_option
@click.pass_context
def register(
    ctx,
    fixed_path,
    moving_path,
    out_dir,
    landmarks_path,
    fixed_frame,
    moving_frame,
    init,
    plane_faces_detector,
    init_transform,
    deprecated_us_spacing,
    truth_path,
    include_phi,
    config_path,
    overwrite,
    as_json,
    **options,
):
    """Register an ultrasound frame (MOVING) onto a fluoroscopy frame (FIXED).

    Writes OUT/transform.json (schema hybridfuse.transform/1): moving_to_fixed_pixel,
    moving_to_fixed_mm, quality and, with --truth, the TRE in mm at the isocentre plane.
    Exit 2 for bad input or an ill-posed (edge-on) geometry, 1 when it does not converge
    or its verification refuses the answer (quality.verdict; --accept-unverified writes
    it marked "refused").
    """
    from hybridfuse._safeio import UnsafeOutputError, terminal_text
    from hybridfuse.fusion import read_image
    from hybridfuse.fusion.belonging import check_belonging
    from hybridfuse.fusion.coregister import (
        check_landmarks_imaged,
        read_landmarks_csv,
        read_transform_json,
        read_truth_json,
        register_images,
        transform_record,
        truth_tre,
        write_transform_json,
    )
    from hybridfuse.fusion.errors import InputError
    from hybridfuse.fusion.fuse import check_pair
    from hybridfuse.fusion.pair import with_given_spacing
    from hybridfuse.registration import RegistrationError
    from hybridfuse.registration.errors import StartTransformError

    given = given_values(options, RegistrationOptions, PairOptions)
    given = merge_deprecated(
        given, "--us-spacing-mm", deprecated_us_spacing, ("moving_spacing_mm",)
    )
    config = run_config(config_path, given)
    opts, pair = config.registration, config.pair
    unused = opts.unused_by(with_landmarks=landmarks_path is not None)
    if unused:  # said, not refused: one configuration file may serve both kinds of call
        click.echo(
            f"hybridfuse: note: {', '.join(unused)} set but not used by this registration "
            "(the scale check acts only without --landmarks, the search settings only when "
            "the search runs)",
            err=True,
        )
    target = out_dir / "transform.json"
    _check_target(
        target, overwrite, [fixed_path, moving_path, landmarks_path, init_transform, truth_path]
    )
    fixed = with_given_spacing(read_image(fixed_path), pair.fixed_spacing_mm, fixed=True)
    fixed = fixed.require_min_size()
    moving = with_given_spacing(read_image(moving_path), pair.moving_spacing_mm, fixed=False)
    check_pair(fixed, moving)  # the same refusal as fuse: swapped files are not registered
    belonging = check_belonging(fixed, moving, pair, include_phi=include_phi)
    landmarks = read_landmarks_csv(landmarks_path) if landmarks_path else None
    if landmarks is not None:
        check_landmarks_imaged(landmarks, fixed, moving)
    quiet = ctx.obj.get("verbosity", 0) < 0 or as_json

    def progress(level, iteration, cost):
        if quiet:
            return
        if level == CANDIDATE_LEVEL:  # the automatic start's placements, one by one
            click.echo(f"  placement {iteration} of {int(cost)}: the start route from it", err=True)
        elif level == RIVAL_LEVEL:  # a few-item match judged among its rivals
            n = int(cost)
            click.echo(f"  rival placement {iteration} of {n}: run to judge the match", err=True)
        elif level < 0:  # the global search reports once: how many candidates it scored
            click.echo(f"  search: {iteration} candidates, best cost {cost:.5f}", err=True)
        elif iteration % 10 == 0:
            click.echo(f"  level {level}: iteration {iteration}, cost {cost:.5f}", err=True)

    initial = read_transform_json(init_transform).matrix if init_transform else None
    truth = read_truth_json(truth_path) if truth_path else None  # refused before the work
    given_start = None
    if initial is not None and landmarks is not None:
        # The landmarks set the start; the library would still crop the fluoroscopy about
        # where the given start maps the ultrasound, which a stale start puts elsewhere.
        given_start, initial = initial, None
    try:
        result = register_images(
            fixed,
            moving,
            fixed_frame=fixed_frame,
            moving_frame=moving_frame,
            landmarks=landmarks,
            init=init,
            options=opts,
            progress=progress,
            initial=initial,
            plane_faces_detector=plane_faces_detector,
        )
    except StartTransformError as exc:
        raise StartTransformError(f"{init_transform or 'the start'}: {exc}") from exc
    except (RegistrationError, InputError) as exc:
        # Name the pair: a batch script's log then says which files failed, and why.
        raise type(exc)(
            f"{moving_path} (frame {moving_frame}) onto {fixed_path} (frame {fixed_frame}): {exc}"
        ) from exc
    if given_start is not None:
        note = _ignored_start_note(init_transform, given_start, result, moving, fixed)
        result.quality = result.quality.replace(notes=[*(result.quality.notes or []), note])
        click.echo(f"hybridfuse: note: {note}", err=True)
    tre = None
    if truth_path:
        try:
            tre = truth_tre(
                result.transform, truth, fixed, moving, str(fixed_path), fixed_frame, moving_frame
            )
        except InputError as exc:
            raise InputError(f"{truth_path}: {exc}") from exc
    record = transform_record(
        result,
        fixed,
        moving,
        fixed_frame=fixed_frame,
        moving_frame=moving_frame,
        tre=tre,
        include_phi=include_phi,
        belonging=belonging.to_dict(),
    )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"{out_dir}: cannot create the output folder ({exc.strerror or exc})"
        raise UnsafeOutputError(msg) from exc
    write_transform_json(target, record)
    if result.quality.verdict != "accepted":  # written on request: say it stays unverified
        reasons = "; ".join(result.quality.reasons)
        click.echo(f"hybridfuse: warning: written unverified (refused: {reasons})", err=True)
    if as_json:
        json.dump(json_safe(record), sys.stdout, indent=1, allow_nan=False)
        sys.stdout.write("\n")
        return
    click.echo(f"transform written to {target}")
    click.echo(
        f"  model {result.model}, metric {result.metric}, value "
        f"{result.metric_value if result.metric_value is not None else '-'}, "
        f"{result.wall_time_s:.2f} s, iterations {result.iterations}"
    )
    if result.landmark_fit is not None:
        # Names come from the user's CSV: escape control characters for the terminal.
        names = result.landmark_fit.rejected
        rejected = ", ".join(terminal_text(n) for n in names[:20])
        if len(names) > 20:  # all of them are in transform.json
            rejected += f", ... ({len(names)} in all)"
        click.echo(
            f"  landmark FRE {result.landmark_fit.fre_px:.2f} px, rejected {rejected or 'none'}"
        )
    on_beads = result.quality.clicks_on_beads
    if on_beads:
        click.echo(f"  {clicks_on_beads_text(on_beads)}")
    fallback = (result.quality.model_selection or {}).get("fallback")
    if fallback:
        click.echo(f"hybridfuse: note: {fallback}", err=True)
    if tre:
        click.echo(
            f"  TRE vs truth: median {tre['median_mm']:.3f} mm, p95 {tre['p95_mm']:.3f} mm,"
            f" max {tre['max_mm']:.3f} mm (isocentre plane)"
        )


def clicks_on_beads_text(record: dict) -> str:
    """One line on the fluoroscopy clicks moved onto beads (``quality.clicks_on_beads``)."""
    if record.get("moved"):
        return (
            f"clicks on beads: {record['moved']} of {record['of']} moved to a bead's centre "
            f"(median {record['median_shift_px']:.2f} px)"
        )
    why = record.get("declined") or f"no single bead within {record['within_mm']:g} mm"
    return f"clicks on beads: none moved ({why})"


def _ignored_start_note(path: Path, start, result, moving, fixed) -> str:
    """The sentence saying that ``--init-transform`` was not used, and how far it was.

    Landmarks are the stronger evidence and are verified on their own (held-out pairs, the
    images), so the start is not used to judge them: a start far from the answer is most
    often a stale one (another frame, an earlier probe position). The distance lets the
    user see which.
    """
    import numpy as np

    from hybridfuse.registration.preprocess import mask_extent
    from hybridfuse.registration.transforms import Transform

    # An ultrasound without a calibrated region has no mask: its whole frame is the field.
    mask = moving.mask if moving.mask is not None else np.ones(moving.shape, bool)
    x0, x1, y0, y1 = mask_extent(mask)[:4]
    gx, gy = np.meshgrid(np.linspace(x0, x1, 7), np.linspace(y0, y1, 7))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    apart = np.linalg.norm(Transform(start).apply(grid) - result.transform.apply(grid), axis=1)
    iso = fixed.xray.isocenter_spacing_mm if fixed.xray else None
    distance = (
        f"{np.median(apart) * float(np.mean(iso)):.1f} mm at the isocentre"
        if iso
        else f"{np.median(apart):.1f} fluoroscopy px"
    )
    return (
        f"--init-transform {path.name} was not used: the landmarks set the start (the "
        f"answer lies a median {distance} from it over the ultrasound region)"
    )


def _check_target(target: Path, overwrite: bool, inputs) -> None:
    """Refuse an --out that is a link, a file, an input's folder, or not ours to replace.

    ``--overwrite`` replaces only a transform.json hybridfuse wrote (readable JSON with
    schema ``hybridfuse.transform/1``), never a user's own file of that name.
    """
    from hybridfuse._safeio import UnsafeOutputError, check_out_separate

    out_dir = target.parent
    if out_dir.is_symlink():
        raise UnsafeOutputError(f"--out {out_dir}: is a symbolic link; refused")
    if out_dir.exists() and not out_dir.is_dir():
        raise UnsafeOutputError(f"--out {out_dir}: exists and is not a folder")
    check_out_separate(out_dir, [p for p in inputs if p is not None])
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise UnsafeOutputError(f"{target}: is a link or not a regular file; not replaced")
    if not target.exists():
        return
    if not overwrite:
        raise click.UsageError(f"{target} exists; pass --overwrite to replace it")
    if not _is_our_transform(target):
        raise UnsafeOutputError(
            f"{target}: not a transform.json hybridfuse wrote (schema "
            "hybridfuse.transform/1); --overwrite replaces only those"
        )


def _is_our_transform(path: Path) -> bool:
    """Whether ``path`` is readable JSON with the schema hybridfuse writes."""
    from hybridfuse.fusion.coregister import MAX_TRANSFORM_BYTES, TRANSFORM_SCHEMA

    try:
        if path.stat().st_size > MAX_TRANSFORM_BYTES:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("schema") == TRANSFORM_SCHEMA

"""Register image files: turn :class:`fusion.Image` into what :mod:`registration` needs.

Also reads landmark CSVs, writes and reads ``transform.json`` (schema
``hybridfuse.transform/1``) and measures TRE against a synthetic case's ``truth.json``.
"""

from __future__ import annotations

import csv
import json
import os
import time
import unicodedata
from pathlib import Path

import numpy as np

from hybridfuse._safeio import file_record, json_safe, write_text
from hybridfuse.registration import (
    Landmarks,
    RegistrationOptions,
    RegistrationResult,
    Transform,
    click_beside,
    register,
)
from hybridfuse.registration.clicks import snap_to_beads
from hybridfuse.registration.errors import (
    LandmarkInputError,
    RegistrationError,
    UnverifiedResultError,
)
from hybridfuse.registration.hypotheses import judge_few_match, judge_placements
from hybridfuse.registration.initial import (
    MIN_CHECKED_ITEMS,
    auto_start,
    moments_start,
    wide_search_options,
)
from hybridfuse.registration.landmarks import (
    AUTO_PREFIX,
    MAX_COORDINATE_PX,
    MIN_POINTS,
    is_automatic,
)
from hybridfuse.registration.optimise import grain
from hybridfuse.registration.start import supported_model
from hybridfuse.registration.transforms import TransformModel
from hybridfuse.registration.verify_landmarks import bead_reprojection

from ._image import Image
from .errors import InputError

__all__ = [
    "MAX_REGISTER_BYTES",
    "MAX_REGISTER_ENV",
    "check_register_memory",
    "TRANSFORM_SCHEMA",
    "read_landmarks_csv",
    "check_landmarks",
    "check_landmarks_imaged",
    "MAX_LANDMARK_ROWS",
    "register_images",
    "transform_record",
    "write_transform_json",
    "read_transform_json",
    "truth_tre",
]

TRANSFORM_SCHEMA = "hybridfuse.transform/1"


#: At most this many landmark rows are read; more is refused (a clicked case has tens).
MAX_LANDMARK_ROWS = 100_000
#: A landmark CSV larger than this is refused before it is read.
MAX_LANDMARK_FILE_BYTES = 32 * 2**20
#: Landmark names beginning so are the automatic matches'; clicks may not take them.
RESERVED_NAME_PREFIX = AUTO_PREFIX
#: Longest landmark name accepted.
MAX_LANDMARK_NAME = 200
#: Accepted range of a landmark weight (they are relative; zero would drop the pair).
WEIGHT_RANGE = (1e-6, 1e6)
_LANDMARK_COLUMNS = ("name", "moving_x", "moving_y", "fixed_x", "fixed_y")


def read_landmarks_csv(path: str | os.PathLike) -> Landmarks:
    """Read ``name,moving_x,moving_y,fixed_x,fixed_y`` (pixels; an optional ``weight``).

    Every value is checked as it is read, so that a bad file is refused with one line
    naming the file, the line and what is wrong, rather than failing in the fit.

    Raises
    ------
    InputError
        Unreadable or oversized file, missing columns, more than
        :data:`MAX_LANDMARK_ROWS` rows, a value that is not a finite pixel coordinate
        (|value| <= 1e6), a weight outside :data:`WEIGHT_RANGE`, an empty, overlong or
        repeated name, a name reserved for automatic matches (``auto_``), or no rows.
    """
    path = Path(path)
    try:
        if not path.is_file():
            what = "not a regular file" if path.exists() else "no such landmark file"
            raise InputError(f"{path}: {what}")
        size = path.stat().st_size
        if size > MAX_LANDMARK_FILE_BYTES:
            raise InputError(
                f"{path}: {size / 2**20:.0f} MiB; a landmark CSV may hold at most "
                f"{MAX_LANDMARK_FILE_BYTES // 2**20} MiB ({MAX_LANDMARK_ROWS} rows)"
            )
        # utf-8-sig: spreadsheets put a byte-order mark before the first column name.
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = _landmark_rows(path, csv.DictReader(fh))
    except OSError as exc:
        raise InputError(f"{path}: cannot read landmarks ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a UTF-8 text file ({exc.reason})") from exc
    if not rows:
        raise InputError(f"{path}: no landmark rows")
    names, lines, mov, fix, weights = zip(*rows, strict=True)
    return Landmarks(
        np.array(mov, float).reshape(-1, 2),
        np.array(fix, float).reshape(-1, 2),
        tuple(names),
        None if weights[0] is None else np.array(weights, float),
        source=str(path),
        lines=tuple(lines),
    )


def _landmark_rows(path: Path, reader: csv.DictReader) -> list[tuple]:
    """(name, line, moving, fixed, weight) of every row, each value checked."""
    try:
        fields = [f.strip() if f else f for f in (reader.fieldnames or [])]
        reader.fieldnames = fields
        missing = [c for c in _LANDMARK_COLUMNS if c not in fields]
        if missing:
            # A spreadsheet in a decimal-comma locale saves with ';' (or a tab) between
            # columns: one column then, and the names alone would not say why.
            sep = next((c for c in ";\t" if len(fields) == 1 and c in (fields[0] or "")), None)
            hint = (
                f" (the columns seem separated by {sep!r}: save as comma-separated)" if sep else ""
            )
            raise InputError(
                f"{path}: missing column(s) {', '.join(missing)}; expected "
                f"name,moving_x,moving_y,fixed_x,fixed_y[,weight]{hint}"
            )
        has_weight = "weight" in fields
        rows, seen = [], {}
        for rec in reader:
            line = reader.line_num
            if len(rows) == MAX_LANDMARK_ROWS:
                raise InputError(f"{path}: more than {MAX_LANDMARK_ROWS} landmark rows (the limit)")
            if rec.get(None):
                raise InputError(
                    f"{path}: line {line}: more values than columns (a decimal comma?)"
                )
            name = _landmark_name(path, line, rec["name"])
            if name in seen:
                raise InputError(
                    f"{path}: line {line}: landmark name {name!r} repeats line {seen[name]}"
                )
            seen[name] = line
            mov = [_coordinate(path, line, name, rec, c) for c in ("moving_x", "moving_y")]
            fix = [_coordinate(path, line, name, rec, c) for c in ("fixed_x", "fixed_y")]
            weight = _weight(path, line, name, rec["weight"]) if has_weight else None
            rows.append((name, line, mov, fix, weight))
    except csv.Error as exc:
        raise InputError(f"{path}: line {reader.line_num}: not valid CSV ({exc})") from exc
    return rows


def _landmark_name(path: Path, line: int, value: str | None) -> str:
    name = (value or "").strip()
    if not name:
        raise InputError(f"{path}: line {line}: empty landmark name")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        # Line breaks and escape codes in a name would garble messages and terminals.
        raise InputError(f"{path}: line {line}: landmark name {name!r} holds control characters")
    if len(name) > MAX_LANDMARK_NAME:
        raise InputError(
            f"{path}: line {line}: landmark name of {len(name)} characters "
            f"(at most {MAX_LANDMARK_NAME})"
        )
    if name.lower().startswith(RESERVED_NAME_PREFIX):
        # The checks tell beads matched by a consensus from clicks by this prefix: clicks
        # named so skipped them (4 clicks, one 11 px off, were accepted 2.5 mm off).
        raise InputError(
            f"{path}: line {line}: landmark name {name!r}: names beginning "
            f"{RESERVED_NAME_PREFIX!r} are reserved for beads matched automatically; rename it"
        )
    return name


def _number(path: Path, line: int, name: str, column: str, value: str | None) -> float:
    if value is None or not value.strip():
        raise InputError(f"{path}: line {line} ({name}): no value for {column}")
    try:
        return float(value)
    except ValueError:
        raise InputError(
            f"{path}: line {line} ({name}): {column} {value.strip()[:40]!r} is not a number"
        ) from None


def _coordinate(path: Path, line: int, name: str, rec: dict, column: str) -> float:
    v = _number(path, line, name, column, rec[column])
    if not (np.isfinite(v) and abs(v) <= MAX_COORDINATE_PX):
        raise InputError(
            f"{path}: line {line} ({name}): {column} {v:g} is not a pixel coordinate "
            f"(finite, |value| <= {MAX_COORDINATE_PX:g})"
        )
    return v


def _weight(path: Path, line: int, name: str, value: str | None) -> float:
    v = _number(path, line, name, "weight", value)
    lo, hi = WEIGHT_RANGE
    if not lo <= v <= hi:  # also false for NaN
        raise InputError(
            f"{path}: line {line} ({name}): weight {v:g} is outside {lo:g}..{hi:g} "
            "(weights are relative; drop the row to leave a landmark out)"
        )
    return v


def check_landmarks(
    landmarks: Landmarks, model: str, fixed_shape: tuple, moving_shape: tuple
) -> None:
    """Refuse landmarks too few for ``model`` or lying outside either image.

    A point outside its image cannot have been clicked on it: a wrong column, a wrong
    image or a wrong frame size, which a fit would otherwise turn into a confident map.

    Raises
    ------
    InputError
        Naming the landmark file, and the line and landmark at fault.
    """
    where = landmarks.source or "landmarks"
    model = TransformModel(model)
    n = len(landmarks.moving_xy)
    # Too few pairs for the model fall back to the richest one they support (start.py).
    if n < MIN_POINTS[supported_model(model, n)[0]]:
        minimums = ", ".join(f"{m.value} {k}" for m, k in MIN_POINTS.items())
        raise InputError(
            f"{where}: {n} landmark pair{'s' if n != 1 else ''}; too few for the "
            f"{model.value} model or any simpler one it falls back to (minimum pairs per "
            f"model: {minimums}); give more pairs, or none to register from the images "
            "alone (automatic start)"
        )
    _check_repeated_pairs(landmarks, where)
    for label, pts, shape in (
        ("moving (ultrasound)", landmarks.moving_xy, moving_shape),
        ("fixed (fluoroscopy)", landmarks.fixed_xy, fixed_shape),
    ):
        rows, cols = shape[:2]
        xy = np.asarray(pts, float)
        x, y = xy[:, 0], xy[:, 1]
        outside = ~((x >= -0.5) & (x <= cols - 0.5) & (y >= -0.5) & (y <= rows - 0.5))
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            line = f"line {landmarks.lines[i]}" if landmarks.lines else f"pair {i}"
            name = landmarks.names[i] if i < len(landmarks.names) else str(i)
            raise InputError(
                f"{where}: {line} ({name}): {label} point ({x[i]:g}, {y[i]:g}) lies outside "
                f"the {cols} x {rows} px image ({int(outside.sum())} of {n} pairs do)"
            )


#: Two pairs whose points lie this close (pixels, each coordinate, in both images) are one
#: pair given twice (a copied row, perhaps rounded): no two clicks land this close, and
#: 100,000 random pairs over a 300 x 400 px region with 1 px noise collide with a chance
#: near 1e-3 (at 0.05 px one such file in three was refused).
REPEATED_PAIR_PX = 0.01


def _check_repeated_pairs(landmarks: Landmarks, where: str) -> None:
    """Refuse a pair given twice: its copies pass for independent evidence.

    Copied rows look like agreeing clicks: three pairs of which one is mis-clicked, each
    row pasted three times, leave 12 coordinates over the affine model, fit exactly, and
    were accepted with a predicted TRE of 0.25 mm while 3.7 mm off. A weight column says
    how much a pair counts.
    """
    from scipy.spatial import cKDTree

    pts = np.hstack([landmarks.moving_xy, landmarks.fixed_xy]).astype(float)
    if len(pts) < 2:
        return
    close = cKDTree(pts).query_pairs(REPEATED_PAIR_PX, p=np.inf, output_type="ndarray")
    if not len(close):
        return
    i, j = sorted(int(k) for k in close[np.argmin(close.max(axis=1))])

    def label(k: int) -> str:
        line = f"line {landmarks.lines[k]}" if landmarks.lines else f"pair {k}"
        return f"{line} ({landmarks.names[k] if k < len(landmarks.names) else k})"

    raise InputError(
        f"{where}: {label(j)} repeats the pair of {label(i)} (both points within "
        f"{REPEATED_PAIR_PX:g} px; {len(close)} such repeat{'s' if len(close) != 1 else ''}): "
        "a repeated pair would count as independent evidence; drop the copy or give the "
        "pair a weight"
    )


def check_landmarks_imaged(landmarks: Landmarks, fixed: Image, moving: Image) -> None:
    """Refuse a landmark that lies inside its image but outside the imaged area (mask).

    The screen around an ultrasound region (rulers, text, logos) and the dark outside the
    collimated X-ray field show no anatomy, so a point there was not clicked on it. One
    pixel of slack keeps points on the border. Points outside the image itself are
    :func:`check_landmarks`'s to refuse, with its message.

    Raises
    ------
    InputError
        Naming the landmark file, the line and landmark, and where the imaged area came from.
    """
    where = landmarks.source or "landmarks"
    for label, pts, image in (
        ("moving (ultrasound)", landmarks.moving_xy, moving),
        ("fixed (fluoroscopy)", landmarks.fixed_xy, fixed),
    ):
        if image.mask is None:
            continue
        rows, cols = image.mask.shape
        near = np.ones(len(pts), bool)
        for i, (x, y) in enumerate(np.rint(np.asarray(pts, float)).astype(np.int64)):
            if 0 <= x < cols and 0 <= y < rows:
                near[i] = image.mask[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].any()
        if not near.all():
            i = int(np.flatnonzero(~near)[0])
            line = f"line {landmarks.lines[i]}" if landmarks.lines else f"pair {i}"
            x, y = pts[i]
            name = landmarks.names[i] if i < len(landmarks.names) else str(i)
            raise InputError(
                f"{where}: {line} ({name}): {label} point ({x:g}, {y:g}) lies "
                f"outside the imaged area ({image.mask_source}); {int((~near).sum())} of "
                f"{len(pts)} pairs do"
            )


def expected_scale(fixed: Image, moving: Image) -> tuple[float | None, float | None]:
    """(fixed px per moving px if the plane sat at the isocentre, fixed isocentre mm/px)."""
    iso = fixed.xray.isocenter_spacing_mm if fixed.xray else None
    if iso is None or moving.pixel_spacing_mm is None:
        return None, (iso[1] if iso else None)
    return float(np.mean(moving.pixel_spacing_mm) / np.mean(iso)), float(np.mean(iso))


def expected_scale_xy(fixed: Image, moving: Image) -> tuple[float, float] | None:
    """Fixed px per moving px along the moving x and y axes, plane at the isocentre.

    Ultrasound pixels may be anisotropic (one vendor file here has 0.2857 × 0.2286 mm);
    the two axes then map with different scales.
    """
    iso = fixed.xray.isocenter_spacing_mm if fixed.xray else None
    if iso is None or moving.pixel_spacing_mm is None:
        return None
    row_mm, col_mm = moving.pixel_spacing_mm
    iso_row, iso_col = iso
    return float(col_mm / iso_col), float(row_mm / iso_row)


#: Working memory a registration takes per pixel of the two frames: float copies, masks,
#: the pyramid's smoothed images and gradients (136-148 bytes measured at 1024² to 4096²).
REGISTER_BYTES_PER_PIXEL = 150
#: Most working memory one registration may take; larger frames are refused before any
#: work, not left to exhaust a batch worker's memory. Overridden by MAX_REGISTER_ENV.
MAX_REGISTER_BYTES = 4 * 1024**3
#: Environment variable that overrides :data:`MAX_REGISTER_BYTES` (a number of bytes).
MAX_REGISTER_ENV = "HYBRIDFUSE_MAX_REGISTER_BYTES"


def check_register_memory(fixed: Image, moving: Image) -> None:
    """Refuse frames whose registration would take more than the working-memory limit.

    A 6144² fluoroscopy frame took 5.7 GB: on a smaller machine, or several batch workers
    at once, that ends in the kernel's out-of-memory kill, not in an error.
    """
    from hybridfuse._dicomread import env_bytes

    try:
        limit = env_bytes(MAX_REGISTER_ENV, MAX_REGISTER_BYTES)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    pixels = sum(img.shape[0] * img.shape[1] for img in (fixed, moving))
    need = REGISTER_BYTES_PER_PIXEL * pixels
    if need > limit:
        rows, cols = fixed.shape
        raise InputError(
            f"{fixed.source_path or 'the fluoroscopy'}: frames of {rows} x {cols} "
            f"(fluoroscopy) and {moving.shape[0]} x {moving.shape[1]} (ultrasound) pixels "
            f"need about {need / 1024**3:.1f} GiB to register, above the "
            f"{limit / 1024**3:.1f} GiB limit ({MAX_REGISTER_ENV} raises it)"
        )


def register_images(
    fixed: Image,
    moving: Image,
    *,
    fixed_frame: int = 0,
    moving_frame: int = 0,
    landmarks: Landmarks | None = None,
    init: str = "auto",
    options: RegistrationOptions | None = None,
    initial: np.ndarray | None = None,
    progress=None,
    plane_faces_detector: bool = False,
) -> RegistrationResult:
    """Register ``moving`` (ultrasound) frame onto ``fixed`` (fluoroscopy) frame.

    ``init`` matters only without landmarks and ``initial``: ``"auto"`` (the default)
    matches the beads both images show and uses them as landmarks (refused, as a
    RegistrationError, when too few are found or they match ambiguously); ``"moments"`` lines up the
    feature centroids at the calibrated scale and searches the whole fluoroscopy field
    (:mod:`registration.initial`). Nothing in the images tells it that the ultrasound
    plane is seen edge-on, where it can match confidently and wrongly, so the caller
    must confirm with ``plane_faces_detector=True`` that the plane faces the detector.
    The result's ``wall_time_s`` covers all of it: detection, matching, optimisation,
    verification and any judgement among rivals.
    """
    check_register_memory(fixed, moving)
    t_start = time.perf_counter()
    args = dict(fixed_frame=fixed_frame, moving_frame=moving_frame, progress=progress)
    try:
        if initial is None and landmarks is None and init == "auto" and _silhouette_on(options):
            from .probe_silhouette import register_or_silhouette

            result = register_or_silhouette(
                register_images, fixed, moving, options, **args,
                plane_faces_detector=plane_faces_detector,
            )  # fmt: skip
        else:
            result = _register_frames(
                fixed, moving, **args, landmarks=landmarks, init=init, options=options,
                initial=initial, plane_faces_detector=plane_faces_detector,
            )  # fmt: skip
    except UnverifiedResultError as exc:
        if exc.result is not None:
            exc.result.wall_time_s = time.perf_counter() - t_start
        raise
    result.wall_time_s = time.perf_counter() - t_start
    return result


def _register_frames(fixed: Image, moving: Image, *, fixed_frame, moving_frame, landmarks,
                     init, options, initial, progress, plane_faces_detector):  # fmt: skip
    """:func:`register_images` without the silhouette route and the overall timing."""
    f = fixed.gray(fixed_frame)
    m = moving.gray(moving_frame)
    on_beads = None
    if landmarks is not None:
        check_landmarks(landmarks, (options or RegistrationOptions()).model, f.shape, m.shape)
        landmarks, on_beads = _clicks_on_beads(landmarks, fixed, f, options)
    _, iso_mm = expected_scale(fixed, moving)
    start = initial
    auto = start is None and landmarks is None and init == "auto"
    if auto:
        try:
            found, options = _auto_landmarks(fixed, moving, f, m, options)
        except RegistrationError as exc:  # two placements, or two items: the images judge
            return _judged_placements(exc, fixed, moving, (f, m), options, progress)
        landmarks = found.landmarks
    if start is None and landmarks is None:
        start, options = _init_start(init, fixed, moving, f, m, options, plane_faces_detector)
    try:
        result = register(
            f, m, fixed_mask=fixed.mask, moving_mask=moving.mask, landmarks=landmarks,
            initial=start, options=options, expected_scale=expected_scale_xy(fixed, moving),
            fixed_spacing_mm=iso_mm, progress=progress,
            source_object_mm=fixed.xray.sod_mm if fixed.xray else None,
        )  # fmt: skip
    except LandmarkInputError as exc:
        # Degenerate or mutually inconsistent pairs: the file is at fault (exit 2).
        raise InputError(f"{landmarks.source or 'landmarks'}: {exc}") from exc
    except UnverifiedResultError as exc:  # a few-item match may be judged among its rivals
        if on_beads is not None and exc.result is not None:
            exc.result.quality = exc.result.quality.replace(clicks_on_beads=on_beads)
        if not auto or exc.result is None:
            raise
        result = exc.result
    if on_beads is not None:
        result.quality = result.quality.replace(clicks_on_beads=on_beads)
        _refuse_off_beads(result, on_beads, landmarks.names, options)
    if auto:
        _with_beads(result, found, fixed.mask, iso_mm, options)
        _judged_few(result, found, fixed, moving, (f, m), options, progress)
    return result


def _clicks_on_beads(landmarks: Landmarks, fixed: Image, f, options):
    """Landmarks with fluoroscopy clicks on a bead at its centre, and the record (or None)."""
    lm_opts = (options or RegistrationOptions()).landmarks
    within = lm_opts.snap_to_beads_mm
    spacing = fixed.xray.isocenter_spacing_mm if fixed.xray else None
    if within is None or spacing is None or is_automatic(landmarks.names):
        return landmarks, None
    return snap_to_beads(landmarks, f, fixed.mask, spacing, within, lm_opts.reject_threshold_px)


def _with_beads(result, found, fixed_mask, iso_mm, options) -> None:
    """Record the beads' reprojection; refuse a match of too few items to check."""
    beads = bead_reprojection(
        result.transform, found.moving_beads.xy, found.fixed_beads.xy, fixed_mask, iso_mm
    )
    verification = {**(result.quality.verification or {}), "beads": beads}
    result.quality = result.quality.replace(verification=verification)
    _refuse_unchecked_match(result, found.match.items, options)


def _judged_few(result, found, fixed: Image, moving: Image, frames, options, progress) -> None:
    """Judge a refused 3-4 item match among its structures' other placements, then refuse.

    :func:`registration.hypotheses.judge_few_match`; ``result`` may come back accepted.
    """
    from hybridfuse.registration.guards import raise_if_refused

    _, iso_mm = expected_scale(fixed, moving)
    judge_few_match(
        result,
        found.structures,
        *frames,
        (fixed.mask, moving.mask),
        items=found.match.items,
        options=options,
        expected_scale=expected_scale_xy(fixed, moving),
        px_mm=iso_mm,
        progress=progress,
    )
    raise_if_refused(result, options or RegistrationOptions())


def _init_start(init: str, fixed: Image, moving: Image, f, m, options, plane_faces_detector):
    """(start, options) of a non-automatic ``init`` without landmarks or a start."""
    _, iso_mm = expected_scale(fixed, moving)
    if init == "geometry":
        # Geometry fixes the scale but not where the probe lies in the field; a search
        # over the whole field finds confident wrong matches on phantom data, so an
        # intensity-only registration needs a start near the answer.
        raise InputError(
            "intensity-only registration needs a starting transform within about 20 mm "
            "and 20 degrees (--init-transform transform.json, e.g. from a landmark "
            "registration or the previous frame) or landmarks (--landmarks); the "
            "geometry alone gives only the scale"
        )
    elif init == "moments":
        if not plane_faces_detector:
            raise InputError(
                "--init moments cannot tell an ultrasound plane seen edge-on from one "
                "facing the detector (on phantom runs with the plane edge-on it matched "
                "confidently and wrongly in 32 of 112 pairs): confirm the plane faces "
                "the detector with --plane-faces-detector, or give landmarks"
            )
        scale_xy = expected_scale_xy(fixed, moving)
        if scale_xy is None or iso_mm is None:
            raise InputError(
                "--init moments needs the ultrasound calibration (pixel spacing) and the "
                "fluoroscopy's imager spacing and distances (SID, SOD) for the scale"
            )
        opts = options or RegistrationOptions()
        if opts.metric is None:
            raise InputError(
                "--init moments is refined by an intensity search: it needs a metric "
                "(--metric none registers by landmarks only; give --landmarks)"
            )
        moments = moments_start(
            f,
            m,
            scale_xy,
            fixed_mask=fixed.mask,
            moving_mask=moving.mask,
            preprocess=opts.preprocess,
            shadow_px=None if opts.shadow_px is None else tuple(opts.shadow_px),
            grain=grain(opts, iso_mm),
        )
        return moments.matrix, wide_search_options(opts, moments.reach_px * iso_mm)
    elif init == "identity":
        return np.eye(3), options
    elif init == "landmarks":
        raise InputError("--init landmarks needs --landmarks")
    else:
        raise InputError(f"unknown initialisation {init!r}")


def _judged_placements(exc, fixed: Image, moving: Image, frames, options, progress):
    """:func:`registration.hypotheses.judge_placements` with the start route on the pair."""
    f, m = frames
    _, iso_mm = expected_scale(fixed, moving)
    scale_xy = expected_scale_xy(fixed, moving)

    def run(start, opts, prog):
        return register(
            f,
            m,
            fixed_mask=fixed.mask,
            moving_mask=moving.mask,
            initial=start,
            options=opts,
            expected_scale=scale_xy,
            fixed_spacing_mm=iso_mm,
            progress=prog,
            source_object_mm=fixed.xray.sod_mm if fixed.xray else None,
        )

    masks = (fixed.mask, moving.mask)
    return judge_placements(
        exc,
        f,
        m,
        masks,
        run,
        options=options,
        expected_scale=scale_xy,
        px_mm=iso_mm,
        progress=progress,
    )


def _silhouette_on(options) -> bool:
    return (options or RegistrationOptions()).probe_silhouette == "auto"


def _refuse_off_beads(result, on_beads: dict, names, options) -> None:
    """Refuse clicks off the beads under them all the same way, or one beside its bead.

    :func:`registration.click_offset.off_beads` and
    :func:`registration.click_beside.beside_beads`: the pairs agree with each other, or
    are too few to reject the one, so no check inside ``register`` sees it.
    ``--accept-unverified`` writes the answer marked.
    """
    from hybridfuse.registration.guards import raise_if_refused

    reasons = [(on_beads.get("off_beads") or {}).get("refuse")]
    reasons.append(
        click_beside.refusal(on_beads.get("beside_bead"), names, result.quality.landmarks_rejected)
    )
    reasons = [f"unverified: {r}" for r in reasons if r]
    if not reasons or result.quality.verdict != "accepted":
        return
    opts = options or RegistrationOptions()
    result.quality = result.quality.replace(
        verdict="refused",
        reasons=[*result.quality.reasons, *reasons],
        accepted_unverified=True if opts.guards.accept_unverified else None,
    )
    raise_if_refused(result, opts)


def _refuse_unchecked_match(result, matched: int, options) -> None:
    """Refuse an automatic start with fewer agreeing structures than something can check.

    ``matched`` counts beads, the needle's line and its tip
    (:data:`registration.initial.MIN_CHECKED_ITEMS` are needed). Fewer fit the model with
    nothing left over to catch a wrong match; 3-4 items (under
    :data:`registration.initial.CHECKED_ITEMS`) are confirmed inside ``register`` by
    :func:`registration.verify.intensity_route_check` at the calibrated magnification.
    ``--accept-unverified`` writes a refused one marked.
    """
    from hybridfuse.registration.guards import raise_if_refused

    opts = options or RegistrationOptions()
    if matched >= MIN_CHECKED_ITEMS or result.quality.verdict != "accepted":
        return
    reason = (
        f"unverified: only {matched} structures matched (beads, needle line and tip), "
        f"fewer than the {MIN_CHECKED_ITEMS} that leave something to check the match"
    )
    result.quality = result.quality.replace(
        verdict="refused",
        reasons=[*result.quality.reasons, reason],
        accepted_unverified=True if opts.guards.accept_unverified else None,
    )
    raise_if_refused(result, opts)


def _auto_landmarks(fixed: Image, moving: Image, f, m, options):
    """Landmarks from matched beads, and the options (a model the pairs can fit)."""
    iso = fixed.xray.isocenter_spacing_mm if fixed.xray else None
    if iso is None or moving.pixel_spacing_mm is None:
        raise InputError(
            "automatic correspondences (--init auto) need the ultrasound calibration (pixel "
            "spacing) and the fluoroscopy's imager spacing and distances (SID, SOD); give "
            "landmarks, a starting transform or the missing spacing"
        )
    found = auto_start(
        f,
        m,
        fixed_spacing_mm=iso,
        moving_spacing_mm=moving.pixel_spacing_mm,
        fixed_mask=fixed.mask,
        moving_mask=moving.mask,
        beam_apex_xy=moving.imaged_area.apex_xy if moving.imaged_area is not None else None,
    )
    # Three matched beads fix an affine map, not a projective one: the start's model
    # fallback (registration/start.py) decides that and records it in model_selection.
    return found, options or RegistrationOptions()


def truth_tre(
    result_transform: Transform,
    truth: dict,
    fixed: Image,
    moving: Image,
    fixed_file: str,
    fixed_frame: int,
    moving_frame: int,
) -> dict:
    """TRE against a synthetic truth: distances over a grid of the ultrasound region.

    Distances are measured in fixed pixels and converted to mm at the isocentre plane.
    """
    if truth.get("schema") == PAIR_TRUTH:
        return _pair_tre(result_transform, truth, fixed, moving, fixed_frame, moving_frame)
    name = Path(fixed_file).name
    try:
        pair = next(
            (
                p
                for p in truth.get("pairs", [])
                if p["fluoro_file"] == name
                and p["fluoro_frame"] == fixed_frame
                and p["us_frame"] == moving_frame
            ),
            None,
        )
        if pair is None:
            raise InputError(
                f"truth has no pair for {name} frame {fixed_frame} with ultrasound frame "
                f"{moving_frame}"
            )
        true = Transform(_matrix(Path("truth"), pair["moving_to_fixed_pixel"]))
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"truth: a pair lacks or mistypes {exc}") from exc
    d = _distances_mm(result_transform, true, _region_grid(moving), _iso_mm(fixed, name))
    return {**_summary(d), "pair": pair.get("id"), "edge_on_truth": bool(pair.get("edge_on"))}


def _pair_tre(result_transform, truth, fixed, moving, fixed_frame, moving_frame) -> dict:
    """TRE against one pair's truth: over its own grid and mm scale where it gives them."""
    if fixed_frame != 0 or moving_frame != 0:
        raise InputError(
            f"truth describes one pair of images (frame 0 of each), not fluoroscopy frame "
            f"{fixed_frame} with ultrasound frame {moving_frame}"
        )
    grid = truth.get("grid", _region_grid(moving))
    mm = truth.get("mm") or _iso_mm(fixed)
    d = _distances_mm(result_transform, Transform(truth["h"]), grid, mm)
    return {**_summary(d), "pair": None, "edge_on_truth": False}


def _region_grid(moving: Image) -> np.ndarray:
    """16 × 16 points spanning the ultrasound region (its mask's bounding box)."""
    mask = moving.mask if moving.mask is not None else np.ones(moving.shape, bool)
    ys, xs = np.nonzero(mask)
    gx, gy = np.meshgrid(np.linspace(xs.min(), xs.max(), 16), np.linspace(ys.min(), ys.max(), 16))
    return np.column_stack([gx.ravel(), gy.ravel()])


def _iso_mm(fixed: Image, name: str = "the fluoroscopy") -> float:
    # No imager spacing (or no SID/SOD) leaves no isocentre spacing: bad input, not a crash
    # (np.mean(None) was an internal error).
    spacing = fixed.xray.isocenter_spacing_mm if fixed.xray else None
    iso = float(np.mean(spacing)) if spacing is not None else None
    if not iso or not np.isfinite(iso):
        raise InputError(
            f"TRE in mm needs the fluoroscopy isocentre spacing, which {name} lacks "
            "(ImagerPixelSpacing and DistanceSourceToDetector/DistanceSourceToPatient)"
        )
    return iso


def _distances_mm(estimate: Transform, true: Transform, grid, mm: float) -> np.ndarray:
    return np.linalg.norm(estimate.apply(grid) - true.apply(grid), axis=1) * mm


def _summary(d: np.ndarray) -> dict:
    return {
        "median_mm": float(np.median(d)),
        "p95_mm": float(np.percentile(d, 95)),
        "max_mm": float(d.max()),
        "points": int(len(d)),
        "plane": "isocentre",
    }


def transform_record(
    result: RegistrationResult,
    fixed: Image,
    moving: Image,
    *,
    fixed_frame: int,
    moving_frame: int,
    tre: dict | None = None,
    include_phi: bool = False,
    sha256: dict | None = None,
    belonging: dict | None = None,
) -> dict:
    """The ``transform.json`` content for a registration result.

    Input images are recorded by label and sha256 (``fluoroscopy (sha256 <12 hex>)``);
    their file names, paths (files and folders are often named after the patient) and
    SOP Instance UIDs only with ``include_phi``. ``sha256`` maps a
    source path to its digest when the caller has it already (saves reading it again).
    ``belonging`` is the belonging-together record (:mod:`fusion.belonging`), which says
    which checks an ``--allow-mismatch`` overrode.
    """
    iso = fixed.xray.isocenter_spacing_mm if fixed.xray else None
    mm = (
        result.transform.in_mm(moving.pixel_spacing_mm, iso).tolist()
        if iso and moving.pixel_spacing_mm
        else None
    )
    lm = result.landmark_fit
    return {
        "schema": TRANSFORM_SCHEMA,
        "moving_to_fixed_pixel": result.transform.matrix.tolist(),
        "moving_to_fixed_mm": mm,
        "mm_frames": "moving: ultrasound plane mm from pixel (0,0); fixed: isocentre-plane mm "
        "from pixel (0,0)",
        "pixel_convention": "(x, y) = (column, row), 0-based, pixel centres at integers",
        "model": result.model,
        "metric": result.metric,
        "metric_value": result.metric_value,
        "iterations_per_level": result.iterations,
        "wall_time_s": result.wall_time_s,
        "converged": result.converged,
        "optimizer_message": result.message,
        "landmarks": None
        if lm is None
        else {
            "fre_px": lm.fre_px,
            "fre_mm": lm.fre_px * float(np.mean(iso)) if iso else None,
            "rejected": lm.rejected,
            "loo_tre_px_median": (
                float(np.nanmedian(lm.loo_tre_px)) if np.any(np.isfinite(lm.loo_tre_px)) else None
            ),
            # Above 200 inliers the leave-one-out error covers a seeded sample of them.
            "loo_tre_pairs": lm.loo_pairs,
            "loo_tre_sampled": lm.loo_sampled,
        },
        "quality": result.quality.to_dict(),
        "tre": tre,
        "fixed": _input_record(fixed, "fluoroscopy", fixed_frame, include_phi, sha256),
        "moving": _input_record(moving, "ultrasound", moving_frame, include_phi, sha256),
        "options": result.options,
        "belonging": belonging,
    }


def _input_record(img: Image, role: str, frame: int, include_phi: bool, known: dict | None) -> dict:
    """Label and sha256 of an input image (name, path and SOP Instance UID with PHI)."""
    rec = {}
    if img.source_path:
        digest = (known or {}).get(img.source_path)
        rec = file_record(img.source_path, include_phi=include_phi, sha256=digest, role=role)
    rec["frame"] = frame
    if include_phi:
        rec["sop_instance_uid"] = img.uids.get("sop_instance")
    return rec


def write_transform_json(path: str | os.PathLike, record: dict) -> None:
    """Write strict JSON through an exclusive temporary file, renamed when complete."""
    text = json.dumps(json_safe(record), indent=1, allow_nan=False, default=str)
    write_text(path, text + "\n")


#: A transform.json is a few kilobytes, up to ~20 MB when it names 100,000 rejected
#: landmarks (the row cap); anything larger is not one.
MAX_TRANSFORM_BYTES = 64 * 2**20


def read_transform_json(path: str | os.PathLike) -> Transform:
    """Read ``transform.json``; the schema must be ``hybridfuse.transform/1``.

    Raises
    ------
    InputError
        Naming the file: unreadable, over :data:`MAX_TRANSFORM_BYTES`, not JSON, another
        schema, or a ``moving_to_fixed_pixel`` that is not a finite, invertible 3 x 3
        matrix of numbers (condition number up to 1e12).
    """
    path = Path(path)
    data = _read_json(path, "transform", MAX_TRANSFORM_BYTES)
    if not isinstance(data, dict) or data.get("schema") != TRANSFORM_SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{path}: schema {str(got)[:60]!r}, expected {TRANSFORM_SCHEMA!r}")
    h = _matrix(path, data.get("moving_to_fixed_pixel"))
    model = data.get("model", "projective")
    if model not in [m.value for m in TransformModel]:
        raise InputError(f"{path}: unknown model {str(model)[:40]!r}")
    return Transform(h, model)


def read_transform_frames(path: str | os.PathLike) -> tuple[int, int]:
    """The (fixed, moving) frame numbers a ``transform.json`` was registered on.

    Raises
    ------
    InputError
        Naming the file, when ``fixed``/``moving`` or their ``frame`` have the wrong type.
    """
    path = Path(path)
    data = _read_json(path, "transform", MAX_TRANSFORM_BYTES)
    frames = []
    for side in ("fixed", "moving"):
        entry = data.get(side) if isinstance(data, dict) else None
        entry = {} if entry is None else entry
        frame = entry.get("frame", 0) if isinstance(entry, dict) else None
        if isinstance(frame, bool) or not isinstance(frame, int) or not 0 <= frame < 2**31:
            raise InputError(f"{path}: {side}.frame must be a frame number, got {frame!r:.40}")
        frames.append(frame)
    return frames[0], frames[1]


def _read_json(path: Path, what: str, max_bytes: int):
    """Parsed JSON of a small regular file, or InputError naming it."""
    try:
        if not path.is_file():
            raise InputError(f"{path}: {'not a regular file' if path.exists() else 'no such file'}")
        if path.stat().st_size > max_bytes:
            raise InputError(f"{path}: larger than {max_bytes // 2**20} MiB; not a {what} file")
        with open(path, encoding="utf-8") as fh:
            return json.load(fh, parse_constant=_no_constant)
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InputError(f"{path}: not a JSON {what} ({str(exc)[:120]})") from exc


#: Schema of a synthetic case's ``truth.json`` (written by the phantom generator).
TRUTH_SCHEMA = "hybridfuse.synthetic-truth/1"


def read_truth_json(path: str | os.PathLike) -> dict:
    """Read a ``truth.json`` for ``--truth``, refusing a bad one.

    Two forms: a synthetic case's (``schema`` :data:`TRUTH_SCHEMA`, one entry per frame
    pair) and one pair's (no schema; ``moving_to_fixed_pixel``, optionally ``grid_moving``
    and ``mm_per_fixed_pixel_at_isocenter``), the form of ``../shared/validation`` and of
    the phantom family, so that truths from other generators can be scored as they are.
    """
    path = Path(path)
    data = _read_json(path, "truth", 64 * 2**20)
    if isinstance(data, dict) and "schema" not in data and "moving_to_fixed_pixel" in data:
        return _pair_truth(path, data)
    if not isinstance(data, dict) or data.get("schema") != TRUTH_SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise InputError(
            f"{path}: schema {str(got)[:60]!r}, expected {TRUTH_SCHEMA!r} or one pair's "
            "truth (moving_to_fixed_pixel)"
        )
    return data


#: ``schema`` given to a one-pair truth once read (it has none in its file).
PAIR_TRUTH = "one pair"


def _pair_truth(path: Path, data: dict) -> dict:
    """One pair's truth, checked: its matrix, its grid (n × 2 numbers) and its mm scale."""
    truth = {"schema": PAIR_TRUTH, "h": _matrix(path, data["moving_to_fixed_pixel"])}
    grid = data.get("grid_moving")
    if grid is not None:
        try:
            g = np.array(grid, float)
        except (TypeError, ValueError, OverflowError):
            g = np.empty((0, 0))
        if g.ndim != 2 or g.shape[1] != 2 or not len(g) or not np.all(np.isfinite(g)):
            raise InputError(f"{path}: grid_moving must be a list of finite (x, y) pairs")
        truth["grid"] = g
    mm = data.get("mm_per_fixed_pixel_at_isocenter")
    if mm is not None:
        ok = isinstance(mm, (int, float)) and not isinstance(mm, bool)
        if not (ok and np.isfinite(mm) and mm > 0):
            raise InputError(f"{path}: mm_per_fixed_pixel_at_isocenter must be a number > 0")
        truth["mm"] = float(mm)
    return truth


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _matrix(path: Path, value) -> np.ndarray:
    """A finite, well-conditioned 3 x 3 matrix of plain numbers from JSON, or InputError."""
    ok = (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(r, list) and len(r) == 3 for r in value)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for r in value for v in r)
    )
    if not ok:
        raise InputError(f"{path}: moving_to_fixed_pixel must be a 3 x 3 list of numbers")
    try:
        h = np.array(value, float)
    except OverflowError:  # a JSON integer beyond float range (10**400): internal error
        raise InputError(f"{path}: moving_to_fixed_pixel holds a non-finite value") from None
    if not np.all(np.isfinite(h)):
        raise InputError(f"{path}: moving_to_fixed_pixel holds a non-finite value")
    sv = np.linalg.svd(h, compute_uv=False)
    if not sv[-1] > 1e-12 * sv[0] or abs(h[2, 2]) < 1e-12 * sv[0]:
        raise InputError(
            f"{path}: moving_to_fixed_pixel is singular or nearly so (condition number "
            f"{sv[0] / sv[-1] if sv[-1] else np.inf:.3g}); not a usable transform"
        )
    # A homography is defined up to scale: one written as 1e-300 x H is H, and left so,
    # its H[2,2] fell under the absolute floor of registration.transforms (exit 1, no file).
    return h / h[2, 2]

"""Register image files: turn :class:`fusion.Image` into what :mod:`registration` needs.

Also reads landmark CSVs, writes and reads ``transform.json`` (schema
``hybridfuse.transform/1``) and measures TRE against a synthetic case's ``truth.json``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from registration import (
    Landmarks,
    RegistrationOptions,
    RegistrationResult,
    Transform,
    register,
)
from registration.initial import moments_start, wide_search_options

from ._image import Image
from .errors import InputError

__all__ = [
    "TRANSFORM_SCHEMA",
    "read_landmarks_csv",
    "register_images",
    "transform_record",
    "write_transform_json",
    "read_transform_json",
    "truth_tre",
]

TRANSFORM_SCHEMA = "hybridfuse.transform/1"


def read_landmarks_csv(path: str | os.PathLike) -> Landmarks:
    """Read ``name,moving_x,moving_y,fixed_x,fixed_y`` (pixels; an optional ``weight``)."""
    path = Path(path)
    required = ["name", "moving_x", "moving_y", "fixed_x", "fixed_y"]
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(
                    f"{path}: missing column(s) {', '.join(missing)}; expected "
                    "name,moving_x,moving_y,fixed_x,fixed_y"
                )
            rows = list(reader)
    except OSError as exc:
        raise InputError(f"{path}: cannot read landmarks ({exc})") from exc
    try:
        mov = np.array([[float(r["moving_x"]), float(r["moving_y"])] for r in rows])
        fix = np.array([[float(r["fixed_x"]), float(r["fixed_y"])] for r in rows])
        weights = (
            np.array([float(r["weight"]) for r in rows]) if rows and "weight" in rows[0] else None
        )
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: a landmark coordinate is not a number ({exc})") from exc
    if len(rows) == 0:
        raise InputError(f"{path}: no landmark rows")
    if not (np.all(np.isfinite(mov)) and np.all(np.isfinite(fix))):
        raise InputError(f"{path}: landmark coordinates must be finite")
    return Landmarks(
        mov.reshape(-1, 2), fix.reshape(-1, 2), tuple(r["name"] for r in rows), weights
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


def register_images(
    fixed: Image,
    moving: Image,
    *,
    fixed_frame: int = 0,
    moving_frame: int = 0,
    landmarks: Landmarks | None = None,
    init: str = "geometry",
    options: RegistrationOptions | None = None,
    initial: np.ndarray | None = None,
    progress=None,
    plane_faces_detector: bool = False,
) -> RegistrationResult:
    """Register ``moving`` (ultrasound) frame onto ``fixed`` (fluoroscopy) frame.

    ``init`` matters only without landmarks and ``initial``: ``"moments"`` lines up the
    feature centroids at the calibrated scale and searches the whole fluoroscopy field
    (:mod:`registration.initial`). Nothing in the images tells it that the ultrasound
    plane is seen edge-on, where it can match confidently and wrongly, so the caller
    must confirm with ``plane_faces_detector=True`` that the plane faces the detector.
    """
    f = fixed.gray(fixed_frame)
    m = moving.gray(moving_frame)
    _, iso_mm = expected_scale(fixed, moving)
    start = initial
    if start is None and landmarks is None:
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
            moments = moments_start(
                f,
                m,
                scale_xy,
                fixed_mask=fixed.mask,
                moving_mask=moving.mask,
                preprocess=opts.preprocess,
                shadow_px=None if opts.shadow_px is None else tuple(opts.shadow_px),
            )
            start = moments.matrix
            options = wide_search_options(opts, moments.reach_px * iso_mm)
        elif init == "identity":
            start = np.eye(3)
        elif init == "landmarks":
            raise InputError("--init landmarks needs --landmarks")
        else:
            raise InputError(f"unknown initialisation {init!r}")
    return register(
        f,
        m,
        fixed_mask=fixed.mask,
        moving_mask=moving.mask,
        landmarks=landmarks,
        initial=start,
        options=options,
        expected_scale=expected_scale_xy(fixed, moving),
        fixed_spacing_mm=iso_mm,
        progress=progress,
    )


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
    name = Path(fixed_file).name
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
            f"truth has no pair for {name} frame {fixed_frame} with ultrasound frame {moving_frame}"
        )
    true = Transform(np.asarray(pair["moving_to_fixed_pixel"]))
    mask = moving.mask if moving.mask is not None else np.ones(moving.shape, bool)
    ys, xs = np.nonzero(mask)
    gx, gy = np.meshgrid(np.linspace(xs.min(), xs.max(), 16), np.linspace(ys.min(), ys.max(), 16))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    iso = np.mean(fixed.xray.isocenter_spacing_mm) if fixed.xray else None
    if not iso:
        raise InputError("TRE in mm needs the fluoroscopy isocentre spacing")
    d = np.linalg.norm(result_transform.apply(grid) - true.apply(grid), axis=1) * iso
    return {
        "median_mm": float(np.median(d)),
        "p95_mm": float(np.percentile(d, 95)),
        "max_mm": float(d.max()),
        "points": int(len(d)),
        "pair": pair["id"],
        "plane": "isocentre",
        "edge_on_truth": bool(pair["edge_on"]),
    }


def transform_record(
    result: RegistrationResult,
    fixed: Image,
    moving: Image,
    *,
    fixed_frame: int,
    moving_frame: int,
    tre: dict | None = None,
) -> dict:
    """The ``transform.json`` content for a registration result."""
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
        },
        "quality": result.quality,
        "tre": tre,
        "fixed": {
            "file": fixed.source_path,
            "frame": fixed_frame,
            "sop_instance_uid": fixed.uids.get("sop_instance"),
        },
        "moving": {
            "file": moving.source_path,
            "frame": moving_frame,
            "sop_instance_uid": moving.uids.get("sop_instance"),
        },
        "options": result.options,
    }


def write_transform_json(path: str | os.PathLike, record: dict) -> None:
    """Write through a temporary name and rename when complete."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=1, default=float)
    os.replace(tmp, path)


def read_transform_json(path: str | os.PathLike) -> Transform:
    """Read ``transform.json``; the schema must be ``hybridfuse.transform/1``."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON transform ({exc})") from exc
    if data.get("schema") != TRANSFORM_SCHEMA:
        raise InputError(f"{path}: schema {data.get('schema')!r}, expected {TRANSFORM_SCHEMA!r}")
    try:
        return Transform(
            np.asarray(data["moving_to_fixed_pixel"], float), data.get("model", "projective")
        )
    except Exception as exc:
        raise InputError(f"{path}: moving_to_fixed_pixel is not a usable 3x3 matrix") from exc

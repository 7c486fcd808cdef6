"""``hybridfuse info``: what the pipeline understood of each file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from hybridfuse._safeio import one_line, terminal_text

from .errors import EXIT_BAD_INPUT, EXIT_OK
from .options import (
    SPACING_NAMES,
    deprecated_spacing,
    given_values,
    json_option,
    merge_deprecated,
    spacing_options,
)


def describe_file(
    path: Path, us_region: int | None, spacing_mm=(None, None), decode: bool = False
) -> dict:
    """Everything ``info`` reports for one file, as a JSON-ready dict.

    ``spacing_mm`` is (fixed, moving): the spacing given by hand for an X-ray file (at the
    detector) and for any other image (see :mod:`fusion.pair`). DICOM pixels are not
    decoded unless ``decode``: the header says what ``info`` reports, and the declaration
    is still checked against the decode limit.
    """
    from hybridfuse.fusion import is_dicom_file, read_header, read_image
    from hybridfuse.fusion.pair import with_given_spacing

    out: dict = {"file": str(path)}
    if is_dicom_file(path) or path.suffix.lower() == ".dcm":
        header = read_header(path)
        out["dicom"] = header
        if header["is_sr"]:
            out["kind"] = "structured report"
            out["dose_report"] = _describe_sr(path)
            return out
    image = read_image(path, us_region=us_region, decode=decode)
    xray = image.modality.is_xray
    image = with_given_spacing(image, spacing_mm[0 if xray else 1], fixed=xray)
    out["kind"] = "image"
    out["image"] = image.describe()
    if image.modality.is_xray and "dicom" in out:
        from hybridfuse.dose import read_image_dose_tags

        out["dose_tags"] = read_image_dose_tags(path).to_dict()
    return out


def _describe_sr(path: Path) -> dict:
    from hybridfuse.dose import summarize_dose_report

    return summarize_dose_report(path)


def _fmt_mm(pair) -> str:
    return " x ".join(f"{v:.4g}" for v in pair) + " mm (row x col)"


def _imaged_area_text(area: dict, decoded: bool) -> str:
    """One line: the shape found inside the ultrasound region, with a sector's geometry."""
    x0, y0, x1, y1 = area["bounds_xy"]
    text = f"{area['shape']}, x {x0}-{x1}, y {y0}-{y1}"
    if "apex_xy" in area:
        r0, r1 = area["radius_px"]
        a0, a1 = area["angles_deg"]
        text += (
            f", apex ({area['apex_xy'][0]:g}, {area['apex_xy'][1]:g}) px, radius {r0:g}-{r1:g} px"
        )
        if "radius_mm" in area:
            text += f" ({area['radius_mm'][0]:g}-{area['radius_mm'][1]:g} mm)"
        text += f", angles {a0:g} to {a1:g} deg ({area['opening_deg']:g} deg open)"
    if not decoded:
        text += "; the region's bounds only (--decode finds the tissue in the pixels)"
    return text


def render_text(d: dict) -> str:
    """Human-readable block for one file, control characters from the file escaped."""
    lines = [d["file"]]

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<15}{text}")

    hdr = d.get("dicom")
    if hdr:
        row("SOP class", f"{hdr['sop_class_name']} [{hdr['transfer_syntax']}]")
        device = " ".join(v for v in (hdr["manufacturer"], hdr["model"]) if v)
        if device:
            row("Device", device)
    if d["kind"] == "structured report":
        rep = d["dose_report"]
        row("Content", rep["summary"])
        for key, value in rep.get("totals", {}).items():
            row("", f"{key} = {value}")
        for note in rep.get("notes", []):
            row("Note", note)
        return _safe_lines(lines)
    im = d["image"]
    shape = f"{im['frames']} x {im['rows']}x{im['cols']}"
    colour = "RGB" if im["color"] else "grey"
    stored = im["photometric_interpretation"]
    inv = "stored MONOCHROME1, shown inverted" if im["inverted_from_monochrome1"] else stored
    decoded = "" if im.get("pixels_decoded", True) else ", header only (--decode checks them)"
    row("Pixels", f"{shape} {colour} {im['dtype']} ({inv}){decoded}")
    row("Modality", im["modality"])
    if im["pixel_spacing_mm_row_col"]:
        row(
            "Pixel spacing",
            f"{_fmt_mm(im['pixel_spacing_mm_row_col'])} "
            f"[{im['spacing_plane']}], from {im['spacing_source']}",
        )
    else:
        row("Pixel spacing", f"unknown: {im['spacing_source']}")
    xr = im["xray_geometry"]
    if xr:
        parts = []
        if xr["sid_mm"]:
            parts.append(f"SID {xr['sid_mm']:g} mm")
        if xr["sod_mm"]:
            parts.append(f"SOD {xr['sod_mm']:g} mm")
        if xr["magnification_used"]:
            parts.append(f"magnification {xr['magnification_used']:.4g}")
        if xr["isocenter_spacing_mm_row_col"]:
            parts.append(f"isocentre spacing {_fmt_mm(xr['isocenter_spacing_mm_row_col'])}")
        if xr["primary_angle_deg"] is not None:
            parts.append(f"angles {xr['primary_angle_deg']:g}/{xr['secondary_angle_deg']}")
        row("C-arm", ", ".join(parts) or "no geometry attributes")
    for i, reg in enumerate(im["ultrasound_regions"]):
        used = " (used)" if i == im["ultrasound_region_used"] else ""
        cal = (
            f"{reg['delta_x_mm']:.4g} x {reg['delta_y_mm']:.4g} mm/px (x, y)"
            if reg["delta_x_mm"] and reg["delta_y_mm"]
            else "not spatially calibrated"
        )
        row(f"US region {i}", f"x {reg['x0']}-{reg['x1']}, y {reg['y0']}-{reg['y1']}, {cal}{used}")
    area = im.get("imaged_area")
    if area is not None:
        row("Imaged area", _imaged_area_text(area, im.get("pixels_decoded", True)))
    mask = im["mask"]
    if mask["fraction_of_pixels"] is not None:
        row("Mask", f"{100 * mask['fraction_of_pixels']:.1f}% of pixels, from {mask['source']}")
    else:
        row("Mask", mask["source"])
    ft = im["frame_times_s"]
    when = im["acquisition_datetime"] or "unknown start"
    if ft["n"] > 1:
        row("Acquired", f"{when}; frames at {ft['first']:g}-{ft['last']:g} s, {ft['source']}")
    else:
        row("Acquired", f"{when} ({ft['source']})")
    tags = d.get("dose_tags")
    if tags is not None:
        known = {
            k: v
            for k, v in tags.items()
            if v is not None and k not in ("sources", "number_of_frames", "dap_gy_cm2")
        }
        row(
            "Dose tags",
            ", ".join(
                f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in known.items()
            )
            or "none recorded",
        )
    for note in im["notes"]:
        row("Note", note)
    return _safe_lines(lines)


def _safe_lines(lines: list[str]) -> str:
    # Every string a file supplies (Manufacturer, UIDs, notes quoting tags) can carry
    # ESC/BEL/CR that would drive the terminal; they are shown as escapes instead.
    return "\n".join(terminal_text(line) for line in lines)


def _safe_json(results: list[dict]) -> str:
    # json escapes C0 and (ensure_ascii) C1 controls itself; DEL is the one it leaves raw.
    return json.dumps(results, indent=1, default=str).replace("\x7f", "\\u007f")


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--us-region",
    type=int,
    default=None,
    help="Ultrasound region index to calibrate from (default: first calibrated).",
)
@spacing_options
@deprecated_spacing("--spacing-mm", "deprecated_spacing")
@click.option(
    "--decode",
    is_flag=True,
    help="Also decode every frame, to check the pixel data (default: header only).",
)
@json_option
def info(
    files: tuple[Path, ...],
    us_region: int | None,
    deprecated_spacing,
    decode: bool,
    as_json: bool,
    **options,
) -> None:
    """Print what the pipeline understood of each FILE (DICOM or plain image).

    DICOM pixels are not decoded unless --decode is given. A file that cannot be read
    gets one error line; the others are still reported. Exit code 2 when any file could
    not be read.
    """
    from hybridfuse._options import build
    from hybridfuse.fusion.pair import PairOptions

    from .errors import exit_code_for

    given = merge_deprecated(
        given_values(options, PairOptions), "--spacing-mm", deprecated_spacing, SPACING_NAMES
    )
    pair = build(PairOptions, given, source="command line")  # the flags' limits, alias too
    spacing_mm = (pair.fixed_spacing_mm, pair.moving_spacing_mm)
    results = []
    worst = EXIT_OK
    for path in files:
        try:
            desc = describe_file(path, us_region, spacing_mm, decode=decode)
        except Exception as exc:
            code = exit_code_for(exc)
            worst = max(worst, code if code else EXIT_BAD_INPUT)
            message = one_line(exc)
            if not message.startswith(str(path)):
                message = f"{path}: {message}"
            results.append({"file": str(path), "error": message})
            if not as_json:
                click.echo(f"hybridfuse: error: {terminal_text(message)}", err=True)
            continue
        results.append(desc)
        if not as_json:
            click.echo(render_text(desc))
    if as_json:
        sys.stdout.write(_safe_json(results) + "\n")
    sys.exit(worst)

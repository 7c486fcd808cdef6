"""The scanner's display of a decoded DICOM frame: 0-255 pixels for any encoding.

Each encoding gets the display steps of DICOM PS3.3 C.11 (the Grayscale and Colour
pipelines), so that what the pipeline shows and registers looks like the vendor's own
screen rather than raw stored values clipped to 0-255:

=======================  ==============================================================
encoding                 display
=======================  ==============================================================
PALETTE COLOR            indices through the Red/Green/Blue LUTs (8- or 16-bit entries;
                         16-bit entries keep their high byte)
RGB, YBR_* (decoded)     the RGB samples (YBR is converted to RGB by pydicom's decoder);
                         more than 8 bits stored keep the top 8
MONOCHROME1/2            Modality LUT or Rescale Slope/Intercept, then the VOI LUT or the
                         first window (centre/width, LINEAR/LINEAR_EXACT/SIGMOID); with
                         neither, 8-bit data as stored and wider data stretched over the
                         file's own range; MONOCHROME1 is inverted last
=======================  ==============================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridfuse.dicom import as_list, parse_number

from .errors import CorruptFileError

__all__ = ["DisplayPlan", "plan_display", "to_display", "stored_range"]


@dataclass(frozen=True)
class DisplayPlan:
    """How one file's decoded frames become 0-255 display pixels.

    Parameters
    ----------
    kind : {"palette", "rgb", "grey"}
    shift : int
        Right shift of palette entries or RGB samples to 8 bits.
    window : tuple of float or None
        (centre, width) of the VOI window applied to modality values (grey only).
    window_function : str
        VOI LUT Function (LINEAR, LINEAR_EXACT or SIGMOID).
    voi_lut : bool
        True when a VOI LUT Sequence is applied (it wins over a window).
    value_range : tuple of float or None
        (low, high) modality values stretched to 0-255 when there is no VOI.
    invert : bool
        MONOCHROME1: higher stored values are darker.
    description : str
        One line for ``info`` and the notes.
    """

    kind: str
    shift: int = 0
    window: tuple[float, float] | None = None
    window_function: str = "LINEAR"
    voi_lut: bool = False
    value_range: tuple[float, float] | None = None
    invert: bool = False
    description: str = ""


def _lut_bits(ds) -> int:
    desc = as_list(ds.get("RedPaletteColorLookupTableDescriptor", []) or [])
    bits = parse_number(desc[2]) if len(desc) == 3 else None
    return int(bits) if bits in (8, 16) else 16


def _lut_top(ds) -> int:
    """Largest entry of the palette's Red/Green/Blue LUTs (0 when they cannot be read)."""
    from pydicom.pixels import apply_color_lut

    desc = as_list(ds.get("RedPaletteColorLookupTableDescriptor", []) or [])
    entries = int(parse_number(desc[0]) or 65536) if len(desc) == 3 else 65536
    first = int(parse_number(desc[1]) or 0) if len(desc) == 3 else 0
    try:
        every = np.arange(first, first + entries, dtype=np.int64).astype(np.uint16)
        return int(np.asarray(apply_color_lut(every, ds)).max())
    except Exception:  # a malformed LUT is refused, with its reason, when frames are shown
        return 0


_PALETTE_TAGS = {"Red": ("1101", "1201"), "Green": ("1102", "1202"), "Blue": ("1103", "1203")}


def _palette_problem(ds) -> str | None:
    """What is wrong with the Red/Green/Blue palette LUTs, in the standard's words, or None.

    PS3.3 C.7.6.3.1.5: the descriptor holds (entries, first mapped value, bits per entry),
    0 entries meaning 65536, 8 or 16 bits; the data holds one 16-bit word per entry
    (8-bit entries may also be packed one per byte).
    """
    for colour, (desc_tag, data_tag) in _PALETTE_TAGS.items():
        name = f"{colour} Palette Color Lookup Table"
        desc = as_list(ds.get(f"{colour}PaletteColorLookupTableDescriptor", []) or [])
        numbers = [parse_number(v) for v in desc]
        if len(desc) != 3 or any(n is None for n in numbers):
            return f"{name} Descriptor (0028,{desc_tag}) must hold 3 numbers, not {len(desc)}"
        entries, _, bits = (int(n) for n in numbers)
        entries = entries or 65536
        if bits not in (8, 16):
            return f"{name} Descriptor (0028,{desc_tag}) declares {bits} bits per entry (8 or 16)"
        if f"Segmented{colour}PaletteColorLookupTableData" in ds:
            continue
        size = len(ds.get(f"{colour}PaletteColorLookupTableData") or b"")
        if size == 0:
            return f"{name} Data (0028,{data_tag}) is missing or empty"
        allowed = {2 * entries} | ({entries, entries + 1} if bits == 8 else set())
        if size not in allowed:
            return (
                f"{name} Data (0028,{data_tag}) holds {size} bytes, the descriptor's "
                f"{entries} entries of {bits} bits need {2 * entries}"
            )
    return None


def _first(value) -> float | None:
    values = as_list(value) if value is not None else []
    return parse_number(values[0]) if values else None


def _window(ds) -> tuple[float, float] | None:
    centre, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if centre is None or width is None or not np.isfinite(centre) or not width >= 1:
        return None
    return float(centre), float(width)


def _has_modality_lut(ds) -> bool:
    slope = parse_number(ds.get("RescaleSlope"))
    intercept = parse_number(ds.get("RescaleIntercept"))
    return (
        "ModalityLUTSequence" in ds
        or (slope is not None and slope not in (0, 1))
        or bool(intercept)
    )


def plan_display(ds, photometric: str, value_range=None) -> DisplayPlan:
    """The display steps for a file, from its header (and, for grey with no VOI, its range).

    ``value_range`` is the (low, high) of the file's modality values; it is needed only
    for greyscale wider than 8 bits without a VOI LUT or window (see :func:`stored_range`).
    """
    bits = int(parse_number(ds.get("BitsStored")) or parse_number(ds.get("BitsAllocated")) or 8)
    if photometric == "PALETTE COLOR":
        lut, top = _lut_bits(ds), _lut_top(ds)
        # Entries declared 16-bit but holding 0-255 (some vendors) are shown as they are.
        shift = 8 if lut == 16 and top > 255 else 0
        return DisplayPlan(
            "palette", shift=shift, description=f"palette colour, {lut}-bit LUT (max {top})"
        )
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        shift = max(bits - 8, 0)
        return DisplayPlan("rgb", shift=shift, description=f"{photometric} as RGB, {bits} bits")
    invert = photometric == "MONOCHROME1"
    steps = ["Modality LUT"] if _has_modality_lut(ds) else []
    if "VOILUTSequence" in ds:
        steps.append("VOI LUT")
        plan = DisplayPlan("grey", voi_lut=True, invert=invert)
    elif (window := _window(ds)) is not None:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        function = function if function in ("LINEAR", "LINEAR_EXACT", "SIGMOID") else "LINEAR"
        steps.append(f"window {window[0]:g}/{window[1]:g} ({function})")
        plan = DisplayPlan("grey", window=window, window_function=function, invert=invert)
    elif bits <= 8 and not steps and str(ds.get("PixelRepresentation", 0)).strip() != "1":
        steps.append("8-bit values as stored")
        plan = DisplayPlan("grey", value_range=(0.0, 255.0), invert=invert)
    else:
        lo, hi = value_range if value_range is not None else (0.0, float((1 << bits) - 1))
        steps.append(f"stretched over the file's range {lo:g}..{hi:g}")
        plan = DisplayPlan("grey", value_range=(float(lo), float(hi)), invert=invert)
    if invert:
        steps.append("inverted (MONOCHROME1)")
    return DisplayPlan(**{**plan.__dict__, "description": "greyscale: " + ", ".join(steps)})


def _modality_values(frame: np.ndarray, ds) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    with np.errstate(over="ignore", invalid="ignore"):
        values = np.asarray(apply_modality_lut(frame, ds), dtype=np.float64)
    if not np.isfinite(values).all():
        raise CorruptFileError(
            "Rescale Slope/Intercept (0028,1053/1052) or the Modality LUT give values "
            "beyond any number (overflow)"
        )
    return values


def stored_range(frames, ds) -> tuple[float, float]:
    """(low, high) modality values over ``frames`` (an iterable of decoded frames)."""
    lo, hi = np.inf, -np.inf
    for frame in frames:
        values = _modality_values(frame, ds)
        lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
    return (lo, hi) if np.isfinite(lo) else (0.0, 255.0)


def _apply_window(values: np.ndarray, plan: DisplayPlan) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing into 0-255."""
    centre, width = plan.window
    if plan.window_function == "SIGMOID":
        return 255.0 / (1.0 + np.exp(-4.0 * (values - centre) / width))
    if plan.window_function == "LINEAR_EXACT":
        return np.clip((values - (centre - width / 2)) / width * 255.0, 0, 255)
    if width <= 1:  # PS3.3 C.11.2.1.2.1: a LINEAR width of 1 is a threshold at the centre
        return np.where(values <= centre - 0.5, 0.0, 255.0)
    # LINEAR: centre - 0.5 and width - 1, as the standard defines it.
    return np.clip(((values - (centre - 0.5)) / (width - 1) + 0.5) * 255.0, 0, 255)


def _voi_lut(frame: np.ndarray, ds) -> np.ndarray:
    from pydicom.pixels import apply_voi_lut

    item = ds.VOILUTSequence[0]
    desc = as_list(item.get("LUTDescriptor", []) or [])
    bits = int(parse_number(desc[2]) or 16) if len(desc) == 3 else 16
    values = np.rint(_modality_values(frame, ds)).astype(np.int64)
    out = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=True), dtype=np.float64)
    return out * (255.0 / float((1 << min(max(bits, 1), 16)) - 1))


def to_display(frame: np.ndarray, ds, plan: DisplayPlan) -> np.ndarray:
    """One decoded frame (as pydicom returns it) as uint8 display pixels.

    Greyscale gives (rows, cols), colour (rows, cols, 3).
    """
    if plan.kind == "palette":
        from pydicom.pixels import apply_color_lut

        if (problem := _palette_problem(ds)) is not None:
            raise CorruptFileError(f"palette colour lookup table unusable: {problem}")
        try:
            rgb = np.asarray(apply_color_lut(frame, ds))
        except Exception as exc:  # any malformed LUT is this file's fault
            raise CorruptFileError(f"palette colour lookup table unusable ({exc})") from exc
        return (rgb >> plan.shift).astype(np.uint8) if plan.shift > 0 else rgb.astype(np.uint8)
    if plan.kind == "rgb":
        if frame.dtype == np.uint8 and plan.shift == 0:
            return frame
        return np.clip(frame.astype(np.int64) >> plan.shift, 0, 255).astype(np.uint8)
    if plan.voi_lut:
        out = _voi_lut(frame, ds)
    else:
        values = _modality_values(frame, ds)
        if plan.window is not None:
            out = _apply_window(values, plan)
        else:
            lo, hi = plan.value_range
            out = (values - lo) * (255.0 / max(hi - lo, 1e-12))
    out = np.clip(np.rint(out), 0, 255)
    if plan.invert:
        out = 255.0 - out
    return out.astype(np.uint8)

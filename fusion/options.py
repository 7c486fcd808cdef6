"""Options of the fused outputs: how the two layers are shown and what is written."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from hybridfuse._options import OptionSpec, build, check, option, specs

__all__ = ["FusionOptions", "build_options", "option_specs"]


@dataclass(frozen=True)
class FusionOptions:
    """How ``run`` and ``batch`` draw the fused frames and which files they write."""

    mode: str = option(
        "alpha",
        "How the ultrasound is drawn over the fluoroscopy: blended (alpha), in colour, as "
        "a checkerboard, as edges only, or side by side.",
        choices=("alpha", "color", "checkerboard", "edges", "side-by-side"),
    )
    opacity: float = option(
        0.5,
        "Weight of the ultrasound where it covers the fluoroscopy (0 hidden, 1 opaque).",
        minimum=0.0,
        maximum=1.0,
    )
    colormap: str = option(
        "hot", "Colour map of the ultrasound in the colour mode (a matplotlib name)."
    )
    interpolation: str = option(
        "linear",
        "How the ultrasound is resampled onto the fluoroscopy grid.",
        choices=("nearest", "linear", "cubic"),
    )
    video: str = option(
        "mp4",
        "Video of the fused frames ('none': frames and viewer only).",
        choices=("mp4", "gif", "none"),
    )
    dicom: bool = option(
        True, "Also write the fused frames as a DICOM secondary capture (fused_sc.dcm)."
    )
    include_phi: bool = option(
        False,
        "Keep patient name and ID in the DICOM outputs and record the inputs' full paths "
        "(otherwise de-identified, inputs by file name and sha256).",
    )
    uid_map: bool = option(
        False,
        "Also write uid_map.csv: each source UID and the new UID that replaced it in the "
        "DICOM outputs (it re-identifies them; keep it apart). Ignored with --include-phi.",
    )


def option_specs(cls) -> list[OptionSpec]:
    """:func:`hybridfuse._options.specs` of ``cls``, with registration choices filled in.

    Where ``RegistrationOptions`` declares no choices or limits for its model, metric,
    preprocessing or scale tolerance, they are taken from the registration enums, so that
    the command line and TOML refuse what ``register()`` would refuse later; a spec that
    declares them is kept as it is.
    """
    fallback = _registration_fallback() if cls.__name__ == "RegistrationOptions" else {}
    out = []
    for spec in specs(cls):
        extra = fallback.get(spec.name, {})
        missing = {k: v for k, v in extra.items() if getattr(spec, k) is None}
        out.append(dataclasses.replace(spec, **missing) if missing else spec)
    return out


def build_options(cls, values: Mapping, *, base=None, source: str = "options"):
    """:func:`hybridfuse._options.build`, also checking what :func:`option_specs` adds."""
    by_name = {s.name: s for s in option_specs(cls)}
    values = dict(values)
    if "scale_tolerance" in by_name and values.get("scale_tolerance") == 0:
        values["scale_tolerance"] = None  # its meaning since the flag exists: 0 turns it off
    for name, value in values.items():
        if name in by_name:
            check(by_name[name], value, source)
    return build(cls, values, base=base, source=source)


def _registration_fallback() -> dict:
    from hybridfuse.registration import Metric, TransformModel
    from hybridfuse.registration.preprocess import Preprocess

    models = tuple(m.value for m in TransformModel)
    return {
        "model": {"choices": models},
        "coarse_model": {"choices": models},
        "metric": {"choices": tuple(m.value for m in Metric)},
        "preprocess": {"choices": tuple(m.value for m in Preprocess)},
        "scale_tolerance": {"minimum": 0.0, "maximum": 1.0},
    }

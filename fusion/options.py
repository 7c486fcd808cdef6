"""Options of the fused outputs: how the two layers are shown and what is written."""

from __future__ import annotations

from dataclasses import dataclass

from hybridfuse._options import option

__all__ = ["FusionOptions"]


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
        "Keep patient name and ID in the DICOM outputs, record the inputs' file names and "
        "full paths and UIDs, and name a run's case by its folder (otherwise de-identified, "
        "inputs by role and sha256).",
    )
    uid_map: bool = option(
        False,
        "Also write uid_map.csv: each source UID and the new UID that replaced it in the "
        "DICOM outputs (it re-identifies them; keep it apart). Ignored with --include-phi.",
    )

    def contradictions(self) -> list[str]:
        """Values each option allows alone but the run cannot use (one sentence each)."""
        if self.colormap == "hot":  # the default: no need to load matplotlib
            return []
        import matplotlib

        if self.colormap not in matplotlib.colormaps:
            return [f"colormap = {self.colormap!r} is not a matplotlib colour map (e.g. hot)"]
        return []

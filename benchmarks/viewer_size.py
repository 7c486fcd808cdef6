"""Size of ``viewer.html`` against the fused PNGs for a 100-frame 512×512 run.

``python benchmarks/viewer_size.py [N] [--distinct-us] [--distinct-fluoro]`` fuses the
sample case's lateral run repeated to N frames (default 100; frame times 7.5 frames/s;
ultrasound frames paired by index: the 12-frame clip, whose last frame then stays, or
with ``--distinct-us`` a clip of N distinct frames, the sample's shifted by a pixel every
12) and prints the viewer's size, its parts and the PNGs' total. The sample's run has 4
fluoroscopy frames, so repeated frames are identical (the viewer embeds each once);
``--distinct-fluoro`` shifts each repeat by one more pixel, so that no frame repeats (as
in a real run): with both flags, the worst case. No timing: sizes only.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from hybridfuse.fusion import read_image
from hybridfuse.fusion.fuse import fuse_images
from hybridfuse.registration import Transform

SAMPLE = Path(__file__).resolve().parents[1] / "testdata" / "sample" / "lumbar-mbb-seed1"


def main(n: int = 100, distinct_us: bool = False, distinct_fluoro: bool = False) -> dict:
    """Fuse ``n`` frames into a temporary folder; return the sizes (bytes)."""
    truth = json.loads((SAMPLE / "truth.json").read_text())
    pair = next(p for p in truth["pairs"] if not p["edge_on"])
    fixed = read_image(SAMPLE / pair["fluoro_file"])
    moving = read_image(SAMPLE / "us_clip.dcm")
    arr = np.concatenate([fixed.array] * int(np.ceil(n / fixed.n_frames)))[:n]
    if distinct_fluoro:  # each repeat shifted by one more pixel: distinct, as compressible
        arr = np.stack([np.roll(a, k // fixed.n_frames, axis=1) for k, a in enumerate(arr)])
    fixed = dataclasses.replace(
        fixed, array=arr, frame_times_s=np.arange(n) / 7.5, acquisition_datetime=None
    )
    moving = dataclasses.replace(moving, acquisition_datetime=None)
    if distinct_us:
        m = moving.array
        clip = [np.roll(m[k % len(m)], k // len(m), axis=1) for k in range(n)]
        moving = dataclasses.replace(moving, array=np.stack(clip), frame_times_s=np.arange(n) / 7.5)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "o"
        summary = fuse_images(fixed, moving, Transform(np.asarray(pair["moving_to_fixed_pixel"])),
                              out, video="none", dicom=False)  # fmt: skip
        html = (out / "viewer.html").read_text(encoding="utf-8")
        data = html.split('id="viewer-data">', 1)[1].split("</script>", 1)[0]
        payload = json.loads(data)
        sizes = {
            "frames": n,
            "distinct_ultrasound_frames": distinct_us,
            "distinct_fluoroscopy_frames": distinct_fluoro,
            "viewer_html": len(html.encode()),
            "fluoroscopy_frames": sum(map(len, payload["frames"])),
            "fluoroscopy_frames_embedded": len(payload["frames"]),
            "ultrasound_layers": sum(map(len, payload["layers"])),
            "ultrasound_frames": sum(map(len, payload["usImages"].values()))
            + len(payload.get("usMask", "")),
            "ultrasound_frames_embedded": len(payload["usImages"]),
            "fused_pngs_total": sum(p.stat().st_size for p in out.glob("fused_*.png")),
            "viewer_note": summary["viewer"]["note"],
        }
    return sizes


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    flags = "--distinct-us" in sys.argv, "--distinct-fluoro" in sys.argv
    print(json.dumps(main(int(args[0]) if args else 100, *flags), indent=1))

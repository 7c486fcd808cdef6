"""Fusion benchmark: fuse and write a 100-frame run (PNG per frame, viewer, DICOM SC).

Run from the repository root:  python -m benchmarks.fusion [--frames 100]

The fluoroscopy run is the sample case's lateral confirmation run repeated to N frames
(a stored run of N frames at 512×512), the ultrasound its simultaneous cine; the
transform is the generator's homography. Video encoding is timed separately, as the
target (≥ 50 frames/s, 2 cores) excludes it. A SimpleITK resampling of the same frames
(affine part only: SimpleITK has no 2D homography) is timed beside ours.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from benchmarks._header import print_header
from hybridfuse.fusion import read_image
from hybridfuse.fusion.export import write_mp4
from hybridfuse.fusion.fuse import fuse_images
from hybridfuse.registration import Transform
from hybridfuse.registration.warp import warp_to_fixed
from hybridfuse.testdata import sample_case
from hybridfuse.testdata.phantom import load_truth


def main(n_frames: int) -> None:
    case = sample_case()
    truth = load_truth(case)
    pair = next(p for p in truth["pairs"] if not p["edge_on"])
    fixed = read_image(case / pair["fluoro_file"])
    moving = read_image(case / "us_clip.dcm")
    reps = int(np.ceil(n_frames / fixed.n_frames))
    arr = np.concatenate([fixed.array] * reps)[:n_frames]
    step = 1.0 / 7.5
    long_fixed = dataclasses.replace(
        fixed, array=arr, frame_times_s=np.arange(n_frames) * step, acquisition_datetime=None
    )
    long_moving = dataclasses.replace(moving, acquisition_datetime=None)
    tr = Transform(np.asarray(pair["moving_to_fixed_pixel"]))
    with tempfile.TemporaryDirectory() as tmp:
        fuse_images(
            long_fixed, long_moving, tr, Path(tmp) / "warm", video="none", frames=[0, 1]
        )  # compile the kernels once
        t0 = time.perf_counter()
        summary = fuse_images(long_fixed, long_moving, tr, Path(tmp) / "run", video="none")
        total = time.perf_counter() - t0
        frames = [np.zeros((512, 512, 3), np.uint8)] * n_frames
        t0 = time.perf_counter()
        write_mp4(Path(tmp) / "v.mp4", frames, 7.5)
        video = time.perf_counter() - t0
    print(
        f"{n_frames} frames 512x512: fuse + write PNGs, viewer.html, fused_sc.dcm: "
        f"{total:.2f} s = {n_frames / total:.1f} frames/s (target >= 50)"
    )
    print(
        f"  of which the per-frame loop: {summary['fuse_and_write_s']:.2f} s "
        f"({summary['frames_per_second']:.1f} frames/s)"
    )
    print(f"  MP4 encoding of {n_frames} frames (not in the target): {video:.2f} s")
    m = moving.gray(0)
    t0 = time.perf_counter()
    for _ in range(50):
        warp_to_fixed(m, tr.matrix, fixed.shape, moving_mask=moving.mask)
    ours = (time.perf_counter() - t0) / 50
    aff = tr.matrix.copy()
    aff[2, :2] = 0
    inv = np.linalg.inv(aff)
    tx = sitk.AffineTransform(2)
    tx.SetMatrix(inv[:2, :2].ravel().tolist())
    tx.SetTranslation(inv[:2, 2].tolist())
    img = sitk.GetImageFromArray(m)
    ref = sitk.Image(512, 512, sitk.sitkFloat32)
    t0 = time.perf_counter()
    for _ in range(50):
        sitk.Resample(img, ref, tx, sitk.sitkLinear, 0.0)
    peer = (time.perf_counter() - t0) / 50
    print(
        f"resample one US frame into 512x512, bilinear: ours (homography) {1e3 * ours:.2f} ms,"
        f" SimpleITK (affine) {1e3 * peer:.2f} ms, ratio ours/SimpleITK {ours / peer:.2f}"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100)
    args = ap.parse_args()
    print_header()
    main(args.frames)

"""Peak memory and time of every command on the largest inputs docs/hardening.md documents.

Run from the repository root:  python -m benchmarks.memory [--keep DIR]

Each command runs in its own process; its peak resident memory comes from ``wait4`` (the
child's own ``ru_maxrss``, not the benchmark's). Inputs are built from one synthetic case
(seed 3) in a temporary folder: nothing is downloaded, nothing is committed.

- a 400-frame 512x512 fluoroscopy run fused with a 12-frame ultrasound clip;
- 10,000 landmark pairs fitted landmarks-only, and 301 pairs with one outlier;
- a 5,000-event RDSR reported with ``--us-interval``;
- a deflated XA declaring 16384 x 16384 x 8 frames (2 GiB decoded, 2 MB on disk) and one
  declaring 2^31 - 1 frames, given to ``info`` (both must be refused cheaply);
- ``batch`` over manifests of 200 and 800 rows whose cases fail at once (the summary's cost).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

from benchmarks._header import print_header

_WRAPPER = (
    "import os, subprocess, sys, json, time;"
    "t=time.perf_counter();"
    "import threading;"
    "p=subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE);"
    "tm=threading.Timer(float(sys.argv[1]), p.kill); tm.start();"
    "err=p.stderr.read();"
    "_, status, ru = os.wait4(p.pid, 0); tm.cancel();"
    "print(json.dumps({'rc': os.waitstatus_to_exitcode(status),"
    " 'wall_s': time.perf_counter()-t, 'peak_rss_mib': ru.ru_maxrss/1024,"
    " 'stderr': err.decode(errors='replace')[-300:]}))"
)


def run(cmd: list[str], cwd: Path, timeout_s: float) -> dict:
    """Run ``cmd``; its exit code, wall time and the child's own peak RSS in MiB.

    A command still running after ``timeout_s`` is killed (exit -9 in the table).
    """
    res = subprocess.run(
        [sys.executable, "-c", _WRAPPER, str(timeout_s), *cmd],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(res.stdout)


def big_fluoro(src: Path, dst: Path, frames: int = 400) -> None:
    """The synthetic run's frames repeated to ``frames`` at 15 frames/s."""
    import pydicom

    ds = pydicom.dcmread(src)
    n = int(ds.NumberOfFrames)
    one = len(ds.PixelData) // n
    reps = -(-frames // n)
    ds.PixelData = (ds.PixelData * reps)[: one * frames]
    ds.NumberOfFrames = frames
    ds.FrameTimeVector = [0.0] + [66.7] * (frames - 1)
    ds.save_as(dst)


def big_rdsr(src: Path, dst: Path, events: int = 5000) -> None:
    """The synthetic RDSR with its irradiation events repeated to ``events``, 0.4 s apart."""
    import datetime as dt

    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(src)
    items = list(ds.ContentSequence)
    ev = [
        i
        for i in items
        if i.ValueType == "CONTAINER"
        and i.ConceptNameCodeSequence[0].CodeMeaning == "Irradiation Event X-Ray Data"
    ]
    rest = [i for i in items if i not in ev]
    t0 = None
    new = []
    for k in range(events):
        item = copy.deepcopy(ev[k % len(ev)])
        for child in item.ContentSequence:
            name = child.ConceptNameCodeSequence[0].CodeMeaning
            if child.ValueType == "DATETIME" and name == "DateTime Started":
                t0 = t0 or dt.datetime.strptime(child.DateTime[:14], "%Y%m%d%H%M%S")
                child.DateTime = (t0 + dt.timedelta(seconds=0.4 * k)).strftime("%Y%m%d%H%M%S.%f")
            elif child.ValueType == "UIDREF":
                child.UID = generate_uid()
        new.append(item)
    ds.ContentSequence = rest + new
    ds.save_as(dst)


def deflated_bomb(dst: Path, rows: int = 16384, cols: int = 16384, frames: int = 8) -> None:
    """A deflated XA whose 2 MB hold a declared ``rows x cols x frames`` of zeros."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.12.1"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "XA"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.ImagerPixelSpacing = [0.3, 0.3]
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    nbytes = rows * cols * frames
    header = b"\xe0\x7f\x10\x00OB\x00\x00" + nbytes.to_bytes(4, "little")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    fm = DicomBytesIO()
    write_file_meta_info(fm, meta)
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    zero = bytes(1 << 24)
    with open(dst, "wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM" + fm.getvalue())
        fh.write(z.compress(body.getvalue() + header))
        for _ in range(nbytes // len(zero)):
            fh.write(z.compress(zero))
        fh.write(z.flush())


def frames_bomb(src: Path, dst: Path) -> None:
    """The synthetic run declaring 2^31 - 1 frames."""
    import pydicom

    ds = pydicom.dcmread(src)
    ds.NumberOfFrames = 2**31 - 1
    ds.save_as(dst)


def landmarks(transform_json: Path, dst: Path, n: int, outliers: int, seed: int = 0) -> None:
    """``n`` pairs consistent with the registered transform (0.5 px noise), a few outliers."""
    h = np.asarray(json.loads(transform_json.read_text())["moving_to_fixed_pixel"])
    rng = np.random.default_rng(seed)
    mov = rng.uniform([120, 80], [520, 400], size=(n, 2))
    ph = np.c_[mov, np.ones(n)] @ h.T
    fix = ph[:, :2] / ph[:, 2:] + rng.normal(0, 0.5, size=(n, 2))
    fix[:outliers] += 60.0
    with open(dst, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "moving_x", "moving_y", "fixed_x", "fixed_y"])
        for i in range(n):
            w.writerow([f"p{i}", *np.round(mov[i], 3), *np.round(fix[i], 3)])


def batch_manifest(dst: Path, n: int) -> None:
    """``n`` rows whose fluoroscopy file does not exist: each case fails at once."""
    with open(dst, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "fluoro", "ultrasound", "rdsr", "landmarks"])
        for i in range(n):
            w.writerow([f"c{i:04d}", f"missing{i}.dcm", "B/us_clip.dcm", "", ""])


def main(keep: Path | None, src: Path | None, timeout_s: float) -> None:
    hf = [sys.executable, "-c", "from hybridfuse.cli.main import main; main()"]
    if src is not None:  # another checkout's code, e.g. the version before a change
        os.environ["PYTHONPATH"] = str(src.resolve())
    with tempfile.TemporaryDirectory() as tmpname:
        w = keep or Path(tmpname)
        w.mkdir(parents=True, exist_ok=True)
        subprocess.run([*hf, "-q", "synth", "--out", str(w / "B"), "--seed", "3"], check=True)
        b = w / "B"
        run02, us = b / "fluoro_run02_confirm_lateral.dcm", b / "us_clip.dcm"
        lm = b / "landmarks" / "run02_confirm_lateral_f00_us06.csv"
        subprocess.run(
            [*hf, "-q", "register", "--fixed", str(run02), "--moving", str(us), "--landmarks",
             str(lm), "--metric", "none", "--moving-frame", "6", "--out", str(w / "T")],
            check=True,
        )  # fmt: skip
        tj = w / "T" / "transform.json"
        big_fluoro(run02, w / "fluoro400.dcm")
        big_rdsr(b / "rdsr.dcm", w / "rdsr5000.dcm")
        deflated_bomb(w / "bomb_deflated.dcm")
        frames_bomb(run02, w / "bomb_frames.dcm")
        landmarks(tj, w / "lm10000.csv", 10_000, 0)
        landmarks(tj, w / "lm301.csv", 301, 1)
        for n in (200, 800):
            batch_manifest(w / f"m{n}.csv", n)
        reg = ["register", "--fixed", str(run02), "--moving", str(us), "--metric", "none",
               "--moving-frame", "6"]  # fmt: skip
        cases = {
            "fuse 400-frame 512² run": [
                "fuse", "--fixed", "fluoro400.dcm", "--moving", str(us), "--transform",
                str(tj), "--out", "F400",
            ],
            "register, 10,000 landmark pairs": [*reg, "--landmarks", "lm10000.csv", "--out", "L1"],
            "register, 301 pairs + 1 outlier": [*reg, "--landmarks", "lm301.csv", "--out", "L2"],
            "dose report, 5,000 events, --us-interval": [
                "dose", "report", "--rdsr", "rdsr5000.dcm", "--us-interval", "100,400",
                "--out", "D",
            ],
            "info, deflated 16384²×8 declared": ["info", "bomb_deflated.dcm"],
            "info, 2³¹−1 frames declared": ["info", "bomb_frames.dcm"],
            "batch, 200 failing rows": ["batch", "m200.csv", "--out", "BA200"],
            "batch, 800 failing rows": ["batch", "m800.csv", "--out", "BA800"],
        }  # fmt: skip
        print("| input | exit | wall s | peak RSS MiB |")
        print("|---|---:|---:|---:|")
        for name, args in cases.items():
            r = run([*hf, "-q", *args], cwd=w, timeout_s=timeout_s)
            print(f"| {name} | {r['rc']} | {r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} |")
            if not 0 <= r["rc"] <= 2:  # killed, or a crash
                print(f"|   stderr: {r['stderr'].strip()[-200:]!r} | | | |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="Build the inputs here and keep them.")
    ap.add_argument("--src", type=Path, help="Run the code of this checkout instead.")
    ap.add_argument("--timeout", type=float, default=300.0, help="Seconds per command.")
    args = ap.parse_args()
    print_header()
    main(args.keep, args.src, args.timeout)

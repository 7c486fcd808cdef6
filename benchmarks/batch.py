"""Batch benchmark: cases per minute with 1 and 2 local workers, and where the time goes.

Run from the repository root:  python -m benchmarks.batch [--cases 4]

Cases are synthetic procedures (generated once, not timed). Each case runs the full
pipeline with default options (landmarks + MI registration, fusion with MP4 and DICOM,
dose report with the Monte Carlo). Timings are wall-clock on this machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._header import print_header
from hybridfuse.fusion.batch import read_manifest, run_batch
from hybridfuse.fusion.pipeline import RunConfig
from hybridfuse.testdata.phantom import generate_procedure


def main(n_cases: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cases"
        procs = ["lumbar-mbb", "cervical-mbb", "lumbar-facet"]
        for i in range(n_cases):
            generate_procedure(root / f"c{i}", seed=300 + i, procedure=procs[i % 3])
        specs, problems = read_manifest(root)
        # Warm-up: compile the Numba kernels (cached on disk afterwards).
        run_batch(specs[:1], Path(tmp) / "warm", RunConfig(), workers=1)
        rates = {}
        for workers in (1, 2):
            out = Path(tmp) / f"out{workers}"
            t0 = time.perf_counter()
            rows = run_batch(specs, out, RunConfig(), workers=workers)
            wall = time.perf_counter() - t0
            ok = sum(r["status"] == "ok" for r in rows)
            if ok != n_cases:
                failed = [f"{r['case_id']}: {r['message']}" for r in rows if r["status"] != "ok"]
                raise SystemExit(f"{n_cases - ok} case(s) failed; no rate reported: {failed}")
            rates[workers] = n_cases / wall * 60
            print(
                f"{workers} worker(s): {n_cases} cases ({ok} ok) in {wall:.1f} s = "
                f"{rates[workers]:.1f} cases/min"
            )
        print(f"scaling 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")
        stages: dict[str, list[float]] = {}
        for spec in specs:
            summary = json.loads((Path(tmp) / "out1" / spec.case_id / "summary.json").read_text())
            for k, v in summary["timings_s"].items():
                stages.setdefault(k, []).append(v)
        print(
            "per-case breakdown (1 worker, median s): "
            + ", ".join(f"{k.removesuffix('_s')} {np.median(v):.2f}" for k, v in stages.items())
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=4)
    args = ap.parse_args()
    print_header()
    main(args.cases)

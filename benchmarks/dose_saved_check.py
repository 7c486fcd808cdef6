"""Dose saved against the generator's truth on fresh synthetic procedures.

Usage: ``python -m benchmarks.dose_saved_check [SEED...]`` (default seeds 11 23). For each
preset and seed, prints the largest relative error of the four saved figures with the
generator's exact interval, whether the truth lies inside every 95 % interval (exact
interval, and from the ultrasound clip alone), and the flags raised (none expected).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchmarks._header import print_header

FIGURES = ("fluoro_time_s", "pulses", "dap_gy_cm2", "ka_r_mgy")
PRESETS = ("lumbar-mbb", "lumbar-facet", "cervical-mbb", "si-joint")


def check(folder: Path) -> str:
    """One line: error with the exact interval, truth inside the intervals, flags."""
    from hybridfuse.dose.report import build_dose_report
    from hybridfuse.testdata.phantom import load_truth

    truth = load_truth(folder)["dose"]["saved"]
    exact = build_dose_report(
        folder / "rdsr.dcm", us_intervals=[tuple(truth["us_guided_interval_s"])]
    )
    clip = build_dose_report(folder / "rdsr.dcm", us_clips=[folder / "us_clip.dcm"])
    cf, cc = exact["saved"]["counterfactual"], clip["saved"]["counterfactual"]
    err = max(abs(cf["point"][q] / truth[q] - 1) for q in FIGURES)

    def inside(c):
        return all(c["interval_95"][q][0] <= truth[q] <= c["interval_95"][q][1] for q in FIGURES)

    flags = exact["flags"] + clip["flags"]
    return (
        f"max error {100 * err:.2f} %, truth in 95 %: exact {inside(cf)}, clip {inside(cc)}, "
        f"flags {len(flags)}"
    )


def main(argv: list[str]) -> None:
    from hybridfuse.testdata.phantom import generate_procedure

    print_header()
    seeds = [int(s) for s in argv] or [11, 23]
    with tempfile.TemporaryDirectory() as tmp:
        for preset in PRESETS:
            for seed in seeds:
                folder = Path(tmp) / f"{preset}-{seed}"
                generate_procedure(folder, seed=seed, procedure=preset)
                print(f"{preset} seed {seed}: {check(folder)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

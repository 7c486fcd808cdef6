"""Where one ``hybridfuse register`` spends its time, on cached family cases (cProfile).

Run from the repository root:
    python -m benchmarks.profile_register --cache /work/s14/famcache-speed \
        --cases tuning-1,tuning-2 --modes start,auto [--top 25] [--prof OUT.prof] [--external]

Each trial runs the CLI in this process exactly as ``benchmarks.family`` builds its
command line (the same perturbed start per case), after one untimed warm-up trial so that
imports and Numba's first dispatch are not counted (a fresh process pays them once more:
``--cold`` times the first trial instead). Prints per-trial wall and CPU time (all
threads), the answer's outcome and TRE, and the cumulative-time table of the named stages.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import tempfile
import time
from pathlib import Path

#: Functions whose cumulative time is reported (module suffix, function name).
STAGES = (
    ("coregister.py", "register_images"),
    ("evidence.py", "near_start"),
    ("evidence.py", "detect_structures"),
    ("needle.py", "detect_needle"),
    ("features.py", "detect_beads"),
    ("_register.py", "_register_core"),
    ("search.py", "global_search"),
    ("verify.py", "restart_check"),
    ("verify_landmarks.py", "landmark_check"),
    ("initial.py", "auto_start"),
    ("verify.py", "intensity_route_check"),
    ("hypotheses.py", "judge_placements"),
    ("preprocess.py", "preprocess"),
)


def trial(case: Path, mode: str, external: bool = False) -> tuple[float, float, dict | None, int]:
    """One in-process ``register``: (wall s, CPU s, transform record or None, exit code)."""
    from benchmarks.family import mode_args
    from hybridfuse.cli.main import cli

    truth = json.loads((case / "truth.json").read_text())
    with tempfile.TemporaryDirectory(prefix="hf-prof-") as tmp:
        work = Path(tmp)
        args = mode_args(mode, case, truth, work, int(truth.get("case", 0)))
        cmd = [
            "-q",
            "register",
            "--fixed",
            str(case / "fluoro.dcm"),
            "--moving",
            str(case / "us.dcm"),
        ]
        cmd += ["--out", str(work / "out"), "--accept-unverified", *args]
        cmd += ["--allow-mismatch"] if external else []
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            cli.main(cmd, prog_name="hybridfuse", standalone_mode=False)
            rc = 0
        except SystemExit as exc:
            rc = int(exc.code or 0)
        except Exception:  # noqa: BLE001  (a refusal raised as a click exception)
            rc = 1
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        out = work / "out" / "transform.json"
        record = json.loads(out.read_text()) if out.is_file() else None
    return seconds, cpu, record, rc


def describe(record: dict | None, case: Path) -> str:
    """Verdict and TRE of a trial's record."""
    from benchmarks.family import median_tre_mm

    if record is None:
        return "no record"
    import numpy as np

    truth = json.loads((case / "truth.json").read_text())
    tre = median_tre_mm(np.asarray(record["moving_to_fixed_pixel"], float), truth)
    verdict = (record.get("quality") or {}).get("verdict")
    return f"{verdict} TRE {tre:.4f} mm"


def stage_table(stats: pstats.Stats, n: int) -> str:
    """Cumulative seconds per trial of each named stage."""
    lines = ["| stage | s per trial | calls |", "|---|---|---|"]
    for (file, _line, name), (_cc, nc, _tt, ct, _callers) in stats.stats.items():
        for suffix, func in STAGES:
            if name == func and file.endswith(suffix):
                lines.append(f"| {suffix}:{func} | {ct / n:.3f} | {nc} |")
    return "\n".join(lines)


def main() -> None:
    """Parse the options, run the trials under cProfile, print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--cases", default="tuning-1,tuning-2,tuning-3,tuning-4")
    ap.add_argument("--modes", default="start")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--prof", type=Path, default=None)
    ap.add_argument("--cold", action="store_true", help="no warm-up trial")
    ap.add_argument("--no-profile", action="store_true", help="wall time only")
    ap.add_argument("--external", action="store_true", help="phantom-a format cases")
    a = ap.parse_args()
    cases = [a.cache / c for c in a.cases.split(",")]
    modes = a.modes.split(",")
    if not a.cold:
        trial(cases[0], modes[0], a.external)
    prof = cProfile.Profile()
    n = 0
    for mode in modes:
        for case in cases:
            if not a.no_profile:
                prof.enable()
            seconds, cpu, record, rc = trial(case, mode, a.external)
            if not a.no_profile:
                prof.disable()
            n += 1
            print(
                f"{case.name} {mode}: {seconds:.2f} s wall, {cpu:.2f} s CPU, rc={rc} "
                f"{describe(record, case)}"
            )
    if a.no_profile:
        return
    if a.prof:
        prof.dump_stats(a.prof)
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    print(stage_table(stats, n))
    stats.sort_stats("cumulative").print_stats(a.top)
    print(buf.getvalue())


if __name__ == "__main__":
    main()

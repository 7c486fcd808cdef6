"""Time and peak memory of the landmark start for many pairs (issues #13 and #15).

Run: ``python -m benchmarks.landmark_scaling 100 1000 3000 10000`` (each size in a fresh
process so the peak resident size is its own). Pairs follow a projective map with 0.3 px
noise. Outliers: ``0`` none (no RANSAC, the fits and leave-one-out alone); ``1`` one pair
in a hundred (at least one) moved 25 px; ``30`` three in ten replaced by random points,
as automatic matches can be. ``fit_s`` times :func:`fit_landmarks` (RANSAC, refit,
leave-one-out); ``start_s`` the whole landmark start of ``register`` (the same, plus the
affine competitor of model selection and the click-noise estimate).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

# benchmarks/ holds a fusion.py that would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]


def one(n: int, model: str, outliers: int) -> dict:
    """Fit ``n`` pairs once and report wall time and the process's peak RSS."""
    import numpy as np

    from hybridfuse.registration import RegistrationOptions, Transform, fit_landmarks
    from hybridfuse.registration.start import Landmarks, find_start

    rng = np.random.default_rng(1)
    h = np.array([[0.55, 0.05, 40.0], [-0.02, 0.5, -12.0], [2e-4, -1e-4, 1.0]])
    src = rng.uniform(0, 400, (n, 2))
    dst = Transform(h).apply(src) + rng.normal(0, 0.3, (n, 2))
    bad = []
    if outliers == 1:
        bad = rng.choice(n, max(1, n // 100), replace=False)
        dst[bad] += [25.0, -18.0]
    elif outliers:
        bad = rng.choice(n, n * outliers // 100, replace=False)
        dst[bad] = rng.uniform(0, 300, (len(bad), 2))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t, c = time.perf_counter(), time.process_time()
    fit = fit_landmarks(src, dst, model, reject_threshold_px=4.0)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    opts = RegistrationOptions().with_values(model=model, reject_threshold_px=4.0)
    t, c = time.perf_counter(), time.process_time()
    find_start(Landmarks(src, dst), None, fit.transform.model, opts)
    start, start_cpu = time.perf_counter() - t, time.process_time() - c
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "n": n,
        "model": model,
        "outliers_percent": outliers,
        "fit_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "start_s": round(start, 3),
        "start_cpu_s": round(start_cpu, 3),
        "peak_rss_mib": round(peak / 1024, 1),
        "rss_before_fit_mib": round(base / 1024, 1),
        "rejected": int((~fit.inliers).sum()),
        "planted": len(bad),
        "fre_px": round(fit.fre_px, 3),
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        print(json.dumps(one(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))))
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file too
        from benchmarks._header import print_header

        print_header()
        for n in [int(a) for a in sys.argv[1:]] or [100, 1000, 3000, 10000]:
            for model in ("affine", "projective"):
                for outliers in ("0", "1", "30"):
                    cmd = [sys.executable, __file__, "--one", str(n), model, outliers]
                    subprocess.run(cmd, check=False)

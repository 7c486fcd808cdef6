"""Tracking benchmark: a probe that slides and turns, tracked frame by frame.

Run from the repository root:  python -m benchmarks.tracking [--seeds 3 21 22] [--frames 12]

Each clip is :func:`testdata.phantom.clip.moving_probe_clip` (the probe slides 18 mm along
its array and turns 12° in plane over the clip). Seed 3 is the clip
``tests/registration/test_tracking.py`` uses, on which the tracker was developed (tuning);
the other default seeds were never looked at before this benchmark was written (report).
Every tracker starts from the first frame's truth (a landmark registration would give
it). Per clip:

- **tracked**: :func:`registration.tracking.track_sequence` with its defaults; speed as
  pairs per second of wall time and per CPU-second of this process (the machine is
  shared: CPU time is what one core to itself would take, and tracking runs on one
  thread); the best of ``--repeats`` runs after a warm-up (Numba compilation, caches);
- **stationary**: the first frame's transform kept (a tracker that never moves);
- **independent**: every ``--independent-every``-th frame registered on its own
  (:func:`register` with its global search and pyramid from the first frame's truth,
  without the verification's restarts: the comparison is of accuracy).

TRE: the median distance, in mm at the isocentre, between the answer and the truth over
a 12 × 12 grid of the ultrasound region, per frame; the table gives the median and the
maximum over the clip's frames. ``--threaded-blas`` also runs the tracker without
:func:`registration._blas.one_blas_thread` (OpenBLAS's own thread count), to show what
that limit is worth on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np

from benchmarks._header import print_header
from hybridfuse.registration import RegistrationOptions, Transform, register
from hybridfuse.registration import tracking as tracking_module
from hybridfuse.registration.tracking import track_sequence
from hybridfuse.testdata.phantom.clip import moving_probe_clip

TUNING_SEEDS = (3,)
REPORT_SEEDS = (21, 22, 23)


def tre_mm(clip, h: np.ndarray, k: int) -> float:
    """Median distance (mm at the isocentre) from frame ``k``'s truth over a 12 × 12 grid."""
    ys, xs = np.nonzero(clip.moving_mask)
    gx, gy = np.meshgrid(np.linspace(xs.min(), xs.max(), 12), np.linspace(ys.min(), ys.max(), 12))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    err = Transform(h).apply(grid) - Transform(clip.truths[k]).apply(grid)
    return float(np.median(np.linalg.norm(err, axis=1)) * clip.fixed_mm_per_px)


def timed_tracking(clip, repeats: int):
    """Tracked transforms and the best wall and CPU pairs per second over ``repeats`` runs."""
    n = len(clip.truths)
    args = (clip.fixed_frames, clip.moving_frames, [(k, k) for k in range(n)], clip.truths[0])
    kw = dict(fixed_mask=clip.fixed_mask, moving_mask=clip.moving_mask)
    track_sequence(*args[:2], args[2][:2], args[3], **kw)  # warm-up
    best_wall = best_cpu = 0.0
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        results, _ = track_sequence(*args, **kw)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        best_wall, best_cpu = max(best_wall, n / wall), max(best_cpu, n / cpu)
    return [r.transform.matrix for r in results], best_wall, best_cpu


def independent_tre(clip, every: int) -> list[float]:
    """TRE of every ``every``-th frame registered on its own from the first frame's truth."""
    opts = RegistrationOptions().with_values(verify_restarts=0)
    out = []
    for k in range(0, len(clip.truths), every):
        res = register(
            clip.fixed_frames[k],
            clip.moving_frames[k],
            fixed_mask=clip.fixed_mask,
            moving_mask=clip.moving_mask,
            initial=clip.truths[0],
            fixed_spacing_mm=clip.fixed_mm_per_px,
            options=opts,
        )
        out.append(tre_mm(clip, res.transform.matrix, k))
    return out


@contextlib.contextmanager
def threaded_blas():
    """The tracker as before the BLAS limit: ``one_blas_thread`` made a no-op."""
    saved = tracking_module.one_blas_thread
    tracking_module.one_blas_thread = contextlib.nullcontext
    try:
        yield
    finally:
        tracking_module.one_blas_thread = saved


def _row(seed, role, wall, cpu, tracked, stationary, independent) -> str:
    def mm(values):
        return f"{np.median(values):.2f} / {np.max(values):.2f}" if values else "-"

    return (
        f"| {seed} | {role} | {wall:.1f} | {cpu:.1f} | {mm(tracked)} | {mm(stationary)} | "
        f"{mm(independent)} |"
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[*TUNING_SEEDS, *REPORT_SEEDS])
    ap.add_argument("--frames", type=int, default=12, help="frames per clip")
    ap.add_argument("--repeats", type=int, default=3, help="timed tracking runs per clip")
    ap.add_argument("--independent-every", type=int, default=3, metavar="K")
    ap.add_argument("--threaded-blas", action="store_true", help="also time without the limit")
    args = ap.parse_args(argv)
    print_header()
    print(
        "| seed | set | pairs/s (wall) | pairs per CPU-s | tracked TRE median / max (mm) "
        "| stationary | independent |"
    )
    print("|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        clip = moving_probe_clip(seed=seed, n_frames=args.frames, slide_mm=18.0, turn_deg=12.0)
        role = "tuning" if seed in TUNING_SEEDS else "report"
        tracked, wall, cpu = timed_tracking(clip, args.repeats)
        tre = [tre_mm(clip, h, k) for k, h in enumerate(tracked)]
        still = [tre_mm(clip, clip.truths[0], k) for k in range(len(tracked))]
        indep = independent_tre(clip, args.independent_every) if args.independent_every else []
        print(_row(seed, role, wall, cpu, tre, still, indep), flush=True)
        if args.threaded_blas:
            with threaded_blas():
                tracked_t, wall_t, cpu_t = timed_tracking(clip, args.repeats)
            tre_t = [tre_mm(clip, h, k) for k, h in enumerate(tracked_t)]
            print(_row(seed, role + ", threaded BLAS", wall_t, cpu_t, tre_t, [], []), flush=True)


if __name__ == "__main__":
    main()

"""Which ultrasound file goes with each fluoroscopy run of a case.

A case often holds several runs with a clip acquired beside each. Taking one clip for
every run registered and fused runs against frames minutes away from them, so each run
gets the file with the most frames within :data:`PAIRING_LIMIT_S` of its own, and a run
with no such file gets none: it is reported, never fused to a far-off clip.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PAIRING_LIMIT_S", "RunPairing", "pair_runs"]

#: Most seconds between a fluoroscopy frame and the ultrasound frame registered to it.
PAIRING_LIMIT_S = 0.5


@dataclass(frozen=True)
class RunPairing:
    """One run's ultrasound file (None: none concurrent) and how it was chosen."""

    ultrasound: str | None
    how: str
    #: Frames of the run with a frame of that file within the limit (None: no times).
    frames_within_limit: int | None = None
    #: Smallest time between a frame of the run and one of the nearest file (s).
    nearest_s: float | None = None

    def to_dict(self, label: str | None) -> dict:
        """JSON-ready record, naming the ultrasound file by ``label``."""
        return {
            "ultrasound": label,
            "frames_within_limit": self.frames_within_limit,
            "nearest_s": self.nearest_s,
            "how": self.how,
        }


def pair_runs(us_paths, fluoro, headers: dict) -> list[RunPairing]:
    """Each run's ultrasound file among ``us_paths``, by acquisition time.

    ``headers`` maps a path to its header-only image (None when unreadable: it is
    checked, and refused naming it, elsewhere). The file with the most run frames
    within the limit wins, then the nearest frame, then the first by name. Without
    acquisition times on either side the first file without them is taken, as before.
    """
    if len(us_paths) == 1:
        return [RunPairing(us_paths[0], "the case's only ultrasound file")] * len(fluoro)
    return [_pair_one(fl, us_paths, headers) for fl in fluoro]


def _pair_one(fl, us_paths, headers: dict) -> RunPairing:
    from .fuse import pair_frames

    timed, untimed = [], []
    for order, path in enumerate(us_paths):
        head = headers.get(path)
        if head is None:
            continue
        pairs, _ = pair_frames(fl, head, list(range(fl.n_frames)))
        gaps = [abs(dt) for *_, dt in pairs if dt is not None]
        if len(gaps) < len(pairs):
            untimed.append(path)
            continue
        within = sum(g <= PAIRING_LIMIT_S for g in gaps)
        timed.append((-within, min(gaps), order, path))
    if not timed and not untimed:
        return RunPairing(None, "no readable ultrasound file")
    best = min(timed, default=None)
    if best is not None and best[0] < 0:
        return RunPairing(
            best[3],
            f"the ultrasound file with the most frames within {PAIRING_LIMIT_S:g} s of "
            "this run's (then the nearest frame, then the first by name)",
            -best[0],
            round(best[1], 3),
        )
    if untimed:  # no times to pair by: the first such file, as before pairing by time
        return RunPairing(untimed[0], "no acquisition times to pair by: the first such file")
    return RunPairing(
        None,
        f"no ultrasound file has a frame within {PAIRING_LIMIT_S:g} s of this run "
        f"(nearest {best[1]:.1f} s): not registered or fused to a clip acquired apart from it",
        0,
        round(best[1], 3),
    )

"""Landmark files with wrong clicks, on the phantom family's images (issue #15).

``benchmarks.misclick_power`` simulates click sets without images; this one runs the
product on the family's images, where clicks on beads (registration/clicks.py) and the
intensity term take part. For each case with 5 clicks or more it writes files made from
the case's own clicks (``landmarks.csv``, 0.5 px noise), by kind (``--kinds``):
- ``one``: ONE click wrong. A bead's fluoroscopy click put on a faint blob 3-9 mm away
  (the bead detector's blobs down to strength 6; at most two per bead), as where the hand
  lands on the wrong spot; a bead's fluoroscopy click put on the next bead (plus 0.5 px),
  a swapped pairing; the needle tip's fluoroscopy click moved 6-20 px in a random
  direction.
- ``all``: EVERY fluoroscopy click off the same way, which the pairs cannot see (they
  still agree with each other): shifted 5 and 10 px in a random direction, scaled by 0.95
  and 0.9 about their centroid (clicks read off a shifted or resized display).
- ``axis``: every fluoroscopy click resized along one image axis only, 0.85 about their
  centroid, x and y (a picture stretched to another shape on the display).
- ``honest``: the clicks as they are (what the images say of right clicks).

Each file runs through ``hybridfuse register --landmarks FILE --accept-unverified`` in a
fresh process (plus ``--extra``), as ``benchmarks.family`` runs its modes, and is judged
the same way: right (accepted, TRE < 2 mm), refused, wrong (accepted, TRE >= 2 mm); a wrong
answer whose TRE also exceeds its ``predicted_tre_mm`` is counted apart (beyond bound).
Per kind it also prints how far the images alone moved the answers
(``verification.intensity_only_drift_mm``, the larger of LC2's and MI's).

Run from the repository root:
    python -m benchmarks.misclick_files --set tuning --n 85 --cache DIR
        [--kinds one,all,axis,honest] [--extra "ARGS"] [--json OUT]
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._header import print_header
from benchmarks.family import CLI, RIGHT_MM, family_cases, median_tre_mm

MIN_CLICKS = 5
BLOB_MM = (3.0, 9.0)
TIP_PX = (6.0, 20.0)
SHIFT_PX = (5.0, 10.0)
SCALE = (0.95, 0.9)
AXIS_SCALE = 0.85
KINDS = ("one", "all", "axis", "honest")


def wrong_sets(case: Path, seed: int) -> tuple[list[str], list[tuple[str, int, np.ndarray]]]:
    """The CSV header and rows, and each (label, row index, wrong fluoroscopy xy): kind one."""
    import hybridfuse  # noqa: F401  (before the detector's NumPy work)
    from hybridfuse.fusion.io import read_image
    from hybridfuse.registration.features import detect_beads

    with open(case / "landmarks.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    truth = json.loads((case / "truth.json").read_text())
    mm = truth["mm_per_fixed_pixel_at_isocenter"]
    fluoro = read_image(case / "fluoro.dcm").require_min_size()
    blobs = detect_beads(
        fluoro.gray(0), fluoro.mask, fluoro.xray.isocenter_spacing_mm, bright=False,
        max_blobs=200, min_snr=6.0,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    beads = [i for i, r in enumerate(rows) if i and r[0].startswith("bead")]
    sets = []
    for i in beads:
        at = np.array([float(rows[i][3]), float(rows[i][4])])
        dist = np.linalg.norm(blobs.xy - at, axis=1) * mm
        for k in np.flatnonzero((dist > BLOB_MM[0]) & (dist < BLOB_MM[1]))[:2]:
            sets.append((f"{rows[i][0]} on a blob {dist[k]:.1f} mm away", i, blobs.xy[k]))
        j = beads[(beads.index(i) + 1) % len(beads)]
        other = np.array([float(rows[j][3]), float(rows[j][4])]) + rng.normal(0, 0.5, 2)
        sets.append((f"{rows[i][0]} on {rows[j][0]}", i, other))
    for i, r in enumerate(rows):
        if i and r[0].startswith("needle"):
            angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(*TIP_PX)
            off = length * np.array([np.cos(angle), np.sin(angle)])
            sets.append(
                (f"{r[0]} {length:.0f} px off", i, np.array([float(r[3]), float(r[4])]) + off)
            )
    return rows, sets


def with_fixed(rows: list[list[str]], index, xy) -> list[list[str]]:
    """``rows`` with the fluoroscopy click of row(s) ``index`` put at ``xy``."""
    out = [list(r) for r in rows]
    for i, (x, y) in zip(np.atleast_1d(index), np.reshape(xy, (-1, 2)), strict=True):
        out[i][3], out[i][4] = f"{x:.2f}", f"{y:.2f}"
    return out


def systematic_sets(rows: list[list[str]], seed: int) -> list[tuple[str, list[list[str]]]]:
    """Every fluoroscopy click shifted or scaled alike (kind all), and the clicks as given."""
    fixed = np.array([[float(r[3]), float(r[4])] for r in rows[1:]])
    index = np.arange(1, len(rows))
    angle = np.random.default_rng([seed, 1]).uniform(0, 2 * np.pi)
    way = np.array([np.cos(angle), np.sin(angle)])
    centre = fixed.mean(axis=0)
    sets = [(f"all shifted {d:g} px", with_fixed(rows, index, fixed + d * way)) for d in SHIFT_PX]
    sets += [
        (f"all scaled {k:g}", with_fixed(rows, index, centre + k * (fixed - centre))) for k in SCALE
    ]
    return sets


def axis_sets(rows: list[list[str]]) -> list[tuple[str, list[list[str]]]]:
    """Every fluoroscopy click resized along x, then along y, by :data:`AXIS_SCALE` (kind axis)."""
    fixed = np.array([[float(r[3]), float(r[4])] for r in rows[1:]])
    index = np.arange(1, len(rows))
    sets = []
    for axis, name in enumerate("xy"):
        moved = fixed.copy()
        centre = fixed[:, axis].mean()
        moved[:, axis] = centre + AXIS_SCALE * (fixed[:, axis] - centre)
        sets.append((f"{name} scaled {AXIS_SCALE:g}", with_fixed(rows, index, moved)))
    return sets


def run_set(case: Path, wrong: list[list[str]], extra: list[str]) -> dict:
    """One register process on the clicks ``wrong`` (CSV rows, header first)."""
    truth = json.loads((case / "truth.json").read_text())
    with tempfile.TemporaryDirectory(prefix="hf-misclick-") as tmp:
        work = Path(tmp)
        (work / "clicks.csv").write_text("\n".join(",".join(r) for r in wrong) + "\n")
        cmd = [*CLI, "register", "--fixed", str(case / "fluoro.dcm"), "--moving",
               str(case / "us.dcm"), "--landmarks", str(work / "clicks.csv"), "--out",
               str(work / "out"), "--accept-unverified", *extra]  # fmt: skip
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
        out = work / "out" / "transform.json"
        if proc.returncode != 0 or not out.is_file():
            return {"outcome": "refused", "rc": proc.returncode}
        record = json.loads(out.read_text())
    quality = record.get("quality") or {}
    tre = median_tre_mm(np.asarray(record["moving_to_fixed_pixel"], float), truth)
    predicted = quality.get("predicted_tre_mm")
    drift = (quality.get("verification") or {}).get("intensity_only_drift_mm") or {}
    outcome = "refused"
    if quality.get("verdict") == "accepted":
        outcome = "right" if tre < RIGHT_MM else "wrong"
    return {
        "outcome": outcome,
        "tre_mm": round(tre, 3),
        "predicted_tre_mm": None if predicted is None else round(predicted, 3),
        "moved": (quality.get("clicks_on_beads") or {}).get("moved"),
        "drift_mm": max(drift.values()) if drift else None,
        "drift_by_metric_mm": drift or None,
        "why": "; ".join(quality.get("reasons") or [])[:160],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=["tuning", "report"], required=True)
    ap.add_argument("--n", type=int, default=85)
    ap.add_argument("--cache", type=Path, required=True, help="folder of generated cases")
    ap.add_argument("--kinds", default="one", help=f"comma-separated, of {','.join(KINDS)}")
    ap.add_argument("--extra", default="", help="register options added to every run")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    kinds = args.kinds.split(",")
    print_header()
    extra = shlex.split(args.extra)
    results = []
    for name, folder, make in family_cases(args.set, args.n, args.cache):
        make()
        if sum(1 for _ in open(folder / "landmarks.csv", encoding="utf-8")) - 1 < MIN_CLICKS:
            continue
        seed = int(name.rsplit("-", 1)[1])
        rows, ones = wrong_sets(folder, seed)
        sets = [("one", label, with_fixed(rows, i, xy)) for label, i, xy in ones]
        sets += [("all", label, wrong) for label, wrong in systematic_sets(rows, seed)]
        sets += [("axis", label, wrong) for label, wrong in axis_sets(rows)]
        sets += [("honest", "as clicked", rows)]
        for kind, label, wrong in sets:
            if kind in kinds:
                row = {"case": name, "kind": kind, "set": label}
                results.append({**row, **run_set(folder, wrong, extra)})
    for kind in kinds:
        report([r for r in results if r["kind"] == kind], kind)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def report(results: list[dict], kind: str) -> None:
    """Counts, the images' drift, and each wrong answer with its TRE against its bound."""
    count = {k: sum(r["outcome"] == k for r in results) for k in ("right", "refused", "wrong")}
    wrong = [r for r in results if r["outcome"] == "wrong"]
    beyond = [r for r in wrong if r["tre_mm"] > (r["predicted_tre_mm"] or 0.0)]
    cases = len({r["case"] for r in results})
    print(f"\nkind {kind}: {len(results)} files, {cases} cases: right / refused / wrong")
    print(f"{count['right']} / {count['refused']} / {count['wrong']} ({len(beyond)} beyond bound)")
    drift = [r["drift_mm"] for r in results if r.get("drift_mm") is not None]
    if drift:
        q = np.percentile(drift, [50, 90, 100])
        print(
            f"images alone moved the answers: median {q[0]:.2f}, p90 {q[1]:.2f}, max {q[2]:.2f} mm"
        )
    for r in wrong:
        print(f"- {r['case']}, {r['set']}: TRE {r['tre_mm']} mm, predicted {r['predicted_tre_mm']}")


if __name__ == "__main__":
    main()

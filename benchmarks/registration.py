"""Registration benchmark: hybridfuse against SimpleITK and elastix, set up fairly.

Run from the repository root:
    python -m benchmarks.registration [--sets S1,S2,...] [--cases N] [--starts M]
        [--cache FOLDER]
(as a module: run as a script, this file would shadow the registration package)

One table per set, each from the same run and the same code (``--sets``, default
``family-tuning,family-report,phantom-a``):
- **family-tuning**: the phantom family's ``TUNING_SEEDS`` (``testdata/phantom/family.py``;
  defaults may be chosen on them), the first ``--cases`` of them;
- **family-report**: the family's ``REPORT_SEEDS``, never used to choose anything;
- **phantom-a** (``../shared/validation/phantom-a``, an independently written generator):
  report only; skipped, with the reason printed, when the folder is absent;
- **own-tuning** / **own-report**: the older own phantom (``generate_procedure``), seeds
  100 + i (the defaults were first chosen on these) and 900 + i. Own-phantom cases cycle
  through the presets lumbar MBB, cervical MBB, lumbar facet and SI joint; their first two
  pairs whose ultrasound plane faces the detector are used.
Family cases are written at full size by ``family_case`` as ``benchmarks.family`` writes
them, into ``--cache`` (the same ``tuning-SEED`` / ``report-SEED`` folders, so the two
benchmarks share a cache) or a temporary folder.

Every method of a trial gets the same start (the truth composed with a random similarity
within ±10 mm per axis, ±10°, ±5 % about the ultrasound centre) or the same landmarks:
the case's ``landmarks.csv`` as given on the family and phantom-a (its clicks carry 0.5 px
noise already; a case without clicks has no landmark rows), the own phantom's landmarks
with 0.5 px Gaussian noise added on the fluoroscopy side. TRE: median distance, in mm at
the isocentre, between the answer and the truth over a grid of the ultrasound region
(12 × 12 on the own phantom, the truth's grid on the family and phantom-a).
Right: an answer with TRE < 2 mm; wrong: an answer with TRE >= 2 mm; refused: the method
raised (ours: the verification or a guard refused; ITK: an exception).

Methods (the timer of each wraps everything it needs from the decoded frames on:
preprocessing, set-up, registration, our verification):
- ours landmarks+LC2 (the default with landmarks), ours landmarks only (``--metric none``).
- SimpleITK landmarks only: ``LandmarkBasedTransformInitializer`` (affine), nothing else.
- SimpleITK landmarks+MI: that initialiser, then the MI recipe below.
- ours LC2 / MI from the start (``--init-transform``): beads and needle detected in both
  images first and, where they match near the start, taken as landmarks (evidence.py);
  otherwise a global search and the 5-level pyramid; the verification either way.
- ours ``--init auto``: no start and no landmarks (bead correspondences); one trial per
  pair, not per start.
- SimpleITK MI from the start: ITK's fixed image is the ultrasound and its moving image
  the fluoroscopy (ITK's transform maps fixed points to moving points, the same direction
  as ours), both as our "structures" feature images, computed inside the timer at the
  scale the start implies (as ours does); masks on both sides; affine transform (ITK has
  no 2D homography) centred on the ultrasound region, set to the start's affine part;
  Mattes MI (32 bins, random sampling of about 12,000 ultrasound pixels, seeded);
  L-BFGS-B, 100 iterations a level (SimpleITK's gradient descent with the learning rate
  estimated each iteration drifted 6-24 mm away when started at the truth or the landmark
  answer, on one tuning pair, so it is not used); the same 5 pyramid levels as ours
  (shrink 16/8/4/2/1, smoothing factor/2 ultrasound px); the random samples thin out on
  the shrunk levels.
- elastix MI from the start (itk-elastix, when installed): the same images, masks, start
  and centre; its default affine map with 5 resolutions and 32 histogram bins.
Neither ITK recipe has a global search; ours has one (that difference stays).
Timings are wall-clock on this machine; a warm-up trial (Numba compilation) is not counted.
Ratios are printed twice: of the median times, and paired (the median over trials of ours'
time over the peer's on the same start or landmarks, leaving out trials where the peer
raised or ours stopped at its input checks).
``--json OUT`` also writes every trial's row (TRE, seconds, why, trial key) after each
set, and ``--from-json OUT`` reprints its tables and ratios. ``--tracking-only`` runs the
tracking section; ``--metric-timing`` adds one metric
evaluation's time at 512×512 samples.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from benchmarks._header import print_header
from hybridfuse._safeio import write_text
from hybridfuse.fusion import read_image
from hybridfuse.fusion.coregister import read_landmarks_csv, register_images
from hybridfuse.registration import (
    Landmarks,
    MetricContext,
    Parameterization,
    RegistrationOptions,
    Transform,
    fit_model,
    metric_cost,
)
from hybridfuse.registration.preprocess import preprocess_pair, quantised_scale
from hybridfuse.testdata.phantom import generate_procedure
from hybridfuse.testdata.phantom.family import REPORT_SEEDS, TUNING_SEEDS

# ITK warnings (e.g. an optimiser that ignores scales) would bury the table.
sitk.ProcessObject.SetGlobalWarningDisplay(False)

try:  # optional peer: pip install itk-elastix (not a project dependency)
    import itk

    HAVE_ELASTIX = hasattr(itk, "elastix_registration_method")
    ELASTIX_WHY = "" if HAVE_ELASTIX else "itk is installed without elastix"
except ImportError as _exc:
    HAVE_ELASTIX = False
    ELASTIX_WHY = f"itk-elastix not importable ({_exc}); pip install itk-elastix"


PRESETS = ("lumbar-mbb", "cervical-mbb", "lumbar-facet", "si-joint")
OWN_SEEDS = {"own-tuning": 100, "own-report": 900}
SETS = ("family-tuning", "family-report", "phantom-a", *OWN_SEEDS)
DEFAULT_SETS = "family-tuning,family-report,phantom-a"
VALIDATION = Path(__file__).resolve().parents[2] / "shared" / "validation" / "phantom-a"
LEVELS = (16, 8, 4, 2, 1)  # ours: PyramidOptions.levels; "same" for the ITK recipes
LANDMARK_NOISE_PX = 0.5


@dataclass
class Case:
    """One registration problem: decoded images, frames, truth and evaluation grid."""

    name: str
    fl: object
    us: object
    fframe: int
    uframe: int
    true: np.ndarray  # ultrasound pixel -> fluoroscopy pixel
    grid: np.ndarray  # ultrasound pixels
    grid_fixed: np.ndarray  # where the truth puts them
    iso: float  # mm per fluoroscopy pixel at the isocentre
    landmarks: Landmarks | None  # None: the case has no clicks
    add_noise: bool = False  # exact landmarks: add LANDMARK_NOISE_PX to the fixed side


def tre_mm(tr: Transform, true: np.ndarray, mask: np.ndarray, iso: float) -> np.ndarray:
    """Per-point error over a 12 × 12 grid of ``mask`` (used by the tracking section)."""
    ys, xs = np.nonzero(mask)
    gx, gy = np.meshgrid(np.linspace(xs.min(), xs.max(), 12), np.linspace(ys.min(), ys.max(), 12))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    return np.linalg.norm(tr.apply(grid) - Transform(true).apply(grid), axis=1) * iso


def perturbed_start(true, centre, iso, rng):
    """``true`` pre-composed with a random similarity within ±10°, ±5 %, ±10 mm."""
    a = np.radians(rng.uniform(-10, 10))
    s = 1 + rng.uniform(-0.05, 0.05)
    rot = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    ct = Transform(true).apply(centre[None])[0]
    pre = np.eye(3)
    pre[:2, :2] = rot
    pre[:2, 2] = ct - rot @ ct + rng.uniform(-10, 10, 2) / iso
    return pre @ true


def valid(img) -> np.ndarray:
    """The image's mask, or every pixel where it has none (phantom-a's fluoroscopy)."""
    return np.ones(img.shape, bool) if img.mask is None else img.mask


def us_centre(us) -> np.ndarray:
    ys, xs = np.nonzero(us.mask)
    return np.array([xs.mean(), ys.mean()])


def affine_part(h: np.ndarray, us) -> np.ndarray:
    """The affine map closest (least squares over the ultrasound region) to ``h``."""
    ys, xs = np.nonzero(us.mask)
    sel = np.linspace(0, len(xs) - 1, 400).astype(int)
    pts = np.column_stack([xs[sel], ys[sel]]).astype(float)
    return fit_model("affine", pts, Transform(h).apply(pts))


def features(case: Case, h: np.ndarray):
    """Both "structures" feature images at the scale ``h`` implies (as ours computes)."""
    scale = quantised_scale(float(Transform(h).local_scales(us_centre(case.us)[None]).mean()))
    f = case.fl.gray(case.fframe)
    m = case.us.gray(case.uframe)
    return preprocess_pair(f, valid(case.fl), m, valid(case.us), "structures", scale=scale)


def _centred_affine(h: np.ndarray, c: np.ndarray) -> sitk.AffineTransform:
    """ITK affine x -> A (x - c) + c + t equal to ``h`` (ultrasound -> fluoroscopy px)."""
    tx = sitk.AffineTransform(2)
    tx.SetCenter(c.tolist())
    tx.SetMatrix(h[:2, :2].ravel().tolist())
    tx.SetTranslation((h[:2, 2] - c + h[:2, :2] @ c).tolist())
    return tx


def _matrix(tx: sitk.AffineTransform) -> np.ndarray:
    mat = np.eye(3)
    mat[:2, :2] = np.asarray(tx.GetMatrix()).reshape(2, 2)
    c = np.asarray(tx.GetCenter())
    mat[:2, 2] = np.asarray(tx.GetTranslation()) + c - mat[:2, :2] @ c
    return mat


def sitk_landmarks(case: Case, lm: Landmarks) -> np.ndarray:
    """SimpleITK's landmark initialiser alone: fixed = ultrasound points, moving = fluoro."""
    tx = sitk.LandmarkBasedTransformInitializer(
        sitk.AffineTransform(2), lm.moving_xy.ravel().tolist(), lm.fixed_xy.ravel().tolist()
    )
    return _matrix(sitk.AffineTransform(tx))


def sitk_mi(case: Case, start: np.ndarray) -> np.ndarray:
    """SimpleITK MI recipe from ``start`` (see the module docstring)."""
    h = affine_part(start, case.us)
    ff, mf = features(case, h)
    fixed = sitk.GetImageFromArray(mf.astype(np.float32))  # ultrasound
    moving = sitk.GetImageFromArray(ff.astype(np.float32))  # fluoroscopy
    tx = _centred_affine(h, us_centre(case.us))
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(min(1.0, 12000 / max(1, int(case.us.mask.sum()))), seed=1)
    reg.SetMetricFixedMask(sitk.GetImageFromArray(case.us.mask.astype(np.uint8)))
    reg.SetMetricMovingMask(sitk.GetImageFromArray(valid(case.fl).astype(np.uint8)))
    reg.SetInterpolator(sitk.sitkLinear)
    # L-BFGS-B: of the recipes tried on one tuning pair (gradient descent with the learning
    # rate estimated each iteration, regular-step gradient descent, L-BFGS-B; dense or
    # 12,000 samples), it was the only one that stayed near the truth when started there.
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-7, numberOfIterations=100)
    reg.SetShrinkFactorsPerLevel(list(LEVELS))
    reg.SetSmoothingSigmasPerLevel([f / 2 if f > 1 else 0 for f in LEVELS])
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(fixed, moving)
    return _matrix(tx)


def sitk_landmarks_mi(case: Case, lm: Landmarks) -> np.ndarray:
    return sitk_mi(case, sitk_landmarks(case, lm))


def elastix_mi(case: Case, start: np.ndarray) -> tuple[np.ndarray, float]:
    """itk-elastix from ``start``; returns (matrix, seconds inside the timer)."""
    t0 = time.perf_counter()
    h = affine_part(start, case.us)
    ff, mf = features(case, h)
    c = us_centre(case.us)
    fixed = itk.GetImageFromArray(np.ascontiguousarray(mf, np.float32))
    moving = itk.GetImageFromArray(np.ascontiguousarray(ff, np.float32))
    fm = itk.GetImageFromArray(np.ascontiguousarray(case.us.mask, np.uint8))
    mm = itk.GetImageFromArray(np.ascontiguousarray(valid(case.fl), np.uint8))
    t = h[:2, 2] - c + h[:2, :2] @ c
    rows, cols = mf.shape
    init = itk.ParameterObject.New()
    imap = init.GetDefaultParameterMap("affine")
    for key, val in {
        "Transform": ["AffineTransform"],
        "NumberOfParameters": ["6"],
        "TransformParameters": [str(v) for v in (*h[:2, :2].ravel(), *t)],
        "CenterOfRotationPoint": [str(c[0]), str(c[1])],
        "InitialTransformParametersFileName": ["NoInitialTransform"],
        "HowToCombineTransforms": ["Compose"],
        "Size": [str(cols), str(rows)],
        "Spacing": ["1", "1"],
        "Origin": ["0", "0"],
        "Index": ["0", "0"],
        "Direction": ["1", "0", "0", "1"],
        "FixedImageDimension": ["2"],
        "MovingImageDimension": ["2"],
        "ResampleInterpolator": ["FinalBSplineInterpolator"],
        "FinalBSplineInterpolationOrder": ["1"],
    }.items():
        imap[key] = val
    init.AddParameterMap(imap)
    po = itk.ParameterObject.New()
    pm = po.GetDefaultParameterMap("affine", len(LEVELS))
    pm["Metric"] = ["AdvancedMattesMutualInformation"]
    pm["NumberOfHistogramBins"] = ["32"]
    pm["AutomaticTransformInitialization"] = ["false"]
    pm["ErodeMask"] = ["false"]
    po.AddParameterMap(pm)
    _, params = itk.elastix_registration_method(
        fixed,
        moving,
        parameter_object=po,
        fixed_mask=fm,
        moving_mask=mm,
        initial_transform_parameter_object=init,
        log_to_console=False,
    )
    wall = time.perf_counter() - t0
    # Read the composed map back (outside the timer) through transformix's field over
    # the ultrasound (fixed) grid: fluoro point = ultrasound point + displacement.
    with tempfile.TemporaryDirectory() as out:
        field = itk.GetArrayFromImage(
            itk.transformix_deformation_field(fixed, params, output_directory=out)
        )
    yy, xx = np.nonzero(case.us.mask)
    sel = np.linspace(0, len(xx) - 1, 2000).astype(int)
    pts = np.column_stack([xx[sel], yy[sel]]).astype(float)
    return fit_model("affine", pts, pts + field[yy[sel], xx[sel]]), wall


# --------------------------------------------------------------------------- cases


def own_cases(first_seed: int, n: int, tmp: Path) -> list[Case]:
    cases = []
    for i in range(n):
        folder = tmp / f"s{first_seed + i}"
        truth = generate_procedure(folder, seed=first_seed + i, procedure=PRESETS[i % 4])
        us = read_image(folder / "us_clip.dcm")
        ys, xs = np.nonzero(us.mask)
        gx, gy = np.meshgrid(
            np.linspace(xs.min(), xs.max(), 12), np.linspace(ys.min(), ys.max(), 12)
        )
        grid = np.column_stack([gx.ravel(), gy.ravel()])
        for pair in [p for p in truth["pairs"] if not p["edge_on"]][:2]:
            fl = read_image(folder / pair["fluoro_file"])
            true = np.asarray(pair["moving_to_fixed_pixel"])
            cases.append(
                Case(
                    f"seed {first_seed + i} pair {pair['id']}",
                    fl,
                    us,
                    pair["fluoro_frame"],
                    pair["us_frame"],
                    true,
                    grid,
                    Transform(true).apply(grid),
                    fl.xray.isocenter_spacing_mm[0],
                    read_landmarks_csv(folder / pair["landmarks_csv"]),
                    add_noise=True,
                )
            )
    return cases


def folder_case(case: Path, name: str) -> Case:
    """A case in phantom-a's format (the family writes the same): two DICOMs, clicks, truth."""
    truth = json.loads((case / "truth.json").read_text())
    with open(case / "landmarks.csv", encoding="utf-8") as fh:
        has_clicks = len(fh.read().strip().splitlines()) > 1
    return Case(
        name,
        read_image(case / "fluoro.dcm"),
        read_image(case / "us.dcm"),
        0,
        0,
        np.asarray(truth["moving_to_fixed_pixel"]),
        np.asarray(truth["grid_moving"], float),
        np.asarray(truth["grid_fixed"], float),
        float(truth["mm_per_fixed_pixel_at_isocenter"]),
        read_landmarks_csv(case / "landmarks.csv") if has_clicks else None,
    )


def validation_cases(folder: Path) -> list[Case]:
    return [folder_case(c, c.name) for c in sorted(p for p in folder.iterdir() if p.is_dir())]


def family_set(which: str, n: int, cache: Path) -> list[Case]:
    """The first ``n`` cases of a family seed set, written (full size) unless cached."""
    from benchmarks.family import family_cases

    out = []
    for name, folder, make in family_cases(which, n, cache):
        make()
        out.append(folder_case(folder, name))
    return out


# --------------------------------------------------------------------------- trials

OURS_LM = "ours landmarks+LC2 (default)"
OURS_LM_ONLY = "ours landmarks only"
SITK_LM_ONLY = "SimpleITK landmarks only"
SITK_LM_MI = "SimpleITK landmarks+MI"
OURS_LC2 = "ours LC2 from start"
OURS_MI = "ours MI from start"
OURS_AUTO = "ours --init auto (no start)"
SITK_MI = "SimpleITK MI from start"
ELASTIX = "elastix MI from start"
ORDER = (OURS_LM, OURS_LM_ONLY, SITK_LM_ONLY, SITK_LM_MI, OURS_LC2, OURS_MI, OURS_AUTO, SITK_MI)


def _ours(case: Case, **kw) -> np.ndarray:
    res = register_images(case.fl, case.us, fixed_frame=case.fframe, moving_frame=case.uframe, **kw)
    return res.transform.matrix


def _timed(fn, *args, **kw):
    """(matrix or None, seconds, why) of one method."""
    t0 = time.perf_counter()
    try:
        out = fn(*args, **kw)
    except Exception as exc:  # noqa: BLE001 - every refusal or failure is counted
        return None, time.perf_counter() - t0, f"{type(exc).__name__}: {str(exc)[:70]}"
    if isinstance(out, tuple):  # elastix times itself (its read-back is not registration)
        return out[0], out[1], ""
    return out, time.perf_counter() - t0, ""


def noisy_landmarks(case: Case, rng) -> Landmarks | None:
    """The trial's landmarks: the case's clicks, plus 0.5 px noise where they are exact."""
    lm = case.landmarks
    if lm is None or not case.add_noise:
        return lm
    noise = rng.normal(0, LANDMARK_NOISE_PX, lm.fixed_xy.shape)
    return Landmarks(lm.moving_xy, lm.fixed_xy + noise, lm.names)


def trials(case: Case, starts: int, rng, record: bool, rows: dict) -> None:
    """Run every method on ``case`` from ``starts`` starts; append (tre, s, why) rows."""
    centre = us_centre(case.us)
    trial = [0]

    def add(name, out):
        mat, wall, why = out
        tre = None
        if mat is not None:
            err = np.linalg.norm(Transform(mat).apply(case.grid) - case.grid_fixed, axis=1)
            tre = float(np.median(err) * case.iso)
        if record:
            rows.setdefault(name, []).append((tre, wall, why, f"{case.name}#{trial[0]}"))
        if os.environ.get("BENCH_VERBOSE"):
            print(f"  {case.name}: {name}: {tre} mm, {wall:.2f} s {why}", file=sys.stderr)

    add(OURS_AUTO, _timed(_ours, case, init="auto"))
    lc2, mi, none = (RegistrationOptions(metric=m) for m in ("lc2", "mi", None))
    for k in range(starts):
        trial[0] = k
        noisy = noisy_landmarks(case, rng)
        start = perturbed_start(case.true, centre, case.iso, rng)
        if noisy is not None:
            add(OURS_LM, _timed(_ours, case, landmarks=noisy, options=lc2))
            add(OURS_LM_ONLY, _timed(_ours, case, landmarks=noisy, options=none))
            add(SITK_LM_ONLY, _timed(sitk_landmarks, case, noisy))
            add(SITK_LM_MI, _timed(sitk_landmarks_mi, case, noisy))
        add(OURS_LC2, _timed(_ours, case, initial=start, options=lc2))
        add(OURS_MI, _timed(_ours, case, initial=start, options=mi))
        add(SITK_MI, _timed(sitk_mi, case, start))
        if HAVE_ELASTIX:
            add(ELASTIX, _timed(elastix_mi, case, start))


def table(title: str, rows: dict) -> dict:
    """Print one Markdown table; return {method: (median s, median TRE)}."""
    print(f"\n### {title}\n")
    print(
        "| method | n | median s/trial | TRE median (mm) | TRE p95 (mm) | right | refused | "
        "wrong (worst mm) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    out = {}
    for name in [*ORDER, ELASTIX]:
        if name not in rows:
            continue
        vals = rows[name]
        tre = np.array([np.inf if t is None else t for t, *_ in vals])
        wall = float(np.median([w for _, w, *_ in vals]))
        right = int(np.sum(tre < 2.0))
        refused = int(np.sum(~np.isfinite(tre)))
        wrong_tre = tre[np.isfinite(tre) & (tre >= 2.0)]
        with np.errstate(invalid="ignore"):  # inf - inf where refusals reach the quantile
            med = np.median(tre)
            p95 = np.nan_to_num(np.percentile(tre, 95), nan=np.inf)
        n = len(tre)
        worst = f" ({wrong_tre.max():.1f})" if wrong_tre.size else ""
        print(
            f"| {name} | {n} | {wall:.3f} | {med:.3f} | "
            f"{'refusals' if not np.isfinite(p95) else f'{p95:.2f}'} | "
            f"{right} ({right / n:.0%}) | {refused} | {wrong_tre.size}{worst} |"
        )
        out[name] = (wall, float(med))
    whys = {}
    for name, vals in rows.items():
        for _, _, why, _ in vals:
            if why:
                whys.setdefault((name, why.split(":")[0]), []).append(why)
    for (name, kind), items in sorted(whys.items()):
        print(f"- {name}: {len(items)} × {kind}, e.g. {items[0]}")
    return out


RATIO_PAIRS = (
    (OURS_LM_ONLY, SITK_LM_ONLY),
    (OURS_LM, SITK_LM_MI),
    (OURS_LC2, SITK_MI),
    (OURS_LC2, ELASTIX),
    (OURS_AUTO, SITK_MI),
)


def paired_ratios(rows: dict, ours: str, peer: str) -> np.ndarray:
    """Ours' time over the peer's, trial by trial (same start or landmarks).

    ``--init auto`` runs once per case, keyed as the case's first start. Trials where the
    peer raised (often before any work: too few landmarks for its initialiser) or ours
    stopped at its input checks are left out: their times measure no registration.
    """
    mine = {key: wall for _, wall, why, key in rows.get(ours, []) if not why.startswith("Input")}
    theirs = {key: wall for _, wall, why, key in rows.get(peer, []) if not why}
    keys = sorted(set(mine) & set(theirs))
    return np.array([mine[k] / theirs[k] for k in keys if theirs[k] > 0])


def ratios(summary: dict, rows: dict) -> None:
    print("\nTime ratios from this run (ours / peer; a ratio <= 0.1 meets #15's speed target):")
    for ours, peer in RATIO_PAIRS:
        if ours not in summary or peer not in summary or summary[peer][0] <= 0:
            continue
        r = summary[ours][0] / summary[peer][0]
        how = f"{1 / r:.1f}x faster" if r <= 1 else f"{r:.1f}x slower"
        pair = paired_ratios(rows, ours, peer)
        paired = (
            f"; paired per trial: median {np.median(pair):.3f}, "
            f"range {pair.min():.3f}–{pair.max():.3f} (n {pair.size})"
            if pair.size
            else ""
        )
        print(
            f"- {ours} / {peer}: {r:.3f} of the median times (ours {how}){paired}; "
            f"TRE median {summary[ours][1]:.3f} vs {summary[peer][1]:.3f} mm"
        )


def _elastix_version() -> str:
    from importlib.metadata import version

    return f"itk-elastix {version('itk-elastix')} (ITK {itk.__version__})"


def set_cases(name: str, cases: int, tmp: Path, cache: Path | None, validation: Path):
    """(title, cases) of one set, or (reason, None) where it cannot run."""
    if name in OWN_SEEDS:
        first = OWN_SEEDS[name]
        found = own_cases(first, cases, tmp)
        how = "defaults first chosen on these" if name == "own-tuning" else "never tuned on"
        return f"Own phantom, {name[4:]} seeds {first}–{first + cases - 1} ({how})", found
    if name == "phantom-a":
        if not validation.is_dir():
            return f"phantom-a: skipped, {validation} is absent", None
        found = validation_cases(validation)
        return f"phantom-a (`{validation}`, {len(found)} cases; report only)", found
    which = name.split("-", 1)[1]
    seeds = TUNING_SEEDS if which == "tuning" else REPORT_SEEDS
    found = family_set(which, cases, cache or tmp)
    how = "defaults may be chosen on these" if which == "tuning" else "never used for tuning"
    first = seeds[0]
    return f"Phantom family, {which} seeds {first}–{first + len(found) - 1} ({how})", found


def run(sets: list[str], cases: int, starts: int, seed: int, opts: argparse.Namespace) -> None:
    rng = np.random.default_rng(seed)
    print(
        f"sets {','.join(sets)}; starts within ±10 mm, ±10°, ±5 %; own-phantom landmark "
        f"noise {LANDMARK_NOISE_PX} px; elastix: "
        f"{_elastix_version() if HAVE_ELASTIX else ELASTIX_WHY}"
    )
    if not HAVE_ELASTIX:
        print(f"elastix row left out: {ELASTIX_WHY}")
    t_all = time.perf_counter()
    kept: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        loaded = [(n, *set_cases(n, cases, Path(tmp), opts.cache, opts.validation)) for n in sets]
        warm = next((found[0] for _, _, found in loaded if found), None)
        if warm is not None:  # Numba compilation and caches: one trial, not recorded
            trials(warm, 1, np.random.default_rng(12345), False, {})
        for name, title, found in loaded:
            if found is None:
                print(f"\n{title}")
                continue
            n_starts = opts.validation_starts if name == "phantom-a" else starts
            rows: dict = {}
            for case in found:
                trials(case, n_starts, rng, True, rows)
            heading = f"{title}: {len(found)} pairs × {n_starts} starts"
            ratios(table(heading, rows), rows)
            kept.append({"set": name, "title": heading, "rows": rows})
            if opts.json is not None:  # after every set: a stopped run keeps what it did
                write_text(opts.json, json.dumps({"sets": kept}, indent=1))
    print(f"\n{time.perf_counter() - t_all:.0f} s in all; load average {os.getloadavg()[0]:.1f}")


def reprint(path: Path) -> None:
    """The tables and ratios of a run saved with ``--json``, without running anything."""
    for kept in json.loads(Path(path).read_text())["sets"]:
        rows = {name: [tuple(r) for r in vals] for name, vals in kept["rows"].items()}
        ratios(table(kept["title"], rows), rows)


def metric_timing(reps: int = 20) -> None:
    rng = np.random.default_rng(0)
    from hybridfuse.registration.preprocess import masked_smooth

    fixed = masked_smooth(rng.normal(size=(600, 600)), np.ones((600, 600), bool), 3.0) * 100
    moving = masked_smooth(rng.normal(size=(512, 512)), np.ones((512, 512), bool), 2.0) * 50
    ctx = MetricContext.from_images(fixed, None, moving, None, n_bins=32)
    par = Parameterization(
        "affine",
        np.array([[1.02, 0.01, 30], [-0.01, 0.99, 25], [0, 0, 1.0]]),
        (256.0, 256.0),
        256.0,
    )
    h, dh = par.matrix_and_jacobian(np.zeros(6))
    print("\nOne metric evaluation at 512x512 samples (median of", reps, "):")
    for metric in ("mi", "ncc", "lc2", "ngf"):
        metric_cost(metric, ctx, h, dh)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            metric_cost(metric, ctx, h, dh)
            times.append(time.perf_counter() - t0)
        ours = np.median(times)
        if metric in ("lc2", "ngf"):  # SimpleITK has neither
            print(f"  {metric}: ours value+gradient {1e3 * ours:.1f} ms (no SimpleITK peer)")
            continue
        reg = sitk.ImageRegistrationMethod()
        if metric == "mi":
            reg.SetMetricAsMattesMutualInformation(32)
        else:
            reg.SetMetricAsCorrelation()
        reg.SetMetricSamplingStrategy(reg.NONE)
        reg.SetInterpolator(sitk.sitkLinear)
        tx = sitk.AffineTransform(2)
        tx.SetMatrix(h[:2, :2].ravel().tolist())
        tx.SetTranslation(h[:2, 2].tolist())
        reg.SetInitialTransform(tx)
        f_img, m_img = sitk.GetImageFromArray(moving), sitk.GetImageFromArray(fixed)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            reg.MetricEvaluate(f_img, m_img)
            times.append(time.perf_counter() - t0)
        peer = np.median(times)
        print(
            f"  {metric}: ours value+gradient {1e3 * ours:.1f} ms, SimpleITK value only "
            f"{1e3 * peer:.1f} ms, ratio ours/SimpleITK {ours / peer:.2f}"
        )


def tracking_benchmark(repeats: int = 5) -> None:
    """Frame-by-frame tracking along the sample clip: ours against a SimpleITK loop.

    Both start each frame from the previous answer, run one level (factor 2) and sample
    about 4,000 ultrasound pixels; both pay for their own feature images per frame.
    SimpleITK: Mattes MI, affine, L-BFGS-B with 10 iterations, random sampling.
    """
    from hybridfuse.registration.tracking import track_sequence
    from hybridfuse.testdata import sample_case
    from hybridfuse.testdata.phantom import load_truth

    case = sample_case()
    truth = load_truth(case)
    pairs = [p for p in truth["pairs"] if not p["edge_on"]]
    fixed = read_image(case / pairs[0]["fluoro_file"])
    moving = read_image(case / "us_clip.dcm")
    frames_f = {i: fixed.gray(i) for i in range(fixed.n_frames)}
    frames_m = {j: moving.gray(j) for j in range(moving.n_frames)}
    seq = [(p["fluoro_frame"], p["us_frame"]) for p in pairs] * repeats
    truths = [np.asarray(p["moving_to_fixed_pixel"]) for p in pairs] * repeats
    iso = fixed.xray.isocenter_spacing_mm[0]
    print(f"\nTracking: {len(seq)} frame pairs of the sample clip ({len(pairs)} pairs x {repeats})")

    def report(name, transforms, fps):
        tre = [
            np.median(tre_mm(t, h, moving.mask, iso))
            for t, h in zip(transforms, truths, strict=True)
        ]
        print(
            f"  {name:<34}{fps:>7.1f} pairs/s   per-frame TRE median {np.median(tre):.2f} mm, "
            f"max {np.max(tre):.2f} mm"
        )
        return fps

    ours = {}
    for metric, model in (("lc2", "projective"), ("mi", "projective")):
        opts = RegistrationOptions(metric=metric, model=model)
        kw = dict(fixed_mask=fixed.mask, moving_mask=moving.mask, options=opts)
        track_sequence(frames_f, frames_m, seq[:2], truths[0], **kw)  # warm-up
        res, fps = track_sequence(frames_f, frames_m, seq, truths[0], **kw)
        ours[(metric, model)] = report(f"ours {metric}, {model}", [r.transform for r in res], fps)

    current = truths[0]
    out = []
    ys_m, xs_m = np.nonzero(moving.mask)
    centre = np.array([[xs_m.mean(), ys_m.mean()]])
    t0 = time.perf_counter()
    for i, j in seq:
        f, m = frames_f[i], frames_m[j]
        scale = Transform(current).local_scales(centre).mean()
        ff, mf = preprocess_pair(f, fixed.mask, m, moving.mask, "structures", scale=scale)
        inv = np.linalg.inv(current)
        inv /= inv[2, 2]
        tx = sitk.AffineTransform(2)
        tx.SetMatrix(inv[:2, :2].ravel().tolist())
        tx.SetTranslation(inv[:2, 2].tolist())
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(32)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(min(1.0, 4000 / (f.size / 4)), seed=1)
        reg.SetMetricFixedMask(sitk.GetImageFromArray(fixed.mask.astype(np.uint8)))
        reg.SetMetricMovingMask(sitk.GetImageFromArray(moving.mask.astype(np.uint8)))
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-7, numberOfIterations=10)
        reg.SetShrinkFactorsPerLevel([2])
        reg.SetSmoothingSigmasPerLevel([1])
        reg.SetInitialTransform(tx, inPlace=True)
        try:
            reg.Execute(sitk.GetImageFromArray(ff), sitk.GetImageFromArray(mf))
        except RuntimeError:  # lost: keep the previous answer, counted in the TRE
            out.append(Transform(current))
            continue
        mat = np.eye(3)
        mat[:2, :2] = np.asarray(tx.GetMatrix()).reshape(2, 2)
        c = np.asarray(tx.GetCenter())
        mat[:2, 2] = np.asarray(tx.GetTranslation()) + c - mat[:2, :2] @ c
        current = np.linalg.inv(mat)
        out.append(Transform(current))
    peer = report("SimpleITK MI, affine", out, len(seq) / (time.perf_counter() - t0))
    print(
        f"  ratio ours (lc2, projective) / SimpleITK, pairs per second: "
        f"{ours[('lc2', 'projective')] / peer:.1f}"
    )


def _sets(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in SETS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown set {bad}; choose from {', '.join(SETS)}")
    return names


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=_sets, default=_sets(DEFAULT_SETS), help=", ".join(SETS))
    ap.add_argument("--cases", type=int, default=4, help="cases per family or own set")
    ap.add_argument("--starts", type=int, default=2, help="starts per family or own pair")
    ap.add_argument("--cache", type=Path, default=None, help="folder of family cases to reuse")
    ap.add_argument("--validation", type=Path, default=VALIDATION, help="phantom-a folder")
    ap.add_argument("--validation-starts", type=int, default=2, help="starts per phantom-a case")
    ap.add_argument("--seed", type=int, default=0, help="of the starts and landmark noise")
    ap.add_argument("--tracking-only", action="store_true", help="only the tracking section")
    ap.add_argument("--tracking", action="store_true", help="add the tracking section")
    ap.add_argument("--metric-timing", action="store_true", help="add one metric's timing")
    ap.add_argument("--json", type=Path, default=None, help="also write every trial's row here")
    ap.add_argument("--from-json", type=Path, default=None, help="reprint a --json run's tables")
    args = ap.parse_args()
    if args.from_json is not None:
        reprint(args.from_json)
        sys.exit(0)
    print_header()
    if not args.tracking_only:
        run(args.sets, args.cases, args.starts, args.seed, args)
        if args.metric_timing:
            metric_timing()
    if args.tracking or args.tracking_only:
        tracking_benchmark()

"""The verdict on the landmark and automatic routes: held-out pairs and the predicted TRE.

Landmarks are drawn on the sample case's first lateral pair from its true transform, so
every figure here is checked against the truth: a wrong pair that the rejection keeps is
refused, right pairs are accepted, and the predicted 90th-percentile TRE covers the true
TRE on noise draws that played no part in calibrating it (the sample is seed 1; the
factor was chosen on seeds 100-103).
"""

import numpy as np
import pytest

from hybridfuse.fusion import read_image
from hybridfuse.fusion.coregister import register_images
from hybridfuse.registration import Landmarks, RegistrationOptions, Transform
from hybridfuse.registration.errors import UnverifiedResultError
from hybridfuse.registration.verify_landmarks import landmark_check
from hybridfuse.testdata import sample_case
from hybridfuse.testdata.phantom import load_truth


@pytest.fixture(scope="module")
def pair():
    """The sample case's first lateral pair: fluoroscopy, ultrasound, frames, truth."""
    folder = sample_case()
    p = next(p for p in load_truth(folder)["pairs"] if not p["edge_on"])
    fixed = read_image(folder / p["fluoro_file"])
    return fixed, read_image(folder / "us_clip.dcm"), p, np.asarray(p["moving_to_fixed_pixel"])


def _grid(mask, n=12):
    ys, xs = np.nonzero(mask)
    gx, gy = np.meshgrid(np.linspace(xs.min(), xs.max(), n), np.linspace(ys.min(), ys.max(), n))
    return np.column_stack([gx.ravel(), gy.ravel()])


def _tre_mm(h, true, mask, fixed):
    grid = _grid(mask)
    d = np.linalg.norm(Transform(h).apply(grid) - Transform(true).apply(grid), axis=1)
    return float(np.median(d)) * fixed.xray.isocenter_spacing_mm[0]


def _clicks(mask, true, rng, n, noise_px):
    """``n`` pairs spread over the ultrasound region, the fixed side clicked with noise."""
    ys, xs = np.nonzero(mask)
    pick = rng.choice(len(xs), n, replace=False)
    moving = np.column_stack([xs[pick], ys[pick]]).astype(float)
    fixed = Transform(true).apply(moving) + rng.normal(0, noise_px, (n, 2))
    return moving, fixed


def _register(pair, moving, fixed_xy, **values):
    fixed, us, p, _ = pair
    lm = Landmarks(moving, fixed_xy, tuple(f"p{k}" for k in range(len(moving))))
    return register_images(
        fixed,
        us,
        fixed_frame=p["fluoro_frame"],
        moving_frame=p["us_frame"],
        landmarks=lm,
        options=RegistrationOptions().with_values(**values),
    )


def test_a_wrong_pair_the_rejection_keeps_is_refused(pair):
    fixed, us, _, true = pair
    moving, fixed_xy = _clicks(us.mask, true, np.random.default_rng(5), 8, 0.5)
    fixed_xy[3] += (36.0, -28.0)  # one pair clicked on the wrong structure
    # A lenient rejection threshold keeps it: the fit absorbs it and is wrong. The clicks
    # stay as placed: one lies 1 mm beside a bead and would move onto it.
    values = dict(metric=None, model="affine", reject_threshold_px=60.0, snap_to_beads_mm=None)
    result = _register(pair, moving, fixed_xy, accept_unverified=True, **values)
    assert _tre_mm(result.transform.matrix, true, us.mask, fixed) >= 2.0
    q = result.quality
    assert q.verdict == "refused" and q.accepted_unverified is True
    assert any("landmark p3 lies" in r for r in q.reasons), q.reasons
    with pytest.raises(UnverifiedResultError, match="landmark p3"):
        _register(pair, moving, fixed_xy, **values)


def test_right_pairs_are_accepted_with_a_bound_that_holds(pair):
    fixed, us, _, true = pair
    moving, fixed_xy = _clicks(us.mask, true, np.random.default_rng(6), 8, 0.5)
    result = _register(pair, moving, fixed_xy, metric=None)
    q = result.quality
    assert q.verdict == "accepted" and q.reasons == []
    assert q.verification["evidence"] == "landmarks"
    v = q.verification
    assert v["loo_statistic_max"] < v["loo_statistic_limit"]
    assert _tre_mm(result.transform.matrix, true, us.mask, fixed) <= q.predicted_tre_mm


@pytest.mark.parametrize("noise_px", [0.5, 3.0])
def test_predicted_tre_covers_the_true_tre_on_untuned_draws(pair, noise_px):
    fixed, us, _, true = pair
    rng = np.random.default_rng(int(noise_px * 10) + 1000)
    covered, accepted = 0, 0
    for _ in range(30):
        moving, fixed_xy = _clicks(us.mask, true, rng, int(rng.integers(5, 13)), noise_px)
        result = _register(pair, moving, fixed_xy, metric=None, accept_unverified=True)
        if result.quality.verdict != "accepted":
            continue
        accepted += 1
        tre = _tre_mm(result.transform.matrix, true, us.mask, fixed)
        covered += tre <= result.quality.predicted_tre_mm
    assert accepted >= 25
    assert covered >= 0.85 * accepted, (covered, accepted)


def test_held_out_figures_match_refitting_without_each_pair():
    # The closed-form held-out error of an affine fit equals an explicit refit.
    rng = np.random.default_rng(3)
    moving = rng.uniform(0, 200, (9, 2))
    h = np.array([[1.1, 0.2, 30.0], [-0.15, 0.95, 12.0], [0, 0, 1]])
    fixed = Transform(h).apply(moving) + rng.normal(0, 1.0, (9, 2))
    fixed[4] += (9.0, 0.0)
    names = tuple(f"p{k}" for k in range(9))
    fit = _affine(moving, fixed)
    out = landmark_check(
        Transform(fit, "affine"), Landmarks(moving, fixed, names), None, 1.0, moving, 0.3
    )
    keep = np.arange(9) != 4
    refit = _affine(moving[keep], fixed[keep])
    expected = np.linalg.norm(Transform(refit).apply(moving[4:5])[0] - fixed[4])
    assert out["loo_worst_pair"] == "p4"
    assert out["loo_worst_px"] == pytest.approx(expected, rel=1e-6)


def _affine(src, dst):
    a = np.column_stack([src, np.ones(len(src))])
    sol = np.linalg.lstsq(a, dst, rcond=None)[0]
    return np.vstack([sol.T, [0, 0, 1]])


def test_too_few_pairs_are_checked_by_the_images(pair):
    fixed, us, _, true = pair
    moving, fixed_xy = _clicks(us.mask, true, np.random.default_rng(8), 3, 0.3)
    # Three pairs fit an affine exactly: even right, nothing checks them (refused, marked).
    right = _register(pair, moving, fixed_xy, accept_unverified=True)
    q = right.quality
    assert q.verdict == "refused" and q.accepted_unverified is True
    assert any("fit the affine model exactly" in r for r in q.reasons)
    assert q.verification["intensity_agrees"] is True
    assert _tre_mm(right.transform.matrix, true, us.mask, fixed) <= q.predicted_tre_mm
    # The same three clicks 25 px off on the fluoroscopy side: the images disagree too.
    wrong = _register(pair, moving, fixed_xy + (25.0, 0.0), accept_unverified=True)
    assert _tre_mm(wrong.transform.matrix, true, us.mask, fixed) >= 2.0
    assert wrong.quality.verdict == "refused"
    assert wrong.quality.verification["intensity_agrees"] is False
    assert any("the images disagree" in r for r in wrong.quality.reasons)

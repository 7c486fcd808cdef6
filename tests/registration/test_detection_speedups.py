"""The faster computations inside needle and bead detection give the same numbers.

Each replaced computation is compared with the one it replaced, written here as it was:
``rng.choice`` for the RANSAC pairs, ``np.maximum.at`` for a line's support, the argmax
over every run, ``np.unique`` for a stretch's cover and ``distance_transform_edt`` for
the distance of a needle's end from the mask's border.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

from hybridfuse.registration import features, needle


def _support_as_was(s: np.ndarray, snr: np.ndarray) -> float:
    bins = np.floor((s - s.min()) / 0.5).astype(int)
    best = np.zeros(bins.max() + 1)
    np.maximum.at(best, bins, np.minimum(snr, needle.SNR_CAP))
    return float(best.sum())


@pytest.mark.parametrize("seed", range(15))
def test_pairs_are_rng_choice_draw_for_draw(seed):
    g = np.random.default_rng(seed)
    n = int(g.integers(2, 400))
    w = g.random(n) ** 6
    w[g.integers(0, n)] += 40.0 * w.sum()  # one point drawn twice often: the redraw path
    p = w / w.sum()
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    ours, numpy_s = np.random.default_rng(seed + 99), np.random.default_rng(seed + 99)
    for _ in range(200):
        expected = numpy_s.choice(n, 2, replace=False, p=p)
        assert needle._pair(ours, cdf, p) == tuple(int(v) for v in expected)
    assert ours.random() == numpy_s.random()  # and the generators stay in step


def test_redraw_path_is_taken():
    """The test above reaches the redraw: the heavy point comes up twice in a row."""
    p = np.array([0.98, 0.01, 0.01])
    cdf = np.cumsum(p) / p.sum()
    probe = np.random.default_rng(1)
    twice = sum(
        np.searchsorted(cdf, probe.random(2), "right").tolist() == [0, 0] for _ in range(50)
    )
    assert twice > 30
    rng, ref = np.random.default_rng(1), np.random.default_rng(1)
    for _ in range(50):
        assert needle._pair(rng, cdf, p) == tuple(int(v) for v in ref.choice(3, 2, False, p))


@pytest.mark.parametrize("seed", range(30))
def test_support_cover_and_best_run_as_were(seed):
    g = np.random.default_rng(seed)
    s = np.sort(np.r_[g.uniform(0, 30, g.integers(5, 300)), g.uniform(40, 45, 8)])
    snr = g.uniform(needle.MIN_EDGE_SNR, 4 * needle.SNR_CAP, len(s))
    assert needle._support(s, snr) == _support_as_was(s, snr)
    breaks = np.flatnonzero(np.diff(s) > needle.MAX_GAP_MM)
    starts, ends = np.r_[0, breaks + 1], np.r_[breaks + 1, len(s)]
    supports = [_support_as_was(s[a:b], snr[a:b]) for a, b in zip(starts, ends, strict=True)]
    assert needle._best_run(s, snr, starts, ends) == int(np.argmax(supports))


def test_longest_run_and_ransac_unchanged_on_a_line():
    """A whole RANSAC on a noisy line with clutter: the segment the old code found."""
    g = np.random.default_rng(5)
    t = g.uniform(0, 40, 300)
    line = np.c_[10 + t * 0.8, 5 + t * 0.6] + g.normal(0, 0.1, (300, 2))
    pts = np.r_[line, g.uniform(0, 50, (700, 2))]
    along = np.r_[np.tile([0.8, 0.6], (300, 1)), g.normal(size=(700, 2))]
    along /= np.linalg.norm(along, axis=1, keepdims=True)
    snr = g.uniform(5, 30, len(pts))
    a, b, strength = needle._ransac_segment(pts, snr, along, np.random.default_rng(0))
    assert np.linalg.norm(a - (10, 5)) < 1.5 and np.linalg.norm(b - (42, 29)) < 1.5
    old = _ransac_as_was(pts, snr, along, np.random.default_rng(0))
    assert np.array_equal(a, old[0]) and np.array_equal(b, old[1]) and strength == old[2]


def _ransac_as_was(pts, snr, along, rng):
    p = snr / snr.sum()
    capped = np.clip(snr, 0.0, needle.SNR_CAP)
    best = None
    for _ in range(needle.RANSAC_TRIALS):
        i, j = rng.choice(len(pts), 2, replace=False, p=p)
        d = pts[j] - pts[i]
        length = float(np.hypot(*d))
        if length < 2.0:
            continue
        u = d / length
        on = np.abs((pts - pts[i]) @ np.array([-u[1], u[0]])) < needle.LINE_TOL_MM
        on &= np.abs(along @ u) > np.cos(np.radians(15.0))
        if best is not None and capped[on].sum() * (1 + 1e-9) <= best[2]:
            continue
        seg = _longest_run_as_was(pts[on], snr[on], pts[i], u)
        if seg is not None and (best is None or seg[2] > best[2]):
            best = seg
    return best


def _longest_run_as_was(pts, snr, origin, u):
    if len(pts) < 5:
        return None
    s = (pts - origin) @ u
    order = np.argsort(s)
    s, pts, snr = s[order], pts[order], snr[order]
    breaks = np.flatnonzero(np.diff(s) > needle.MAX_GAP_MM)
    starts, ends = np.r_[0, breaks + 1], np.r_[breaks + 1, len(s)]
    runs = zip(starts, ends, strict=True)
    k = int(np.argmax([_support_as_was(s[a:b], snr[a:b]) for a, b in runs]))
    a, b = starts[k], ends[k]
    length = s[b - 1] - s[a]
    if length < needle.MIN_LENGTH_MM:
        return None
    if len(np.unique(np.floor((s[a:b] - s[a]) / 0.5))) * 0.5 / length < needle.MIN_COVER:
        return None
    seg = pts[a:b]
    c = seg.mean(axis=0)
    v = np.linalg.svd(seg - c, full_matrices=False)[2][0]
    t = (seg - c) @ v
    return c + t.min() * v, c + t.max() * v, _support_as_was(s[a:b], snr[a:b])


@pytest.mark.parametrize("seed", range(12))
def test_border_distance_is_the_distance_transform(seed):
    g = np.random.default_rng(seed)
    h, w = (int(v) for v in g.integers(5, 90, 2))
    yy, xx = np.indices((h, w))
    valid = ((yy - h / 2) / (h / 2.2)) ** 2 + ((xx - w / 2) / (w / 2.1)) ** 2 < 1
    if seed % 3 == 0:
        valid = g.random((h, w)) > 0.05
    if seed % 4 == 1:
        valid[:] = True  # no invalid pixel: the transform's own figures
    spacing = g.uniform(0.05, 0.5, 2)
    ref = distance_transform_edt(valid, sampling=spacing)
    depth = needle._border_distance_mm(valid, spacing)
    for p in g.uniform(-3, max(h, w) + 3, (30, 2)):
        x, y = int(np.clip(round(p[0]), 0, w - 1)), int(np.clip(round(p[1]), 0, h - 1))
        assert depth(p) == pytest.approx(ref[y, x], abs=1e-12)


def test_hessian_as_was():
    g = np.random.default_rng(3)
    smooth = g.normal(size=(40, 50))
    sigma = np.array([1.3, 0.9])
    gy, gx = np.gradient(smooth)
    dyy, dyx = np.gradient(gy)
    dxx = np.gradient(gx)[1]
    s2 = float(sigma[0] * sigma[1])
    for got, was in zip(features._hessian(smooth, sigma), (dyy, dyx, dxx), strict=True):
        assert np.array_equal(got, was * s2)

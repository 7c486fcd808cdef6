"""Plain-NumPy twins of the Numba kernels, written for clarity, not speed."""

import numpy as np


def bilinear(img, x, y):
    rows, cols = img.shape
    if not (0 <= x <= cols - 1 and 0 <= y <= rows - 1):
        return np.nan
    x0, y0 = min(int(x), cols - 2), min(int(y), rows - 2)
    fx, fy = x - x0, y - y0
    top = img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx
    bottom = img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def warp(img, mask, h, xs, ys):
    b = np.full(len(xs), np.nan)
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        u = h @ [x, y, 1.0]
        if u[2] <= 0:
            continue
        fx, fy = u[0] / u[2], u[1] / u[2]
        v = bilinear(img, fx, fy)
        if np.isnan(v) or not mask[int(fy + 0.5), int(fx + 0.5)]:
            continue
        b[i] = v
    return b


def ncc(a, b):
    ok = ~np.isnan(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def bspline3(u):
    u = np.abs(u)
    return np.where(u < 1, (4 - 6 * u**2 + 3 * u**3) / 6, np.where(u < 2, (2 - u) ** 3 / 6, 0.0))


def mattes_mi(a, b, n_bins):
    """ITK v4 Mattes MI: zero-order bins for a, cubic Parzen window for b."""
    ok = ~np.isnan(b)
    a, b = a[ok], b[ok]
    pad = 2
    a_size = (a.max() - a.min()) / (n_bins - 2 * pad)
    a_norm = a.min() / a_size - pad
    fixed_bin = np.clip(np.floor(a / a_size - a_norm), pad, n_bins - pad - 1).astype(int)
    return fixed_bin, a_size


def parzen_joint(b, fixed_bin, n_bins, b_min, b_max):
    """Joint histogram: zero-order bins for the fixed side, cubic Parzen for b."""
    ok = ~np.isnan(b)
    pad = 2
    size = (b_max - b_min) / (n_bins - 2 * pad)
    norm = b_min / size - pad
    joint = np.zeros((n_bins, n_bins))
    for fb, v in zip(fixed_bin[ok], b[ok], strict=True):
        term = v / size - norm
        start = min(max(int(np.floor(term)) - 1, 0), n_bins - 4)
        for k in range(start, start + 4):
            joint[fb, k] += bspline3(k - term)
    return joint / joint.sum()


def mattes_mi_value(a, b, fixed_bin, n_bins, b_min, b_max):
    p = parzen_joint(b, fixed_bin, n_bins, b_min, b_max)
    pf, pm = p.sum(axis=1), p.sum(axis=0)
    nz = p > 0
    outer = np.outer(pf, pm)
    return float(np.sum(p[nz] * np.log(p[nz] / outer[nz])))


def nmi_value(a, b, fixed_bin, n_bins, b_min, b_max):
    """Studholme NMI on the Mattes Parzen histogram."""
    p = parzen_joint(b, fixed_bin, n_bins, b_min, b_max)

    def entropy(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    return (entropy(p.sum(axis=1)) + entropy(p.sum(axis=0))) / entropy(p.ravel())

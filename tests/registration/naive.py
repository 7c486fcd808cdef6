"""Plain-NumPy twins of the Numba kernels, written for clarity, not speed."""

import numpy as np

from hybridfuse.registration.transforms import N_PARAMS, TransformModel


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


def warped_gradient(gx, gy, h, xs, ys, delta=1e-5):
    """J_T(x)ᵀ ∇F(T(x)), the Jacobian J_T by central differences of the mapping."""

    def t(x, y):
        u = h @ [x, y, 1.0]
        return u[:2] / u[2]

    out = np.full((len(xs), 2), np.nan)
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        fx, fy = t(x, y)
        grad_f = np.array([bilinear(gx, fx, fy), bilinear(gy, fx, fy)])
        jac = np.column_stack(
            [
                (t(x + delta, y) - t(x - delta, y)) / (2 * delta),
                (t(x, y + delta) - t(x, y - delta)) / (2 * delta),
            ]
        )
        out[i] = jac.T @ grad_f
    return out


def ngf_value(moving_grad, warped_grad, eps_m, eps_f):
    """Mean squared cosine of ε-regularised gradient pairs (valid rows only)."""
    ok = ~np.isnan(warped_grad[:, 0])
    m, g = moving_grad[ok], warped_grad[ok]
    dot = np.sum(m * g, axis=1)
    norm_m = np.sqrt(np.sum(m**2, axis=1) + eps_m**2)
    norm_g = np.sqrt(np.sum(g**2, axis=1) + eps_f**2)
    return float(np.mean((dot / (norm_m * norm_g)) ** 2))


def lc2_value(u, b, g, patch, ridge_b, ridge_g, min_count=8):
    """Wein's variance-weighted LC2 with a ridge, patch by patch via lstsq."""
    num = den = 0.0
    for p in np.unique(patch):
        sel = (patch == p) & ~np.isnan(b)
        n = sel.sum()
        if n < min_count or np.var(u[sel]) == 0:
            continue
        design = np.column_stack([b[sel] - b[sel].mean(), g[sel] - g[sel].mean()])
        design = np.vstack([design, np.diag([np.sqrt(ridge_b * n), np.sqrt(ridge_g * n)])])
        target = np.concatenate([u[sel] - u[sel].mean(), [0.0, 0.0]])
        coef = np.linalg.lstsq(design, target, rcond=None)[0]
        resid = float(np.sum((target - design @ coef) ** 2))
        total = float(np.sum((u[sel] - u[sel].mean()) ** 2))
        num += resid / n
        den += total / n
    return 1.0 - num / den


def shadow_weight(smoothed, mask, background, lo, hi):
    """Window mean below each pixel over its background, clipped; 1 where unknown."""
    rows, cols = smoothed.shape
    out = np.ones((rows, cols))
    for y in range(rows):
        a, b = min(y + lo, rows), min(y + hi + 1, rows)
        for x in range(cols):
            inside = mask[a:b, x]
            if inside.sum() >= 0.5 * (hi - lo + 1) and background[y, x] > 1e-12:
                mean = smoothed[a:b, x][inside].mean()
                out[y, x] = np.clip(mean / background[y, x], 0.0, 1.0)
    return out


def param_delta(model, p):
    """D(p) and dD/dp (K, 3, 3) of the centred parameterisation (twin of the kernel's)."""
    model = TransformModel(model)
    k = N_PARAMS[model]
    dd = np.zeros((k, 3, 3))
    d = np.eye(3)
    if model in (TransformModel.RIGID, TransformModel.SIMILARITY):
        if model is TransformModel.RIGID:
            s, (theta, tx, ty), off = 1.0, p, 0
        else:
            s, theta, tx, ty = np.exp(p[0]), p[1], p[2], p[3]
            off = 1
        c, sn = np.cos(theta), np.sin(theta)
        d[:2, :2] = s * np.array([[c, -sn], [sn, c]])
        d[0, 2], d[1, 2] = tx, ty
        if off:
            dd[0, :2, :2] = d[:2, :2]  # d/d(log s)
        dd[off, :2, :2] = s * np.array([[-sn, -c], [c, -sn]])
        dd[off + 1, 0, 2] = 1.0
        dd[off + 2, 1, 2] = 1.0
        return d, dd
    a, b, c, e, tx, ty = p[:6]
    d[:2] = [[1 + a, b, tx], [c, 1 + e, ty]]
    for i, (r, col) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (1, 2))):
        dd[i, r, col] = 1.0
    if model is TransformModel.PROJECTIVE:
        d[2, 0], d[2, 1] = p[6], p[7]
        dd[6, 2, 0] = 1.0
        dd[7, 2, 1] = 1.0
    return d, dd

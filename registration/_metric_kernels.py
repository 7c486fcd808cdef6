"""Numba kernels of the intensity metrics: sampling at mapped points, the costs, gradients.

Conventions: images are float64 (rows, cols); points are (x = column, y = row) pixel
coordinates; a homography ``h`` maps moving points to fixed-image points; ``dh`` is its
derivative with respect to the K transform parameters, shape (K, 3, 3).
Costs are to be minimised (−NCC, −MI), as in ITK. Only :mod:`registration.metrics` calls
these; the parallel kernels carry serial twins (:mod:`registration._numba`), and their
reductions run in fixed blocks so that both give the same bits.
"""

from __future__ import annotations

import numpy as np

from ._numba import BLOCK, jit, jit_parallel, prange

# --------------------------------------------------------------------------------------
# Sampling the fixed image at transformed points
# --------------------------------------------------------------------------------------


@jit
def bilinear(img, x, y):
    """Bilinear value and its exact x/y derivatives; (nan, 0, 0) outside the image."""
    rows, cols = img.shape
    if not (x >= 0.0 and y >= 0.0 and x <= cols - 1.0 and y <= rows - 1.0):
        return np.nan, 0.0, 0.0
    x0 = min(int(x), cols - 2)
    y0 = min(int(y), rows - 2)
    fx = x - x0
    fy = y - y0
    v00 = img[y0, x0]
    v01 = img[y0, x0 + 1]
    v10 = img[y0 + 1, x0]
    v11 = img[y0 + 1, x0 + 1]
    value = (v00 * (1 - fx) + v01 * fx) * (1 - fy) + (v10 * (1 - fx) + v11 * fx) * fy
    gx = (v01 - v00) * (1 - fy) + (v11 - v10) * fy
    gy = (v10 - v00) * (1 - fx) + (v11 - v01) * fx
    return value, gx, gy


@jit
def map_point(h, x, y):
    """(fx, fy, w): ``h``·(x, y, 1) in pixels; w <= 0 (behind the source) is invalid."""
    u0 = h[0, 0] * x + h[0, 1] * y + h[0, 2]
    u1 = h[1, 0] * x + h[1, 1] * y + h[1, 2]
    u2 = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    if u2 <= 0.0:
        return 0.0, 0.0, u2
    return u0 / u2, u1 / u2, u2


@jit
def in_mask(mask, fx, fy):
    """Whether the pixel nearest to (fx, fy) lies in ``mask``.

    Call it after :func:`bilinear` found the point inside the image.
    """
    rows, cols = mask.shape
    r = int(fy + 0.5)
    c = int(fx + 0.5)
    return r >= 0 and c >= 0 and r < rows and c < cols and mask[r, c] != 0


@jit
def map_derivative(dh, j, x, y, fx, fy, w):
    """d(fx, fy)/dp_j for the point (x, y), given its image (fx, fy, w)."""
    d0 = dh[j, 0, 0] * x + dh[j, 0, 1] * y + dh[j, 0, 2]
    d1 = dh[j, 1, 0] * x + dh[j, 1, 1] * y + dh[j, 1, 2]
    d2 = dh[j, 2, 0] * x + dh[j, 2, 1] * y + dh[j, 2, 2]
    return (d0 - fx * d2) / w, (d1 - fy * d2) / w, d2


@jit_parallel
def warp_points(img, mask, h, dh, xs, ys, out_b, out_db, out_valid):
    """Sample ``img`` at ``h``·(xs, ys) with the derivative of each sample w.r.t. parameters.

    ``mask`` (uint8, same shape as ``img``) marks where the fixed image is valid
    (nearest pixel); points outside it or outside the image are marked invalid.
    """
    n = xs.shape[0]
    k = dh.shape[0]
    for i in prange(n):
        x = xs[i]
        y = ys[i]
        out_valid[i] = False
        out_b[i] = 0.0
        for j in range(k):
            out_db[i, j] = 0.0
        fx, fy, w = map_point(h, x, y)
        if w <= 0.0:
            continue
        value, gx, gy = bilinear(img, fx, fy)
        if value != value or not in_mask(mask, fx, fy):
            continue
        out_valid[i] = True
        out_b[i] = value
        for j in range(k):
            dfx, dfy, _ = map_derivative(dh, j, x, y, fx, fy, w)
            out_db[i, j] = gx * dfx + gy * dfy


@jit_parallel
def warp_values_pair(img, img2, mask, h, xs, ys, out, out_valid):
    """Two images of one grid sampled at ``h``·(xs, ys), for gradients taken through H.

    ``out`` (N, 9) receives per sample: value and x/y derivative of ``img`` (0-2), the
    same for ``img2`` (3-5), the mapped point fx, fy (6-7) and the homogeneous scale w
    (8). A cost's derivative with respect to H then needs only a 3×3 accumulator
    (:func:`chain_to_h`), whatever the number of transform parameters.
    """
    n = xs.shape[0]
    for i in prange(n):
        out_valid[i] = False
        for c in range(9):
            out[i, c] = 0.0
        fx, fy, u2 = map_point(h, xs[i], ys[i])
        if u2 <= 0.0:
            continue
        value, gx, gy = bilinear(img, fx, fy)
        if value != value or not in_mask(mask, fx, fy):
            continue
        value2, gx2, gy2 = bilinear(img2, fx, fy)
        out_valid[i] = True
        out[i, 0] = value
        out[i, 1] = gx
        out[i, 2] = gy
        out[i, 3] = value2
        out[i, 4] = gx2
        out[i, 5] = gy2
        out[i, 6] = fx
        out[i, 7] = fy
        out[i, 8] = u2


@jit
def chain_to_h(acc, ex, ey, fx, fy, w, x, y):
    """Add one sample's d cost/d(fx, fy) = (ex, ey) to the 3×3 d cost/dH accumulator.

    With fx = (H0·X)/(H2·X): dfx/dH0 = X/w, dfx/dH2 = −fx X/w (and likewise fy).
    """
    a = ex / w
    b = ey / w
    c = -(ex * fx + ey * fy) / w
    acc[0, 0] += a * x
    acc[0, 1] += a * y
    acc[0, 2] += a
    acc[1, 0] += b * x
    acc[1, 1] += b * y
    acc[1, 2] += b
    acc[2, 0] += c * x
    acc[2, 1] += c * y
    acc[2, 2] += c


# --------------------------------------------------------------------------------------
# Normalised cross-correlation
# --------------------------------------------------------------------------------------


@jit_parallel
def ncc_cost(a, b, db, valid):
    """Cost −NCC between fixed-domain samples ``a`` and warped samples ``b``, and gradient."""
    n = a.shape[0]
    k = db.shape[1]
    nblk = (n + BLOCK - 1) // BLOCK
    part = np.zeros((nblk, 6))
    for blk in prange(nblk):
        for i in range(blk * BLOCK, min(n, (blk + 1) * BLOCK)):
            if valid[i]:
                part[blk, 0] += 1.0
                part[blk, 1] += a[i]
                part[blk, 2] += b[i]
    cnt = 0.0
    sa = 0.0
    sb = 0.0
    for blk in range(nblk):
        cnt += part[blk, 0]
        sa += part[blk, 1]
        sb += part[blk, 2]
    grad = np.zeros(k)
    if cnt < 2:
        return np.nan, grad, cnt
    ma = sa / cnt
    mb = sb / cnt
    for blk in prange(nblk):
        for i in range(blk * BLOCK, min(n, (blk + 1) * BLOCK)):
            if valid[i]:
                da = a[i] - ma
                dbv = b[i] - mb
                part[blk, 3] += da * dbv
                part[blk, 4] += da * da
                part[blk, 5] += dbv * dbv
    sab = 0.0
    saa = 0.0
    sbb = 0.0
    for blk in range(nblk):
        sab += part[blk, 3]
        saa += part[blk, 4]
        sbb += part[blk, 5]
    if saa <= 0.0 or sbb <= 0.0:
        return np.nan, grad, cnt
    rho = sab / np.sqrt(saa * sbb)
    inv = 1.0 / np.sqrt(saa * sbb)
    gpart = np.zeros((nblk, k))
    for blk in prange(nblk):
        for i in range(blk * BLOCK, min(n, (blk + 1) * BLOCK)):
            if valid[i]:
                # d rho / d b_i = (a_i - ma)/sqrt(saa sbb) - rho (b_i - mb)/sbb
                w = (a[i] - ma) * inv - rho * (b[i] - mb) / sbb
                for j in range(k):
                    gpart[blk, j] += w * db[i, j]
    for blk in range(nblk):
        for j in range(k):
            grad[j] -= gpart[blk, j]
    return -rho, grad, cnt


# --------------------------------------------------------------------------------------
# Mattes mutual information (cubic B-spline Parzen window on the warped image)
# --------------------------------------------------------------------------------------


@jit
def bspline3(u):
    """Cubic B-spline kernel."""
    au = abs(u)
    if au < 1.0:
        return (4.0 - 6.0 * au * au + 3.0 * au * au * au) / 6.0
    if au < 2.0:
        t = 2.0 - au
        return t * t * t / 6.0
    return 0.0


@jit
def bspline3_deriv(u):
    """Derivative of the cubic B-spline kernel."""
    au = abs(u)
    if au < 1.0:
        return -2.0 * u + 1.5 * u * au
    if au < 2.0:
        t = 2.0 - au
        return -0.5 * t * t if u > 0 else 0.5 * t * t
    return 0.0


@jit
def parzen_window(value, b_norm_min, b_bin_size, n_bins):
    """Bin position of ``value`` and the first of the 4 bins its cubic window covers.

    ITK's binning: the window always stays inside the padded histogram.
    """
    term = value / b_bin_size - b_norm_min
    start = int(np.floor(term)) - 1
    return term, min(max(start, 0), n_bins - 4)


@jit
def add_parzen(joint, row, value, b_norm_min, b_bin_size, n_bins):
    """Add ``value``'s cubic Parzen window to ``joint[row]`` (as :func:`parzen_window`).

    Inside the histogram the four weights are the cubic B-spline's segments at the
    fractional bin position t, in closed form; the batch search adds millions of
    windows, and evaluating :func:`bspline3` four times with its branches took a third
    of its time. Where ITK's binning clamps the window, the general form is used.
    """
    term = value / b_bin_size - b_norm_min
    low = np.floor(term)
    start = int(low) - 1
    if start < 0 or start > n_bins - 4:
        start = min(max(start, 0), n_bins - 4)
        for kk in range(start, start + 4):
            joint[row, kk] += bspline3(kk - term)
        return
    t = term - low
    t2 = t * t
    t3 = t2 * t
    joint[row, start] += (1.0 - t) * (1.0 - t) * (1.0 - t) / 6.0
    joint[row, start + 1] += (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0
    joint[row, start + 2] += (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0
    joint[row, start + 3] += t3 / 6.0


@jit
def joint_block(part, blk, fixed_bin, b, valid, n_bins, b_norm_min, b_bin_size):
    """Add block ``blk``'s samples' cubic Parzen windows to its histogram ``part[blk]``."""
    n = b.shape[0]
    for i in range(blk * BLOCK, min(n, (blk + 1) * BLOCK)):
        if not valid[i]:
            continue
        term, start = parzen_window(b[i], b_norm_min, b_bin_size, n_bins)
        fb = fixed_bin[i]
        for kk in range(start, start + 4):
            part[blk, fb, kk] += bspline3(kk - term)


@jit
def sum_blocks(part):
    """The joint histogram: the blocks' histograms summed in block order."""
    nblk, n_bins = part.shape[0], part.shape[1]
    joint = np.zeros((n_bins, n_bins))
    for blk in range(nblk):
        for i in range(n_bins):
            for j in range(n_bins):
                joint[i, j] += part[blk, i, j]
    return joint


@jit_parallel
def mattes_joint(fixed_bin, b, valid, n_bins, b_norm_min, b_bin_size):
    """Joint histogram (n_bins × n_bins) with a cubic Parzen window on ``b``.

    The costs below build it with the same two helpers inside their own ``prange`` loop:
    their serial twins calling this parallel kernel would wake the threads anyway.
    """
    n = b.shape[0]
    nblk = (n + BLOCK - 1) // BLOCK
    part = np.zeros((nblk, n_bins, n_bins))
    for blk in prange(nblk):
        joint_block(part, blk, fixed_bin, b, valid, n_bins, b_norm_min, b_bin_size)
    return sum_blocks(part)


@jit
def mi_from_joint(joint):
    """MI of a joint histogram and the log-ratio table log(p / p_moving), serially.

    Kept out of parallel kernels on purpose: there Numba would turn reductions such as
    ``joint.sum()`` into thread-dependent partial sums, and results would change with
    the number of threads.
    """
    n_bins = joint.shape[0]
    total = 0.0
    for i in range(n_bins):
        for j in range(n_bins):
            total += joint[i, j]
    ratio = np.zeros((n_bins, n_bins))
    if total <= 0.0:
        return np.nan, ratio
    pf = np.zeros(n_bins)
    pm = np.zeros(n_bins)
    for i in range(n_bins):
        for j in range(n_bins):
            pf[i] += joint[i, j] / total
            pm[j] += joint[i, j] / total
    eps = 2.220446049250313e-16
    mi = 0.0
    for i in range(n_bins):
        for j in range(n_bins):
            pij = joint[i, j] / total
            if pij > eps and pm[j] > eps:
                ratio[i, j] = np.log(pij / pm[j])
                if pf[i] > eps:
                    mi += pij * (ratio[i, j] - np.log(pf[i]))
    return mi, ratio


@jit_parallel
def mattes_cost(fixed_bin, b, db, valid, n_bins, b_norm_min, b_bin_size):
    """Cost −MI (Mattes et al.) and its gradient w.r.t. the transform parameters."""
    n = b.shape[0]
    k = db.shape[1]
    nblk = (n + BLOCK - 1) // BLOCK
    part = np.zeros((nblk, n_bins, n_bins))
    for blk in prange(nblk):
        joint_block(part, blk, fixed_bin, b, valid, n_bins, b_norm_min, b_bin_size)
    joint = sum_blocks(part)
    mi, ratio = mi_from_joint(joint)
    grad = np.zeros(k)
    if mi != mi:
        return np.nan, grad, 0.0
    count = 0.0
    for i in range(n):
        if valid[i]:
            count += 1.0
    nblk = (n + BLOCK - 1) // BLOCK
    gpart = np.zeros((nblk, k))
    for blk in prange(nblk):
        for i in range(blk * BLOCK, min(n, (blk + 1) * BLOCK)):
            if not valid[i]:
                continue
            term, start = parzen_window(b[i], b_norm_min, b_bin_size, n_bins)
            fb = fixed_bin[i]
            w = 0.0
            for kk in range(start, start + 4):
                w += bspline3_deriv(kk - term) * ratio[fb, kk]
            for j in range(k):
                gpart[blk, j] += w * db[i, j]
    scale = 1.0 / (count * b_bin_size)
    for blk in range(nblk):
        for j in range(k):
            # dMI/dmu = -(1/(N Δ)) Σ β3'(κ-ζ) log(p/pm) db; the cost is -MI.
            grad[j] += gpart[blk, j] * scale
    return -mi, grad, count


# --------------------------------------------------------------------------------------
# Many candidate transforms at once (global search at a coarse level)
# --------------------------------------------------------------------------------------


@jit_parallel
def batch_mattes_cost(
    img, mask, hs, xs, ys, fixed_bin, n_bins, b_norm_min, b_bin_size, min_fraction
):
    """−MI of each homography ``hs[m]`` (cost only); +inf when too few samples overlap."""
    m_count = hs.shape[0]
    n = xs.shape[0]
    rows, cols = img.shape
    out = np.empty(m_count)
    for m in prange(m_count):
        joint = np.zeros((n_bins, n_bins))
        count = 0.0
        for i in range(n):
            x = xs[i]
            y = ys[i]
            u2 = hs[m, 2, 0] * x + hs[m, 2, 1] * y + hs[m, 2, 2]
            if u2 <= 0.0:
                continue
            fx = (hs[m, 0, 0] * x + hs[m, 0, 1] * y + hs[m, 0, 2]) / u2
            fy = (hs[m, 1, 0] * x + hs[m, 1, 1] * y + hs[m, 1, 2]) / u2
            value, _gx, _gy = bilinear(img, fx, fy)
            if value != value:
                continue
            r = int(fy + 0.5)
            c = int(fx + 0.5)
            if r < 0 or c < 0 or r >= rows or c >= cols or mask[r, c] == 0:
                continue
            add_parzen(joint, fixed_bin[i], value, b_norm_min, b_bin_size, n_bins)
            count += 1.0
        if count < min_fraction * n:
            out[m] = np.inf
            continue
        out[m] = -mi_value(joint)
    return out


@jit
def mi_value(joint):
    """MI of a joint histogram from its entropies: one logarithm per filled bin.

    MI = (Σ J log J − Σ F log F − Σ M log M) / T + log T, with F, M the marginals and
    T the total of the unnormalised histogram J. Equal to :func:`mi_from_joint`'s
    value up to rounding; the global search scores thousands of candidates, and the
    two logarithms per bin and the ratio table that the gradient needs took a third
    of its time.
    """
    n_bins = joint.shape[0]
    total = 0.0
    acc = 0.0
    for i in range(n_bins):
        row = 0.0
        for j in range(n_bins):
            v = joint[i, j]
            if v > 0.0:
                acc += v * np.log(v)
                row += v
        total += row
        if row > 0.0:
            acc -= row * np.log(row)
    if total <= 0.0:
        return np.nan
    for j in range(n_bins):
        col = 0.0
        for i in range(n_bins):
            col += joint[i, j]
        if col > 0.0:
            acc -= col * np.log(col)
    return acc / total + np.log(total)


# --------------------------------------------------------------------------------------
# Normalised mutual information (Studholme): (H(F) + H(M)) / H(F, M)
# --------------------------------------------------------------------------------------


@jit
def _entropies(joint):
    """Entropies of the fixed marginal, moving marginal and joint; log tables."""
    n_bins = joint.shape[0]
    total = 0.0
    for i in range(n_bins):
        for j in range(n_bins):
            total += joint[i, j]
    log_p = np.zeros((n_bins, n_bins))
    log_pm = np.zeros(n_bins)
    if total <= 0.0:
        return np.nan, np.nan, np.nan, log_p, log_pm
    pf = np.zeros(n_bins)
    pm = np.zeros(n_bins)
    hj = 0.0
    for i in range(n_bins):
        for j in range(n_bins):
            p = joint[i, j] / total
            pf[i] += p
            pm[j] += p
            if p > 1e-300:
                log_p[i, j] = np.log(p)
                hj -= p * log_p[i, j]
    hf = 0.0
    hm = 0.0
    for i in range(n_bins):
        if pf[i] > 1e-300:
            hf -= pf[i] * np.log(pf[i])
        if pm[i] > 1e-300:
            log_pm[i] = np.log(pm[i])
            hm -= pm[i] * log_pm[i]
    return hf, hm, hj, log_p, log_pm


@jit_parallel
def nmi_cost(fixed_bin, b, db, valid, n_bins, b_norm_min, b_bin_size):
    """Cost −NMI with the Mattes Parzen histogram, and its gradient."""
    n = b.shape[0]
    k = db.shape[1]
    nblk = (n + BLOCK - 1) // BLOCK
    part = np.zeros((nblk, n_bins, n_bins))
    for blk in prange(nblk):
        joint_block(part, blk, fixed_bin, b, valid, n_bins, b_norm_min, b_bin_size)
    joint = sum_blocks(part)
    hf, hm, hj, log_p, log_pm = _entropies(joint)
    grad = np.zeros(k)
    if hj != hj or hj <= 0.0:
        return np.nan, grad, 0.0
    count = 0.0
    for i in range(n):
        if valid[i]:
            count += 1.0
    nblk = (n + BLOCK - 1) // BLOCK
    gj = np.zeros((nblk, k))
    gm = np.zeros((nblk, k))
    for blk in prange(nblk):
        for i in range(blk * BLOCK, min(n, (blk + 1) * BLOCK)):
            if not valid[i]:
                continue
            term, start = parzen_window(b[i], b_norm_min, b_bin_size, n_bins)
            fb = fixed_bin[i]
            wj = 0.0
            wm = 0.0
            for kk in range(start, start + 4):
                d = bspline3_deriv(kk - term)
                wj += d * log_p[fb, kk]
                wm += d * log_pm[kk]
            for j in range(k):
                gj[blk, j] += wj * db[i, j]
                gm[blk, j] += wm * db[i, j]
    scale = 1.0 / (count * b_bin_size)
    nmi = (hf + hm) / hj
    for blk in range(nblk):
        for j in range(k):
            # dH/dmu = (1/(N Δ)) Σ β3'(κ-ζ) log p · db (the "+1" terms cancel: Σ dp = 0)
            d_hj = gj[blk, j] * scale
            d_hm = gm[blk, j] * scale
            grad[j] -= (d_hm * hj - (hf + hm) * d_hj) / (hj * hj)
    return -nmi, grad, count


# --------------------------------------------------------------------------------------
# Normalised gradient fields (Haber & Modersitzki 2006)
# --------------------------------------------------------------------------------------


@jit_parallel
def warp_gradient(gx_img, gy_img, mask, h, dh, xs, ys, out_g, out_dg, out_valid):
    """Gradient of the warped fixed image at the samples, and its parameter derivatives.

    The gradient of F∘T at a moving point x is J_T(x)ᵀ ∇F(T(x)), with ∇F interpolated
    bilinearly from the precomputed gradient images ``gx_img``, ``gy_img``; the Jacobian
    J_T of the homography makes the result rotate and scale with the transform.
    ``out_g`` is (N, 2), ``out_dg`` (N, K, 2).
    """
    n = xs.shape[0]
    k = dh.shape[0]
    for i in prange(n):
        x = xs[i]
        y = ys[i]
        out_valid[i] = False
        out_g[i, 0] = 0.0
        out_g[i, 1] = 0.0
        for j in range(k):
            out_dg[i, j, 0] = 0.0
            out_dg[i, j, 1] = 0.0
        fx, fy, u2 = map_point(h, x, y)
        if u2 <= 0.0:
            continue
        gxv, gxx, gxy = bilinear(gx_img, fx, fy)
        if gxv != gxv or not in_mask(mask, fx, fy):
            continue
        gyv, gyx, gyy = bilinear(gy_img, fx, fy)
        j00 = (h[0, 0] - fx * h[2, 0]) / u2
        j01 = (h[0, 1] - fx * h[2, 1]) / u2
        j10 = (h[1, 0] - fy * h[2, 0]) / u2
        j11 = (h[1, 1] - fy * h[2, 1]) / u2
        out_valid[i] = True
        out_g[i, 0] = j00 * gxv + j10 * gyv
        out_g[i, 1] = j01 * gxv + j11 * gyv
        for j in range(k):
            dfx, dfy, d2 = map_derivative(dh, j, x, y, fx, fy, u2)
            dj00 = (dh[j, 0, 0] - dfx * h[2, 0] - fx * dh[j, 2, 0] - j00 * d2) / u2
            dj01 = (dh[j, 0, 1] - dfx * h[2, 1] - fx * dh[j, 2, 1] - j01 * d2) / u2
            dj10 = (dh[j, 1, 0] - dfy * h[2, 0] - fy * dh[j, 2, 0] - j10 * d2) / u2
            dj11 = (dh[j, 1, 1] - dfy * h[2, 1] - fy * dh[j, 2, 1] - j11 * d2) / u2
            dgx = gxx * dfx + gxy * dfy
            dgy = gyx * dfx + gyy * dfy
            out_dg[i, j, 0] = dj00 * gxv + j00 * dgx + dj10 * gyv + j10 * dgy
            out_dg[i, j, 1] = dj01 * gxv + j01 * dgx + dj11 * gyv + j11 * dgy


@jit_parallel
def ngf_cost(nm, g, dg, valid, eps):
    """Cost −mean(⟨n_M, n_F⟩²) and its gradient.

    ``nm`` (N, 2) are the moving image's normalised gradients ∇M / sqrt(|∇M|² + ε_M²),
    ``g`` the warped fixed gradients (from :func:`warp_gradient`), ``eps`` ε_F. The
    squared cosine ignores the sign of an edge, which differs between echoes (bright)
    and attenuation (dark).
    """
    n = g.shape[0]
    k = dg.shape[1]
    nblk = (n + BLOCK - 1) // BLOCK
    part = np.zeros((nblk, 2))
    gpart = np.zeros((nblk, k))
    e2 = eps * eps
    for blk in prange(nblk):
        for i in range(blk * BLOCK, min(n, (blk + 1) * BLOCK)):
            if not valid[i]:
                continue
            s2 = g[i, 0] * g[i, 0] + g[i, 1] * g[i, 1] + e2
            s = np.sqrt(s2)
            dot = nm[i, 0] * g[i, 0] + nm[i, 1] * g[i, 1]
            r = dot / s
            part[blk, 0] += 1.0
            part[blk, 1] += r * r
            # d r / d g = n_M / s − ⟨n_M, g⟩ g / s³
            w0 = nm[i, 0] / s - dot * g[i, 0] / (s2 * s)
            w1 = nm[i, 1] / s - dot * g[i, 1] / (s2 * s)
            for j in range(k):
                gpart[blk, j] += 2.0 * r * (w0 * dg[i, j, 0] + w1 * dg[i, j, 1])
    cnt = 0.0
    total = 0.0
    grad = np.zeros(k)
    for blk in range(nblk):
        cnt += part[blk, 0]
        total += part[blk, 1]
        for j in range(k):
            grad[j] -= gpart[blk, j]
    if cnt < 1.0:
        return np.nan, grad, cnt
    for j in range(k):
        grad[j] /= cnt
    return -total / cnt, grad, cnt


# --------------------------------------------------------------------------------------
# LC2: linear correlation of linear combination (Wein et al. 2008)
# --------------------------------------------------------------------------------------


@jit_parallel
def lc2_cost(u, vals, valid, xs, ys, order, start, ridge_b, ridge_g, min_count):
    """Cost −LC2 over patches, and its derivative with respect to H (3×3).

    ``vals`` comes from :func:`warp_values_pair` with the fluoroscopy ``b`` as the first
    image and its gradient magnitude ``g`` as the second. In each patch the ultrasound
    ``u`` is fitted by least squares as c1·b + c2·g + γ (ridge ``ridge_* × n`` on c1,
    c2 keeps flat patches well-posed). With R the patch's residual and S its total sum
    of squares, LC2 = 1 − Σ(R/n) / Σ(S/n): Wein's variance-weighted mean of the patch
    R². Patch p holds samples ``order[start[p]:start[p + 1]]``; patches with fewer than
    ``min_count`` valid samples or a constant ultrasound are left out. The gradient
    follows from the envelope theorem: dR/db_i = −2 r_i c1, dR/dg_i = −2 r_i c2.
    """
    n_p = start.shape[0] - 1
    stats = np.zeros((n_p, 6))  # weight 1/n, R, S, c1, c2, gamma
    for p in prange(n_p):
        cnt = 0.0
        mb = 0.0
        mg = 0.0
        mu = 0.0
        for q in range(start[p], start[p + 1]):
            i = order[q]
            if valid[i]:
                cnt += 1.0
                mb += vals[i, 0]
                mg += vals[i, 3]
                mu += u[i]
        if cnt < min_count:
            continue
        mb /= cnt
        mg /= cnt
        mu /= cnt
        sbb = 0.0
        sbg = 0.0
        sgg = 0.0
        sbu = 0.0
        sgu = 0.0
        suu = 0.0
        for q in range(start[p], start[p + 1]):
            i = order[q]
            if valid[i]:
                db_ = vals[i, 0] - mb
                dg_ = vals[i, 3] - mg
                du_ = u[i] - mu
                sbb += db_ * db_
                sbg += db_ * dg_
                sgg += dg_ * dg_
                sbu += db_ * du_
                sgu += dg_ * du_
                suu += du_ * du_
        if suu <= 0.0:
            continue
        a11 = sbb + ridge_b * cnt
        a22 = sgg + ridge_g * cnt
        det = a11 * a22 - sbg * sbg
        if det <= 0.0:
            continue
        c1 = (a22 * sbu - sbg * sgu) / det
        c2 = (a11 * sgu - sbg * sbu) / det
        stats[p, 0] = 1.0 / cnt
        stats[p, 1] = suu - c1 * sbu - c2 * sgu
        stats[p, 2] = suu
        stats[p, 3] = c1
        stats[p, 4] = c2
        stats[p, 5] = mu - c1 * mb - c2 * mg
    resid = 0.0
    total = 0.0
    count = 0.0
    for p in range(n_p):
        resid += stats[p, 0] * stats[p, 1]
        total += stats[p, 0] * stats[p, 2]
        if stats[p, 0] > 0.0:
            count += 1.0 / stats[p, 0]
    grad_h = np.zeros((3, 3))
    if total <= 0.0:
        return np.nan, grad_h, count
    acc = np.zeros((n_p, 3, 3))
    for p in prange(n_p):
        w = stats[p, 0]
        if w == 0.0:
            continue
        c1 = stats[p, 3]
        c2 = stats[p, 4]
        gam = stats[p, 5]
        for q in range(start[p], start[p + 1]):
            i = order[q]
            if valid[i]:
                r = u[i] - c1 * vals[i, 0] - c2 * vals[i, 3] - gam
                f = -2.0 * w * r
                ex = f * (c1 * vals[i, 1] + c2 * vals[i, 4])
                ey = f * (c1 * vals[i, 2] + c2 * vals[i, 5])
                chain_to_h(acc[p], ex, ey, vals[i, 6], vals[i, 7], vals[i, 8], xs[i], ys[i])
    for p in range(n_p):
        for a in range(3):
            for b in range(3):
                grad_h[a, b] += acc[p, a, b]
    for a in range(3):
        for b in range(3):
            grad_h[a, b] /= total
    return resid / total - 1.0, grad_h, count

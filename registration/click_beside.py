"""A fluoroscopy click beside a bead no click is on, where the other pairs put its point.

A hand that lands a few millimetres off its bead (on a faint blob, a bone edge beside
it) leaves one wrong pair among four or five, which the fit absorbs: the held-out test
has too few coordinates over to reject it. The bead it was meant for is still in the
image, unclaimed. Each pair is put to the other pairs twice, once where it was clicked
and once on such a bead; where the bead's reading is decisively the likelier
(:data:`MIN_RATIO` per free bead) and the two readings give answers :data:`LIMIT_MM` or
more apart, the pairs do not support the answer (docs/registration-method.md, *A click
beside its bead*).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .landmarks import SIGMA_PRIOR_PX
from .verify_landmarks import HELD_OUT_PRIOR_DOF

__all__ = ["beside_beads"]

#: Least pairs: a pair held out leaves four, two coordinates over an affine map.
MIN_PAIRS = 5
#: A bead within this of a click (mm at the isocentre) is that click's, not a rival.
CLAIM_MM = 2.0
#: Farthest a rival bead lies from the click (mm at the isocentre): a hand that misses its
#: bead lands a few millimetres off (the tuning files' clicks on a blob beside their bead:
#: 3-9 mm). Without it, where the others predict a pair loosely, beads 10-84 mm away were
#: named (session 21 review).
REACH_MM = 10.0
#: Least likelihood ratio, bead reading over click reading, per free bead, that refuses.
#: A miss is split over the free beads (each 1/n a priori), and taken as 1 click in 20
#: that would be wrong 4 times as dearly as a refusal costs: refuse where the posterior
#: odds of a miss on that bead exceed 1/4, a ratio of 19/4 n, about 5 n (docs,
#: *A click beside its bead*).
MIN_RATIO = 5.0
#: Least RMS difference at the clicks (mm) between the two readings' answers that refuses:
#: half the 2 mm within which an answer counts as right, as for clicks off their beads.
LIMIT_MM = 1.0
#: The bead reading must itself be plausible: its held-out statistic under χ²₂'s 99th
#: percentile (a bead the other pairs put the point nowhere near is no rival).
PLAUSIBLE = 9.21


def beside_beads(moving_xy, fixed_xy, weights, bead_weight, kept, beads_xy, to_mm) -> dict | None:
    """Clicks a free bead explains better than where they were placed, likeliest first.

    Each pair is predicted by the others an affine fit keeps (``kept``; a pair it rejects,
    by all of them: the registration's own fit may keep it). ``weights`` are the pairs'
    (inverse variance, relative: a click left where it was weighs less than one on a
    bead), ``bead_weight`` the weight each would have on a bead, ``to_mm`` (x, y) mm at
    the isocentre per fluoroscopy pixel. ``rivals`` lists, per pair with one, the likeliest
    free bead whose reading gives an answer :data:`LIMIT_MM` or more from the click's.
    None with fewer than :data:`MIN_PAIRS` pairs or no bead free.
    """
    src = np.asarray(moving_xy, float).reshape(-1, 2)
    dst = np.asarray(fixed_xy, float).reshape(-1, 2)
    w = np.asarray(weights, float)
    w_bead = np.asarray(bead_weight, float)
    kept = np.asarray(kept, bool)
    all_beads = np.asarray(beads_xy, float).reshape(-1, 2)
    beads = _free_beads(dst, all_beads, to_mm)
    if len(src) < MIN_PAIRS or kept.sum() < MIN_PAIRS - 1 or not len(beads):
        return None
    held = _held_out(src, dst, w, kept)
    if held is None:
        return None
    pred, var_unit, lev = held
    with np.errstate(invalid="ignore"):  # a pair the others cannot predict: NaN, dropped
        var_click = var_unit * (1.0 / w + lev)
        var_bead = var_unit * (1.0 / w_bead + lev)
        click2 = np.sum((dst - pred) ** 2, axis=1) / var_click
        bead2 = np.sum((beads[None] - pred[:, None]) ** 2, axis=2) / var_bead[:, None]
        # Log-likelihood of each reading (2 coordinates, each at its own noise), doubled.
        gain = (click2 + 2 * np.log(var_click))[:, None] - (bead2 + 2 * np.log(var_bead)[:, None])
    # A click on a bead, claimed or not (left in place: moves declined, two beads near), is
    # that bead's; a bead farther than REACH_MM is not the one it missed.
    on_bead = np.min(_dist_mm(dst, all_beads, to_mm), axis=1) <= CLAIM_MM
    far = _dist_mm(dst, beads, to_mm) > REACH_MM
    gain[~(bead2 <= PLAUSIBLE) | far | on_bead[:, None] | ~np.isfinite(gain)] = -np.inf
    least = 2 * np.log(MIN_RATIO * len(beads))
    sums = _Sums.of(src, dst, w, kept)
    rivals = []
    for i in np.flatnonzero(np.max(gain, axis=1) > least):
        for j in np.argsort(-gain[i]):
            if gain[i, j] <= least:
                break
            apart = sums.apart_mm(i, beads[j], w[i], w_bead[i], kept[i], to_mm)
            if apart >= LIMIT_MM:
                rivals.append(_rival(i, beads[j], dst[i], gain[i, j], apart, to_mm))
                break
    rivals.sort(key=lambda r: -r["likelihood_ratio"])
    return {"pairs": len(src), "free_beads": len(beads), "rivals": rivals}


def _rival(i: int, bead, click, gain: float, apart: float, to_mm) -> dict:
    return {
        "pair": int(i),
        "bead_xy": [round(float(v), 2) for v in bead],
        "click_to_bead_mm": round(float(np.linalg.norm((click - bead) * to_mm)), 2),
        "likelihood_ratio": float(f"{np.exp(min(gain / 2, 700.0)):.3g}"),
        "answers_apart_mm": round(float(apart), 2),
    }


def refusal(record: dict | None, names, rejected=()) -> str | None:
    """Why to refuse, naming the likeliest rival's pair, or None.

    Pairs in ``rejected`` (names the registration's fit left out) do not count: the answer
    does not rest on them.
    """
    labels = [n if n else str(k) for k, n in enumerate(names)]
    labels += [str(k) for k in range(len(labels), (record or {}).get("pairs", 0))]
    for rival in (record or {}).get("rivals", []):
        label = labels[rival["pair"]]
        if label in set(rejected or ()):
            continue
        ratio, (x, y) = rival["likelihood_ratio"], rival["bead_xy"]
        # The ultrasound click tells a bead's pair from anatomy: "click it there" alone would
        # move a right anatomical click onto a bead, a wrong pair (session 21 review).
        return (
            f"the fluoroscopy click of {label} lies {rival['click_to_bead_mm']:.1f} mm from "
            f"a bead no click is on, at ({x:.0f}, {y:.0f}) px, where the other pairs put its "
            f"point ({f'{ratio:.3g}×' if ratio < 1000 else 'over 1000×'} likelier than where "
            f"it was clicked); on that bead the answer moves {rival['answers_apart_mm']:.1f} "
            f"mm. If the ultrasound click of {label} is on that bead's echo, click the bead "
            "(or drop the pair); if the pair is on anatomy, --accept-unverified keeps the "
            "answer marked"
        )
    return None


def _free_beads(dst, beads, to_mm) -> np.ndarray:
    """Beads no click claims (none within :data:`CLAIM_MM`)."""
    if not len(beads) or not len(dst):
        return beads
    return beads[np.min(_dist_mm(beads, dst, to_mm), axis=1) > CLAIM_MM]


def _dist_mm(a, b, to_mm) -> np.ndarray:
    return np.linalg.norm((a[:, None, :] - b[None]) * np.asarray(to_mm, float), axis=2)


def _held_out(src, dst, w, kept):
    """Per pair, the others' prediction of its click, σ² per unit weight, and leverage.

    A weighted affine fit of the kept pairs, each kept pair left out in closed form (each
    coordinate is the same linear least squares). σ² is the others' scatter pooled with
    the hand's prior noise (as the held-out test pools it), so that four pairs' near-exact
    fit does not make every reading implausible. None where the kept pairs fix no map.
    """
    design = np.c_[src, np.ones(len(src))]
    normal = (design[kept] * w[kept, None]).T @ design[kept]
    if np.linalg.cond(normal) > 1e12:
        return None
    cov = np.linalg.inv(normal)
    coef = cov @ (design[kept] * w[kept, None]).T @ dst[kept]
    resid = dst - design @ coef
    c = np.einsum("ni,ij,nj->n", design, cov, design)
    hat = np.where(kept, w * c, 0.0)  # a pair left out of the fit is already held out
    rss = float(np.sum(w[kept, None] * resid[kept] ** 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        pred = dst - resid / (1 - hat)[:, None]
        pred[~kept] = (design @ coef)[~kept]
        rss_without = rss - np.where(kept, w * np.sum(resid**2, axis=1) / (1 - hat), 0.0)
        lev = c / (1 - hat)  # the pair's leverage on the others' fit (Sherman-Morrison)
    others = kept.sum() - kept
    dof = 2 * others - 6
    var_unit = (HELD_OUT_PRIOR_DOF * SIGMA_PRIOR_PX**2 + np.maximum(rss_without, 0.0)) / (
        HELD_OUT_PRIOR_DOF + dof
    )
    bad = (hat >= 1 - 1e-9) | (others < MIN_PAIRS - 1)  # the others cannot predict it
    pred[bad] = np.nan
    return pred, var_unit, np.where(bad, np.inf, lev)


class _Sums(NamedTuple):
    """The kept pairs' weighted normal equations, for answers refitted in closed form."""

    design: np.ndarray  # (n, 3): x, y, 1 of every pair's ultrasound click
    dst: np.ndarray
    inv: np.ndarray  # (XᵀWX)⁻¹ over the kept pairs
    rhs: np.ndarray  # XᵀWF over the kept pairs, (3, 2)
    gram: np.ndarray  # XᵀX over the kept pairs (the clicks the answers are compared at)
    count: int

    @classmethod
    def of(cls, src, dst, w, kept) -> _Sums:
        x = np.c_[src, np.ones(len(src))]
        xk, wk = x[kept], w[kept]
        inv = np.linalg.inv((xk * wk[:, None]).T @ xk)
        return cls(x, dst, inv, (xk * wk[:, None]).T @ dst[kept], xk.T @ xk, int(kept.sum()))

    def apart_mm(self, i: int, bead, w_click: float, w_bead: float, kept: bool, to_mm) -> float:
        """RMS distance (mm) at the ultrasound clicks between two readings' affine answers.

        Pair ``i`` where clicked and on ``bead``, both over the kept pairs and ``i``: each
        a rank-one update of the kept pairs' fit, so that thousands of pairs cost no
        refit each.
        """
        x, click = self.design[i], self.dst[i]
        inv, rhs, gram, count = self.inv, self.rhs, self.gram, self.count
        if not kept:  # add the pair, as clicked, to both readings' sums
            inv = _rank_one(inv, x, w_click)
            rhs, gram, count = rhs + w_click * np.outer(x, click), gram + np.outer(x, x), count + 1
        alt_inv = _rank_one(inv, x, w_bead - w_click)
        alt_rhs = rhs + np.outer(x, w_bead * np.asarray(bead) - w_click * click)
        diff = (alt_inv @ alt_rhs - inv @ rhs) * np.asarray(to_mm, float)
        return float(np.sqrt(max(np.trace(diff.T @ gram @ diff), 0.0) / count))


def _rank_one(inv, x, weight: float):
    """(A + weight x xᵀ)⁻¹ from A⁻¹ (Sherman-Morrison)."""
    cx = inv @ x
    return inv - weight * np.outer(cx, cx) / (1.0 + weight * (x @ cx))

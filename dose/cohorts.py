"""Department-level answer to "how much did ultrasound save": guided against fluoroscopy-only.

Within each procedure type and region (and per X-ray unit), the procedures ingested as
ultrasound-guided are compared with the fluoroscopy-only ones: counts, medians, the
difference of medians (fluoroscopy-only − ultrasound-guided, so positive = saved) with a
seeded bootstrap 95 % interval, and a two-sided Mann–Whitney rank test. Cohorts are
observational: case mix, operator and unit are not controlled, and the output says so.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["compare_cohorts", "COHORT_NOTE"]

#: Bootstrap resamples of the difference of medians.
N_BOOT = 5000
#: Fewest procedures per cohort for a difference and a test.
MIN_PER_COHORT = 3
COHORT_NOTE = (
    "Observational comparison: difference = median of fluoroscopy-only procedures − median "
    "of ultrasound-guided ones (positive: less dose with ultrasound), 95 % interval from "
    f"{N_BOOT} bootstrap resamples of each cohort, two-sided Mann-Whitney U test. Case mix, "
    "operator and unit are not controlled; at least "
    f"{MIN_PER_COHORT} procedures per cohort are needed."
)


def _compare(fluoro: np.ndarray, us: np.ndarray, rng) -> dict:
    from scipy.stats import mannwhitneyu

    out = {
        "n_fluoro_only": int(len(fluoro)),
        "n_us_guided": int(len(us)),
        "median_fluoro_only": float(np.median(fluoro)) if len(fluoro) else None,
        "median_us_guided": float(np.median(us)) if len(us) else None,
    }
    if min(len(fluoro), len(us)) < MIN_PER_COHORT:
        out["reason"] = f"fewer than {MIN_PER_COHORT} procedures in a cohort"
        return out
    bf = np.median(rng.choice(fluoro, size=(N_BOOT, len(fluoro))), axis=1)
    bu = np.median(rng.choice(us, size=(N_BOOT, len(us))), axis=1)
    lo, hi = np.percentile(bf - bu, [2.5, 97.5])
    out["difference"] = out["median_fluoro_only"] - out["median_us_guided"]
    out["difference_interval_95"] = [float(lo), float(hi)]
    test = mannwhitneyu(fluoro, us, alternative="two-sided")
    out["mann_whitney_u"] = float(test.statistic)
    out["mann_whitney_p"] = float(test.pvalue)
    return out


def _cohort_block(members: list[dict], quantities, drl: dict, seed: int, key: tuple) -> dict:
    # Each group draws from its own stream (seed and key), so its interval does not change
    # when other groups join the registry.
    digest = hashlib.sha256(repr((seed, key)).encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    block = {}
    for q in quantities:
        fluoro = np.array([m[q] for m in members if m[q] is not None and not m["us_guided"]])
        us = np.array([m[q] for m in members if m[q] is not None and m["us_guided"]])
        entry = _compare(fluoro.astype(float), us.astype(float), rng)
        if q in drl:
            entry["drl"] = drl[q]
            for cohort in ("fluoro_only", "us_guided"):
                med = entry[f"median_{cohort}"]
                entry[f"{cohort}_median_over_drl"] = None if med is None else med / drl[q]
        block[q] = entry
    return block


def compare_cohorts(rows: list[dict], quantities, drl: dict | None = None, seed: int = 0):
    """Per (procedure, region) and per (procedure, region, unit): the cohort comparison."""
    by_group: dict[tuple, list[dict]] = {}
    by_unit: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["procedure_type"] or "unspecified", r["region"] or "unspecified")
        by_group.setdefault(key, []).append(r)
        by_unit.setdefault((*key, r["device"] or "unspecified"), []).append(r)
    groups = [
        {
            "procedure": p,
            "region": g,
            **_cohort_block(m, quantities, (drl or {}).get((p, g), {}), seed, (p, g)),
        }
        for (p, g), m in sorted(by_group.items())
    ]
    units = [
        {
            "procedure": p,
            "region": g,
            "unit": u,
            **_cohort_block(m, quantities, (drl or {}).get((p, g), {}), seed, (p, g, u)),
        }
        for (p, g, u), m in sorted(by_unit.items())
    ]
    return {"note": COHORT_NOTE, "by_group": groups, "by_unit": units}

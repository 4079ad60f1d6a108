"""Merging statistics by resolution shell: CC½ (random halves), ⟨I/σ⟩, multiplicity."""

from __future__ import annotations

import numpy as np

from dials_factored.merging import weighted_mean


def shell_edges(d: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-count shell edges in 1/d² (ascending), from unique-reflection d values."""
    s2 = np.sort(1.0 / d ** 2)
    q = np.linspace(0, 1, n_bins + 1)
    edges = np.quantile(s2, q)
    edges[-1] += 1e-9
    return edges


def half_means(group: np.ndarray, values: np.ndarray, n_groups: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unweighted means of two random halves of each group's observations (for CC½).

    Each group's observations are shuffled and split as evenly as possible (an odd one goes
    to either half at random), as for CC½ in ``iotbx.merging_statistics``.  Returns the two
    half means per group and a mask of the groups present in both halves.
    """
    order = np.lexsort((rng.random(group.size), group))  # shuffled within each group
    g_sorted = group[order]
    starts = np.searchsorted(g_sorted, np.arange(n_groups))
    counts = np.bincount(group, minlength=n_groups)
    rank = np.arange(group.size) - starts[g_sorted]
    extra = rng.random(n_groups) < 0.5  # where an odd observation goes
    n_a = counts // 2 + (counts % 2) * extra
    in_a = np.empty(group.size, bool)
    in_a[order] = rank < n_a[g_sorted]
    sums = [np.bincount(group[m], weights=values[m], minlength=n_groups) for m in (in_a, ~in_a)]
    ns = [np.bincount(group[m], minlength=n_groups) for m in (in_a, ~in_a)]
    both = (ns[0] > 0) & (ns[1] > 0)
    mean_a = np.where(both, sums[0] / np.maximum(ns[0], 1), 0.0)
    mean_b = np.where(both, sums[1] / np.maximum(ns[1], 1), 0.0)
    return mean_a, mean_b, both


def anomalous_signal(group: np.ndarray, is_plus: np.ndarray, values: np.ndarray,
                     seed: int = 0) -> tuple[float, int]:
    """CC_ano½: the correlation of Bijvoet differences between random half data sets.

    ``group`` numbers the non-anomalous unique reflections, ``is_plus`` says whether an
    observation is of I(+) (its anomalous asu index is the non-anomalous one) or I(−).
    Each (reflection, hemisphere) is split in halves (:func:`half_means`); ΔI = ⟨I(+)⟩ −
    ⟨I(−)⟩ of half A is correlated with that of half B over the reflections whose four
    half means exist (centric reflections have no I(−) and drop out).  Without anomalous
    signal CC_ano½ scatters about 0 with σ ≈ 1/√n.  Returns (CC_ano½, n pairs).
    """
    n_groups = int(group.max()) + 1 if len(group) else 0
    hemisphere_group = 2 * group + (~is_plus).astype(np.int64)
    a, b, both = half_means(hemisphere_group, values, 2 * n_groups,
                            np.random.default_rng(seed))
    pairs = both[0::2] & both[1::2]
    delta_a, delta_b = (a[0::2] - a[1::2])[pairs], (b[0::2] - b[1::2])[pairs]
    if pairs.sum() < 3 or np.std(delta_a) == 0 or np.std(delta_b) == 0:
        return float("nan"), int(pairs.sum())
    return float(np.corrcoef(delta_a, delta_b)[0, 1]), int(pairs.sum())


def merging_statistics(group, d, values, variances, n_bins=10, seed=0):
    """Per-shell statistics of scaled observations grouped by unique reflection.

    ``values``/``variances`` are scaled intensities (I/inverse_scale_factor).  ⟨I/σ⟩ is of
    the inverse-variance means; CC½ is of :func:`half_means` (seeded random halves).
    """
    ok = np.isfinite(values) & np.isfinite(variances) & (variances > 0)
    group, d, values, variances = group[ok], d[ok], values[ok], variances[ok]
    if len(group) == 0:
        return []
    _, g = np.unique(group, return_inverse=True)
    n_unique = g.max() + 1
    mean, var = weighted_mean(g, values, variances)
    d_unique = np.zeros(n_unique)
    d_unique[g] = d
    mult = np.bincount(g, minlength=n_unique)
    half_a, half_b, both_halves = half_means(g, values, n_unique, np.random.default_rng(seed))
    edges = shell_edges(d_unique, n_bins)
    shell = np.clip(np.searchsorted(edges, 1.0 / d_unique ** 2, side="right") - 1, 0, n_bins - 1)
    rows = []
    for s in range(n_bins):
        sel = shell == s
        both = sel & both_halves
        cc = (float(np.corrcoef(half_a[both], half_b[both])[0, 1])
              if both.sum() > 2 else float("nan"))
        rows.append({
            "d_max": float(1 / np.sqrt(edges[s])) if edges[s] > 0 else float("inf"),
            "d_min": float(1 / np.sqrt(edges[s + 1])),
            "n_obs": int(mult[sel].sum()),
            "n_unique": int(sel.sum()),
            "multiplicity": float(mult[sel].mean()) if sel.any() else 0.0,
            "i_over_sigma": float(np.mean(mean[sel] / np.sqrt(var[sel]))) if sel.any() else 0.0,
            "cc_half": cc,
        })
    return rows


def format_shells(rows) -> str:
    """A plain-text table of ``merging_statistics`` rows for the log."""
    lines = ["  d_max   d_min   n_obs  n_uniq  mult   <I/σ>   CC½"]
    for r in rows:
        lines.append(f"{r['d_max']:7.2f} {r['d_min']:7.2f} {r['n_obs']:7d} {r['n_unique']:7d} "
                     f"{r['multiplicity']:5.2f} {r['i_over_sigma']:7.2f} {r['cc_half']:6.3f}")
    return "\n".join(lines)

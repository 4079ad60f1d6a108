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


def merging_statistics(group, d, values, variances, n_bins=10, seed=0):
    """Per-shell statistics of scaled observations grouped by unique reflection.

    ``values``/``variances`` are scaled intensities (I/inverse_scale_factor).
    CC½ uses a seeded random split of each reflection's observations.
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
    rng = np.random.default_rng(seed)
    half = rng.integers(0, 2, len(g))
    halves = []
    for h in (0, 1):
        sel = half == h
        m, _ = weighted_mean(np.concatenate([g[sel], [n_unique - 1]]),
                             np.concatenate([values[sel], [0.0]]),
                             np.concatenate([variances[sel], [np.inf]]))
        halves.append(m[:n_unique])
    edges = shell_edges(d_unique, n_bins)
    shell = np.clip(np.searchsorted(edges, 1.0 / d_unique ** 2, side="right") - 1, 0, n_bins - 1)
    rows = []
    for s in range(n_bins):
        sel = shell == s
        both = sel & np.isfinite(halves[0]) & np.isfinite(halves[1])
        cc = (float(np.corrcoef(halves[0][both], halves[1][both])[0, 1])
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

"""Do the stills partialities match the data?  A check against the symmetry mates.

An observation at partiality p gives the full intensity I = J/(G·exp(B/4d²)·p·lp/qe);
if p is right, I agrees on average with the same reflection's observations that are
nearly full (p ≥ ``PEAK_P``), whatever the model's widths.  Per bin of model p on the
flanks and per resolution third, the median of I/I_peak (dimensionless, 1 expected)
over reflections whose peak mean is strong, and the rms of z = (I − I_peak)/σ (1 for
calibrated σ).  A median far from 1 means the partiality is too wide (below 1: the
flank observations measure less than p says) or too narrow (above 1) there, whatever
the cause (the widths, or excitation errors of the order of the widths); the fit's
objective cannot show this, so the run reports it.  The reference of each observation
leaves it out.
"""

from __future__ import annotations

import numpy as np

from dials_factored.collective import group_sum, world

#: Observations at or above this partiality are "nearly full": the reference.
PEAK_P = 0.7
#: The flank bins of model partiality.
FLANK_BINS = ((0.4, 0.7), (0.2, 0.4))
#: The reference must have at least this I/σ.
MIN_REFERENCE_I_OVER_SIGMA = 10.0
#: A bin is judged with at least this many observations.
MIN_OBSERVATIONS = 50
#: The median ratio outside [1/RATIO_LIMIT, RATIO_LIMIT] is a warning.
RATIO_LIMIT = 1.3


def partiality_check(group: np.ndarray, full: np.ndarray, var_full: np.ndarray,
                     p: np.ndarray, d: np.ndarray, use: np.ndarray) -> list[dict]:
    """Per (resolution third, flank bin): d range (Å), p range, n, median I/I_peak and rms
    z (module docstring).  ``group`` the reflection (asu) index of each observation,
    ``full``/``var_full`` its full-intensity estimate and variance, ``p`` the model
    partiality, ``d`` (Å); ``use`` the observations that count.  Over all MPI ranks."""
    ok = use & np.isfinite(full) & np.isfinite(var_full) & (var_full > 0) & np.isfinite(p)
    n = int(world().max(int(group.max()) + 1 if len(group) else 0))
    weight = np.where(ok & (p >= PEAK_P), 1.0 / np.where(ok, var_full, 1.0), 0.0)
    weighted = weight * np.where(ok, full, 0.0)
    w_others = group_sum(group, weight, n)[group] - weight
    wi_others = group_sum(group, weighted, n)[group] - weighted
    has_ref = ok & (w_others > 0)
    ref = np.where(has_ref, wi_others / np.where(has_ref, w_others, 1.0), np.nan)
    var_ref = np.where(has_ref, 1.0 / np.where(has_ref, w_others, 1.0), np.nan)
    strong = has_ref & (ref > MIN_REFERENCE_I_OVER_SIGMA * np.sqrt(var_ref))
    columns = [c[strong] for c in (full, var_full, ref, var_ref, p, d)]
    if world().size > 1:
        columns = [np.concatenate(c) for c in zip(*world().allgather(columns))]
    full, var_full, ref, var_ref, p, d = columns
    edges = np.quantile(d, [0.0, 1 / 3, 2 / 3, 1.0]) if len(d) else np.zeros(4)
    rows = []
    for d_lo, d_hi in zip(edges[:-1], edges[1:]):
        in_d = (d >= d_lo) & (d <= d_hi)
        for p_lo, p_hi in FLANK_BINS:
            s = in_d & (p >= p_lo) & (p < p_hi)
            z = (full[s] - ref[s]) / np.sqrt(var_full[s] + var_ref[s])
            rows.append({"d_min": float(d_lo), "d_max": float(d_hi), "p_min": p_lo,
                         "p_max": p_hi, "n": int(s.sum()),
                         "median_ratio": float(np.median(full[s] / ref[s])) if s.any()
                         else float("nan"),
                         "rms_z": float(np.sqrt(np.mean(z ** 2))) if s.any() else float("nan")})
    return rows


def partiality_warnings(rows: list[dict]) -> list[str]:
    """One sentence per bin whose median I/I_peak is off by more than ``RATIO_LIMIT``."""
    out = []
    for r in rows:
        ratio = r["median_ratio"]
        if r["n"] >= MIN_OBSERVATIONS and not 1 / RATIO_LIMIT <= ratio <= RATIO_LIMIT:
            out.append(
                f"observations at model partiality {r['p_min']:g}–{r['p_max']:g} and "
                f"d {r['d_min']:.2f}–{r['d_max']:.2f} Å measure {ratio:.2f}× the full "
                f"intensity of their reflection's nearly full observations (median of "
                f"{r['n']}; 1 expected): the partiality is too {'wide' if ratio < 1 else 'narrow'}"
                f" there, or the excitation errors are as large as its width")
    return out


def log_table(rows: list[dict]) -> str:
    """The check as lines for the log."""
    lines = [f"Partialities against the nearly full mates (p ≥ {PEAK_P:g}): d (Å), model p, "
             "n, median I/I_peak, rms z"]
    for r in rows:
        lines.append(f"  {r['d_max']:6.2f}–{r['d_min']:5.2f}  {r['p_min']:.1f}–{r['p_max']:.1f}"
                     f"  {r['n']:6d}  {r['median_ratio']:6.3f}  {r['rms_z']:6.2f}")
    return "\n".join(lines)

"""The error model: a relative error b added to the counting variance.

Counting statistics (the model-expected variance of Term 1) are the whole error
of a perfect model.  Real models are not perfect: a scale, partiality or profile
that is off by a few per cent adds an error proportional to the intensity, which
dominates for strong reflections.  As in dials.scale, it is modelled as

    σ'² = σ² + (b·I)²,   I the model intensity (never the observed one)

and b (dimensionless) is fitted so that the normalised deviations of the
observations from the leave-one-out mean of their symmetry mates have unit
variance, robustly: the median of δ²/(σ_x² + σ_ref² + b²·I²·(1 + 1/n)), δ = x − I_ref,
is set to that of χ²₁ (0.4549), so that a few outliers (a zinger on a spot, a
wrong partiality) do not inflate every σ.
Observations are chosen, and I is taken, from the inverse-variance mean of x and
I_ref together, which (unlike x or I_ref alone) is independent of δ: choosing by
the noisy I_ref would pick those whose I_ref came out high and inflate δ.
"""

from __future__ import annotations

import numpy as np

#: Observations used for b: expected I/σ at least this (b matters only for these).
MIN_I_OVER_SIGMA = 3.0
#: Median of the χ² distribution with one degree of freedom.
CHI2_1_MEDIAN = 0.45494


def fit_relative_error(x, var_x, ref, var_ref, n_others) -> float:
    """b ≥ 0 (see the module docstring); 0 when counting errors already explain δ.

    ``x``/``var_x``: each observation's intensity estimate and its counting variance;
    ``ref``/``var_ref``: the leave-one-out reference and its variance; ``n_others``
    the number of observations behind it.
    """
    use = (np.isfinite(x) & np.isfinite(ref) & np.isfinite(var_x) & np.isfinite(var_ref)
           & (var_x > 0) & (var_ref > 0) & (n_others > 0))
    w_x = np.where(use, 1.0 / np.where(use, var_x, 1.0), 0.0)
    w_ref = np.where(use, 1.0 / np.where(use, var_ref, 1.0), 0.0)
    both = np.where(use, (w_x * np.where(use, x, 0.0) + w_ref * np.where(use, ref, 0.0))
                    / np.maximum(w_x + w_ref, 1e-300), 0.0)
    use &= both > MIN_I_OVER_SIGMA * np.sqrt(np.where(use, var_x, np.inf))
    if use.sum() < 20:
        return 0.0
    delta2 = (x[use] - ref[use]) ** 2
    base = var_x[use] + var_ref[use]
    lever = both[use] ** 2 * (1.0 + 1.0 / n_others[use])

    def excess(b: float) -> float:
        return float(np.median(delta2 / (base + b * b * lever))) - CHI2_1_MEDIAN

    if excess(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while excess(hi) > 0 and hi < 100:
        hi *= 2
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)

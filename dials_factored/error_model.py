"""The error model: a relative error b, and for stills an excitation-error one, added to
the counting variance.

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

Stills carry a second model error that b cannot hold: each reflection's excitation
error ε is known only to some σ_ε, and p = exp(−ε²/R0_eff²) turns it into a relative
error |∂log p/∂ε|·σ_ε, zero on the peak of the partiality and largest on its flanks.
Two sources add: an orientation error δθ of the still moves ε by about |q|·δθ (c/d, c in
radians); a crystal that is not one rigid lattice (domains that differ between the
illuminated volumes of a grid scan, a cell that is not the same in every still) moves it
by an amount that does not grow with resolution (c₀, Å⁻¹).  Measured on simulated
stills indexed by dials.ssx_index (after the refinement of the fit), the robust spread of
ε grows from 4·10⁻⁶ Å⁻¹ at 8 Å to 3·10⁻⁵ Å⁻¹ at 2 Å, close to ∝ 1/d; on the real
thaumatin grid stills (docs/real_data.md) σ_ε = c/d alone left the low-resolution flank
observations with rms z 1.3–1.4 and a flat σ_ε alone the high-resolution ones with
1.6–1.8:

    σ'² = σ² + (b² + (c₀² + c²/d²)·s²)·I²,   s = ∂log p/∂ε (Å)

b is fitted on the observations near the peak of their partiality (p ≥ ``FLANK_P``),
c on the flanks (p < ``FLANK_P``) at high resolution (d at most the median d of the flank
observations) and c₀ on those at low resolution, each with the others held,
alternately: the split is by the model's p and d, which (like I) do not depend on δ.
"""

from __future__ import annotations

import numpy as np

from dials_factored.collective import group_sum, world

#: Observations used for b: expected I/σ at least this (b matters only for these).
MIN_I_OVER_SIGMA = 3.0
#: Median of the χ² distribution with one degree of freedom.
CHI2_1_MEDIAN = 0.45494
#: Partiality below which an observation is on the flank of its excitation profile.
FLANK_P = 0.8
#: Alternations of the b and c fits (each converges in two or three).
FLANK_ROUNDS = 4


def fit_relative_error(x, var_x, ref, var_ref, n_others) -> float:
    """b ≥ 0 (see the module docstring); 0 when counting errors already explain δ.

    ``x``/``var_x``: each observation's intensity estimate and its counting variance;
    ``ref``/``var_ref``: the leave-one-out reference and its variance; ``n_others``
    the number of observations behind it.
    """
    return fit_error_model(x, var_x, ref, var_ref, n_others)[0]


def fit_error_model(x, var_x, ref, var_ref, n_others, flank=None, flank_ref=None,
                    p=None, d=None) -> tuple[float, float, float]:
    """(b, c, c₀) ≥ 0 of the module docstring; c = c₀ = 0 without ``flank`` (s² per
    observation, Å²), ``flank_ref`` (the mean s² of the observations behind its
    reference, :func:`others_mean`), ``p`` (the model partiality) and ``d`` (Å), as for
    rotation data."""
    use = (np.isfinite(x) & np.isfinite(ref) & np.isfinite(var_x) & np.isfinite(var_ref)
           & (var_x > 0) & (var_ref > 0) & (n_others > 0))
    w_x = np.where(use, 1.0 / np.where(use, var_x, 1.0), 0.0)
    w_ref = np.where(use, 1.0 / np.where(use, var_ref, 1.0), 0.0)
    both = np.where(use, (w_x * np.where(use, x, 0.0) + w_ref * np.where(use, ref, 0.0))
                    / np.maximum(w_x + w_ref, 1e-300), 0.0)
    use &= both > MIN_I_OVER_SIGMA * np.sqrt(np.where(use, var_x, np.inf))
    delta2 = np.where(use, (x - ref) ** 2, 0.0)
    base = np.where(use, var_x + var_ref, 1.0)
    lever = both ** 2 * (1.0 + 1.0 / np.maximum(n_others, 1))
    if flank is None or p is None or d is None:
        return _solve(delta2[use], base[use], lever[use]), 0.0, 0.0
    peak, side = use & (p >= FLANK_P), use & (p < FLANK_P)
    high = side & (d <= (np.median(d[side]) if side.any() else 0.0))
    low = side & ~high
    flat_lever = both ** 2 * np.where(use, flank + flank_ref / np.maximum(n_others, 1), 0.0)
    orient_lever = flat_lever / np.where(use, d, 1.0) ** 2
    b = c = c0 = 0.0
    for _ in range(FLANK_ROUNDS):
        excitation = c * c * orient_lever + c0 * c0 * flat_lever
        b = _solve(delta2[peak], base[peak] + excitation[peak], lever[peak])
        rest = base + b * b * lever
        c = _solve(delta2[high], rest[high] + c0 * c0 * flat_lever[high], orient_lever[high])
        c0 = _solve(delta2[low], rest[low] + c * c * orient_lever[low], flat_lever[low])
    return b, c, c0


def others_mean(group, values, use) -> np.ndarray:
    """Per observation, the mean of ``values`` over the other observations of its group
    (reflection) that ``use`` selects, over all MPI ranks (0 where there are none)."""
    n = int(world().max(int(group.max()) + 1 if len(group) else 0))
    inside = use.astype(float)
    total = group_sum(group, values * inside, n)[group] - values * inside
    count = group_sum(group, inside, n)[group] - inside
    return np.where(count > 0, total / np.maximum(count, 1.0), 0.0)


def _solve(delta2, base, lever) -> float:
    """s ≥ 0 with median(δ²/(base + s²·lever)) = the χ²₁ median (0 if already below it,
    or with fewer than 20 observations)."""
    if delta2.size < 20:
        return 0.0

    def excess(s: float) -> float:
        return float(np.median(delta2 / (base + s * s * lever))) - CHI2_1_MEDIAN

    if excess(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while excess(hi) > 0 and hi < 100:
        hi *= 2
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)

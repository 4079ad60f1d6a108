"""Term 1: the Fisher-weighted profile-fit amplitude J (seed §2.1, §3).

    J      = Σ_p w_p P_p (I_p − Bg) / Σ_p w_p P_p²,      w_p = 1/v_p
    v_p    = Bg* + J_model·P_p + σ_read²     (model-expected variance, photons²)
    σ_J²   = Σ_p w_p² P_p² v̂_p / (Σ_p w_p P_p²)² + (Σ w P / Σ w P²)² · (Bg* + σ_read²)/n_bg

with v̂_p the pixel variance at Ĵ = max(J_model, J) (= 1/Σ P²/v_p when J ≤ J_model).

J and σ_J are in counts (photons of the whole reflection, before lp and qe
corrections).  The second variance term propagates the uncertainty of the
background mean estimated from n_bg pixels.  The residual against the model
J_model = G·exp(B/4d²)·p·pol·I_ref is r¹ = (J − J_model)/σ_J.

The variance is the model's own, with no floor at one count: photon-counting
detectors at low background (0.01–0.1 photons/pixel) have v_p ≪ 1 on most
pixels, and a floor there overstates σ_J several times for weak spots.  Only the
background *rate* behind the variance is bounded below, Bg* = max(Bg, ½/n_bg):
n_bg pixels with no photon bound the rate at ≈ 1/n_bg, not at zero (½/n_bg is the
posterior mean rate of the Jeffreys prior given no count), so that v_p > 0 and
every weight is finite also for an all-zero box.  The background itself is
subtracted unbounded (the unbiased mean).  ``read_variance`` = σ_read² (photons²)
is the Gaussian read noise per pixel of an integrating detector (0 for photon
counting); with it a pixel value is Poisson + Gaussian and may be negative.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammainc, ndtr

from dials_factored import kernels

#: A pixel is an outlier only above this many times the model's own peak count: real
#: spots can be several times sharper at the peak than the Gaussian template (small
#: molecules, rotation profiles cut by the scan), zingers and hot pixels are more.
PEAK_FACTOR = 3.0
#: A hot detector position varies by less than this factor over the frames of a box.
HOT_STEADINESS = 2.0


def background_rate(bg, n_bg):
    """Bg* = max(Bg, ½/n_bg) (photons/pixel): the background rate behind the variances."""
    return np.maximum(bg, 0.5 / np.maximum(n_bg, 1))


def profile_fit(pix, P, usable, bg, n_bg, j_expected, read_variance: float = 0.0):
    """J and σ_J² per reflection with weights from the expected amplitude.

    ``j_expected`` (counts) is J_model, or J itself on a first pass when no model
    exists yet; negative values are treated as zero signal.  The weights come from
    J_model; σ_J² is the variance of that estimator under the pixel variance at
    Ĵ = max(J_model, J) (the sandwich Σ w²P²v̂ / (Σ wP²)², equal to 1/Σ P²/v when
    Ĵ = J_model): at low background v is dominated by Ĵ·P at the peak, and a
    J_model below the spot's real strength would otherwise understate σ_J.
    """
    rate = background_rate(bg, n_bg) + read_variance
    jm = np.maximum(j_expected, 0.0)
    s_wp, s_wpp, s_wpd, s_extra = kernels.fit_sums(pix.counts, P, usable, pix.start,
                                                   np.asarray(bg, float), rate, jm)
    ok = s_wpp > 0
    safe = np.where(ok, s_wpp, 1.0)
    j = np.where(ok, s_wpd / safe, 0.0)
    extra = np.maximum(j - jm, 0.0)  # Ĵ − J_model; Σ w²P³ is s_extra: v̂ = v + (Ĵ − J_model)·P
    var = np.where(ok, (s_wpp + extra * s_extra) / safe ** 2, np.inf)
    var += (s_wp / safe) ** 2 * rate / np.maximum(n_bg, 1)
    return j, var


def summation(pix, fg, usable, bg, n_bg, read_variance: float = 0.0):
    """Background-subtracted sum over the foreground and its variance.

    var = max(T, n_fg·Bg*) + n_fg·σ_read² + n_fg²·(Bg* + σ_read²)/n_bg with T the
    foreground's total photons: its Poisson variance, bounded below by the
    background's own expected photons (never zero, also for an all-zero box).
    """
    o = pix.owner
    use = fg & usable
    n_fg = pix.reduce(use.astype(float))
    total = pix.reduce(np.where(use, pix.counts, 0.0))
    value = total - n_fg * bg
    rate = background_rate(bg, n_bg)
    var = (np.maximum(total, n_fg * rate) + n_fg * read_variance
           + n_fg ** 2 * (rate + read_variance) / np.maximum(n_bg, 1))
    return value, np.where(n_fg > 0, var, 1.0), n_fg, o


def outlier_pixels(pix, P, usable, bg, j_expected, threshold: float,
                   peak_factor: float = PEAK_FACTOR, n_bg=None,
                   read_variance: float = 0.0) -> np.ndarray:
    """Pixels far above what the model allows: hot pixels and zingers.

    Two tests, either flags a pixel:

    * **against the model**: with Ĵ the larger of the expected amplitude and the
      profile-fitted one, μ = Bg + Ĵ·P the model's expected photons, a pixel is an
      outlier when its count is improbable under the model's noise law — its upper
      tail probability below Φ(−``threshold``) — and its excess I − μ is more than
      ``peak_factor`` times the model's own peak count Ĵ·max(P).  The noise is
      Poisson(μ) plus Gaussian read noise σ²; the tail uses the shifted-Poisson
      approximation I + σ² ~ Poisson(μ + σ²) (same mean and variance), evaluated as
      P(X ≥ n) = γ(n, μ')/Γ(n) (regularised lower incomplete gamma) with no floor on
      μ: at 0.05 photons/pixel one photon is not an outlier, nine are.  (Pixels
      within ``threshold`` Gaussian σ, √μ', are never tested: the Poisson upper tail
      is heavier.)  The second condition keeps the peak pixels of real spots that
      are merely sharper than the Gaussian template; a zinger or hot pixel on
      background or on a weak spot fails both.
    * **a hot detector position** (rotation boxes of three or more recorded frames): the
      same x, y is more than ``threshold`` σ above the background on *every* recorded
      frame of the box (frames past the scan are unusable and do not count), and steady
      (its highest count at most ``HOT_STEADINESS`` times its lowest).
      A spot rises and falls as it passes through the box in φ; a hot pixel does not,
      and its copies on the other frames raise Ĵ enough to hide it from the first test.
    """
    jhat = np.maximum(j_expected, 0.0)
    bg = np.asarray(bg, float)
    rate = (np.maximum(bg, 1e-9) if n_bg is None else background_rate(bg, n_bg)) + read_variance
    cand, mu = kernels.outlier_candidates(pix.counts, P, usable, pix.start, bg, rate, jhat,
                                          float(threshold), float(peak_factor),
                                          float(read_variance))
    candidate = np.flatnonzero(cand)
    against_model = np.zeros(len(pix.counts), bool)
    against_model[candidate] = poisson_tail(pix.counts[candidate] + read_variance,
                                            mu[candidate] + read_variance) < ndtr(-threshold)
    hot = kernels.hot_positions(pix.counts, usable, pix.frame, pix.start, bg, float(threshold),
                                float(read_variance), HOT_STEADINESS)
    return usable & (against_model | hot)


def poisson_tail(n, mu):
    """P(X ≥ n) for X ~ Poisson(μ), continued to real n > 0 (γ(n, μ)/Γ(n))."""
    return gammainc(np.maximum(n, 1e-12), np.maximum(mu, 1e-300))

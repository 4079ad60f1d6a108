"""Term 1: the Fisher-weighted profile-fit amplitude J (seed §2.1, §3).

    J      = Σ_p w_p P_p (I_p − Bg) / Σ_p w_p P_p²,      w_p = 1/v_p
    v_p    = Bg + J_model·P_p            (model-expected variance, counts²)
    σ_J²   = 1/Σ_p P_p²/v_p + (Σ w P / Σ w P²)² · Bg/n_bg

J and σ_J are in counts (photons of the whole reflection, before lp and qe
corrections).  The second variance term propagates the uncertainty of the
background mean estimated from n_bg pixels.  The residual against the model
J_model = G·exp(B/4d²)·p·pol·I_ref is r¹ = (J − J_model)/σ_J.
"""

from __future__ import annotations

import numpy as np


def profile_fit(pix, P, usable, bg, n_bg, j_expected):
    """J and σ_J² per reflection with weights from the expected amplitude.

    ``j_expected`` (counts) is J_model, or J itself on a first pass when no model
    exists yet; negative values are treated as zero signal.
    """
    o = pix.owner
    v = np.maximum(bg, 0.0)[o] + np.maximum(j_expected, 0.0)[o] * P
    w = np.where(usable, 1.0 / np.maximum(v, 1.0), 0.0)
    wp = w * P
    s_wp = pix.reduce(wp)
    s_wpp = pix.reduce(wp * P)
    s_wpd = pix.reduce(wp * (pix.counts - bg[o]))
    ok = s_wpp > 0
    j = np.where(ok, s_wpd / np.where(ok, s_wpp, 1.0), 0.0)
    var = np.where(ok, 1.0 / np.where(ok, s_wpp, 1.0), np.inf)
    var += (s_wp / np.where(ok, s_wpp, 1.0)) ** 2 * np.maximum(bg, 1.0) / np.maximum(n_bg, 1)
    return j, var


def summation(pix, fg, usable, bg, n_bg):
    """Background-subtracted sum over the foreground and its Poisson variance."""
    o = pix.owner
    use = fg & usable
    n_fg = pix.reduce(use.astype(float))
    total = pix.reduce(np.where(use, pix.counts, 0.0))
    value = total - n_fg * bg
    var = np.maximum(total, 0.0) + n_fg ** 2 * np.maximum(bg, 0.0) / np.maximum(n_bg, 1)
    return value, np.maximum(var, 1.0), n_fg, o


def outlier_pixels(pix, P, usable, bg, j_expected, threshold: float,
                   peak_factor: float = 1.5) -> np.ndarray:
    """Pixels far above what the model allows: hot pixels and zingers.

    Each pixel p is judged against the amplitude Ĵ₋ₚ fitted *without* its detector
    position (the profile fit with the terms of that x, y on every frame of the box
    removed from both sums, weights from ``j_expected``), so that a hot pixel on a
    spot, which repeats on every frame of a rotation box, cannot raise the amplitude
    it is judged by.  It is an outlier
    when its excess over that model, I − Bg − Ĵ₋ₚ·P, is both more than ``threshold`` ×
    √(Bg + Ĵ₋ₚ·P + P²·σ²(Ĵ₋ₚ)) and more than ``peak_factor`` times the model's peak count
    (Ĵ₋ₚ + ``threshold``·σ(Ĵ₋ₚ))·max(P): a sharp spot whose peak carries most of its
    photons leaves Ĵ₋ₚ uncertain, not small.  The second condition keeps the peak
    pixels of real spots that are merely sharper than the Gaussian template; a zinger or
    hot pixel on background or on a spot fails both.
    """
    o = pix.owner
    jhat = np.maximum(j_expected, 0.0)
    v = np.maximum(bg, 0.0)[o] + jhat[o] * P
    w = np.where(usable, 1.0 / np.maximum(v, 1.0), 0.0)
    signal = pix.counts - bg[o]
    column = _detector_position(pix)
    n = len(o)

    def without_column(values):
        return pix.reduce(values)[o] - np.bincount(column, weights=values, minlength=n)[column]

    s_wpd = without_column(w * P * signal)
    s_wpp = without_column(w * P * P)
    informed = s_wpp > 0
    j_loo = np.maximum(np.where(informed, s_wpd / np.where(informed, s_wpp, 1.0), 0.0), 0.0)
    var_loo = np.where(informed, 1.0 / np.where(informed, s_wpp, 1.0), np.inf)
    mu = np.maximum(bg, 0.0)[o] + j_loo * P
    excess = pix.counts - mu
    p_max = np.maximum.reduceat(P, pix.start[:-1])[o] if len(P) else np.zeros(0)
    # the leave-out amplitude is uncertain where the left-out position held most of the
    # spot (a sharp spot's peak): that uncertainty widens both tests
    spread = np.sqrt(np.maximum(mu, 1.0) + P * P * var_loo)
    j_high = j_loo + threshold * np.sqrt(var_loo)
    return usable & (excess > threshold * spread) & (excess > peak_factor * j_high * p_max)


def _detector_position(pix) -> np.ndarray:
    """For every pixel, the index of the same x, y on the first frame of its box."""
    o = pix.owner
    if len(o) == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.minimum.reduceat(pix.frame, pix.start[:-1])
    last = np.maximum.reduceat(pix.frame, pix.start[:-1])
    per_frame = np.diff(pix.start) // (last - first + 1)
    offset = np.arange(len(o)) - pix.start[o]
    return pix.start[o] + offset % per_frame[o]

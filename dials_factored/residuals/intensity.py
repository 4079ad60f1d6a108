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

#: A pixel is an outlier only above this many times the model's own peak count: real
#: spots can be several times sharper at the peak than the Gaussian template (small
#: molecules, rotation profiles cut by the scan), zingers and hot pixels are more.
PEAK_FACTOR = 3.0
#: A hot detector position varies by less than this factor over the frames of a box.
HOT_STEADINESS = 2.0


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
    s_wpd = pix.reduce(wp * np.where(usable, pix.counts - bg[o], 0.0))
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
                   peak_factor: float = PEAK_FACTOR) -> np.ndarray:
    """Pixels far above what the model allows: hot pixels and zingers.

    Two tests, either flags a pixel:

    * **against the model**: with Ĵ the larger of the expected amplitude and the
      profile-fitted one, a pixel is an outlier when its excess I − Bg − Ĵ·P is both
      more than ``threshold`` × √(Bg + Ĵ·P) and more than ``peak_factor`` times the
      model's own peak count Ĵ·max(P).  The second condition keeps the peak pixels of
      real spots that are merely sharper than the Gaussian template; a zinger or hot
      pixel on background or on a weak spot fails both.
    * **a hot detector position** (rotation boxes of three or more frames): the same
      x, y is more than ``threshold`` σ above the background on *every* frame of the
      box, and steady (its highest count at most ``HOT_STEADINESS`` times its lowest).
      A spot rises and falls as it passes through the box in φ; a hot pixel does not,
      and its copies on the other frames raise Ĵ enough to hide it from the first test.
    """
    o = pix.owner
    jhat = np.maximum(j_expected, 0.0)
    v = np.maximum(bg, 0.0)[o] + jhat[o] * P
    w = np.where(usable, 1.0 / np.maximum(v, 1.0), 0.0)
    s_wpp = pix.reduce(w * P * P)
    fitted = np.where(s_wpp > 0, pix.reduce(w * P * np.where(usable, pix.counts - bg[o], 0.0))
                      / np.where(s_wpp > 0, s_wpp, 1.0), 0.0)
    j_ref = np.maximum(jhat, fitted)[o]
    mu = np.maximum(bg, 0.0)[o] + j_ref * P
    excess = pix.counts - mu
    p_max = np.maximum.reduceat(P, pix.start[:-1])[o] if len(P) else np.zeros(0)
    against_model = (excess > threshold * np.sqrt(np.maximum(mu, 1.0))) & (
        excess > peak_factor * j_ref * p_max)
    return usable & (against_model | _hot_positions(pix, usable, bg, threshold))


def _hot_positions(pix, usable, bg, threshold: float) -> np.ndarray:
    """Pixels whose x, y is above the background by ``threshold`` σ on every frame of a
    box of three or more frames."""
    o = pix.owner
    if not pix.frame.any():  # stills (or one frame): no box spans three frames
        return np.zeros(len(o), bool)
    first = np.minimum.reduceat(pix.frame, pix.start[:-1])
    last = np.maximum.reduceat(pix.frame, pix.start[:-1])
    n_frames = last - first + 1
    per_frame = np.diff(pix.start) // n_frames
    column = pix.start[o] + (np.arange(len(o)) - pix.start[o]) % per_frame[o]
    level = np.maximum(bg, 0.0)[o]
    high = usable & (pix.counts > level + threshold * np.sqrt(level + 1.0))
    n_high = np.bincount(column, weights=high, minlength=len(o))[column]
    candidate = np.flatnonzero((n_frames[o] >= 3) & (n_high >= n_frames[o]))
    hot = np.zeros(len(o), bool)
    if len(candidate):
        cols = column[candidate]
        lowest = np.full(len(o), np.inf)
        highest = np.zeros(len(o))
        np.minimum.at(lowest, cols, pix.counts[candidate])
        np.maximum.at(highest, cols, pix.counts[candidate])
        hot[candidate] = highest[cols] <= HOT_STEADINESS * lowest[cols]
    return hot

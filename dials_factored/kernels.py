"""numba kernels of the pixel passes: one loop over each reflection's run of pixels.

The pixels of a block are flat arrays grouped by reflection (``start[r]`` ..
``start[r+1]``, see :mod:`shoeboxes`).  The numpy versions of these statistics
built a dozen per-pixel temporaries (owner gathers, masks, products) per call; a
kernel visits each pixel once and keeps per-reflection sums in registers.  The
arithmetic is the numpy code's (float64 from the float32 store, sums in pixel
order), so the results agree to rounding (≈1e-15 relative).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def tangential_window(e1, e2, start, ra, rb, area, k):
    """P_tang per pixel and the foreground ellipse ε1²/Ra² + ε2²/Rb² < k² (see profile)."""
    n = e1.shape[0]
    P = np.empty(n)
    fg = np.empty(n, np.bool_)
    k2 = k * k
    for r in range(start.shape[0] - 1):
        a, b = ra[r], rb[r]
        norm = area[r] / (np.pi * a * b)
        for i in range(start[r], start[r + 1]):
            x = np.float64(e1[i]) / a
            y = np.float64(e2[i]) / b
            arg = x * x + y * y
            P[i] = norm * math.exp(-arg)
            fg[i] = arg < k2
    return P, fg


@njit(cache=True, nogil=True)
def frame_window(frame, start, zc, sz, k):
    """Rotation foreground along φ: |f + ½ − z_c| ≤ k·σ_z + ½ (see profile.frame_window)."""
    out = np.empty(frame.shape[0], np.bool_)
    for r in range(start.shape[0] - 1):
        c, lim = zc[r], k * sz[r] + 0.5
        for i in range(start[r], start[r + 1]):
            out[i] = abs(frame[i] + 0.5 - c) <= lim
    return out


@njit(cache=True, nogil=True)
def claimed(site, fg):
    """Pixels in the foreground of another box sharing their site (claimed_by_neighbours)."""
    n_sites = 0
    for i in range(site.shape[0]):
        n_sites = max(n_sites, site[i] + 1)
    claims = np.zeros(n_sites, np.int64)
    for i in range(site.shape[0]):
        if fg[i]:
            claims[site[i]] += 1
    out = np.empty(site.shape[0], np.bool_)
    for i in range(site.shape[0]):
        out[i] = claims[site[i]] - (1 if fg[i] else 0) > 0
    return out


@njit(cache=True, nogil=True)
def _used_mean(counts, use):
    """Mean of ``counts`` over the pixels ``use`` (0 if none) and how many they are."""
    n = 0.0
    s = 0.0
    for j in range(counts.shape[0]):
        if use[j]:
            n += 1.0
            s += np.float64(counts[j])
    return s / max(n, 1.0), n


@njit(cache=True, nogil=True)
def background(counts, use0, start, n_iter, clip, read_variance):
    """Clipped mean background per reflection and the pixels behind it (shoeboxes).

    The clipping stops early once it drops no pixel: the later rounds would repeat
    the same mean.
    """
    m = start.shape[0] - 1
    bg = np.zeros(m)
    nb = np.zeros(m)
    for r in range(m):
        p0, p1 = start[r], start[r + 1]
        use = use0[p0:p1].copy()
        level, n = _used_mean(counts[p0:p1], use)
        for _ in range(n_iter):
            lim = level + clip * math.sqrt(max(level, 0.0) + read_variance + 1.0)
            dropped = False
            for j in range(p1 - p0):
                if use[j] and counts[p0 + j] > lim:
                    use[j] = False
                    dropped = True
            if not dropped:
                break
            level, n = _used_mean(counts[p0:p1], use)
        bg[r] = level
        nb[r] = n
    return bg, nb


@njit(cache=True, nogil=True)
def fit_sums(counts, P, usable, start, bg, rate, jm):
    """Σ wP, Σ wP², Σ wP(I − Bg), Σ w²P³ per reflection with w = 1/(rate + J_model·P)."""
    m = start.shape[0] - 1
    out = np.zeros((4, m))
    for r in range(m):
        s_wp = s_wpp = s_wpd = s_x = 0.0
        for i in range(start[r], start[r + 1]):
            if usable[i]:
                p = P[i]
                wp = p / (rate[r] + jm[r] * p)
                s_wp += wp
                s_wpp += wp * p
                s_wpd += wp * (np.float64(counts[i]) - bg[r])
                s_x += wp * wp * p
        out[0, r], out[1, r], out[2, r], out[3, r] = s_wp, s_wpp, s_wpd, s_x
    return out


@njit(cache=True, nogil=True)
def outlier_candidates(counts, P, usable, start, bg, rate, jhat, threshold, peak_factor,
                       read_variance):
    """Pixels above ``threshold`` Gaussian σ and ``peak_factor`` × the model peak, and μ.

    Ĵ = max(J_expected, J fitted with w = 1/(rate + J_expected·P)) per reflection,
    μ = max(Bg, 0) + Ĵ·P (see residuals.intensity.outlier_pixels).
    """
    n = counts.shape[0]
    cand = np.zeros(n, np.bool_)
    mu = np.empty(n)
    for r in range(start.shape[0] - 1):
        p0, p1 = start[r], start[r + 1]
        s_wpp = s_wpd = 0.0
        p_max = -np.inf
        for i in range(p0, p1):
            p = P[i]
            p_max = max(p_max, p)
            if usable[i]:
                wp = p / (rate[r] + jhat[r] * p)
                s_wpp += wp * p
                s_wpd += wp * (np.float64(counts[i]) - bg[r])
        fitted = s_wpd / s_wpp if s_wpp > 0 else 0.0
        j_ref = max(jhat[r], fitted)
        level = max(bg[r], 0.0)
        for i in range(p0, p1):
            m = level + j_ref * P[i]
            mu[i] = m
            excess = counts[i] - m
            cand[i] = (usable[i] and excess > threshold * math.sqrt(m + read_variance)
                       and excess > peak_factor * j_ref * p_max)
    return cand, mu


@njit(cache=True, nogil=True)
def hot_positions(counts, usable, frame, start, bg, threshold, read_variance, steadiness):
    """The same x, y above the background on every recorded (usable) frame of a box, at
    least three of them, and steady."""
    n = counts.shape[0]
    hot = np.zeros(n, np.bool_)
    for r in range(start.shape[0] - 1):
        p0, p1 = start[r], start[r + 1]
        if p1 == p0:
            continue
        first = last = frame[p0]
        for i in range(p0, p1):
            first = min(first, frame[i])
            last = max(last, frame[i])
        n_frames = last - first + 1
        if n_frames < 3:
            continue
        per_frame = (p1 - p0) // n_frames
        level = max(bg[r], 0.0)
        lim = level + threshold * math.sqrt(level + read_variance + 1.0)
        for c in range(per_frame):
            n_high = 0
            n_usable = 0
            lo = np.inf
            hi = 0.0
            for i in range(p0 + c, p1, per_frame):
                if usable[i]:
                    n_usable += 1
                    if counts[i] > lim:
                        n_high += 1
            if n_usable < 3 or n_high < n_usable:
                continue
            for i in range(p0 + c, p1, per_frame):
                if usable[i]:
                    lo = min(lo, np.float64(counts[i]))
                    hi = max(hi, np.float64(counts[i]))
            if hi <= steadiness * lo:
                for i in range(p0 + c, p1, per_frame):
                    hot[i] = usable[i]
    return hot


@njit(cache=True, nogil=True)
def moment_sums(counts, use, bg, P, e1, e2, frame, start, zc, rotation):
    """The 3 + 5·(2 or 3) sums of residuals.shape.moment_sums, rows in that order:
    s0, n, p, then for x = ε1², ε2² (and (f + ½ − z_c)²): dx, x1, x2, px1, px2."""
    m = start.shape[0] - 1
    n_x = 3 if rotation else 2
    out = np.zeros((3 + 5 * n_x, m))
    for r in range(m):
        for i in range(start[r], start[r + 1]):
            if not use[i]:
                continue
            d = np.float64(counts[i]) - bg[r]
            p = P[i]
            out[0, r] += d
            out[1, r] += 1.0
            out[2, r] += p
            for k in range(n_x):
                if k == 0:
                    x = np.float64(e1[i]) ** 2
                elif k == 1:
                    x = np.float64(e2[i]) ** 2
                else:
                    x = (frame[i] + 0.5 - zc[r]) ** 2
                row = 3 + 5 * k
                out[row, r] += d * x
                out[row + 1, r] += x
                out[row + 2, r] += x * x
                out[row + 3, r] += p * x
                out[row + 4, r] += p * x * x
    return out


@njit(cache=True, nogil=True)
def _mean_offset(f, zc, sz):
    """E[z − z_c | f ≤ z < f + 1] (frames) for z ~ N(z_c, σ_z²): the truncated normal's
    mean, σ_z·(φ(a) − φ(b))/(Φ(b) − Φ(a)) with a = (f − z_c)/σ_z, b = a + 1/σ_z; the
    nearer edge where the frame is too far in a tail for the ratio."""
    a = (f - zc) / sz
    b = a + 1.0 / sz
    root2 = math.sqrt(2.0)
    if a > 0.0:
        mass = 0.5 * (math.erfc(a / root2) - math.erfc(b / root2))
    else:
        mass = 0.5 * (math.erfc(-b / root2) - math.erfc(-a / root2))
    if mass < 1e-12:
        return f - zc if a > 0.0 else f + 1.0 - zc
    density = (math.exp(-0.5 * a * a) - math.exp(-0.5 * b * b)) / math.sqrt(2.0 * math.pi)
    return sz * density / mass


@njit(cache=True, nogil=True)
def follow_spot(e1, e2, frame, start, zc, sz, d1, d2):
    """ε1 − d1·t_f, ε2 − d2·t_f per pixel, t_f the mean φ offset (frames) of the photons
    on the pixel's frame f (``_mean_offset``; float32; profile.follow_spot)."""
    out1 = np.empty(e1.shape[0], np.float32)
    out2 = np.empty(e1.shape[0], np.float32)
    for r in range(start.shape[0] - 1):
        last = -(2 ** 31)
        t = 0.0
        for i in range(start[r], start[r + 1]):
            if frame[i] != last:
                last = frame[i]
                t = _mean_offset(float(last), zc[r], max(sz[r], 1e-6))
            out1[i] = e1[i] - d1[r] * t
            out2[i] = e2[i] - d2[r] * t
    return out1, out2


@njit(cache=True, nogil=True)
def frame_fraction(frame, start, zc, sz):
    """Φ((f + 1 − z_c)/σ_z) − Φ((f − z_c)/σ_z) per pixel (profile.frame_fraction),
    evaluated once per run of pixels on one frame (a box is stored layer by layer)."""
    out = np.empty(frame.shape[0])
    root2 = math.sqrt(2.0)
    for r in range(start.shape[0] - 1):
        last = -(2 ** 31)
        value = 0.0
        for i in range(start[r], start[r + 1]):
            if frame[i] != last:
                last = frame[i]
                lo = (last - zc[r]) / sz[r]
                hi = lo + 1.0 / sz[r]
                value = 0.5 * (math.erfc(-hi / root2) - math.erfc(-lo / root2))
            out[i] = value
    return out

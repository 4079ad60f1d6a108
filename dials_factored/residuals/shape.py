"""Term 2: the shape second moment against the profile width (seed §2.2).

Inside the foreground window W (the ellipse ε1²/Ra² + ε2²/Rb² < k², fixed for
one cycle) the observed per-direction second moments are

    M_a = Σ_W (I − Bg) ε1² / Σ_W (I − Bg),   M_b likewise with ε2        (Å⁻²)

A moment is normalised by the total, so it does not depend on G, B, p or I_ref.
The model is the same moment of the template truncated to W,

    M_model = (R_eff²/2) · g(t),   g(t) = 1 − t/(eᵗ − 1),   t = k² R_w²/R_eff²

(R_w the width that drew the window), whose R_eff² = R1² + a²/6 carries the
pixel-sampling variance.  The variance of M is the model-expected one,

    σ_M² = Σ_W v_p (ε_p² − M)² / (J_model Σ_W P_p)²,   v_p = Bg + J_model P_p

so weak reflections carry almost no weight and R1 is set by strong spots.

For rotation data the same statistic along the rotation (in frames, over the
frames f_a..f_b of the 3D foreground window),

    M_z = Σ (I − Bg)(f + ½ − z_c)² / Σ (I − Bg)

against its exact expectation for a Gaussian of σ_z binned into frames,
Σ F_f (f + ½ − z_c)² / Σ F_f with F_f = Φ((f+1−z_c)/σ_z) − Φ((f−z_c)/σ_z) (a spot
much narrower than a frame has M_z = (f + ½ − z_c)², not the average 1/12), with
the same model-expected σ and a floor of ``FRAME_MOMENT_FLOOR`` frames² for the
error of the predicted z_c; it constrains the mosaic spread.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from dials_factored import kernels

#: Floor (frames²) on σ of the frame moment: a 0.03-frame error of z_c at ½ frame.
FRAME_MOMENT_FLOOR = 0.03


def truncation(t: np.ndarray):
    """g(t) and dg/dt for the second moment of a 2D Gaussian cut at t = ρ²/R².

    Beyond t = 30 (a window many widths wide, e.g. an LM trial step to a tiny R1) the
    same expressions in e^(−t), which do not overflow: g → 1, dg/dt → 0.
    """
    t = np.maximum(t, 1e-6)
    small = np.minimum(t, 30.0)
    em1 = np.expm1(small)
    g = 1.0 - small / em1
    dg = (small * np.exp(small) - em1) / em1 ** 2
    big = t > 30.0
    if np.any(big):
        q = np.exp(-t[big])
        g[big] = 1.0 - t[big] * q / (1.0 - q)
        dg[big] = (t[big] * q - q + q * q) / (1.0 - q) ** 2
    return g, dg


def moment_sums(pix, use, bg, P, z_centre=None) -> dict:
    """Per-reflection sums over the pixels ``use`` behind M and σ_M, for any J_model.

    σ_M² needs v_p = Bg + J_model·P_p, and J_model is known only after the pass
    over the pixels; since Σ v (x − M)² = Bg·Σ(x − M)² + J_model·Σ P (x − M)²,
    the sums of 1, x, x² and P, P·x, P·x² (x = ε1², ε2² and, for rotation data
    with ``z_centre``, (f + ½ − z_c)²) are enough.
    """
    rotation = z_centre is not None
    zc = np.asarray(z_centre, float) if rotation else np.zeros(len(pix.start) - 1)
    rows = kernels.moment_sums(pix.counts, use, np.asarray(bg, float), P, pix.e1, pix.e2,
                               pix.frame, pix.start, zc, rotation)
    keys = ["s0", "n", "p"]
    for name in ("a", "b", "z") if rotation else ("a", "b"):
        keys += [f"d{name}", f"{name}1", f"{name}2", f"p{name}1", f"p{name}2"]
    return dict(zip(keys, rows))


def moment(sums: dict, name: str, bg, j_model):
    """(M, σ_M) per reflection for direction ``name`` (a, b or z) from :func:`moment_sums`."""
    safe = np.where(np.abs(sums["s0"]) > 0, sums["s0"], 1.0)
    m = sums[f"d{name}"] / safe
    jm = np.maximum(j_model, 0.0)
    spread = sums[f"{name}2"] - 2 * m * sums[f"{name}1"] + m * m * sums["n"]
    p_spread = sums[f"p{name}2"] - 2 * m * sums[f"p{name}1"] + m * m * sums["p"]
    expected = np.maximum(jm * sums["p"], 1e-9)
    var = (np.maximum(bg, 0.0) * spread + jm * p_spread) / expected ** 2
    return m, np.sqrt(np.maximum(var, 0.0))


def observed_moments(sums: dict, bg, j_model):
    """(M_a, M_b, σ_a, σ_b) per reflection."""
    ma, sa = moment(sums, "a", bg, j_model)
    mb, sb = moment(sums, "b", bg, j_model)
    return ma, mb, sa, sb


def observed_frame_moment(sums: dict, bg, j_model):
    """(M_z, σ_z) per reflection: second moment of the counts along the rotation."""
    mz, smz = moment(sums, "z", bg, j_model)
    return mz, np.sqrt(smz ** 2 + FRAME_MOMENT_FLOOR ** 2)


def window_frames(pix, fg) -> tuple[np.ndarray, np.ndarray]:
    """First and last frame of each reflection's foreground (−1, −2 where it has none)."""
    big = np.iinfo(np.int32).max
    first = np.minimum.reduceat(np.where(fg, pix.frame, big), pix.start[:-1])
    last = np.maximum.reduceat(np.where(fg, pix.frame, -big), pix.start[:-1])
    none = first == big
    return np.where(none, -1, first), np.where(none, -2, last)


def binned_frame_moment(z_centre, first, last, sigma_z):
    """Expected M_z and ∂M_z/∂log σ_z of a Gaussian binned into frames first..last.

    All arguments per reflection (frames); see the module docstring.
    """
    width = int(np.max(last - first + 1)) if len(first) else 0
    f = first[:, None] + np.arange(max(width, 1))[None, :]
    inside = f <= last[:, None]
    s = sigma_z[:, None]
    a = (f - z_centre[:, None]) / s
    b = a + 1.0 / s
    frac = np.where(inside, ndtr(b) - ndtr(a), 0.0)
    pdf_a = np.exp(-0.5 * a * a) / np.sqrt(2 * np.pi)
    pdf_b = np.exp(-0.5 * b * b) / np.sqrt(2 * np.pi)
    dfrac = np.where(inside, -(b * pdf_b - a * pdf_a), 0.0)  # ∂F/∂log σ
    u2 = (f + 0.5 - z_centre[:, None]) ** 2
    total = np.maximum(frac.sum(axis=1), 1e-300)
    moment = (frac * u2).sum(axis=1) / total
    dmoment = ((dfrac * u2).sum(axis=1) - moment * dfrac.sum(axis=1)) / total
    return moment, dmoment

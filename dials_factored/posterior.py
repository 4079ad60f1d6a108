"""Posterior intensities and amplitudes of merged reflections: our likelihood times a prior.

**Likelihood.**  Term 1 is Gaussian in the intensity: with the fitted scales s_i, each
observation gives x_i = J_i/s_i with variance σ_i² = var(J_i)/s_i², so the likelihood of
a reflection's true intensity I = F² is, up to a constant, N(Î | I, σ̂²) with the
inverse-variance mean Î = Σ x_i/σ_i² / Σ 1/σ_i² and σ̂² = 1/Σ 1/σ_i² (Î may be negative).

**Priors** on the amplitude F ≥ 0 (ε the symmetry enhancement factor; Σ(d) the mean
intensity per ε in the resolution bin, estimated from the data as French & Wilson do):

* Wilson, acentric  p(F) = 2F/(εΣ)·exp(−F²/(εΣ));  centric  p(F) = √(2/(πεΣ))·exp(−F²/(2εΣ));
* the reference as prior (Read 1986; the σ_A / Luzzati distributions of F given a
  reference amplitude F_r, with D and Σ_Δ per bin): acentric
  p(F) = 2F/(εΣ_Δ)·exp(−(F² + D²F_r²)/(εΣ_Δ))·I₀(2FDF_r/(εΣ_Δ)); centric
  p(F) = √(2/(πεΣ_Δ))·exp(−(F² + D²F_r²)/(2εΣ_Δ))·cosh(FDF_r/(εΣ_Δ)).  D and Σ_Δ come
  from E[Î | F_r] = D²F_r² + εΣ_Δ, fitted per bin by least squares.

**Posterior** moments E[F], sd(F), E[I] = E[F²], sd(I) by quadrature on a grid of F per
reflection (vectorised over reflections in chunks), so that weak and negative
measurements give positive, sensible amplitudes.  Units: those of Î (arbitrary, the
scale of the output).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Points of the amplitude grid per reflection.
N_GRID = 256
#: Reflections per quadrature chunk (N_GRID doubles each).
CHUNK = 20000
#: Resolution bins (equal counts) for Σ(d), D and Σ_Δ.
N_BINS = 20


@dataclass
class Posterior:
    """Posterior moments per reflection (units of the input intensities)."""

    i_mean: np.ndarray
    i_sd: np.ndarray
    f_mean: np.ndarray
    f_sd: np.ndarray


def _bins(d: np.ndarray, n_bins: int) -> np.ndarray:
    s2 = 1.0 / d ** 2
    edges = np.quantile(s2, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, s2)


def wilson_sigma(i_obs: np.ndarray, d: np.ndarray, epsilon: np.ndarray,
                 n_bins: int = N_BINS) -> np.ndarray:
    """Σ(d) per reflection: the mean of Î/ε in its resolution bin (at least a tiny > 0)."""
    shell = _bins(d, min(n_bins, max(1, len(d) // 50)))
    mean = np.bincount(shell, weights=i_obs / epsilon) / np.maximum(np.bincount(shell), 1)
    floor = 1e-6 * max(float(np.mean(np.abs(i_obs / epsilon))), 1e-300)
    return np.maximum(mean, floor)[shell]


def reference_terms(i_obs: np.ndarray, f_ref: np.ndarray, d: np.ndarray, epsilon: np.ndarray,
                    n_bins: int = N_BINS) -> tuple[np.ndarray, np.ndarray]:
    """D and Σ_Δ per reflection from E[Î/ε] = D²·F_r²/ε + Σ_Δ, least squares per bin."""
    shell = _bins(d, min(n_bins, max(1, len(d) // 50)))
    d_out, sigma_out = np.zeros(len(d)), np.zeros(len(d))
    for b in np.unique(shell):
        sel = shell == b
        x, y = f_ref[sel] ** 2 / epsilon[sel], i_obs[sel] / epsilon[sel]
        design = np.stack([x, np.ones_like(x)], axis=1)
        (d2, sigma_delta), *_ = np.linalg.lstsq(design, y, rcond=None)
        mean_y = max(float(np.mean(y)), 1e-300)
        d_out[sel] = np.sqrt(np.clip(d2, 0.0, None))
        sigma_out[sel] = max(sigma_delta, 0.05 * mean_y)  # a reference is never perfect
    return d_out, sigma_out


def _log_prior(f, centric, eps_sigma, d_fr):
    """log p(F) on the grid (rows: reflections); see the module doc.  ``d_fr`` = D·F_r."""
    from scipy.special import i0e

    x = 2.0 * f * d_fr / eps_sigma
    acentric = (np.log(np.maximum(2 * f, 1e-300)) - np.log(eps_sigma)
                - (f ** 2 + d_fr ** 2) / eps_sigma + np.log(i0e(x)) + np.abs(x))
    half = x / 2.0  # centric: cosh(F·D·F_r/(εΣ)) with the centric εΣ doubled below
    centric_lp = (0.5 * np.log(2 / (np.pi * eps_sigma)) - (f ** 2 + d_fr ** 2) / (2 * eps_sigma)
                  + np.logaddexp(half, -half) - np.log(2.0))
    return np.where(centric, centric_lp, acentric)


def posterior(i_obs, sig_obs, d, centric, epsilon, f_ref=None) -> Posterior:
    """Posterior moments of I and F for merged measurements Î ± σ̂ (module doc).

    ``f_ref``: reference amplitudes (NaN where none: those reflections get the Wilson
    prior); None for the Wilson prior everywhere.
    """
    i_obs, sig_obs, d = (np.asarray(a, dtype=float) for a in (i_obs, sig_obs, d))
    centric, epsilon = np.asarray(centric, bool), np.asarray(epsilon, dtype=float)
    sigma = wilson_sigma(i_obs, d, epsilon)
    d_fr = np.zeros(len(d))
    eps_sigma = epsilon * sigma
    if f_ref is not None:
        f_ref = np.asarray(f_ref, dtype=float)
        has = np.isfinite(f_ref)
        if has.sum() >= 50:
            dd, sigma_delta = reference_terms(i_obs[has], f_ref[has], d[has], epsilon[has])
            d_fr[has] = dd * f_ref[has]
            eps_sigma[has] = epsilon[has] * sigma_delta
    out = [np.empty(len(d)) for _ in range(4)]
    for start in range(0, len(d), CHUNK):
        part = slice(start, min(len(d), start + CHUNK))
        moments = _moments(i_obs[part], sig_obs[part], centric[part], eps_sigma[part],
                           d_fr[part])
        for o, m in zip(out, moments):
            o[part] = m
    return Posterior(*out)


def _moments(i_obs, sig, centric, eps_sigma, d_fr):
    """Quadrature of the posterior on a uniform grid of F (N_GRID points per reflection)
    over √max(Î − 10σ̂, 0) … √(max(Î, 0) + 10σ̂): outside it the likelihood is below
    e⁻⁵⁰, whatever the prior."""
    low = np.sqrt(np.maximum(i_obs - 10 * sig, 0.0))
    high = np.sqrt(np.maximum(i_obs, 0.0) + 10 * sig)
    f = low[:, None] + (high - low)[:, None] * np.linspace(0.0, 1.0, N_GRID)[None, :]
    log_post = (_log_prior(f, centric[:, None], eps_sigma[:, None], d_fr[:, None])
                - 0.5 * ((i_obs[:, None] - f ** 2) / sig[:, None]) ** 2)
    w = np.exp(log_post - log_post.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    f_mean = (w * f).sum(axis=1)
    i_mean = (w * f ** 2).sum(axis=1)
    f_sd = np.sqrt(np.maximum(i_mean - f_mean ** 2, 0.0))
    i_sd = np.sqrt(np.maximum((w * f ** 4).sum(axis=1) - i_mean ** 2, 0.0))
    return i_mean, i_sd, f_mean, f_sd

"""The error model recovers a known relative error, and finds none where there is none."""

from __future__ import annotations

import numpy as np
import pytest

from dials_factored.error_model import fit_error_model, fit_relative_error, others_mean
from dials_factored.reference import bootstrap


def _observations(b_true: float, seed: int = 0):
    """Unique intensities seen 4 times each with counting noise and relative error b."""
    rng = np.random.default_rng(seed)
    n_unique, mult = 3000, 4
    intensity = rng.exponential(500.0, n_unique)
    group = np.repeat(np.arange(n_unique), mult)
    truth = intensity[group]
    var_count = truth + 20.0  # Poisson signal + background
    x = truth + rng.normal(0, np.sqrt(var_count)) + rng.normal(0, b_true * truth)
    scale = np.ones_like(x)
    ref, var_ref, n_others = bootstrap(group, x, var_count, scale)
    return x, var_count, ref, var_ref, n_others


@pytest.mark.parametrize("b_true", [0.03, 0.08])
def test_recovers_the_relative_error(b_true):
    b = fit_relative_error(*_observations(b_true))
    assert b == pytest.approx(b_true, rel=0.15)


def test_no_extra_error_gives_b_near_zero():
    assert fit_relative_error(*_observations(0.0)) < 0.01


def test_an_outlier_does_not_inflate_b():
    x, var, ref, var_ref, n = _observations(0.0, seed=3)
    x[:5] *= 50.0  # five wild observations (zingers on spots)
    ref, var_ref, n = bootstrap(np.repeat(np.arange(3000), 4), x, var, np.ones_like(x))
    assert fit_relative_error(x, var, ref, var_ref, n) < 0.01


def _stills_observations(b_true: float, c_true: float, c0_true: float = 0.0, seed: int = 1):
    """Stills-like: each observation with a partiality p = exp(−ε²/R²) whose ε carries an
    error σ_ε² = (c/d)² + c₀², so its relative error is |∂log p/∂ε|·σ_ε (zero on the
    peak)."""
    rng = np.random.default_rng(seed)
    n_unique, mult, r_eff = 3000, 4, 6e-4
    intensity = rng.exponential(2000.0, n_unique)
    group = np.repeat(np.arange(n_unique), mult)
    truth = intensity[group]
    d = rng.uniform(1.8, 8.0, n_unique)[group]
    eps = rng.uniform(-1.2, 1.2, truth.size) * r_eff
    p = np.exp(-(eps / r_eff) ** 2)
    slope = -2 * eps / r_eff ** 2
    var_count = truth + 20.0
    sigma_eps = np.sqrt((c_true / d) ** 2 + c0_true ** 2)
    rel = rng.normal(0, b_true, truth.size) + slope * rng.normal(0, sigma_eps)
    x = truth * (1 + rel) + rng.normal(0, np.sqrt(var_count))
    ref, var_ref, n_others = bootstrap(group, x, var_count, np.ones_like(x))
    flank = slope ** 2
    flank_ref = others_mean(group, flank, np.ones(group.size, bool))
    return (x, var_count, ref, var_ref, n_others), (flank, flank_ref), p, d


@pytest.mark.parametrize("b_true, c_true", [(0.02, 5e-5), (0.0, 1e-4), (0.03, 0.0)])
def test_recovers_the_excitation_error_beside_b(b_true, c_true):
    """b and c apart: c from the flanks of the partiality (p < 0.8), b near its peak;
    one b alone would spread the flank error over every observation."""
    columns, flank, p, d = _stills_observations(b_true, c_true)
    b, c, c0 = fit_error_model(*columns, *flank, p, d)
    assert b == pytest.approx(b_true, abs=0.15 * max(b_true, 0.02))
    assert c == pytest.approx(c_true, abs=0.2 * max(c_true, 5e-5))
    assert c0 < 0.4 * max(c_true, 5e-5) / 4.0  # below 40 % of σ_ε = c/d at 4 Å


@pytest.mark.parametrize("c_true, c0_true", [(0.0, 3e-5), (8e-5, 2e-5)])
def test_flat_excitation_error_apart_from_the_orientation_one(c_true, c0_true):
    """An excitation error that does not grow with 1/d (c₀, Å⁻¹) beside one ∝ 1/d: a
    c/d term alone fits the high-resolution flanks and leaves the low-resolution ones
    with too small a σ (the thaumatin grid stills, docs/real_data.md)."""
    columns, flank, p, d = _stills_observations(0.02, c_true, c0_true, seed=4)
    b, c, c0 = fit_error_model(*columns, *flank, p, d)
    for d_at in (2.0, 4.0, 8.0):  # σ_ε (Å⁻¹) where the flanks are, low to high d
        fitted = np.hypot(c / d_at, c0)
        assert fitted == pytest.approx(np.hypot(c_true / d_at, c0_true), rel=0.2), d_at
    assert c0 == pytest.approx(c0_true, rel=0.25)
    assert b == pytest.approx(0.02, abs=0.004)

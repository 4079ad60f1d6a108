"""The error model recovers a known relative error, and finds none where there is none."""

from __future__ import annotations

import numpy as np
import pytest

from dials_factored.error_model import fit_relative_error
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

"""The stills partiality check: flank observations against their nearly full mates."""

from __future__ import annotations

import numpy as np
import pytest

from dials_factored.partiality_check import partiality_check, partiality_warnings

R_TRUE = 1e-3  # Å⁻¹


def _observations(r_model: float, seed: int = 3):
    """Reflections seen 8 times at random excitation errors; recorded counts from the
    true Gaussian partiality of width R_TRUE, full intensities from the model's."""
    rng = np.random.default_rng(seed)
    n_refl, n_obs = 3000, 8
    group = np.repeat(np.arange(n_refl), n_obs)
    i_h = rng.uniform(2000, 20000, n_refl)[group]
    d = rng.uniform(1.5, 8.0, n_refl)[group]
    eps = rng.uniform(-1.6, 1.6, len(group)) * R_TRUE
    p_true = np.exp(-(eps / R_TRUE) ** 2)
    var = i_h * p_true + 20.0
    j = i_h * p_true + rng.normal(0, np.sqrt(var))
    p_model = np.exp(-(eps / r_model) ** 2)
    return group, j / p_model, var / p_model ** 2, p_model, d


def test_right_partialities_pass():
    rows = partiality_check(*_observations(R_TRUE), use=np.ones(24000, bool))
    assert all(r["n"] >= 100 for r in rows)
    for r in rows:
        assert 0.93 < r["median_ratio"] < 1.07, r
        assert 0.85 < r["rms_z"] < 1.2, r
    assert partiality_warnings(rows) == []


@pytest.mark.parametrize("factor,word", [(1.5, "wide"), (0.6, "narrow")])
def test_wrong_widths_are_reported(factor, word):
    rows = partiality_check(*_observations(factor * R_TRUE), use=np.ones(24000, bool))
    warnings = partiality_warnings(rows)
    assert len(warnings) == len(rows), rows
    assert all(f"too {word}" in w for w in warnings)
    ratios = np.array([r["median_ratio"] for r in rows])
    assert np.all(ratios < 0.75) if word == "wide" else np.all(ratios > 1.3)


def test_report_shows_the_check():
    from dials_factored.report import _partiality_table

    rows = partiality_check(*_observations(1.5 * R_TRUE), use=np.ones(24000, bool))
    table = _partiality_table(rows)
    assert table.count("<tr>") == len(rows) + 1
    assert f"{rows[0]['median_ratio']:.3f}" in table
    assert _partiality_table(None) == ""

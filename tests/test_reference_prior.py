"""The amplitude behind the variance of observations with no reference (issue 18, item 1)."""

from __future__ import annotations

import numpy as np

from dials_factored.reference import posterior_amplitude, with_shell_means


def test_posterior_amplitude_calibrates_sigma_of_unreferenced_weak_spots():
    """Weak spots (Wilson-distributed amplitudes, mean 3 photons) counted on no
    background: z = (n − A)/√Â with Â the amplitude behind the variance.  At Â = n (the
    observation's own count, as before) spots observed with few photons get a tiny σ
    (rms z ≫ 1, mean z < 0); at the posterior mean the rms is 1."""
    rng = np.random.default_rng(3)
    a = rng.exponential(3.0, 200000)
    n = rng.poisson(a).astype(float)
    own = (n - a) / np.sqrt(np.maximum(n, 0.25))
    post = (n - a) / np.sqrt(posterior_amplitude(n, np.full(n.size, 3.0)))
    assert np.sqrt(np.mean(own ** 2)) > 1.3
    assert 0.95 < np.sqrt(np.mean(post ** 2)) < 1.05
    assert abs(np.mean(post)) < 0.6 * abs(np.mean(own))  # −0.20 against −0.38
    # no prior: the observation's own J
    assert posterior_amplitude(np.array([2.0]), np.array([np.nan]))[0] == 2.0


def test_shell_means_fill_only_missing_references():
    i_ref = np.array([10.0, np.nan, 30.0, np.nan, 100.0])
    inv_d2 = np.array([0.01, 0.011, 0.012, 0.3, 0.31])
    filled = with_shell_means(i_ref, inv_d2, n_bins=2)
    assert filled[[0, 2, 4]].tolist() == [10.0, 30.0, 100.0]
    assert filled[1] == 20.0 and filled[3] == 100.0

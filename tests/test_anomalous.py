"""Anomalous scattering (issue 15): the simulator's Bijvoet differences and the phaser's figures.

The simulator's I(+), I(−) come from a random protein plus heavy atoms (simulate/anomalous.py).
Checked against physics derived here, not against the simulator's own code path:

* with f″ = 0 Friedel's law holds exactly (I(+) = I(−)), whatever f′ is;
* with f″ > 0 the rms Bijvoet difference of acentric reflections is Hendrickson's random-
  walk value: ΔI = 4·Im(A·B*) with A the normal and B = Σ f″·e^{2πih·x} the anomalous part,
  so ⟨ΔI²⟩ = 8⟨|A|²⟩⟨|B|²⟩ and rms(ΔI)/⟨I⟩ = √(8·N_A·f″²/(N_P·f_P²)) per unit ε and B factor;
* centric reflections have no Bijvoet difference;
* the anomalous difference Fourier of the true ΔF with model phases peaks at the true sites,
  and is flat (|ρ| < 3σ) elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest

from dials_factored.simulate import anomalous as an
from dials_factored.simulate.crystal import make_true_crystal

CELL = (60.0, 60.0, 90.0, 90.0, 90.0, 90.0)


def _crystal(fdp: float, d_min: float = 2.5, seed: int = 1):
    heavy = an.HeavyAtoms("Se", 10, -8.0, fdp)
    return make_true_crystal("P43", CELL, d_min, 15.0, 1000.0, np.random.default_rng(seed),
                             heavy)


def _bijvoet_pairs(truth):
    plus, minus = truth.unique.hemispheres_acentrics()
    plus, minus = plus.common_sets(minus.customized_copy(indices=-minus.indices()))
    return plus, minus


def test_without_f_double_prime_friedel_law_holds_exactly():
    plus, minus = _bijvoet_pairs(_crystal(fdp=0.0))
    assert plus.size() > 1000
    assert np.allclose(plus.data().as_numpy_array(), minus.data().as_numpy_array(),
                       rtol=1e-9)


def test_bijvoet_differences_follow_the_random_walk_law():
    truth = _crystal(fdp=4.0)
    plus, minus = _bijvoet_pairs(truth)
    delta = plus.data().as_numpy_array() - minus.data().as_numpy_array()
    d = plus.d_spacings().data().as_numpy_array()
    eps = plus.epsilons().data().as_numpy_array()
    wilson = 1000.0 * eps * np.exp(-15.0 / (2 * d ** 2))  # ⟨I⟩(d) of the protein alone
    n_protein = truth.symmetry.unit_cell().volume() / an.VOLUME_PER_PROTEIN_ATOM
    n_anomalous = 10 * truth.symmetry.space_group().order_z()
    expected = np.sqrt(8 * n_anomalous * 4.0 ** 2 / (n_protein * an.PROTEIN_F_SQUARED))
    measured = np.sqrt(np.mean((delta / wilson) ** 2))
    assert measured == pytest.approx(expected, rel=0.1)
    # and the mean intensity is the Wilson mean of the non-anomalous simulator plus at most
    # the heavy atoms' normal scattering at s = 0, N_A·(Z + f′)² (Se: 34 − 8 electrons)
    plain = np.mean(make_true_crystal("P43", CELL, 2.5, 15.0, 1000.0,
                                      np.random.default_rng(1)).unique.data())
    mean = np.mean(truth.unique.as_non_anomalous_array().merge_equivalents().array().data())
    heavy_share = n_anomalous * 26.0 ** 2 / (n_protein * an.PROTEIN_F_SQUARED)
    assert 0.97 * plain < mean < 1.03 * plain * (1 + heavy_share)


def test_centric_reflections_have_no_bijvoet_difference():
    truth = _crystal(fdp=4.0)
    centric = truth.unique.select_centric()
    assert centric.size() > 50
    assert centric.is_unique_set_under_symmetry()
    full = truth.unique.expand_to_p1()
    lookup = dict(zip(full.indices(), full.data()))
    for hkl, value in zip(centric.indices()[:50], centric.data()[:50]):
        assert lookup[tuple(-x for x in hkl)] == pytest.approx(value)


def test_anomalous_difference_fourier_peaks_at_the_true_sites():
    from cctbx.array_family import flex

    from harness import anomalous as score
    truth = _crystal(fdp=4.0, d_min=3.0)
    heights = score.peak_heights(truth.unique, truth.unique, truth.model_f, truth.heavy_atoms)
    assert min(heights) > 10
    elsewhere = truth.heavy_atoms.deep_copy_scatterers()
    elsewhere.set_sites_frac(flex.vec3_double(np.random.default_rng(5).random((10, 3))
                                              .tolist()))
    off = score.peak_heights(truth.unique, truth.unique, truth.model_f, elsewhere)
    assert max(abs(h) for h in off) < 3
    # without f″ there is no anomalous map at all
    plain = _crystal(fdp=0.0, d_min=3.0)
    flat = score.peak_heights(plain.unique, plain.unique, plain.model_f, plain.heavy_atoms)
    assert max(abs(h) for h in flat) < 1e-6 or not np.isfinite(flat).all()

"""Anomalous scattering for the simulated crystal: heavy-atom sites with f′ and f″.

A reflection's structure factor (electrons) is the sum of a random protein part and the
heavy atoms' part,

    F(h) = F_P(h) + F_H(h),   F_H(h) = Σ_j (f0_j(s) + f′ + i·f″)·exp(−B s²/4)·e^{2πi h·x_j},

summed over every heavy atom of the unit cell (cctbx direct summation, ``anomalous_flag``
on, so F_H(−h) ≠ F_H(h)* when f″ ≠ 0).  The protein part is a Wilson draw with random
phase: acentric F_P = σ_P(d)·(x + i·y)/√2 with x, y ~ N(0, 1); centric F_P = σ_P(d)·z;
σ_P²(d) = ε·N_P·f_P²·exp(−B/(2d²)) with N_P the protein atoms of the cell and f_P² = 45 e²
(the mean of C, N and O at low angle); Friedel's law holds for it, F_P(−h) = F_P(h)*.  So

    I(+h) = k·|F_P(h) + F_H(h)|²,   I(−h) = k·|F_P(h)* + F_H(−h)|²,

with k = I0/(N_P·f_P²) chosen so that the protein alone has the Wilson mean of
:mod:`dials_factored.simulate.crystal`, ⟨I⟩(d) = I0·ε·exp(−B/(2d²)).  Centric reflections
carry no anomalous difference: their I is the mean of the two values above.  The phases
of a model (what a phaser uses for an anomalous difference Fourier) are those of the
non-anomalous structure factor F_P + F_H(f″ = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cctbx import crystal, miller, xray
from cctbx.array_family import flex

#: Mean square scattering factor of a protein atom at low angle (C, N, O; e²).
PROTEIN_F_SQUARED = 45.0
#: Unit-cell volume per protein atom (Å³): Matthews V_M 2.4 Å³/Da, 14 Da per non-H atom.
VOLUME_PER_PROTEIN_ATOM = 2.4 * 14.0


@dataclass
class HeavyAtoms:
    """The anomalous scatterers: ``n_sites`` atoms of ``element`` per asymmetric unit."""

    element: str
    n_sites: int
    fp: float  # f′ (electrons)
    fdp: float  # f″ (electrons)


def heavy_atom_structure(symmetry: crystal.symmetry, heavy: HeavyAtoms, b_iso: float,
                         rng: np.random.Generator) -> xray.structure:
    """``heavy.n_sites`` atoms at uniform random fractional sites, occupancy 1, B = ``b_iso``."""
    structure = xray.structure(crystal_symmetry=symmetry)
    u_iso = b_iso / (8 * np.pi ** 2)
    for j, site in enumerate(rng.random((heavy.n_sites, 3))):
        structure.add_scatterer(xray.scatterer(
            f"{heavy.element.upper()}{j + 1}", site=tuple(float(x) for x in site), u=u_iso,
            occupancy=1.0, scattering_type=heavy.element, fp=heavy.fp, fdp=heavy.fdp))
    return structure


def _heavy_factors(structure: xray.structure, indices: flex.miller_index,
                   anomalous: bool) -> np.ndarray:
    """F_H (electrons, complex) at exactly ``indices`` (no mapping to the asu)."""
    if not anomalous:
        structure = structure.deep_copy_scatterers()
        for scatterer in structure.scatterers():
            scatterer.fdp = 0.0
    ms = miller.set(structure.crystal_symmetry(), indices, anomalous_flag=True)
    f = ms.structure_factors_from_scatterers(structure, algorithm="direct").f_calc()
    return f.data().as_numpy_array()


def anomalous_intensities(base: miller.set, b_wilson: float, mean_intensity: float,
                          structure: xray.structure, rng: np.random.Generator
                          ) -> tuple[miller.array, miller.array]:
    """I(+) and I(−) of every reflection of ``base`` (non-anomalous asu), and the model F.

    Returns the anomalous asu intensity array (see the module doc) and the complex model
    structure factors √k·(F_P + F_H(f″ = 0)) on ``base``, whose phases a phaser would use.
    """
    d = base.d_spacings().data().as_numpy_array()
    eps = base.epsilons().data().as_numpy_array().astype(float)
    centric = base.centric_flags().data().as_numpy_array()
    n_protein = base.unit_cell().volume() / VOLUME_PER_PROTEIN_ATOM
    sigma_p = np.sqrt(eps * n_protein * PROTEIN_F_SQUARED * np.exp(-b_wilson / (2 * d ** 2)))
    x, y = rng.standard_normal((2, d.size))
    f_p = np.where(centric, sigma_p * x, sigma_p * (x + 1j * y) / np.sqrt(2))
    k = mean_intensity / (n_protein * PROTEIN_F_SQUARED)
    plus = base.indices()
    minus = -plus
    i_plus = k * np.abs(f_p + _heavy_factors(structure, plus, True)) ** 2
    i_minus = k * np.abs(np.conj(f_p) + _heavy_factors(structure, minus, True)) ** 2
    mean = 0.5 * (i_plus + i_minus)
    i_plus = np.where(centric, mean, i_plus)
    acentric = flex.bool((~centric).tolist())
    indices = plus.deep_copy()
    indices.extend(minus.select(acentric))
    data = np.concatenate([i_plus, i_minus[~centric]])
    intensities = miller.array(miller.set(base.crystal_symmetry(), indices, anomalous_flag=True),
                               data=flex.double(data)).map_to_asu()
    f_model = np.sqrt(k) * (f_p + _heavy_factors(structure, plus, False))
    return intensities, base.array(data=flex.complex_double(flex.double(f_model.real.copy()),
                                                             flex.double(f_model.imag.copy())))

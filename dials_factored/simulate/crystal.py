"""The simulated crystal: true intensities (Wilson statistics), orientations, dxtbx models.

Intensities are generated once per unique, non-anomalous reflection of the asymmetric
unit and shared by all its symmetry equivalents and its Friedel mate.  For a reflection
of resolution d (Å) with symmetry enhancement factor ε (``cctbx`` epsilon) the Wilson
mean is ``⟨I⟩(d) = I0 · ε · exp(−2·B_wilson/(4d²))`` = ``I0 · ε · exp(−B_wilson/(2d²))``
(``B_wilson`` in Å², I in arbitrary "intensity units", the units of truth.mtz); acentric
reflections draw ``I = ⟨I⟩·X`` with X ~ Exp(1), centric ones ``I = ⟨I⟩·Z²`` with
Z ~ N(0, 1) (the χ²₁ distribution of mean 1).  Systematic absences are not generated.
With heavy atoms (:mod:`dials_factored.simulate.anomalous`) the intensities come instead
from a random protein plus the heavy atoms' structure factors, and I(+) ≠ I(−).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cctbx import crystal, miller, sgtbx, uctbx
from cctbx.array_family import flex
from dxtbx.model import Crystal
from scitbx import matrix

from dials_factored.simulate.anomalous import (
    HeavyAtoms,
    anomalous_intensities,
    heavy_atom_structure,
)


@dataclass
class TrueCrystal:
    """True intensities of a crystal, per unique reflection and for the whole sphere."""

    symmetry: crystal.symmetry
    unique: miller.array  # asu, data = I_true (anomalous: I(+) and I(−) apart)
    hkl: np.ndarray  # (n, 3) int: every index of the full sphere to d_min (no absences)
    intensity: np.ndarray  # (n,) I_true of each ``hkl``
    d: np.ndarray  # (n,) resolution (Å) of each ``hkl``
    heavy_atoms: object = None  # cctbx xray.structure of the anomalous scatterers, if any
    model_f: miller.array | None = None  # complex F of the model (its phases), if any

    @property
    def b_matrix(self) -> np.ndarray:
        """DIALS' B matrix (reciprocal basis as columns, Å⁻¹) of the unit cell."""
        return np.asarray(self.symmetry.unit_cell().fractionalization_matrix(),
                          dtype=float).reshape(3, 3).T


def make_true_crystal(space_group: str, unit_cell, d_min: float, b_wilson: float,
                      mean_intensity: float, rng: np.random.Generator,
                      heavy: HeavyAtoms | None = None) -> TrueCrystal:
    """Draw Wilson intensities for every unique reflection to ``d_min`` (Å); see the module doc."""
    symmetry = crystal.symmetry(unit_cell=uctbx.unit_cell(tuple(unit_cell)),
                                space_group_info=sgtbx.space_group_info(space_group))
    unique = miller.build_set(symmetry, anomalous_flag=False, d_min=d_min)
    if heavy is not None and heavy.n_sites > 0:
        sites = heavy_atom_structure(symmetry, heavy, b_wilson, rng)
        intensities, model_f = anomalous_intensities(unique, b_wilson, mean_intensity, sites,
                                                     rng)
        full = intensities.expand_to_p1()
        hkl = np.asarray(full.indices().as_vec3_double(), dtype=float).round().astype(int)
        return TrueCrystal(symmetry=symmetry, unique=intensities, hkl=hkl,
                           intensity=full.data().as_numpy_array().copy(),
                           d=full.d_spacings().data().as_numpy_array().copy(),
                           heavy_atoms=sites, model_f=model_f)
    d = unique.d_spacings().data().as_numpy_array()
    eps = unique.epsilons().data().as_numpy_array().astype(float)
    centric = unique.centric_flags().data().as_numpy_array()
    mean = mean_intensity * eps * np.exp(-b_wilson / (2.0 * d ** 2))
    draw = np.where(centric, rng.standard_normal(d.size) ** 2, rng.standard_exponential(d.size))
    unique = unique.array(data=flex.double(mean * draw))
    full = unique.generate_bijvoet_mates().expand_to_p1()
    hkl = np.asarray(full.indices().as_vec3_double(), dtype=float).round().astype(int)
    return TrueCrystal(symmetry=symmetry, unique=unique, hkl=hkl,
                       intensity=full.data().as_numpy_array().copy(),
                       d=full.d_spacings().data().as_numpy_array().copy())


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotation matrices (n×3×3) uniformly distributed over SO(3).

    A normalised 4-vector of independent standard normals is a uniform unit
    quaternion (Shoemake); its rotation matrix is returned.
    """
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], axis=1)


def crystal_model(truth: TrueCrystal, u: np.ndarray) -> Crystal:
    """The dxtbx crystal with orientation matrix ``u`` (3×3): ``A = U·B``, Å⁻¹."""
    ortho = np.asarray(truth.symmetry.unit_cell().orthogonalization_matrix()).reshape(3, 3)
    a, b, c = (matrix.col(tuple(float(v) for v in ortho[:, i])) for i in range(3))
    model = Crystal(a, b, c, truth.symmetry.space_group())
    model.set_U(matrix.sqr(tuple(float(v) for v in np.asarray(u).ravel())))
    return model


def a_matrix(model: Crystal) -> np.ndarray:
    """The crystal's setting matrix A (3×3, reciprocal basis as columns, Å⁻¹)."""
    return np.asarray(model.get_A(), dtype=float).reshape(3, 3)

"""Where I_ref comes from: an MTZ, an atomic model, or the data themselves.

One small interface, a few implementations (as careless does for its priors).
``intensities(asu_indices)`` returns I_ref for each reflection in arbitrary
units (the scale G absorbs the overall factor), NaN where the reference has no
value; the bootstrap reference then supplies those from the data.
"""

from __future__ import annotations

import logging
import os

import numpy as np
from cctbx import crystal, miller

logger = logging.getLogger(f"dials.{__name__}")


class ReferenceError_(ValueError):
    """A reference that cannot be used with these data (message for the user)."""


class Reference:
    """Base class: intensities for asymmetric-unit indices."""

    name = "reference"
    external = True

    def intensities(self, asu_indices) -> np.ndarray:
        raise NotImplementedError


class ArrayReference(Reference):
    """A cctbx intensity array, checked against the data's symmetry."""

    def __init__(self, array: miller.array, symmetry: crystal.symmetry, name: str):
        self.name = name
        ref_sg = array.space_group().build_derived_point_group()
        data_sg = symmetry.space_group().build_derived_point_group()
        if ref_sg != data_sg:
            raise ReferenceError_(
                f"reference {name} has point group {array.space_group_info()} which differs "
                f"from the data's {symmetry.space_group_info()}"
            )
        if not array.unit_cell().is_similar_to(symmetry.unit_cell(), 0.05, 3.0):
            raise ReferenceError_(
                f"reference {name} cell {array.unit_cell()} is incompatible with the data's "
                f"{symmetry.unit_cell()}"
            )
        arr = array.customized_copy(crystal_symmetry=symmetry).merge_equivalents().array()
        arr = arr.as_non_anomalous_array().merge_equivalents().array().map_to_asu()
        self._lookup = {tuple(h): float(v) for h, v in zip(arr.indices(), arr.data())}

    def intensities(self, asu_indices) -> np.ndarray:
        get = self._lookup.get
        return np.array([get(tuple(h), np.nan) for h in asu_indices], dtype=float)


def from_mtz(path: str, symmetry: crystal.symmetry) -> ArrayReference:
    """Intensities (or squared amplitudes) from the first suitable MTZ column."""
    from iotbx import mtz

    arrays = mtz.object(path).as_miller_arrays()
    intensity = [a for a in arrays if a.is_xray_intensity_array()]
    amplitude = [a for a in arrays if a.is_xray_amplitude_array()]
    if intensity:
        chosen = intensity[0]
    elif amplitude:
        chosen = amplitude[0].f_as_f_sq()
    else:
        raise ReferenceError_(f"reference {path} has no intensity or amplitude column")
    return ArrayReference(chosen.as_intensity_array(), symmetry, os.path.basename(path))


def from_model(path: str, symmetry: crystal.symmetry, d_min: float) -> ArrayReference:
    """|Fcalc|² of an atomic model (PDB/mmCIF) to d_min (atomic model only)."""
    import iotbx.pdb

    xrs = iotbx.pdb.input(file_name=path).xray_structure_simple()
    fc = xrs.structure_factors(d_min=d_min, algorithm="direct").f_calc()
    return ArrayReference(fc.amplitudes().f_as_f_sq(), symmetry, os.path.basename(path))


def load(path: str | None, symmetry: crystal.symmetry, d_min: float) -> Reference | None:
    """The external reference named by ``reference=``, or None to bootstrap."""
    if not path:
        return None
    if not os.path.isfile(path):
        raise ReferenceError_(f"reference file {path} does not exist")
    if path.lower().endswith(".mtz"):
        return from_mtz(path, symmetry)
    if path.lower().endswith((".pdb", ".cif", ".ent", ".mmcif")):
        return from_model(path, symmetry, d_min)
    raise ReferenceError_(f"reference {path}: expected an .mtz, .pdb or .cif file")


def merged(group: np.ndarray, j: np.ndarray, var_j: np.ndarray, scale: np.ndarray):
    """I_h of every observation's reflection given the scales: the least-squares mean.

    I_h = Σ (s/σ²) J / Σ s²/σ² over the symmetry mates with scale s > 0 — the value
    that minimises Σ (J − s·I_h)²/σ², so that fitting the scales against it is the
    joint maximum-likelihood fit of scales and intensities with I_h profiled out
    (Hamilton, Rollett & Sparks).  NaN where no mate has a scale.
    """
    ok = (scale > 0) & np.isfinite(j) & np.isfinite(var_j) & (var_j > 0)
    w = np.where(ok, 1.0 / np.where(ok, var_j, 1.0), 0.0)
    s = np.where(ok, scale, 0.0)
    n = int(group.max()) + 1 if len(group) else 0
    num = np.bincount(group, weights=w * s * np.where(ok, j, 0.0), minlength=n)
    den = np.bincount(group, weights=w * s * s, minlength=n)
    has = den > 0
    return np.where(has, num / np.where(has, den, 1.0), np.nan)[group]


def bootstrap(group: np.ndarray, j: np.ndarray, var_j: np.ndarray, scale: np.ndarray):
    """I_ref per observation from the *other* observations of its reflection, and its variance.

    Each observation i estimates I as x_i = J_i/scale_i with variance var_i =
    var_J/scale²; I_ref for i is the inverse-variance mean of x over the symmetry
    mates of i without i itself (leave-one-out), so that an observation never pulls
    its own target towards itself (the self-inclusion bias of low multiplicity).
    ``scale`` = G·exp(B/4d²)·p·qe/lp per observation (counts per unit intensity).
    Reflections observed once get NaN (no reference) and infinite variance.
    Returns (I_ref, its variance, the number of observations behind it).
    """
    ok = (scale > 0) & np.isfinite(j) & np.isfinite(var_j) & (var_j > 0)
    safe = np.where(ok, scale, 1.0)
    w = np.where(ok, safe ** 2 / np.where(ok, var_j, 1.0), 0.0)
    x = np.where(ok, j / safe, 0.0)
    n = int(group.max()) + 1 if len(group) else 0
    sw = np.bincount(group, weights=w, minlength=n)[group] - w
    n_others = np.bincount(group, weights=ok.astype(float), minlength=n)[group] - ok
    swx = np.bincount(group, weights=w * x, minlength=n)[group] - w * x
    has = sw > 1e-12 * np.maximum(np.bincount(group, weights=w, minlength=n)[group], 1e-300)
    mean = np.where(has, swx / np.where(has, sw, 1.0), np.nan)
    var = np.where(has, 1.0 / np.where(has, sw, 1.0), np.inf)
    return mean, var, n_others


__all__ = ["Reference", "ArrayReference", "ReferenceError_", "from_mtz", "from_model", "load",
           "bootstrap", "merged"]

"""Symmetry-aware grouping and inverse-variance merging, vectorised with numpy."""

from __future__ import annotations

import numpy as np
from cctbx import crystal, miller
from dials.array_family import flex

from dials_factored.arrays import miller_keys, to_numpy
from dials_factored.collective import world


def symmetry_of(experiments) -> crystal.symmetry:
    """The crystal symmetry shared by all experiments (error if space groups differ).

    The distinct groups are found by comparing the groups themselves (a few µs each);
    only those are named (``type()``, about 0.7 ms each: 2 s for 3,000 stills)."""
    distinct = []
    for expt in experiments:
        group = expt.crystal.get_space_group()
        if not any(group == seen for seen in distinct):
            distinct.append(group)
    groups = {group.type().lookup_symbol() for group in distinct}
    if len(groups) != 1:
        raise ValueError(f"experiments have different space groups: {sorted(groups)}")
    first = experiments[0].crystal
    return crystal.symmetry(unit_cell=first.get_unit_cell(), space_group=first.get_space_group())


def asu_groups(indices, symmetry: crystal.symmetry, anomalous: bool = False):
    """Map Miller indices to the asymmetric unit; return (asu indices, group id per row).

    Group ids number the distinct asymmetric-unit reflections 0..n_unique-1.
    """
    ms = miller.set(symmetry, flex.miller_index(indices), anomalous_flag=anomalous).map_to_asu()
    asu = to_numpy(ms.indices())
    _, group = np.unique(miller_keys(asu), return_inverse=True)
    return ms.indices(), group


def global_groups(asu_indices) -> np.ndarray:
    """Group ids numbering the distinct asymmetric-unit reflections of *all* ranks.

    Each rank sends only its distinct keys; with one process this is
    ``np.unique(…, return_inverse=True)``.
    """
    key = miller_keys(to_numpy(asu_indices))
    union = np.unique(np.concatenate(world().allgather(np.unique(key))))
    return np.searchsorted(union, key)


def weighted_mean(group: np.ndarray, values: np.ndarray, variances: np.ndarray):
    """Inverse-variance mean per group and its variance (inf where no data)."""
    n = int(group.max()) + 1 if len(group) else 0
    w = np.where(np.isfinite(variances) & (variances > 0), 1.0 / variances, 0.0)
    sw = np.bincount(group, weights=w, minlength=n)
    swx = np.bincount(group, weights=w * values, minlength=n)
    mean = np.where(sw > 0, swx / np.where(sw > 0, sw, 1.0), np.nan)
    var = np.where(sw > 0, 1.0 / np.where(sw > 0, sw, 1.0), np.inf)
    return mean, var

"""Fast conversion of DIALS/cctbx flex arrays to numpy.

``np.asarray(flex_array)`` iterates element by element (about 1 µs per element);
``as_numpy_array`` copies the buffer.  Vector types come back as (n, 3) arrays.
"""

from __future__ import annotations

import numpy as np
from dials.array_family import flex


def to_numpy(values) -> np.ndarray:
    """A numpy copy of a flex array (vec3_double and miller_index become (n, 3))."""
    if isinstance(values, flex.miller_index):
        return values.as_vec3_double().as_numpy_array().reshape(-1, 3).astype(np.int64)
    if isinstance(values, flex.vec3_double):
        return values.as_numpy_array().reshape(-1, 3)
    if isinstance(values, flex.vec2_double):
        return values.as_double().as_numpy_array().reshape(-1, 2)
    return values.as_numpy_array()


def rows_by_experiment(ids, n_experiments: int) -> list[np.ndarray]:
    """The row indices (ascending) of each experiment id 0 … n_experiments − 1, from one
    stable sort: selecting ``ids == i`` in a loop over experiments costs N_expt × N_rows,
    which for 10⁴ stills is most of a run."""
    ids = np.asarray(ids)
    order = np.argsort(ids, kind="stable")
    bounds = np.searchsorted(ids[order], np.arange(n_experiments + 1))
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def miller_keys(hkl, ids=None) -> np.ndarray:
    """One int64 per (experiment id, h, k, l), for sorting and matching rows.

    Indices must lie in [−512, 511] and ids below 2³³ (far beyond any data set); without
    ``ids`` the key is that of id 0.
    """
    hkl = np.asarray(hkl, dtype=np.int64).reshape(-1, 3) + 512
    ids = np.zeros(len(hkl), np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    return ((ids * 1024 + hkl[:, 0]) * 1024 + hkl[:, 1]) * 1024 + hkl[:, 2]

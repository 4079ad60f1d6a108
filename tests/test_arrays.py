"""Row selections per experiment in one sort (a loop of ``ids == i`` costs N_expt × N_rows)."""

from __future__ import annotations

import numpy as np

from dials_factored.arrays import rows_by_experiment


def test_rows_by_experiment_match_the_selection_it_replaces():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 40, 5000)
    ids[ids == 7] = 3  # an experiment without rows
    rows = rows_by_experiment(ids, 42)  # and two beyond the largest id
    assert len(rows) == 42
    for i, r in enumerate(rows):
        np.testing.assert_array_equal(r, np.flatnonzero(ids == i))
    assert sum(len(r) for r in rows) == len(ids)

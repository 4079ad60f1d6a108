"""The pixel store's neighbourhood: which neighbour pixels a block's pass needs."""

from __future__ import annotations

import numpy as np

from dials_factored import pixel_store
from dials_factored.pixel_store import PixelStore


def _store(tmp_path, seed=0):
    """Six reflections of 40 pixels; reflections 2-3 are the block, the others its halo.
    Sites are drawn from a small range so that halo pixels share some with the block;
    a few are off the panel (negative, unique)."""
    rng = np.random.default_rng(seed)
    start = np.arange(0, 241, 40, dtype=np.int64)
    tmp_path.mkdir()
    store = PixelStore(str(tmp_path), start)
    site = rng.integers(1000, 1400, 240)
    off = rng.random(240) < 0.05
    site[off] = -1 - np.flatnonzero(off)
    site[200:240] += 5000  # reflection 5 is far away: shares nothing
    store.write("site", 0, site)
    return store, site


def test_neighbourhood_dense_map_equals_sort_and_search(tmp_path, monkeypatch):
    store, site = _store(tmp_path / "a")
    dense = store.neighbourhood(0, 0, 6, 2, 4, lambda: np.ones(6, bool))
    monkeypatch.setattr(pixel_store, "MAX_SITE_RANGE", 10)
    other, _ = _store(tmp_path / "b")
    searched = other.neighbourhood(0, 0, 6, 2, 4, lambda: np.ones(6, bool))
    keep, pixels, ids = dense
    np.testing.assert_array_equal(keep, searched[0])
    np.testing.assert_array_equal(pixels, searched[1])
    # ids: equal exactly where the sites are equal
    same_dense = ids[:, None] == ids[None, :]
    same_sites = site[pixels][:, None] == site[pixels][None, :]
    np.testing.assert_array_equal(same_dense, same_sites)
    np.testing.assert_array_equal(searched[2][:, None] == searched[2][None, :], same_sites)
    # what is needed: every own pixel; of the others exactly those sharing an own site
    own_sites = set(site[80:160].tolist())
    want = np.array([80 <= p < 160 or int(site[p]) in own_sites for p in range(240)])
    np.testing.assert_array_equal(pixels, np.flatnonzero(want))
    assert keep.tolist() == [True, True, True, True, True, False]

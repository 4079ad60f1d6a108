"""The pixel store's neighbourhood: which neighbour pixels a block's pass needs."""

from __future__ import annotations

import numpy as np

from dials_factored.pixel_store import PixelStore, off_scan_pixels
from dials_factored.shoeboxes import Boxes

#: (panel, x0, x1, y0, y1, image of the first layer, layers) of eight boxes on two
#: 50 × 50-pixel panels of a scan of images 0 … 7; reflections 2, 3 and 4 are the block.
BOXES = [(0, 10, 20, 10, 20, 0, 3),    # shares image 2 with box 2
         (1, 10, 20, 10, 20, 0, 3),    # the same pixels of the other panel: nothing
         (0, 15, 25, 15, 25, 2, 3),    # own
         (0, 20, 28, 20, 28, 3, 2),    # own, sharing images 3-4 with box 2
         (0, 45, 55, 0, 8, -1, 4),     # own: off the panel's edge, first layer off the scan
         (0, 48, 58, 2, 6, 1, 2),      # shares images 1-2 with box 4, only on the panel
         (0, 15, 25, 15, 25, 5, 2),    # box 2's pixels on later images: nothing
         (0, 30, 40, 30, 40, 2, 3)]    # far away: nothing
N_IMAGES, SIDE = 8, 50


def _store(directory):
    """The store of ``BOXES`` with the sites the image reader writes: the physical pixel
    (image, panel, y, x) on the panel and the scan, else −1 − store index."""
    rows = np.array(BOXES)
    boxes = Boxes(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4],
                  np.zeros(len(rows), int), rows[:, 6])
    sizes = (rows[:, 2] - rows[:, 1]) * (rows[:, 4] - rows[:, 3]) * rows[:, 6]
    start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    sites = []
    for (panel, x0, x1, y0, y1, image0, depth) in BOXES:
        image, y, x = np.meshgrid(image0 + np.arange(depth), np.arange(y0, y1),
                                  np.arange(x0, x1), indexing="ij")
        sites.append(((image * 2 + panel) * SIDE + y) * SIDE + x)
        inside = (x < SIDE) & (y < SIDE) & (image >= 0) & (image < N_IMAGES)
        sites[-1] = np.where(inside, sites[-1], -1).ravel()
    site = np.concatenate(sites)
    site[site < 0] = -1 - np.flatnonzero(site < 0)
    directory.mkdir()
    store = PixelStore(str(directory), start)
    store.write("site", 0, site)
    return store, site, boxes, rows[:, 5]


def test_neighbourhood_finds_exactly_the_shared_pixels(tmp_path):
    """The box search gives what comparing every halo pixel's site with the block's
    gives: every own pixel, and of the halo exactly the pixels with an own site."""
    store, site, boxes, origin = _store(tmp_path / "a")
    index, pixels, ids = store.neighbourhood(0, 2, 5, np.array([0, 1, 5, 6, 7]), boxes,
                                             origin)
    own = np.arange(store.start[2], store.start[5])
    own_sites = set(site[own][site[own] >= 0].tolist())
    want = np.array([store.start[2] <= p < store.start[5] or int(site[p]) in own_sites
                     for p in range(len(site))])
    np.testing.assert_array_equal(pixels, np.flatnonzero(want))
    assert index.tolist() == [0, 2, 3, 4, 5]
    assert 0 < (want[:store.start[1]]).sum() < store.start[1]  # a part of box 0
    # ids: equal exactly where the sites are equal (own boxes 2 and 3 share some)
    np.testing.assert_array_equal(ids[:, None] == ids[None, :],
                                  site[pixels][:, None] == site[pixels][None, :])
    # computed once: the second call reads it back
    again = store.neighbourhood(0, 2, 5, np.array([0, 1, 5, 6, 7]), boxes, origin)
    for a, b in zip(again, (index, pixels, ids)):
        np.testing.assert_array_equal(a, b)


def test_only_the_layers_off_the_scan_are_left_to_the_store(tmp_path):
    """The pixels no image writes are exactly the box layers on frames outside the scan:
    a store that gives only those their own sites, the rest written as the image reader
    writes them, holds the same sites as one that initialised every pixel."""
    rows = np.array(BOXES)
    first_frame = rows[:, 5] + 2  # the scan is frames 2 … 9: box layers off it at both ends
    boxes = Boxes(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4], first_frame,
                  first_frame + rows[:, 6])
    start = np.concatenate([[0], np.cumsum(boxes.n_pixels)]).astype(np.int64)
    frame = np.concatenate([np.repeat(z0 + np.arange(z1 - z0), (x1 - x0) * (y1 - y0))
                            for z0, z1, x0, x1, y0, y1 in zip(boxes.z0, boxes.z1, boxes.x0,
                                                              boxes.x1, boxes.y0, boxes.y1)])
    off = off_scan_pixels(start, boxes, np.full(len(rows), 2), np.full(len(rows), 2 + N_IMAGES))
    np.testing.assert_array_equal(off, np.flatnonzero((frame < 2) | (frame >= 2 + N_IMAGES)))
    assert 0 < len(off) < start[-1]
    (tmp_path / "full").mkdir()
    (tmp_path / "part").mkdir()
    full = PixelStore(str(tmp_path / "full"), start)
    part = PixelStore(str(tmp_path / "part"), start, off)
    written = np.setdiff1d(np.arange(start[-1]), off)
    for store in (full, part):
        store.scatter("site", written, 7 * written)
    np.testing.assert_array_equal(full.read("site", 0, len(rows)), part.read("site", 0, len(rows)))

"""Hot pixels of stills: one detector pixel far above its neighbours on most images.

A hot (or stuck) pixel has the same large value on every image.  In a rotation box it
is found as a position high on every frame of the box (``kernels.hot_positions``); a
still's box has a single frame, and a hot pixel on a weak spot's peak raises the
profile-fitted amplitude so much that the model-based outlier test, which judges each
pixel against the larger of the expected and the fitted amplitude, sees it as signal
(on 40 simulated stills at 0.05 photons/px two such observations had z = 57 and 67,
half of all Σz²).  Across images it is plain: Bragg spots of stills in random
orientations move from image to image, a hot pixel does not.

A pixel is *high* on an image when its value exceeds the mean ``m`` of its eight
neighbours by ``threshold`` Poisson σ, ``x > m + threshold·√(m + 1)`` (photons, after
the gain), and *hot* when it is high on at least ``fraction`` of ``n_sample`` images
spread over the run (and on at least ``MIN_IMAGES``).  A real spot's peak is high on
the few images where that reflection lands there; the smooth background (rings,
the inner halo) is never high against its own neighbours.  This is the test DIALS's
``dials.find_hot_pixels`` makes with strong spots found on many images at one place.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(f"dials.{__name__}")

#: A pixel must be high on at least this many sampled images to be called hot.
MIN_IMAGES = 5


def high_pixels(image: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels (bool, the image's shape) above the mean of their 8 neighbours by
    ``threshold`` σ, σ² = mean + 1 (photons).

    Only pixels above ``threshold`` can pass (the mean is ≥ 0), so the neighbours are
    looked at for those alone (edge pixels use the neighbours inside the image).
    """
    x = np.asarray(image)
    ny, nx = x.shape
    high = np.zeros(x.shape, bool)
    yc, xc = np.nonzero(np.isfinite(x) & (x > threshold))
    if yc.size == 0:
        return high
    total = np.zeros(yc.size)
    count = np.zeros(yc.size)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            y, xx = yc + dy, xc + dx
            inside = (y >= 0) & (y < ny) & (xx >= 0) & (xx < nx)
            v = np.where(inside, x[np.clip(y, 0, ny - 1), np.clip(xx, 0, nx - 1)], 0.0)
            v = np.where(np.isfinite(v), v, 0.0)
            total += v
            count += inside
    mean = np.maximum(total / np.maximum(count, 1), 0.0)
    high[yc, xc] = x[yc, xc] > mean + threshold * np.sqrt(mean + 1.0)
    return high


def hot_pixel_mask(read_image, n_images: int, n_sample: int = 20, threshold: float = 8.0,
                   fraction: float = 0.75) -> list[np.ndarray] | None:
    """Per panel, True where a pixel is *not* hot (None: fewer than ``MIN_IMAGES`` images).

    ``read_image(i)`` returns the panels (2-D arrays, photons) of image ``i`` of
    ``n_images``; ``n_sample`` of them, evenly spread, are read.
    """
    if n_images < MIN_IMAGES:
        return None
    picks = np.unique(np.linspace(0, n_images - 1, min(n_sample, n_images)).round().astype(int))
    counts = None
    for i in picks:
        panels = read_image(int(i))
        highs = [high_pixels(p, threshold) for p in panels]
        if counts is None:
            counts = [h.astype(np.int32) for h in highs]
        else:
            if [c.shape for c in counts] != [h.shape for h in highs]:
                return None  # not one detector layout: no common mask
            for c, h in zip(counts, highs):
                c += h
    need = max(MIN_IMAGES, int(np.ceil(fraction * len(picks))))
    if len(picks) < MIN_IMAGES:
        return None
    good = [c < need for c in counts]
    n_hot = int(sum((~g).sum() for g in good))
    logger.info("Hot pixels: %d (high on ≥ %d of %d images sampled)", n_hot, need, len(picks))
    return good


def stills_hot_mask(jobs: list, gain: float = 1.0, **kwargs) -> list[np.ndarray] | None:
    """:func:`hot_pixel_mask` over the images of ``jobs`` (``shoeboxes.plan_jobs``:
    (imageset, index, ids, frame) per image), in photons (counts / ``gain``)."""

    def read(i: int) -> list[np.ndarray]:
        imageset, index = jobs[i][0], jobs[i][1]
        data = imageset.get_raw_data(index)
        imageset.clear_cache()
        return [d.as_numpy_array() / gain for d in data]

    try:
        return hot_pixel_mask(read, len(jobs), **kwargs)
    except Exception as e:  # an unreadable image is reported by the extraction itself
        logger.info("Hot pixels: not searched (%s)", str(e).splitlines()[0] if str(e) else e)
        return None

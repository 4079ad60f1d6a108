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

A crystal that does not move between stills (a grid scan over one crystal, issue 13)
puts its strong spots on the same pixels of every image, and their peaks are high on
all of them.  So a pixel is judged only on the images where no reflection is predicted
within ``SPOT_RADIUS`` pixels of it: hot means high on at least ``fraction`` of those
(and on ``MIN_IMAGES``), and a pixel under a predicted spot on nearly every image is
not judged at all.  On the 15 indexed thaumatin grid stills 8 of the 9 pixels called
hot without this were the peaks of three strong low-resolution spots present on every
still.
"""

from __future__ import annotations

import logging

import numpy as np

from dials_factored.parallel import ordered_map

logger = logging.getLogger(f"dials.{__name__}")

#: A pixel must be high on at least this many sampled images to be called hot.
MIN_IMAGES = 5

#: Pixels this close (px) to a predicted reflection's position are not judged on that image.
SPOT_RADIUS = 4


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


def near_spots(shape: tuple[int, int], xy: np.ndarray, radius: int = SPOT_RADIUS) -> np.ndarray:
    """Pixels (bool, ``shape``) within ``radius`` px of any of the positions ``xy``
    (n × 2, x then y in pixels, as in ``xyzcal.px``)."""
    near = np.zeros(shape, bool)
    if len(xy) == 0:
        return near
    xc = np.floor(np.asarray(xy)[:, 0]).astype(int)
    yc = np.floor(np.asarray(xy)[:, 1]).astype(int)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy > radius * radius:
                continue
            y, x = yc + dy, xc + dx
            inside = (y >= 0) & (y < shape[0]) & (x >= 0) & (x < shape[1])
            near[y[inside], x[inside]] = True
    return near


def hot_pixel_mask(read_image, n_images: int, spots=None, n_sample: int = 20,
                   threshold: float = 8.0, fraction: float = 0.75,
                   nproc: int = 1) -> list[np.ndarray] | None:
    """Per panel, True where a pixel is *not* hot (None: fewer than ``MIN_IMAGES`` images).

    ``read_image(i)`` returns the panels (2-D arrays, photons) of image ``i`` of
    ``n_images``; ``n_sample`` of them, evenly spread, are read.  ``spots(i)``, if
    given, returns per panel the predicted reflection positions (n × 2, px) on image
    ``i``: pixels near them are not judged on that image.  The images are read by
    ``nproc`` forked processes.
    """
    if n_images < MIN_IMAGES:
        return None
    picks = np.unique(np.linspace(0, n_images - 1, min(n_sample, n_images)).round().astype(int))
    if len(picks) < MIN_IMAGES:
        return None

    def judge(k: int):
        """Shapes, and flat indices of the high and of the unjudged pixels, per panel."""
        panels = read_image(int(picks[k]))
        near = ([near_spots(p.shape, xy) for p, xy in zip(panels, spots(int(picks[k])))]
                if spots is not None else [np.zeros(p.shape, bool) for p in panels])
        return ([p.shape for p in panels],
                [np.flatnonzero(high_pixels(p, threshold) & ~n) for p, n in zip(panels, near)],
                [np.flatnonzero(n) for n in near])

    shapes = high_counts = judged = None
    for panel_shapes, highs, unjudged in ordered_map(judge, len(picks), nproc):
        if shapes is None:
            shapes = panel_shapes
            high_counts = [np.zeros(s, np.int32) for s in shapes]
            judged = [np.full(s, len(picks), np.int32) for s in shapes]
        elif panel_shapes != shapes:
            return None  # not one detector layout: no common mask
        for c, n, h, u in zip(high_counts, judged, highs, unjudged):
            c.ravel()[h] += 1
            n.ravel()[u] -= 1
    good = [(n < MIN_IMAGES) | (c < np.maximum(MIN_IMAGES, np.ceil(fraction * n)))
            for c, n in zip(high_counts, judged)]
    n_hot = int(sum((~g).sum() for g in good))
    logger.info("Hot pixels: %d (high on ≥ %.0f %% of the %d images sampled on which no "
                "reflection is predicted within %d px)", n_hot, 100 * fraction, len(picks),
                SPOT_RADIUS)
    return good


def stills_hot_mask(jobs: list, gain: float = 1.0, job_of=None, panel=None, xy=None,
                    **kwargs) -> list[np.ndarray] | None:
    """:func:`hot_pixel_mask` over the images of ``jobs`` (``shoeboxes.plan_jobs``:
    (imageset, index, ids, frame) per image), in photons (counts / ``gain``).

    ``job_of``, ``panel`` and ``xy`` (per predicted reflection: its image in ``jobs``, its
    panel and its x, y in px) are the spots not to judge pixels under.
    """

    def read(i: int) -> list[np.ndarray]:
        imageset, index = jobs[i][0], jobs[i][1]
        data = imageset.get_raw_data(index)
        imageset.clear_cache()
        return [d.as_numpy_array() / gain for d in data]

    def spots(i: int) -> list[np.ndarray]:
        on_image = job_of == i
        n_panels = len(jobs[i][0].get_detector())
        return [xy[on_image & (panel == k)] for k in range(n_panels)]

    try:
        return hot_pixel_mask(read, len(jobs), spots if xy is not None else None, **kwargs)
    except Exception as e:  # an unreadable image is reported by the extraction itself
        logger.info("Hot pixels: not searched (%s)", str(e).splitlines()[0] if str(e) else e)
        return None

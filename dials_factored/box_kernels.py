"""numba kernels of the box geometry: cutting the images into the store, neighbours, centroids.

Like :mod:`dials_factored.kernels` (the per-cycle pass), each kernel visits each pixel
once, over the flat per-reflection runs of pixels (``start[r]`` .. ``start[r+1]``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def cut_boxes(image, allowed, x0, x1, y0, y1, layer, base, coef, s0_len, low, high, gain,
              image_panel):
    """The pixels of one panel image inside the boxes (x0..x1, y0..y1), layer ``layer``
    of each box, for the store (shoeboxes._ImageCutter._cut).

    Returns per pixel: destination ``base + layer·area + k``, counts / gain (photons,
    float32, 0 where not finite), flags (uint8: 1 usable = on the panel, finite,
    > ``low``, < ``high`` and ``allowed``; 2 overloaded = ≥ ``high``), ε1, ε2 (Å⁻¹,
    float32) from the per-box affine coefficients ``coef``
    (pixel_geometry.offset_coefficients) and the site (physical pixel key, or −1 −
    destination off the panel).
    """
    ny, nx = image.shape
    total = 0
    for b in range(x0.shape[0]):
        total += (x1[b] - x0[b]) * (y1[b] - y0[b])
    dest = np.empty(total, np.int64)
    value = np.empty(total, np.float32)
    flags = np.empty(total, np.uint8)
    e1 = np.empty(total, np.float32)
    e2 = np.empty(total, np.float32)
    site = np.empty(total, np.int64)
    i = 0
    for b in range(x0.shape[0]):
        width = x1[b] - x0[b]
        area = width * (y1[b] - y0[b])
        xr = (x0[b] + x1[b]) // 2
        yr = (y0[b] + y1[b]) // 2
        c = coef[b]
        for k in range(area):
            x = x0[b] + k % width
            y = y0[b] + k // width
            d = base[b] + layer[b] * area + k
            inside = x >= 0 and x < nx and y >= 0 and y < ny
            xi = min(max(x, 0), nx - 1)
            yi = min(max(y, 0), ny - 1)
            v = np.float32(image[yi, xi])
            finite = inside and math.isfinite(v)
            is_over = finite and v >= high
            dest[i] = d
            value[i] = v / gain if finite else np.float32(0.0)
            usable = finite and v > low and allowed[yi, xi] and not is_over
            flags[i] = (1 if usable else 0) + (2 if is_over else 0)
            site[i] = (image_panel * ny + y) * nx + x if inside else -1 - d
            dx = np.float32(xi - xr)
            dy = np.float32(yi - yr)
            scale = s0_len / math.sqrt(c[0] + dx * (c[1] + dx * c[3] + dy * c[4])
                                       + dy * (c[2] + dy * c[5]))
            e1[i] = (c[6] + c[7] * dx + c[8] * dy) * scale
            e2[i] = (c[9] + c[10] * dx + c[11] * dy) * scale
            i += 1
    return dest, value, flags, e1, e2, site


@njit(cache=True, nogil=True)
def _box_pairs(own0, own1, others, panel, x0, x1, y0, y1, j0, j1, below):
    """(r, c) of every own box r (``own0`` … ``own1`` − 1) and box c of ``others`` that
    overlap on one panel in x, y and image (half-open ranges; ``j0``/``j1`` in images),
    r ascending; with ``below`` only c < r.  ``others`` is searched sorted by x0 between
    x0 − (its widest box) and x1 of each own box."""
    n = others.shape[0]
    ox0 = np.empty(n, np.int64)
    widest = 0
    for k in range(n):
        ox0[k] = x0[others[k]]
        widest = max(widest, x1[others[k]] - x0[others[k]])
    order = np.argsort(ox0)
    ox0 = ox0[order]
    rs, cs = [0][:0], [0][:0]
    for r in range(own0, own1):
        for k in range(np.searchsorted(ox0, x0[r] - widest + 1), np.searchsorted(ox0, x1[r])):
            c = others[order[k]]
            if (panel[c] == panel[r] and (not below or c < r) and x0[c] < x1[r] and
                    x1[c] > x0[r] and y0[c] < y1[r] and y1[c] > y0[r] and j0[c] < j1[r]
                    and j1[c] > j0[r]):
                rs.append(r)
                cs.append(c)
    return np.array(rs, np.int64), np.array(cs, np.int64)


@njit(cache=True, nogil=True)
def _common_pixels(r, c, start, x0, x1, y0, y1, j0, j1):
    """Store indices of the pixels of boxes r and c at the same (image, y, x), pairwise."""
    ax0, ax1, ay0, ay1 = max(x0[r], x0[c]), min(x1[r], x1[c]), max(y0[r], y0[c]), min(y1[r],
                                                                                     y1[c])
    az0, az1 = max(j0[r], j0[c]), min(j1[r], j1[c])
    n = (ax1 - ax0) * (ay1 - ay0) * (az1 - az0)
    pr, pc = np.empty(n, np.int64), np.empty(n, np.int64)
    k = 0
    for z in range(az0, az1):
        for y in range(ay0, ay1):
            row_r = start[r] + ((z - j0[r]) * (y1[r] - y0[r]) + y - y0[r]) * (x1[r] - x0[r])
            row_c = start[c] + ((z - j0[c]) * (y1[c] - y0[c]) + y - y0[c]) * (x1[c] - x0[c])
            for x in range(ax0, ax1):
                pr[k], pc[k] = row_r + x - x0[r], row_c + x - x0[c]
                k += 1
    return pr, pc


@njit(cache=True, nogil=True)
def shared_pixels(start, own0, own1, halo, panel, x0, x1, y0, y1, j0, j1, own_sites):
    """The pixels of a block that other boxes share (PixelStore.neighbourhood).

    Boxes are half-open ranges in x, y (px) and in images ``j0`` … ``j1`` − 1, stored
    layer by layer, row by row from ``start``.  Two pixels at one (panel, image, y, x)
    are one physical pixel when their sites (``own_sites`` for the block's own pixels,
    off-panel and unread ones negative and unique) agree.  Returns ``rep``, per own pixel
    the first own pixel (index from the block's first pixel) that is the same physical
    pixel, and (q, p): every pixel q of a ``halo`` box at the place of own pixel p (store
    index, own index; with repeats; its site still to be compared).
    """
    p0 = start[own0]
    rep = np.arange(start[own1] - p0)
    own = np.arange(own0, own1)
    rs, cs = _box_pairs(own0, own1, own, panel, x0, x1, y0, y1, j0, j1, True)
    for k in range(rs.shape[0]):
        pr, pc = _common_pixels(rs[k], cs[k], start, x0, x1, y0, y1, j0, j1)
        for i in range(pr.shape[0]):
            a, b = pr[i] - p0, pc[i] - p0
            if own_sites[a] >= 0 and own_sites[a] == own_sites[b]:
                rep[a] = rep[b]
    rs, cs = _box_pairs(own0, own1, halo, panel, x0, x1, y0, y1, j0, j1, False)
    n = 0
    for k in range(rs.shape[0]):
        r, c = rs[k], cs[k]
        n += ((min(x1[r], x1[c]) - max(x0[r], x0[c])) * (min(y1[r], y1[c]) - max(y0[r], y0[c]))
              * (min(j1[r], j1[c]) - max(j0[r], j0[c])))
    q, p = np.empty(n, np.int64), np.empty(n, np.int64)
    n = 0
    for k in range(rs.shape[0]):
        pr, pc = _common_pixels(rs[k], cs[k], start, x0, x1, y0, y1, j0, j1)
        q[n:n + pc.shape[0]] = pc
        p[n:n + pc.shape[0]] = pr - p0
        n += pc.shape[0]
    return rep, q, p


@njit(cache=True, nogil=True)
def owners_and_frames(pixels, start, index, z0, per_layer):
    """Local reflection (position in ``index``) and frame of each of the sorted store
    ``pixels``, all in the reflections ``index`` (sorted): boxes are stored layer by layer,
    ``per_layer`` pixels per frame from frame ``z0``."""
    owner = np.empty(pixels.shape[0], np.int64)
    frame = np.empty(pixels.shape[0], np.int32)
    j = 0
    for i in range(pixels.shape[0]):
        p = pixels[i]
        while start[index[j] + 1] <= p:
            j += 1
        r = index[j]
        owner[i] = j
        frame[i] = z0[r] + (p - start[r]) // per_layer[r]
    return owner, frame


@njit(cache=True, nogil=True)
def centroids(counts, use, start, bg, x0, y0, nx, ny, frame, centre, variance):
    """Background-subtracted centroids (px, px, frame) and DIALS's centroid variances, in
    place (``passes.centroids``): weights w = max(counts − bg, 0) over ``use``; pixel i of a
    reflection's box lies at (x0 + k % nx + ½, y0 + k // nx + ½, frame + ½), k = i mod
    nx·ny.  ``centre`` comes in holding the predictions (kept where Σw = 0) and
    ``variance`` the box widths²/12 (kept where fewer than two pixels carry weight)."""
    for r in range(start.shape[0] - 1):
        layer = nx[r] * ny[r]
        s = s2 = sx = sy = sz = 0.0
        for i in range(start[r], start[r + 1]):
            if use[i]:
                w = max(np.float64(counts[i]) - bg[r], 0.0)
                k = (i - start[r]) % layer
                s += w
                s2 += w * w
                sx += w * (x0[r] + k % nx[r] + 0.5)
                sy += w * (y0[r] + k // nx[r] + 0.5)
                sz += w * (frame[i] + 0.5)
        if s > 0:
            centre[r, 0], centre[r, 1], centre[r, 2] = sx / s, sy / s, sz / s
        if not s * s > s2 * (1 + 1e-9):
            continue
        vx = vy = vz = 0.0
        cx, cy, cz = centre[r, 0], centre[r, 1], centre[r, 2]
        for i in range(start[r], start[r + 1]):
            if use[i]:
                w = max(np.float64(counts[i]) - bg[r], 0.0)
                k = (i - start[r]) % layer
                vx += w * (x0[r] + k % nx[r] + 0.5 - cx) ** 2
                vy += w * (y0[r] + k // nx[r] + 0.5 - cy) ** 2
                vz += w * (frame[i] + 0.5 - cz) ** 2
        safe = s * s - s2
        variance[r, 0] = vx / safe + 1.0 / 12.0
        variance[r, 1] = vy / safe + 1.0 / 12.0
        variance[r, 2] = vz / safe + 1.0 / 12.0

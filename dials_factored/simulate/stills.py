"""Simulate a set of stills, one image at a time (see :mod:`.physics` for the spot model).

For each still, every reflection of the sphere is traced with ``n_samples`` Monte-Carlo
samples if its nominal spot is on or near the panel and its nominal excitation error is
within ``n_sigma`` first-order widths R — or less, down to 3.5 R, where its first-order
expected photons K·I·G·exp(B/4d²)·exp(−ε²/2R²) fall below 0.01.  The expected image
(background + all spots) is drawn with Poisson noise, hot pixels and zingers are
applied, and the image is written.  Observations with partiality ≥ ``min_partiality``
and some signal on the panel go into the truth table.
"""

from __future__ import annotations

import numpy as np

from dials_factored.simulate import physics
from dials_factored.simulate.design import Design, stream
from dials_factored.simulate.images import Defects, poisson_counts, readout, write_cbf
from dials_factored.simulate.signal import Moments, PixelSignal, aggregate, fisher_information
from dials_factored.simulate.truth import ObservationTable

#: Nominal spots this far outside the panel (pixels, plus 5 point-spread σ) are skipped.
PANEL_MARGIN_PX = 10.0


#: Stills: reflections are traced out to where their first-order expected photons fall to
#: this many (but at least to 3.5 R and at most to ``n_sigma`` R).
MIN_TRACED_PHOTONS = 0.01


def candidates(design: Design, a_matrix: np.ndarray, image: int) -> np.ndarray:
    """Indices (into the sphere of reflections) worth tracing on still ``image`` (setting A)."""
    t = design.truth
    r0 = t.hkl @ a_matrix.T
    eps = physics.excitation_error(r0, design.s0)
    width = physics.analytic_width(t.d, design.wavelength, design.spreads)
    full = design.flux * t.intensity * design.g[image] * np.exp(design.b[image] / (4 * t.d ** 2))
    reach = np.sqrt(2 * np.log(np.maximum(full / MIN_TRACED_PHOTONS, 1.0)))
    near = np.abs(eps) < np.clip(reach, 3.5, design.n_sigma) * width
    x, y, valid = design.plane.intersect_px(r0[near] + design.s0)
    nx, ny = design.plane.size
    margin = PANEL_MARGIN_PX + 5 * design.spreads.psf
    on = valid & (x > -margin) & (x < nx + margin) & (y > -margin) & (y < ny + margin)
    return np.flatnonzero(near)[on]


def simulate_still(design: Design, image: int, path, bg_model: np.ndarray, defects: Defects,
                   crystal_model, table: ObservationTable) -> None:
    """Simulate, write and record one still (``image`` 0-based)."""
    t = design.truth
    a = np.asarray(crystal_model.get_A(), dtype=float).reshape(3, 3)
    sel = candidates(design, a, image)
    r0 = t.hkl[sel] @ a.T
    d = t.d[sel]
    scale = design.g[image] * np.exp(design.b[image] / (4 * d ** 2))
    m = sel.size
    plane = design.plane
    nx, ny = plane.size
    n_pix = nx * ny
    rng = stream(design.seed, "photons", image)
    per_chunk = design.batch
    partiality = np.zeros(m)
    pol = np.zeros(m)
    u_total = np.zeros(m)
    moments = Moments.zeros(m)
    pieces = []
    for start in range(0, m, per_chunk):
        part = slice(start, min(m, start + per_chunk))
        res = physics.simulate_stills(
            r0[part], design.flux * scale[part], design.wavelength, design.spreads, plane,
            design.beam.get_polarization_normal(), design.beam.get_polarization_fraction(),
            design.n_samples, rng, blocks=crystal_blocks(design, image))
        s = res.samples
        obs = s.obs + start
        partiality[part] = res.partiality
        pol[part] = res.polarisation
        u_total[part] = res.signal_per_i
        pixel, on = plane.pixel_index(s.x, s.y, np.ones(s.x.size, bool))
        if design.layout is not None:  # photons into a module gap are not recorded
            on &= design.layout.sensitive(pixel)
        moments.add(obs, s.x, s.y, s.z, s.weight, on)
        keep = on & (s.weight > 0)
        pieces.append(aggregate(obs[keep], pixel[keep], np.zeros(keep.sum(), np.int64),
                                s.weight[keep], n_pix))
    obs = np.concatenate([p.obs for p in pieces]) if pieces else np.zeros(0, np.int64)
    pixel = np.concatenate([p.pixel for p in pieces]) if pieces else np.zeros(0, np.int64)
    u = np.concatenate([p.u for p in pieces]) if pieces else np.zeros(0)
    intensity = t.intensity[sel]
    background = bg_model.ravel() * design.bg_factor[image]
    layout = design.layout
    if layout is not None:  # the beamstop's shadow on background and spots
        background = layout.attenuate(background)
        u = u * layout.transmission.ravel()[pixel]
    mu = background + np.bincount(pixel, weights=u * intensity[obs], minlength=n_pix)
    counts = poisson_counts(mu.reshape(ny, nx), stream(design.seed, "noise", image))
    zinger_flat = defects.apply(counts, image, design.zinger_rate, design.zinger_range,
                                stream(design.seed, "zingers", image))
    if layout is not None:
        layout.write_gaps(counts)
    write_cbf(path, readout(counts, design.gain, design.read_noise,
                            stream(design.seed, "read_noise", image)),
              design.detector, design.beam)

    excluded = np.zeros(n_pix, bool)
    excluded[defects.hot_flat(nx)] = True
    excluded[zinger_flat] = True
    if layout is not None:
        excluded |= layout.gap.ravel()
    entries = PixelSignal(obs=obs, pixel=pixel, frame=np.zeros(obs.size, np.int64), u=u)
    info = fisher_information(entries, mu + design.read_noise ** 2, excluded, m)
    xyz = moments.centroid()
    on_frac = moments.fraction_on_panel()
    keep = (partiality >= design.min_partiality) & (on_frac > 0)
    eps = physics.excitation_error(r0, design.s0)
    table.add(
        experiment=np.full(keep.sum(), image), miller_index=t.hkl[sel][keep],
        i_true=intensity[keep], d=d[keep], expected_counts=(intensity * u_total)[keep],
        partiality=partiality[keep], scale=scale[keep], polarisation=pol[keep],
        lorentz=np.ones(keep.sum()),
        ideal_variance=np.where(info > 0, 1 / np.where(info > 0, info, 1), np.inf)[keep],
        xyz_px=np.column_stack([xyz[keep, :2], np.zeros(keep.sum())]),
        background=spot_background(background, xyz[keep], nx, ny),
        excitation_error=eps[keep], fraction_on_detector=on_frac[keep],
        rms_px=moments.rms()[keep])


def crystal_blocks(design: Design, image: int):
    """The mosaic blocks of the crystal of still ``image`` (None unless mosaic_shape=blocks)."""
    if not design.blocks:
        return None
    return design.blocks[image if len(design.blocks) > 1 else 0]


def spot_background(background_flat: np.ndarray, xyz: np.ndarray, nx: int,
                    ny: int) -> np.ndarray:
    """Background (photons/pixel) at the pixel of each centroid (clamped to the panel)."""
    ix = np.clip(np.floor(np.nan_to_num(xyz[:, 0])), 0, nx - 1).astype(np.int64)
    iy = np.clip(np.floor(np.nan_to_num(xyz[:, 1])), 0, ny - 1).astype(np.int64)
    return background_flat[iy * nx + ix]

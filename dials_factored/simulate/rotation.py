"""Simulate a rotation sweep (see :mod:`.physics` for the spot model).

Every reflection crosses the Ewald sphere twice per turn; each crossing (branch ±1)
whose nominal angle lies within the scan, widened by ``n_sigma`` first-order widths
``R/|dε/dφ|`` plus one frame, is an observation candidate.  Crossings whose nominal
Lorentz factor exceeds ``max_lorentz`` (reflections within about 0.03° of the rotation
axis with the default 2000) are not simulated at all.

Memory: observations are traced in chunks, each chunk's samples are reduced at once to
sparse (observation, frame, pixel) signal entries, and the frames are then formed and
written one at a time from those entries; no dense per-frame array is ever held for
more than one frame, so memory scales with the number of spots, not with
n_images × detector size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from dials_factored.simulate import physics
from dials_factored.simulate.design import Design, stream
from dials_factored.simulate.images import Defects, poisson_counts, readout, write_cbf
from dials_factored.simulate.signal import (
    Moments,
    PixelSignal,
    aggregate,
    fisher_information,
)
from dials_factored.simulate.stills import PANEL_MARGIN_PX, spot_background
from dials_factored.simulate.truth import ObservationTable


def candidates(design: Design, a_matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Observation candidates: reflection index, branch, nominal φ (rad), sorted by φ."""
    t = design.truth
    axis = np.asarray(design.goniometer.get_rotation_axis(), dtype=float)
    r0 = t.hkl @ a_matrix.T
    s0 = np.broadcast_to(design.s0, r0.shape)
    phi_start = np.radians(design.rotation["phi_start"])
    width = np.radians(design.rotation["phi_width"])
    phi_end = phi_start + design.n_images * width
    r_width = physics.analytic_width(t.d, design.wavelength, design.spreads)
    nx, ny = design.plane.size
    margin_px = PANEL_MARGIN_PX + 5 * design.spreads.psf
    parts = []
    for branch in (1, -1):
        phi, ok = physics.crossing_angles(r0, s0, axis, np.full(len(r0), branch))
        phi = phi_start + np.mod(phi - phi_start, 2 * np.pi)
        rphi = physics.rotate_about(r0, axis, phi)
        s1 = rphi + design.s0
        rate = np.abs(np.sum(s1 / np.linalg.norm(s1, axis=1, keepdims=True)
                             * physics.cross(axis, rphi), axis=1))
        lorentz = np.linalg.norm(design.s0) / np.where(rate > 0, rate, 1e-300)
        margin = design.n_sigma * r_width / np.where(rate > 0, rate, 1e-300) + width
        late = phi > phi_start + 2 * np.pi - margin
        phi = np.where(late & (phi >= phi_end + margin), phi - 2 * np.pi, phi)
        inside = (phi < phi_end + margin) & (phi > phi_start - margin)
        x, y, valid = design.plane.intersect_px(s1)
        on = valid & (x > -margin_px) & (x < nx + margin_px) & (y > -margin_px) & (
            y < ny + margin_px)
        keep = np.flatnonzero(ok & inside & on & (lorentz <= design.max_lorentz))
        parts.append((keep, np.full(keep.size, branch), phi[keep]))
    index = np.concatenate([p[0] for p in parts])
    branch = np.concatenate([p[1] for p in parts])
    phi = np.concatenate([p[2] for p in parts])
    order = np.argsort(phi, kind="stable")
    return {"index": index[order], "branch": branch[order], "phi": phi[order]}


@dataclass
class SweepTrace:
    """The traced photons of a sweep's m observation candidates.

    Per candidate, the sums of :class:`.physics.RotationResult` (÷ n_samples): ``full``
    Σ L·P over all crossing samples, ``lorentz`` Σ L, ``recorded`` Σ L·P over the in-scan
    samples, ``u_total`` the in-scan photons per unit I_true; ``moments`` the weighted
    sample moments of the centroids (px, px, frame); ``signal`` the sparse (observation,
    frame, pixel) photons per unit I_true on sensitive pixels, sorted by frame.
    """

    full: np.ndarray
    lorentz: np.ndarray
    recorded: np.ndarray
    u_total: np.ndarray
    moments: Moments
    signal: PixelSignal


def simulate_sweep(design: Design, paths: list, bg_model: np.ndarray, defects: Defects,
                   crystal_model, table: ObservationTable, progress=None) -> None:
    """Simulate, write and record the whole sweep."""
    a = np.asarray(crystal_model.get_A(), dtype=float).reshape(3, 3)
    cand = candidates(design, a)
    trace = trace_sweep(design, cand, a)
    background, signal = beamstop_shadow(design, bg_model, trace.signal)
    intensity = design.truth.intensity[cand["index"]]
    info = write_frames(design, paths, background, signal, intensity, defects, progress)
    record_sweep(design, cand, trace, background, info, table)


def trace_sweep(design: Design, cand: dict[str, np.ndarray], a_matrix: np.ndarray) -> SweepTrace:
    """Trace ``n_samples`` Monte-Carlo photons of every candidate (setting A, Å⁻¹).

    Candidates are traced in chunks of ``design.batch``, chunk c from the random stream
    ``photons, c``; each chunk's samples are reduced at once to per-candidate sums,
    centroid moments and sparse (observation, frame ⌊z⌋, pixel) signal entries.  Photons
    into a module gap are not recorded.
    """
    t = design.truth
    r0 = t.hkl[cand["index"]] @ a_matrix.T
    d = t.d[cand["index"]]
    m = r0.shape[0]
    plane = design.plane
    nx, ny = plane.size
    n_frames = design.n_images
    scan = (np.radians(design.rotation["phi_start"]), np.radians(design.rotation["phi_width"]),
            n_frames)
    axis = np.asarray(design.goniometer.get_rotation_axis(), dtype=float)
    full, lorentz, recorded, u_total = np.zeros(m), np.zeros(m), np.zeros(m), np.zeros(m)
    moments = Moments.zeros(m)
    pieces = []
    per_chunk = design.batch
    for chunk, start in enumerate(range(0, m, per_chunk)):
        part = slice(start, min(m, start + per_chunk))
        res = physics.simulate_rotation(
            r0[part], cand["branch"][part], cand["phi"][part], d[part], design.wavelength,
            design.spreads, axis, plane, scan, design.rotation_scale, design.flux,
            design.beam.get_polarization_normal(), design.beam.get_polarization_fraction(),
            design.n_samples, design.max_lorentz, stream(design.seed, "photons", chunk),
            blocks=design.blocks[0] if design.blocks else None)
        s = res.samples
        obs = s.obs + start
        full[part], lorentz[part] = res.full, res.lorentz_sum
        recorded[part], u_total[part] = res.recorded, res.signal_per_i
        pixel, on = plane.pixel_index(s.x, s.y, np.ones(s.x.size, bool))
        if design.layout is not None:  # photons into a module gap are not recorded
            on &= design.layout.sensitive(pixel)
        moments.add(obs, s.x, s.y, s.z, s.weight, on)
        frame = np.minimum(np.floor(s.z).astype(np.int64), n_frames - 1)
        pieces.append(aggregate(obs[on], pixel[on], frame[on], s.weight[on], nx * ny))
    signal = _concatenate(pieces)
    del pieces  # free the chunks before the sorted copy is made
    order = np.argsort(signal.frame, kind="stable")
    return SweepTrace(full=full, lorentz=lorentz, recorded=recorded, u_total=u_total,
                      moments=moments,
                      signal=PixelSignal(obs=signal.obs[order], pixel=signal.pixel[order],
                                         frame=signal.frame[order], u=signal.u[order]))


def _concatenate(pieces: list[PixelSignal]) -> PixelSignal:
    """The entries of all pieces end to end (empty arrays if there are no pieces)."""
    if not pieces:
        empty = np.zeros(0, np.int64)
        return PixelSignal(obs=empty, pixel=empty, frame=empty, u=np.zeros(0))
    return PixelSignal(obs=np.concatenate([p.obs for p in pieces]),
                       pixel=np.concatenate([p.pixel for p in pieces]),
                       frame=np.concatenate([p.frame for p in pieces]),
                       u=np.concatenate([p.u for p in pieces]))


def beamstop_shadow(design: Design, bg_model: np.ndarray,
                    signal: PixelSignal) -> tuple[np.ndarray, PixelSignal]:
    """The flat background (photons/pixel) and the spot signal in the beamstop's shadow.

    Both are multiplied by the layout's transmission (0–1 per pixel); without a layout
    they are returned as they are.
    """
    background = bg_model.ravel()
    layout = design.layout
    if layout is None:
        return background, signal
    return (layout.attenuate(background),
            replace(signal, u=signal.u * layout.transmission.ravel()[signal.pixel]))


def write_frames(design: Design, paths: list, background: np.ndarray, signal: PixelSignal,
                 intensity: np.ndarray, defects: Defects, progress=None) -> np.ndarray:
    """Draw and write every frame; return each candidate's Fisher information (I_true⁻²).

    Frame f's expected image is ``μ = background + Σ_h I_h u_hp`` (photons); its counts are
    Poisson (stream ``noise, f``) with hot pixels and zingers (``zingers, f``), gaps
    written, and read out with gain and read noise (``read_noise, f``).  The information
    ``Σ_p u_hp²/(μ_p + read_noise²)`` is summed over the frames, hot, zinger and gap
    pixels excluded (see :mod:`.signal`).
    """
    nx, ny = design.plane.size
    n_pix = nx * ny
    n_frames = design.n_images
    m = intensity.size
    layout = design.layout
    bounds = np.searchsorted(signal.frame, np.arange(n_frames + 1))
    info = np.zeros(m)
    for f in range(n_frames):
        block = slice(bounds[f], bounds[f + 1])
        ob, px, u = signal.obs[block], signal.pixel[block], signal.u[block]
        mu = background + np.bincount(px, weights=u * intensity[ob], minlength=n_pix)
        counts = poisson_counts(mu.reshape(ny, nx), stream(design.seed, "noise", f))
        zinger_flat = defects.apply(counts, f, design.zinger_rate, design.zinger_range,
                                    stream(design.seed, "zingers", f))
        if layout is not None:
            layout.write_gaps(counts)
        write_cbf(paths[f], readout(counts, design.gain, design.read_noise,
                                    stream(design.seed, "read_noise", f)),
                  design.detector, design.beam, design.goniometer,
                  design.scan[f:f + 1])
        excluded = np.zeros(n_pix, bool)
        excluded[defects.hot_flat(nx)] = True
        excluded[zinger_flat] = True
        if layout is not None:
            excluded |= layout.gap.ravel()
        info += fisher_information(PixelSignal(obs=ob, pixel=px, frame=np.zeros_like(ob), u=u),
                                   mu + design.read_noise ** 2, excluded, m)
        if progress:
            progress(f + 1, n_frames)
    return info


def record_sweep(design: Design, cand: dict[str, np.ndarray], trace: SweepTrace,
                 background: np.ndarray, info: np.ndarray, table: ObservationTable) -> None:
    """Add the candidates with partiality ≥ ``min_partiality`` and signal on the panel.

    partiality = recorded/full, polarisation = full/lorentz, scale = the photon-weighted
    G(φ)·exp(B(φ)/4d²) = u_total/(K·recorded), ideal variance = 1/information (∞ without
    information); centroids in (px, px, frame), φ in degrees.
    """
    t = design.truth
    sel = cand["index"]
    intensity = t.intensity[sel]
    d = t.d[sel]
    nx, ny = design.plane.size
    full, lorentz, recorded, u_total = trace.full, trace.lorentz, trace.recorded, trace.u_total
    moments = trace.moments
    partiality = np.where(full > 0, recorded / np.where(full > 0, full, 1), 0.0)
    xyz = moments.centroid()
    on_frac = moments.fraction_on_panel()
    keep = (partiality >= design.min_partiality) & (on_frac > 0)
    n = int(keep.sum())
    safe_rec = np.where(recorded > 0, recorded, 1.0)
    table.add(
        experiment=np.zeros(n, np.int64), miller_index=t.hkl[sel][keep], i_true=intensity[keep],
        d=d[keep], expected_counts=(intensity * u_total)[keep], partiality=partiality[keep],
        scale=(u_total / (design.flux * safe_rec))[keep],
        polarisation=(full / np.where(lorentz > 0, lorentz, 1.0))[keep],
        lorentz=lorentz[keep],
        ideal_variance=np.where(info > 0, 1 / np.where(info > 0, info, 1), np.inf)[keep],
        xyz_px=xyz[keep], background=spot_background(background, xyz[keep], nx, ny),
        excitation_error=np.zeros(n), fraction_on_detector=on_frac[keep],
        rms_px=moments.rms()[keep],
        phi_deg=np.degrees(cand["phi"][keep]))

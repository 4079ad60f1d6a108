"""The resolved simulation design: models, truth parameters and random streams from the phil.

Every random quantity comes from its own numpy Generator seeded with
``[seed, stream, index...]`` (:func:`stream`), so the output depends only on the
parameters (same seed → byte-identical files), not on the order of computation.

Per-image truth.  Stills: ``G ~ exp(N(0, σ_logG²))``, ``B ~ N(0, σ_B²)`` Å², background
factor ``exp(N(0, σ_bg²))``.  Rotation: ``G(φ) = 1 + a·sin(2π(φ − φ0)/T)`` and
``B(φ) = ΔB·(φ − φ0)/(sweep width)`` (linear drift).  In both, an observation's
photons are multiplied by ``G·exp(B/(4d²))`` (B < 0: faster fall-off with resolution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from dials_factored.simulate import crystal as xtal
from dials_factored.simulate import geometry, shapes
from dials_factored.simulate.anomalous import HeavyAtoms
from dials_factored.simulate.images import Background, DetectorLayout
from dials_factored.simulate.physics import Spreads, domain_sigma

#: Random streams (second entry of the seed sequence).
STREAMS = {"intensities": 1, "orientation": 2, "per_image": 3, "hot": 4, "photons": 5,
           "noise": 6, "zingers": 7, "read_noise": 8, "jitter": 9, "blocks": 10,
           "grid_g": 11}

#: Monte-Carlo samples traced at once (about 0.5 kB each).  A constant, not a parameter:
#: the random draws are made per batch, so the batch size is part of the random design.
BATCH_SAMPLES = 100_000

#: Mode-dependent defaults of parameters left at None.
MODE_DEFAULTS = {
    "stills": {"n_images": 100, "bandwidth": 0.002, "mosaic_deg": math.degrees(0.0005),
               "intensity_scale": 1.0},
    "rotation": {"n_images": 90, "bandwidth": 0.0002, "mosaic_deg": 0.15,
                 "intensity_scale": 0.05},
}


def stream(seed: int, name: str, *index: int) -> np.random.Generator:
    """The Generator of one named random stream (and image/chunk index)."""
    return np.random.default_rng([int(seed), STREAMS[name], *(int(i) for i in index)])


@dataclass
class Design:
    """Everything the simulation needs, resolved from the parameters."""

    mode: str
    seed: int
    n_images: int
    d_min: float
    wavelength: float
    flux: float  # K: photons per unit I_true at p = 1, P = 1, L = 1, G = 1, B = 0
    n_samples: int
    n_sigma: float
    max_lorentz: float
    min_partiality: float
    spreads: Spreads
    background: Background
    truth: xtal.TrueCrystal
    beam: object
    detector: object
    plane: geometry.Plane
    u_matrices: np.ndarray  # (n_images or 1, 3, 3)
    hot_pixels: int
    hot_range: tuple[float, float]
    zinger_rate: float
    zinger_range: tuple[int, int]
    gain: float = 1.0  # counts (ADU) per photon in the images
    read_noise: float = 0.0  # photons rms per pixel
    goniometer: object = None
    scan: object = None
    g: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per image / frame centre
    b: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bg_factor: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rotation: dict = field(default_factory=dict)
    #: per crystal (still; one for a grid scan or a sweep) the mosaic blocks (k×3 rad)
    blocks: list = field(default_factory=list)
    layout: DetectorLayout | None = None  # module gaps and beamstop (None: neither)
    parameters: dict = field(default_factory=dict)  # the resolved parameters, for truth.json

    @property
    def batch(self) -> int:
        """Observations traced at once (each batch has its own random stream)."""
        return max(1, BATCH_SAMPLES // self.n_samples)

    @property
    def s0(self) -> np.ndarray:
        return np.array([0.0, 0.0, -1.0 / self.wavelength])

    @property
    def stills(self) -> bool:
        return self.mode == "stills"

    def rotation_scale(self, phi_rad: np.ndarray, d: np.ndarray) -> np.ndarray:
        """G(φ)·exp(B(φ)/(4d²)) of the rotation sweep (φ in rad, d in Å)."""
        g, b = self.rotation_gb(np.degrees(phi_rad))
        return g * np.exp(b / (4 * d ** 2))

    def rotation_gb(self, phi_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """G(φ) and B(φ) (Å²) along the sweep, φ in degrees."""
        r = self.rotation
        g = 1 + r["g_amplitude"] * np.sin(2 * np.pi * (phi_deg - r["phi_start"]) / r["g_period"])
        b = r["b_drift"] * (phi_deg - r["phi_start"]) / r["sweep_width"]
        return g, b


def phi_width_truth(spreads: Spreads) -> dict:
    """The true φ widths in the integrator's convention (``model.partiality``).

    radial_r0 (Å⁻¹): R0 of exp(−ε²/R0²) for δ of rms σ_dom along the sphere normal,
    √2·σ_dom.  sigma_m_deg: the angular spread along ê1, DIALS's sigma_m, which the
    mosaic rotation (σ_m per axis) and the beam divergence (σ_div per axis, a tilt of
    s0 about ê1 moves a point across the sphere like a crystal rotation) both feed,
    √(σ_m² + σ_div²).  The bandwidth adds bλ/(2d²) to the radial width (not included).
    """
    return {"radial_r0": math.sqrt(2.0) * spreads.sigma_domain,
            "sigma_m_deg": math.degrees(math.hypot(spreads.mosaic, spreads.divergence)),
            "sigma_m_crystal_deg": math.degrees(spreads.mosaic)}


def resolve(params) -> Design:
    """Build the :class:`Design` of the extracted phil parameters.

    The scalar settings (mode defaults filled in), detector and beam, the true crystal
    (stream ``intensities``), the spot-forming spreads, the orientations, the mosaic
    blocks, the per-image truth and the record of all resolved parameters (truth.json).
    """
    s = _settings(params)
    detector = geometry.make_detector(s.size, params.detector.pixel_size, s.distance,
                                      s.trusted)
    beam = geometry.make_beam(s.wavelength, params.beam.polarization_fraction)
    heavy = heavy_atoms(params.anomalous, s.wavelength)
    truth = xtal.make_true_crystal(params.crystal.space_group, params.crystal.unit_cell,
                                   s.d_min, params.wilson.b, params.wilson.mean_intensity,
                                   stream(s.seed, "intensities"), heavy)
    spreads = _spreads(params, s.mode, s.bandwidth, s.mosaic)
    bg = params.background
    design = Design(
        mode=s.mode, seed=s.seed, n_images=s.n_images, d_min=s.d_min, wavelength=s.wavelength,
        flux=s.flux, n_samples=int(params.monte_carlo.n_samples),
        n_sigma=float(params.monte_carlo.n_sigma),
        max_lorentz=float(params.monte_carlo.max_lorentz),
        min_partiality=float(params.truth.min_partiality), spreads=spreads,
        background=Background(constant=bg.constant, inner=bg.inner, q_inner=bg.q_inner,
                              ring=bg.ring, ring_d=bg.ring_d, ring_width=bg.ring_width),
        truth=truth, beam=beam, detector=detector, plane=geometry.Plane.from_panel(detector[0]),
        u_matrices=_orientations(params, s.mode, s.n_images, s.seed),
        hot_pixels=int(params.hot_pixels.count),
        hot_range=(float(params.hot_pixels.min_value), float(params.hot_pixels.max_value)),
        zinger_rate=float(params.zingers.rate),
        zinger_range=(int(params.zingers.min_counts), int(params.zingers.max_counts)),
        gain=s.gain, read_noise=s.read_noise)
    design.layout = DetectorLayout.build(s.size, params.detector)
    design.blocks = _mosaic_blocks(design, params)
    if s.mode == "stills":
        _stills_truth(design, params)
    else:
        _sweep_truth(design, params.rotation)
    design.parameters = _parameter_record(design, params, s, heavy)
    return design


def _settings(params) -> SimpleNamespace:
    """The scalar settings, the mode's defaults (:data:`MODE_DEFAULTS`) for those left None.

    mode, seed, n_images; bandwidth (σ_λ/λ); mosaic (rad, rms per axis); flux K; d_min and
    wavelength (Å); size (nx, ny px); distance (mm; default: d_min at the panel corner);
    gain (ADU/photon); read_noise (photons rms); trusted (ADU range).
    """
    defaults = MODE_DEFAULTS[params.mode]

    def pick(value, key):
        return defaults[key] if value is None else value

    d_min = float(params.d_min)
    wavelength = float(params.beam.wavelength)
    size = tuple(int(n) for n in params.detector.size)
    gain = float(params.detector.gain)
    read_noise = float(params.detector.read_noise)
    return SimpleNamespace(
        mode=params.mode, seed=int(params.seed),
        n_images=int(pick(params.n_images, "n_images")),
        bandwidth=float(pick(params.beam.bandwidth, "bandwidth")),
        mosaic=math.radians(float(pick(params.crystal.mosaic, "mosaic_deg"))),
        flux=float(pick(params.intensity.scale, "intensity_scale")),
        d_min=d_min, wavelength=wavelength, size=size,
        distance=params.detector.distance or geometry.corner_distance(
            size, params.detector.pixel_size, wavelength, d_min),
        gain=gain, read_noise=read_noise,
        trusted=(geometry.trusted_low(gain, read_noise), float(params.detector.trusted_max)))


def _spreads(params, mode: str, bandwidth: float, mosaic: float) -> Spreads:
    """The spreads of the spot-forming distributions (Å⁻¹, rad, relative, px).

    Rotation, ``crystal.phi_spread``: ``angular`` spreads φ by the mosaic rotation only
    (σ_dom = 0, infinite domains), ``domain`` by the domain size only (mosaic = 0),
    ``both`` by both.  Stills need a finite bandwidth: it is what makes them diffract.
    """
    law = params.crystal.phi_spread
    sigma_domain = domain_sigma(params.crystal.domain_size)
    if mode == "rotation" and law == "angular":
        sigma_domain = 0.0  # infinite domains: the φ spread is the mosaic rotation only
    if mode == "rotation" and law == "domain":
        mosaic = 0.0  # no block rotation: the φ spread is the domain size only
    spreads = Spreads(sigma_domain=sigma_domain, mosaic=mosaic,
                      divergence=params.beam.divergence, bandwidth=bandwidth,
                      psf=params.detector.psf, psf_shape=params.detector.psf_shape,
                      psf_tail_fraction=float(params.detector.psf_tail_fraction),
                      psf_tail_width=float(params.detector.psf_tail_width),
                      mosaic_shape=params.crystal.mosaic_shape)
    if mode == "stills" and bandwidth <= 0:
        raise ValueError("stills need a finite beam.bandwidth (e.g. 1e-5 for nearly "
                         "monochromatic): it is what makes a reflection diffract")
    return spreads


def _mosaic_blocks(design: Design, params) -> list:
    """Per crystal the mosaic blocks' rotation vectors (k×3 rad, stream ``blocks, i``).

    One crystal for a sweep or a grid scan, one per still otherwise; none unless
    ``crystal.mosaic_shape=blocks``.
    """
    if design.spreads.mosaic_shape != "blocks":
        return []
    one = design.mode == "rotation" or params.stills.grid_scan.enable
    return [shapes.block_orientations(int(params.crystal.mosaic_blocks), design.spreads.mosaic,
                                      stream(design.seed, "blocks", i))
            for i in range(1 if one else design.n_images)]


def _stills_truth(design: Design, params) -> None:
    """Per-still truth from the ``per_image`` stream: G = exp(N(0, σ_logG²)),
    B ~ N(0, σ_B²) Å², background factor exp(N(0, σ_bg²)) (a grid scan: its own G)."""
    rng = stream(design.seed, "per_image")
    if params.stills.grid_scan.enable:
        _grid_scan_truth(design, params, rng)
        return
    n_images = design.n_images
    design.g = np.exp(params.stills.log_g_sigma * rng.standard_normal(n_images))
    design.b = params.stills.b_sigma * rng.standard_normal(n_images)
    design.bg_factor = np.exp(params.background.image_sigma * rng.standard_normal(n_images))


def _sweep_truth(design: Design, r) -> None:
    """Goniometer, scan and truth of a sweep (``rotation`` scope ``r``, angles in degrees).

    G(φ), B(φ) (see :meth:`Design.rotation_gb`) at the frame centres; no per-frame
    background factor.  The sweep (n_images·phi_width) must not exceed 360°.
    """
    n_images = design.n_images
    width = n_images * r.phi_width
    if width > 360 + 1e-9:
        raise ValueError(f"the sweep ({width}°) must not exceed 360°")
    design.goniometer = geometry.make_goniometer()
    design.scan = geometry.make_scan(n_images, r.phi_start, r.phi_width, r.exposure_time)
    design.rotation = {"phi_start": r.phi_start, "phi_width": r.phi_width,
                       "sweep_width": width, "g_amplitude": r.g_amplitude,
                       "g_period": r.g_period or width, "b_drift": r.b_drift}
    centres = r.phi_start + (np.arange(n_images) + 0.5) * r.phi_width
    design.g, design.b = design.rotation_gb(centres)
    design.bg_factor = np.ones(n_images)


def _parameter_record(design: Design, params, s: SimpleNamespace,
                      heavy: HeavyAtoms | None) -> dict:
    """The resolved parameters as written to truth.json (lengths in Å, mm or px as named)."""
    spreads = design.spreads
    record = {
        "mode": s.mode, "seed": s.seed, "n_images": s.n_images, "d_min": s.d_min,
        "wavelength": s.wavelength, "bandwidth": s.bandwidth, "divergence": spreads.divergence,
        "polarization_fraction": params.beam.polarization_fraction,
        "polarization_normal": [0.0, 1.0, 0.0],
        "space_group": params.crystal.space_group,
        "unit_cell": list(design.truth.symmetry.unit_cell().parameters()),
        "domain_size": params.crystal.domain_size, "sigma_domain": spreads.sigma_domain,
        "mosaic_rad": spreads.mosaic, "mosaic_deg": math.degrees(spreads.mosaic),
        "wilson_b": params.wilson.b, "wilson_mean_intensity": params.wilson.mean_intensity,
        "anomalous": vars(heavy) if heavy else None,
        "intensity_scale": s.flux, "detector_size": list(s.size),
        "pixel_size": params.detector.pixel_size, "distance": s.distance,
        "psf_px": spreads.psf, "trusted_range": list(s.trusted),
        "gain": s.gain, "read_noise": s.read_noise,
        "n_samples": design.n_samples, "n_sigma": design.n_sigma,
        "max_lorentz": design.max_lorentz, "min_partiality": design.min_partiality,
        "background": vars(design.background) | {"image_sigma": params.background.image_sigma},
        "hot_pixels": {"count": design.hot_pixels, "value_range": list(design.hot_range)},
        "zingers": {"rate": design.zinger_rate, "count_range": list(design.zinger_range)},
        "shapes": {
            "psf_shape": spreads.psf_shape, "psf_tail_fraction": spreads.psf_tail_fraction,
            "psf_tail_width_px": spreads.psf_tail_width, "mosaic_shape": spreads.mosaic_shape,
            "mosaic_blocks": [b.tolist() for b in design.blocks]},
        "layout": design.layout.describe() if design.layout else None,
    }
    if s.mode == "stills":
        g = params.stills.grid_scan
        record["stills"] = {"log_g_sigma": params.stills.log_g_sigma,
                            "b_sigma": params.stills.b_sigma,
                            "grid_scan": {"enable": g.enable, "jitter_deg": g.jitter,
                                          "crystal_length": g.crystal_length,
                                          "beam_width": g.beam_width,
                                          "log_g_noise": g.log_g_noise}}
    else:
        record["rotation"] = dict(design.rotation, exposure_time=params.rotation.exposure_time)
        record["phi_spread"] = params.crystal.phi_spread
        record["phi_widths"] = phi_width_truth(spreads)
    return record


def heavy_atoms(scope, wavelength: float) -> HeavyAtoms | None:
    """The PHIL ``anomalous`` scope as :class:`HeavyAtoms` (f′, f″ from Sasaki if not given)."""
    if not scope.element:
        return None
    from cctbx.eltbx import sasaki

    try:
        table = sasaki.table(scope.element).at_angstrom(wavelength)
    except RuntimeError:
        raise ValueError(f"anomalous.element={scope.element}: not an element of the "
                         "Sasaki tables") from None
    fp = table.fp() if scope.fp is None else scope.fp
    fdp = table.fdp() if scope.fdp is None else scope.fdp
    return HeavyAtoms(scope.element, int(scope.sites), float(fp), float(fdp))


def _orientations(params, mode: str, n_images: int, seed: int) -> np.ndarray:
    """The crystal orientations: one per still, or one (sweep; grid scan, then jittered).

    Grid scan: U_i = R(ω_i)·U with ω_i three independent N(0, jitter²) angles (rad), the
    small wobble of one crystal between the shots of a grid scan."""
    if mode != "stills":
        return xtal.random_rotations(1, stream(seed, "orientation"))
    grid = params.stills.grid_scan
    if not grid.enable:
        return xtal.random_rotations(n_images, stream(seed, "orientation"))
    u = xtal.random_rotations(1, stream(seed, "orientation"))[0]
    omega = math.radians(grid.jitter) * stream(seed, "jitter").standard_normal((n_images, 3))
    return np.stack([_rotation_matrix(w) @ u for w in omega])


def _rotation_matrix(rotvec: np.ndarray) -> np.ndarray:
    """The rotation matrix of a rotation vector (axis·angle, rad), Rodrigues' formula."""
    theta = float(np.linalg.norm(rotvec))
    if theta == 0:
        return np.eye(3)
    k = rotvec / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(theta) * kx + (1 - math.cos(theta)) * kx @ kx


def grid_scan_profile(n_images: int, crystal_length: float, beam_width: float) -> np.ndarray:
    """Illuminated fraction of the crystal at each of the ``n_images`` scan positions.

    The beam (Gaussian, rms ``beam_width``) steps evenly from −½ to +½ of the scan line
    across a crystal of length ``crystal_length`` (both in units of the scan length)
    centred on it; the illuminated volume is the beam profile integrated over the
    crystal, ``½[erf((x + L/2)/(√2 w)) − erf((x − L/2)/(√2 w))]``: ≈ 1 in the middle,
    falling smoothly to near zero where the beam leaves the crystal."""
    from scipy.special import erf

    x = np.linspace(-0.5, 0.5, n_images) if n_images > 1 else np.zeros(1)
    half, s = 0.5 * crystal_length, math.sqrt(2.0) * beam_width
    return 0.5 * (erf((x + half) / s) - erf((x - half) / s))


def _grid_scan_truth(design: Design, params, rng: np.random.Generator) -> None:
    """Per-still truth of a grid scan: G the illuminated volume × a small log-normal
    noise (``log_g_noise``, its own stream), B and background factors as for stills."""
    n = design.n_images
    grid = params.stills.grid_scan
    noise = stream(design.seed, "grid_g").standard_normal(n)
    design.g = (grid_scan_profile(n, grid.crystal_length, grid.beam_width)
                * np.exp(grid.log_g_noise * noise))
    rng.standard_normal(n)  # the stills' log G draws: B and backgrounds as for stills
    design.b = params.stills.b_sigma * rng.standard_normal(n)
    design.bg_factor = np.exp(params.background.image_sigma * rng.standard_normal(n))

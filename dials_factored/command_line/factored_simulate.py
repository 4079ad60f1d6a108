"""Simulate stills or a rotation sweep, with the complete truth, deterministically from a seed.

A random crystal (Wilson intensities, true space group and cell) is "measured" by a
Monte-Carlo photon forward model: every reciprocal-lattice point is spread by the
domain size and mosaic blocks, every photon gets its own incident direction and
(rotation) wavelength; stills photons are weighted by the beam spectrum at the
wavelength that brings them onto the Ewald sphere (the partiality), rotation photons
by the Lorentz factor of their crossing.  Counts are Poisson on a smooth background,
with hot pixels and zingers.  Written into output.directory:

  images/image_00001.cbf ...   miniCBF images that dials.import reads
  truth/models.expt            the true experiment models (true orientation per still)
  truth/truth.mtz              the true merged intensities (column I)
  truth/observations.npz       one row per observation: I_true, expected counts,
                               partiality, scale, lp, ideal variance, centroid, ...
  truth/truth.json             every parameter, the per-image G and B, the defects,
                               and the conventions of every file and column

Examples::

  dials.factored_simulate mode=stills seed=1
  dials.factored_simulate mode=rotation n_images=90 output.directory=sim_rotation
  dials.factored_simulate mode=stills n_images=20 detector.size=2463,2527
"""

from __future__ import annotations

import logging
import sys

import iotbx.phil
from dials.util import Sorry, log, show_mail_handle_errors
from dials.util.options import ArgumentParser

from dials_factored.progress import progress_printer

logger = logging.getLogger("dials.factored_simulate")

phil_scope = iotbx.phil.parse(
    """
mode = *stills rotation
  .type = choice
  .help = "Simulate independent stills (random orientations) or one rotation sweep."
seed = 1
  .type = int(value_min=0)
  .help = "Seed of every random quantity; the same seed gives byte-identical output."
n_images = None
  .type = int(value_min=1)
  .help = "Number of images. None: 100 stills or 90 rotation frames."
d_min = 1.8
  .type = float(value_min=0.5)
  .help = "Resolution (Å) at the detector corners (sets the distance unless"
          "detector.distance is given) and of the true intensities."
output {
  directory = .
    .type = path
    .help = "Where images/ and truth/ are written."
  log = dials.factored_simulate.log
    .type = path
    .help = "Log file (inside output.directory unless absolute)."
}
crystal {
  space_group = P212121
    .type = str
    .help = "True space group."
  unit_cell = 40 50 60 90 90 90
    .type = floats(size=6)
    .help = "True unit cell (Å, degrees)."
  domain_size = 1000
    .type = float(value_min=1)
    .help = "Mosaic domain size D (Å): each reciprocal-lattice point is an isotropic"
            "Gaussian of rms 1/(sqrt(2π)·D) per axis."
  mosaic = None
    .type = float(value_min=0)
    .help = "Mosaic spread (degrees, rms per axis of the block rotation vector)."
            "None: 0.0286 (0.0005 rad) for stills, 0.15 for rotation."
  phi_spread = domain angular *both
    .type = choice
    .help = "Rotation: what spreads a reflection's photons in φ. domain: the finite"
            "domain size only (radial width √2·σ_dom, σ_φ ∝ 1/|ζ|; mosaic rotation off);"
            "angular: the mosaic block rotation only (σ_φ = σ_m/|ζ_unit|, DIALS's law;"
            "domains infinite); both: both (with the defaults the angular part dominates)."
  mosaic_shape = *gaussian cauchy blocks
    .type = choice
    .help = "Distribution of the mosaic block rotation vectors: gaussian (N(0, mosaic²)"
            "per axis); cauchy (per-axis Cauchy of half width 'mosaic', cut at 5×: long"
            "tails); blocks (mosaic_blocks discrete blocks per crystal, drawn N(0, mosaic²)"
            "per axis: split, lumpy spots)."
  mosaic_blocks = 3
    .type = int(value_min=1)
    .help = "Number of discrete blocks per crystal of mosaic_shape=blocks."
}
anomalous {
  element = None
    .type = str
    .help = "Anomalous scatterers (e.g. Se, S, Zn): a random protein plus this many heavy"
            "atoms per asymmetric unit give I(+) ≠ I(−) (see simulate/anomalous.py)."
            "None: no heavy atoms, Friedel's law holds."
  sites = 10
    .type = int(value_min=1)
    .help = "Heavy atoms per asymmetric unit (random sites, occupancy 1, the Wilson B)."
  fp = None
    .type = float
    .help = "f′ (electrons). None: from the Sasaki tables at the wavelength."
  fdp = None
    .type = float(value_min=0)
    .help = "f″ (electrons). None: from the Sasaki tables at the wavelength."
}
wilson {
  b = 15
    .type = float
    .help = "Wilson B (Å²): <I>(d) = I0·ε·exp(-B/(2d²))."
  mean_intensity = 1000
    .type = float(value_min=0)
    .help = "I0, the mean intensity at d → ∞ (the units of truth.mtz)."
}
intensity {
  scale = None
    .type = float(value_min=0)
    .help = "K: expected photons per unit I_true of a fully recorded reflection with"
            "G = 1, B = 0, polarisation 1 (and Lorentz factor 1). None: 1.0 for stills,"
            "0.05 for rotation (whose full reflections carry Lorentz factors of 2-20)."
}
beam {
  wavelength = 1.0
    .type = float(value_min=0.1)
    .help = "Central wavelength λ (Å)."
  bandwidth = None
    .type = float(value_min=0)
    .help = "Relative rms bandwidth σ_λ/λ of the Gaussian spectrum. None: 0.002 for"
            "stills, 0.0002 for rotation."
  divergence = 0.0002
    .type = float(value_min=0)
    .help = "Beam divergence (rad, rms per axis of the incident direction)."
  polarization_fraction = 0.999
    .type = float(value_min=0.5, value_max=1)
    .help = "Fraction of the beam polarised with the electric vector along +x (DIALS'"
            "convention, plane normal +y); it is stored in the beam model."
}
detector {
  size = 1024 1024
    .type = ints(size=2, value_min=16)
    .help = "Panel size in pixels (fast, slow); e.g. 2463,2527 for a Pilatus 6M."
  pixel_size = 0.172
    .type = float(value_min=0.001)
    .help = "Pixel size (mm)."
  distance = None
    .type = float(value_min=1)
    .help = "Sample-detector distance (mm). None: d_min at the corners."
  psf = 0.3
    .type = float(value_min=0)
    .help = "Point spread of the detector (pixels, rms per axis of the Gaussian core;"
            "flat_top: a disc of radius 2·psf)."
  psf_shape = *gaussian lorentzian_tails exponential_tails flat_top
    .type = choice
    .help = "Shape of the point spread: the Gaussian; a Gaussian core with a fraction"
            "psf_tail_fraction of the photons in isotropic Lorentzian (2D Cauchy, cut at"
            "10 tail widths) or exponential tails of scale psf_tail_width; or a flat disc."
  psf_tail_fraction = 0.1
    .type = float(value_min=0, value_max=1)
    .help = "Fraction of the photons in the tails of psf_shape=*_tails."
  psf_tail_width = 2.0
    .type = float(value_min=0.01)
    .help = "Scale of the tails of psf_shape=*_tails (pixels)."
  module_size = None
    .type = ints(size=2, value_min=1)
    .help = "Pilatus-like modules of this many pixels (fast, slow), e.g. 487,195, with"
            "module_gap pixels between them written as -1 (masked). None: no gaps."
  module_gap = 7 17
    .type = ints(size=2, value_min=0)
    .help = "Gap between modules (pixels, fast, slow)."
  beamstop_radius = 0
    .type = float(value_min=0)
    .help = "Beamstop shadow: a disc of this radius (pixels) about the beam centre."
  beamstop_arm_width = 0
    .type = float(value_min=0)
    .help = "Beamstop arm: a band of this width (pixels) from the beam centre to the +x"
            "edge of the panel."
  beamstop_transmission = 0.0
    .type = float(value_min=0, value_max=1)
    .help = "Fraction of the photons (background and spots) that reach the pixels in the"
            "beamstop's shadow; the shadow is not masked."
  trusted_max = 1000000
    .type = int(value_min=1)
    .help = "Overload value written into the images (counts)."
  gain = 1.0
    .type = float(value_min=0.001)
    .help = "Counts (ADU) per photon written into the images: pixel value ="
            "round(gain·(photons + read noise)); integrate with detector.gain equal."
  read_noise = 0.0
    .type = float(value_min=0)
    .help = "Gaussian read noise of an integrating detector (photons rms per pixel),"
            "added to the Poisson photons; pixel values may then be negative (the"
            "trusted range's low end is put below them).  0: photon counting."
}
background {
  constant = 1.0
    .type = float(value_min=0)
    .help = "Flat background (photons per pixel per image)."
  inner = 1.0
    .type = float(value_min=0)
    .help = "Extra background at the beam, falling as exp(-q/q_inner) (photons/pixel)."
  q_inner = 0.15
    .type = float(value_min=0.001)
    .help = "Decay length of the inner background in q = 2sinθ/λ (Å⁻¹)."
  ring = 1.0
    .type = float(value_min=0)
    .help = "Peak height of the soft water ring (photons/pixel)."
  ring_d = 3.5
    .type = float(value_min=0.5)
    .help = "Resolution of the water ring (Å)."
  ring_width = 0.015
    .type = float(value_min=0.001)
    .help = "rms width of the water ring in q (Å⁻¹)."
  image_sigma = 0.1
    .type = float(value_min=0)
    .help = "Stills: σ of the log-normal per-image background factor."
}
stills {
  log_g_sigma = 0.3
    .type = float(value_min=0)
    .help = "σ of log G, the per-image scale (log-normal, median 1)."
  b_sigma = 4.0
    .type = float(value_min=0)
    .help = "σ (Å²) of the per-image B ~ N(0, σ²), photons ∝ exp(B/(4d²))."
  grid_scan {
    enable = False
      .type = bool
      .help = "One crystal in one orientation (with a small jitter) scanned by the beam:"
              "G follows the illuminated volume, ≈ 1 in the middle of the scan and near"
              "zero at its ends (log_g_sigma is not used)."
    jitter = 0.02
      .type = float(value_min=0)
      .help = "rms per axis (degrees) of the orientation wobble from still to still."
    crystal_length = 0.6
      .type = float(value_min=0)
      .help = "Length of the crystal along the scan line, in units of the scan's length."
    beam_width = 0.1
      .type = float(value_min=0.001)
      .help = "rms width of the beam along the scan line, in units of the scan's length."
    log_g_noise = 0.05
      .type = float(value_min=0)
      .help = "σ of a log-normal shot-to-shot noise on the illuminated volume."
  }
}
rotation {
  phi_start = 0.0
    .type = float
    .help = "Start of the sweep (degrees)."
  phi_width = 1.0
    .type = float(value_min=0.001)
    .help = "Oscillation width of a frame (degrees)."
  exposure_time = 0.1
    .type = float(value_min=0)
    .help = "Exposure time written into the headers (s); no physical effect."
  g_amplitude = 0.2
    .type = float(value_min=0, value_max=0.99)
    .help = "Scale along the sweep: G(φ) = 1 + a·sin(2π(φ-φ0)/T)."
  g_period = None
    .type = float(value_min=0.001)
    .help = "Period T of G(φ) (degrees). None: the sweep width."
  b_drift = -2.0
    .type = float
    .help = "B(φ) drifts linearly from 0 to this (Å²) over the sweep."
}
hot_pixels {
  count = 20
    .type = int(value_min=0)
    .help = "Number of hot pixels (a constant value on every image, not masked)."
  min_value = 1000
    .type = float(value_min=1)
    .help = "Smallest hot-pixel value (counts; log-uniform between min and max)."
  max_value = 50000
    .type = float(value_min=1)
    .help = "Largest hot-pixel value (counts)."
}
zingers {
  rate = 3.0
    .type = float(value_min=0)
    .help = "Mean number of zingers per image (Poisson)."
  min_counts = 50
    .type = int(value_min=1)
    .help = "Smallest extra counts of a zinger (uniform between min and max)."
  max_counts = 2000
    .type = int(value_min=1)
    .help = "Largest extra counts of a zinger."
}
monte_carlo {
  n_samples = 2000
    .type = int(value_min=10)
    .help = "Monte-Carlo samples (photon paths) per observation: the resolution of the"
            "exact expected profiles."
  n_sigma = 5.0
    .type = float(value_min=1)
    .help = "Trace reflections whose nominal excitation error (stills) or crossing angle"
            "(rotation) is within this many first-order widths."
    .expert_level = 1
  max_lorentz = 2000.0
    .type = float(value_min=1)
    .help = "Rotation: crossings with a larger nominal Lorentz factor 1/|m2·(ŝ1 × ŝ0)|"
            "(within ~0.03° of the rotation axis) are not simulated.  It must be larger"
            "than any that DIALS integrates (|m2·ê1| > 0.05, i.e. up to 20/sin 2θ), or"
            "reflections every route predicts and integrates come out of the simulator"
            "as missing."
    .expert_level = 1
}
truth {
  min_partiality = 0.01
    .type = float(value_min=0)
    .help = "Observations with a lower partiality are traced (their photons are in the"
            "images) but left out of observations.npz."
}
"""
)


@show_mail_handle_errors()
def run(args: list[str] | None = None, phil=phil_scope) -> None:
    parser = ArgumentParser(
        usage="dials.factored_simulate mode=stills|rotation seed=1 [n_images=...] "
              "[output.directory=.] [options]",
        phil=phil,
        epilog=__doc__,
        check_format=False,
    )
    params, options, unhandled = parser.parse_args(
        args=args, show_diff_phil=False, return_unhandled=True
    )
    if unhandled:
        raise Sorry(f"unrecognised argument(s): {' '.join(unhandled)}")

    from pathlib import Path

    directory = Path(params.output.directory)
    directory.mkdir(parents=True, exist_ok=True)
    logfile = None
    if params.output.log:
        logfile = Path(params.output.log)
        logfile = str(logfile if logfile.is_absolute() else directory / logfile)
    log.config(verbosity=options.verbose, logfile=logfile)
    from dials.util.version import dials_version

    logger.info(dials_version())
    diff = parser.diff_phil.as_str()
    if diff:
        logger.info("The following parameters have been modified:\n%s", diff)

    from dials_factored.simulate.run import run_simulation

    logger.info("Simulating %s into %s", params.mode, directory.resolve())
    try:
        summary = run_simulation(params, directory, progress=progress_printer(logger, "wrote"))
    except ValueError as e:
        raise Sorry(str(e)) from e
    logger.info(
        "Wrote %d images and %d observations (%.1f per image; expected signal photons: "
        "median %.0f, max %.0f), %d hot pixels, %d zingers in %.1f s",
        summary["n_images"], summary["n_observations"], summary["observations_per_image"],
        summary["expected_counts_median"], summary["expected_counts_max"],
        summary["hot_pixels"], summary["zingers"], summary["wall_time_s"])
    for shell, row in summary["spot_width"].items():
        logger.info("  spots %s Å: n=%d, R=%.2e Å⁻¹, rms x/y %s/%s px%s", shell, row["n"],
                    row["R_excitation_A-1"], _fmt(row["median_rms_x_px"]),
                    _fmt(row["median_rms_y_px"]),
                    f", rms z {_fmt(row['median_rms_z_frames'])} frames"
                    if row["median_rms_z_frames"] is not None else "")
    logger.info("Truth in %s", directory.resolve() / "truth")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    run(sys.argv[1:])

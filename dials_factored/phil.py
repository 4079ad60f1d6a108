"""The PHIL parameters of ``dials.factored_integrate`` (``phil_scope``), with their help.

``scripts/phil_table.py`` turns them into the README's parameter table.
"""

from __future__ import annotations

import iotbx.phil

phil_scope = iotbx.phil.parse(
    """
reference = None
  .type = path
  .help = "External reference: an MTZ with intensities or amplitudes, or an atomic"
          "model (PDB/mmCIF, |Fcalc|^2). None: bootstrap I_ref from the data."
anomalous = *auto true false
  .type = choice
  .help = "Keep Bijvoet mates I(+), I(-) apart in the bootstrapped I_h, the error model"
          "and the outlier tests. auto: true when reference= is anomalous (I(+)/I(-)"
          "columns); without a reference, from the second cycle on when the data's own"
          "CC_ano½ (random half data sets) after the first is significant (> 3/√n over"
          "n ≥ 100 Bijvoet pairs); false otherwise. The log reports CC_ano½."
d_min = None
  .type = float(value_min=0.3)
  .help = "High-resolution limit (Å). None: the detector's corners."
nproc = 1
  .type = int(value_min=1)
  .help = "Number of processes (per MPI rank with mp.method=mpi)."
mp {
  method = *multiprocessing mpi
    .type = choice
    .help = "multiprocessing: nproc forked processes on this machine.  mpi: run under"
            "mpirun; the ranks share the images (stills) or image blocks (rotation) and"
            "exchange sums, not pixels; rank 0 writes the outputs."
}
detector {
  gain = 1.0
    .type = float(value_min=0)
    .help = "Detector gain (counts per photon); pixel values are divided by it so"
            "that the Poisson model holds (e.g. 25 for a CSPAD in ADU)."
  read_noise = 0.0
    .type = float(value_min=0)
    .help = "Read noise of an integrating detector (photons rms per pixel, after the"
            "gain; 0 for photon counting).  The model variance of a pixel becomes"
            "Bg + J·P + read_noise²; pixel values below zero are then data (set the"
            "detector's trusted range low enough that they are not masked)."
}
beam {
  bandwidth = 0.0
    .type = float(value_min=0)
    .help = "Relative rms bandwidth of the beam (σ_λ/λ), known from the source; it"
            "widens the partiality: R_bw² = (bλ)²/(2d⁴)."
}
partiality {
  r0 = None
    .type = float(value_min=0)
    .help = "Initial radial width R0 of the reciprocal-lattice point (Å⁻¹, stills)."
            "None: 1/domain size from indexing, else 0.0005 (2000 Å domains)."
  log_r0_prior_sigma = 0.5
    .type = float(value_min=0)
    .help = "Width of the log-normal prior on R0 around its initial value."
    .expert_level = 1
  mosaic = 0.03
    .type = float(value_min=0)
    .help = "Initial mosaic spread η (degrees, stills): it widens the partiality at high"
            "resolution, R0_eff² = R0² + (η/d)² + R_bw²."
  log_mosaic_prior_sigma = 1.0
    .type = float(value_min=0)
    .help = "Width of the log-normal prior on η around its initial value."
    .expert_level = 1
}
profile {
  r1 = None
    .type = float(value_min=0)
    .help = "Initial tangential profile width R1 (Å⁻¹). None: from the spot finder's"
            "boxes in the input reflections."
  mosaicity = None
    .type = float(value_min=0)
    .help = "Initial angular mosaic spread σ_m (degrees, rotation data, DIALS's sigma_m)."
            "None: from the spot finder's z extents, shared equally with the radial"
            "width R0 at the median reflection."
  log_phi_width_prior_sigma = 1.0
    .type = float(value_min=0)
    .help = "Rotation: width of the log-normal priors on the radial width R0 and the"
            "angular mosaic spread σ_m around their initial values."
    .expert_level = 1
  anisotropic = Auto
    .type = bool
    .help = "Fit separate widths along the circumferential and radial directions."
            "Auto: yes for rotation data (an angular mosaic spread widens spots along"
            "the circumference as 1/d, not radially), no for stills."
  follow_spot = True
    .type = bool
    .help = "Rotation: the template follows the spot across the frames of its φ"
            "profile (while a reflection crosses the Ewald sphere its spot moves on the"
            "detector, most for reflections near the rotation axis; see"
            "docs/benchmarks.md, 2026-12-02). False: the spot is taken to stay at its"
            "predicted centre on every frame."
  n_resolution_bins = 5
    .type = int(value_min=1)
    .help = "Number of nodes of R1(d) on a grid in 1/d²."
  smoothness = 0.3
    .type = float(value_min=0)
    .help = "σ of the prior on log R1 differences between neighbouring nodes."
    .expert_level = 1
  log_r1_prior_sigma = 0.7
    .type = float(value_min=0)
    .help = "σ of the log-normal prior of every R1 node on the initial R1 (the strong"
            "spots' width): R1 may move by a factor of about 2 from what the spot finder"
            "saw, not by 4."
    .expert_level = 1
  fit_width = *auto true false
    .type = choice
    .help = "Fit R1(d) to the spot shapes (Term 2)?  auto: fit, and (stills) when the"
            "fitted widths still outgrow the boxes after the last re-cut (spot tails"
            "whose second moments grow with the window), fix every node at the strong"
            "spots' width for the remaining cycles (logged as a warning); true: fit and"
            "only warn; false: keep R1 at its initial value (the strong spots' width)"
            "and fit only the scales and partialities."
  box_sigma = 4.0
    .type = float(value_min=1)
    .help = "Half-width of the shoebox in units of the initial R1 (of the fitted widths"
            "when the boxes are re-cut, see dials_factored/recut.py)."
    .expert_level = 1
  min_box_half_width = 3
    .type = int(value_min=1)
    .help = "Smallest shoebox half-width (pixels)."
    .expert_level = 1
  window_sigma = 3.0
    .type = float(value_min=1)
    .help = "Foreground window (in units of R1) for M₂, summation and background."
    .expert_level = 1
  min_i_over_sigma = 5.0
    .type = float(value_min=0)
    .help = "Reflections with J/σ_J above this enter Term 2 (shape)."
    .expert_level = 1
}
scale {
  block_width = 5.0
    .type = float(value_min=0.1)
    .help = "Spacing in degrees of the G and B nodes along a rotation sweep."
  b_prior_sigma = 20.0
    .type = float(value_min=0)
    .help = "σ (Å²) of the prior B ~ N(0, σ) per node."
    .expert_level = 1
  smoothness {
    log_g = 0.1
      .type = float(value_min=0)
      .help = "σ of the prior on log G differences between neighbouring rotation nodes."
      .expert_level = 1
    b = 0.5
      .type = float(value_min=0)
      .help = "σ (Å²) of the prior on B differences between neighbouring rotation nodes."
      .expert_level = 1
  }
}
prediction {
  excitation_cutoff = 3.0
    .type = float(value_min=0.5)
    .help = "Stills: predict reflections with |ε| below this many initial R0_eff."
    .expert_level = 1
  min_zeta = 0.05
    .type = float(value_min=0)
    .help = "Rotation: skip reflections with |ζ| below this, ζ = m2·ê1 with"
            "ê1 = s1 × s0/|s1 × s0| (DIALS's zeta and its integration.filter.min_zeta):"
            "reflections close to the rotation axis, which cross the Ewald sphere slowly."
    .expert_level = 1
  partiality_floor = 0.001
    .type = float(value_min=0, value_max=1)
    .help = "Stills: after the first cycle, reflections whose partiality is below this"
            "even with R0_eff widened by 25 % are no longer integrated (no signal)."
    .expert_level = 1
}
outliers {
  pixel_threshold = 8.0
    .type = float(value_min=3)
    .help = "A pixel more than this many σ above the model (Bg + J·P) is masked:"
            "hot pixels and zingers."
}
ambiguity {
  resolve = True
    .type = bool
    .help = "When the lattice has more symmetry than the crystal (twin laws, e.g. P4_3,"
            "P6_3, P3_121), put every crystal in one setting before the fit: each takes"
            "the twin law under which its strong spots correlate best with the others (or"
            "with reference=). The output is in that setting. False: as indexed."
}
refinement {
  n_cycles = 4
    .type = int(value_min=1)
    .help = "Most outer cycles (new R1, weights and I_ref each cycle)."
  shift_tolerance = 0.002
    .type = float(value_min=0)
    .help = "Stop the outer cycles (after the second) when no log G moved by more than"
            "this and no B by more than 25 times this (Å²); a run that ends at n_cycles"
            "with larger shifts is warned about.  0: always n_cycles, no warning."
    .expert_level = 1
  measure_g_r1_coupling = False
    .type = bool
    .help = "Measure how the scales depend on the profile width: after the fit, J is"
            "recomputed from the pixels with every R1 scaled by 0.8 and by 1.2, G, B,"
            "R0, η (and the orientations) are refitted to it by one LM each (widths"
            "held), and d log G / d log R1 is reported per node (median and max |·|)."
            "Costs two extra passes over the pixels and two minimisations."
    .expert_level = 2
  max_iterations = 100
    .type = int(value_min=1)
    .help = "Levenberg-Marquardt iterations per cycle (an LM step costs about 15 ms per"
            "100 stills). Simulated stills converge in 10-90; the real thaumatin stills"
            "need 25-160, and stopping them at 30 cost 0.012 in CC½."
    .expert_level = 1
  orientation = True
    .type = bool
    .help = "Stills: refine each crystal's orientation about the two axes normal to the"
            "beam against the partialities (post-refinement), which spot positions alone"
            "barely constrain."
  orientation_prior_sigma = 0.2
    .type = float(value_min=0)
    .help = "σ (degrees) of the prior on each still's orientation correction."
    .expert_level = 1
  cell_scale_prior_sigma = 0.02
    .type = float(value_min=0)
    .help = "Stills: σ of the prior on each still's relative reciprocal-cell scale"
            "corrections δs (q → (1 + δs)·q), refined with the orientation through the"
            "partialities: a cell or wavelength off by a fraction shifts every excitation"
            "error by δs·λ/2d², which would otherwise be taken for mosaic spread."
    .expert_level = 1
  cell = *axes isotropic
    .type = choice
    .help = "Stills: the cell corrections refined per still. axes: one relative scale"
            "per reciprocal axis that the lattice symmetry leaves free (a*, b*, c*"
            "apart for orthorhombic, monoclinic and triclinic cells; a* = b* and c*"
            "for tetragonal, trigonal and hexagonal; one for cubic), which takes up"
            "the axis-length errors of stills indexing. isotropic: one scale."
    .expert_level = 1
  min_partiality = 0.1
    .type = float(value_min=0, value_max=1)
    .help = "Stills observations with a model partiality below this enter neither the"
            "fit nor the bootstrapped reference (little signal, least certain p)."
    .expert_level = 1
}
output {
  experiments = factored.expt
    .type = path
    .help = "The experiments: the models as given, except that for stills each"
            "crystal carries its fitted orientation correction (refinement.orientation),"
            "from which the reflections' s1, xyzcal and excitation errors are predicted"
            "(written atomically)."
  reflections = factored.refl
    .type = path
    .help = "Integrated and scaled reflections, ready for dials.merge/dials.export."
  parameters = factored_parameters.json
    .type = path
    .help = "Fitted G, B per node, R1(d), R0 and the history of the fit."
  scratch = None
    .type = path
    .help = "Directory for the temporary on-disk pixel store (removed at the end);"
            "None: the system's temporary directory."
    .expert_level = 1
  log = dials.factored_integrate.log
    .type = path
    .help = "The log file."
  html = dials.factored_integrate.html
    .type = path
    .help = "HTML report with plots (offline; None to skip)."
  posterior = None
    .type = path
    .help = "Write merged posterior intensities and amplitudes here (an MTZ: I, SIGI, F,"
            "SIGF; the merged measurements as IMEAN, SIGIMEAN): our Gaussian likelihood"
            "times a Wilson prior, or the reference= as prior (see posterior.py)."
            "Experimental: σ is taken as fixed, though ours grows with the signal, so weak"
            "partial measurements are shrunk too far (docs/posterior.md). None: skip."
  min_partiality = 0.05
    .type = float(value_min=0)
    .help = "Observations with a lower fitted partiality are flagged bad_for_scaling."
    .expert_level = 1
  min_profile_coverage = 0.5
    .type = float(value_min=0)
    .help = "Reflections whose usable pixels hold less of the profile are not integrated."
    .expert_level = 1
}
"""
)

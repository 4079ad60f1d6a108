"""Run a whole simulation: images into ``<dir>/images``, the truth into ``<dir>/truth``."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from dials_factored.simulate import crystal as xtal
from dials_factored.simulate import truth as out
from dials_factored.simulate.design import Design, resolve, stream
from dials_factored.simulate.images import Defects
from dials_factored.simulate.physics import analytic_width
from dials_factored.simulate.rotation import simulate_sweep
from dials_factored.simulate.stills import simulate_still

logger = logging.getLogger("dials.factored_simulate")

#: Description of every output file (also written into truth.json).
FILES = {
    "images/image_NNNNN.cbf": "miniCBF images (int32 counts = photons, gain 1), geometry in "
                              "the header; stills have zero oscillation",
    "truth/models.expt": "the true experiments (beam, detector, crystal with the true "
                         "orientation; goniometer + scan for rotation): one per still or one "
                         "for the sweep, imagesets on ../images (relative paths)",
    "truth/truth.mtz": "true merged intensities: columns I and SIGI (= 1), true space group, "
                       "unique non-anomalous asymmetric unit, to d_min",
    "truth/observations.npz": "one row per simulated observation; columns in "
                              "'observation_columns'",
    "truth/truth.json": "this file: parameters, per-image truth, defects, conventions",
}

CONVENTIONS = {
    "frame": "DIALS lab frame: beam along -z (s0 = (0,0,-1/λ)), detector fast +x, slow -y, "
             "rotation axis +x; pixel i spans [i, i+1); frame i spans z in [i, i+1)",
    "scale": "photons of an observation ∝ G·exp(B/(4d²)) (B in Å²; B < 0: intensities fall "
             "faster with resolution)",
    "expected_counts": "E = K·I·scale·polarisation·lorentz·partiality, K = intensity_scale",
    "stills_partiality": "p = mean spectrum weight / its value for the same samples with the "
                         "reflection centre on the sphere; ≈ exp(−ε²/(2R²)) with "
                         "R² = σ_bw² + σ_dom² + σ_m²|r|²cos²θ + σ_div² sin²2θ/λ², "
                         "σ_bw = bλ/(2d²)",
    "domain": "σ_dom = 1/(√(2π)·D) per axis (Å⁻¹), D = domain_size (Å)",
    "mosaic": "mosaic block rotation vector with N(0, σ_m²) components per axis (rad)",
    "divergence": "incident direction tilted by two N(0, σ_div²) angles (rad)",
    "rotation_lorentz": "each crossing weighted by L = |s0|/|dε/dφ| = 1/|m·(ŝ1×ŝ0)|",
    "ideal_variance": "1/Σ_p u_p²/μ_p, u_p = expected photons per unit I in pixel p, "
                      "μ_p = expected counts (background + all spots); intensity units²",
    "detector": "no sensor material, zero thickness: SimplePxMmStrategy, no parallax, "
                "no QE correction; optional Gaussian point spread",
    "wilson": "⟨I⟩ = I0·ε·exp(−B_wilson/(2d²)); acentric I ~ ⟨I⟩·Exp(1), centric ⟨I⟩·χ²₁",
}


def image_paths(directory: Path, n: int) -> list[Path]:
    return [directory / "images" / f"image_{i + 1:05d}.cbf" for i in range(n)]


def run_simulation(params, directory, progress=None) -> dict:
    """Simulate everything the parameters describe into ``directory``; return a summary."""
    start = time.perf_counter()
    directory = Path(directory).resolve()
    (directory / "images").mkdir(parents=True, exist_ok=True)
    (directory / "truth").mkdir(parents=True, exist_ok=True)
    design = resolve(params)
    paths = image_paths(directory, design.n_images)
    defects = Defects.draw_hot(design.plane.size, design.hot_pixels, design.hot_range,
                               stream(design.seed, "hot"))
    bg_model = design.background.model(design.plane, design.wavelength)
    crystals = [xtal.crystal_model(design.truth, u) for u in design.u_matrices]
    table = out.ObservationTable()
    if design.stills:
        for i, path in enumerate(paths):
            simulate_still(design, i, path, bg_model, defects, crystals[i], table)
            if progress:
                progress(i + 1, design.n_images)
    else:
        simulate_sweep(design, paths, bg_model, defects, crystals[0], table, progress)
    sim_time = time.perf_counter() - start

    observations = table.finish()
    truth_dir = directory / "truth"
    out.write_observations(observations, truth_dir / "observations.npz")
    out.write_mtz(design.truth.unique, truth_dir / "truth.mtz", design.truth.model_f)
    if design.truth.heavy_atoms is not None:
        out.write_heavy_atoms(design.truth.heavy_atoms, truth_dir / "heavy_atoms.pdb")
    experiments = out.experiment_list(design, paths, crystals)
    out.write_experiments(experiments, truth_dir / "models.expt")
    summary = _summary(design, observations, defects)
    out.write_json(_truth_json(design, experiments, observations, defects, summary),
                   truth_dir / "truth.json")
    summary["wall_time_s"] = time.perf_counter() - start
    summary["simulation_time_s"] = sim_time
    summary["directory"] = str(directory)
    return summary


def _summary(design: Design, obs: dict, defects: Defects) -> dict:
    n_img = design.n_images
    strong = obs["expected_counts"]
    return {
        "mode": design.mode, "n_images": n_img, "n_observations": int(strong.size),
        "observations_per_image": strong.size / n_img,
        "expected_counts_median": float(np.median(strong)) if strong.size else 0.0,
        "expected_counts_max": float(strong.max()) if strong.size else 0.0,
        "hot_pixels": int(len(defects.hot_xy)), "zingers": len(defects.zingers),
        "spot_width": _spot_width(design, obs),
    }


def _spot_width(design: Design, obs: dict) -> dict:
    """Spot sizes: the first-order excitation-error width R (Å⁻¹) and the median photon rms
    spread on the detector (px; frames for rotation) of the observations, per d range."""
    edges = [np.inf, 4.0, 2.5, design.d_min]
    rows = {}
    for lo, hi in zip(edges[1:], edges[:-1]):
        sel = (obs["d"] >= lo) & (obs["d"] < hi) & (obs["fraction_on_detector"] > 0.99)
        d_mid = np.array([min(hi, 2 * lo)])
        rows[f"d {lo:.2f}-{hi:.2f}"] = {
            "n": int(sel.sum()),
            "R_excitation_A-1": float(analytic_width(d_mid, design.wavelength,
                                                     design.spreads)[0]),
            "median_rms_x_px": float(np.median(obs["rms_px"][sel, 0])) if sel.any() else None,
            "median_rms_y_px": float(np.median(obs["rms_px"][sel, 1])) if sel.any() else None,
            "median_rms_z_frames": (float(np.median(obs["rms_px"][sel, 2]))
                                    if sel.any() and not design.stills else None),
        }
    return rows


def _truth_json(design: Design, experiments, obs: dict, defects: Defects, summary) -> dict:
    per_image = {"G": design.g, "B": design.b, "background_factor": design.bg_factor,
                 "identifier": [e.identifier for e in experiments]}
    if not design.stills:
        per_image["phi_centre_deg"] = (design.rotation["phi_start"] + (
            np.arange(design.n_images) + 0.5) * design.rotation["phi_width"])
        per_image["note"] = "G and B at the frame centres; G(φ), B(φ) in parameters.rotation"
    return {
        "description": "Truth of a dials.factored_simulate run",
        "seed": design.seed,
        "parameters": design.parameters,
        "per_image": per_image,
        "summary": summary,
        "hot_pixels": {"count": int(len(defects.hot_xy)),
                       "xy_value": np.column_stack([defects.hot_xy, defects.hot_value])},
        "zingers": {"count": len(defects.zingers),
                    "image_x_y_counts": defects.zingers},
        "files": FILES,
        "observation_columns": out.OBSERVATION_COLUMNS,
        "conventions": CONVENTIONS,
    }

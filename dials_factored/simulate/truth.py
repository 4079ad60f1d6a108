"""Writing the truth files: models.expt, truth.mtz, observations.npz, truth.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from dxtbx.imageset import ImageSetFactory
from dxtbx.model import Experiment, ExperimentList

#: Columns of observations.npz and their meaning (also written to truth.json).
OBSERVATION_COLUMNS = {
    "experiment": "int: index of the experiment in models.expt (stills: the image, 0-based; "
                  "rotation: 0)",
    "miller_index": "(n,3) int: the reflection's indices as predicted with the true crystal "
                    "model (not mapped to the asymmetric unit)",
    "i_true": "true intensity I (units of truth.mtz), the same for all symmetry mates "
              "(and for both Bijvoet mates unless the crystal has anomalous scatterers)",
    "d": "resolution (Å)",
    "expected_counts": "expected signal photons of the observation summed over all its pixels "
                       "and frames, including any falling off the panel (gain 1: counts); "
                       "= K·i_true·scale·polarisation·lorentz·partiality with K = "
                       "parameters.intensity_scale",
    "partiality": "stills: p = Σ spectrum weights / Σ of the same samples' weights with the "
                  "reflection centre on the Ewald sphere (≈ exp(−ε²/2R²), 1 on the sphere); "
                  "rotation: L·P-weighted fraction of the full reflection inside the scan",
    "scale": "G·exp(B/(4d²)) of the observation (rotation: photon-weighted mean over its "
             "crossing of G(φ)·exp(B(φ)/(4d²)))",
    "polarisation": "polarisation factor P (photon-weighted mean; DIALS lp = 1/P for stills, "
                    "1/(L·P) for rotation)",
    "lorentz": "rotation: Lorentz factor L = 1/|m·(ŝ1×ŝ0)| (mean over samples; DIALS' Lorentz "
               "correction is 1/L); stills: 1",
    "ideal_variance": "1/Fisher information for I_true of this observation's Poisson counts "
                      "(knowing profile, background, scale; hot/zinger pixels excluded), in "
                      "intensity units squared; inf if none of its signal is on the panel",
    "xyz_px": "(n,3) expected centroid of the signal photons: x, y in pixels (pixel i spans "
              "[i, i+1)), z in frames (frame i spans [i, i+1); 0 for stills)",
    "background": "mean background photons per pixel (per frame) at the centroid pixel",
    "excitation_error": "stills: ε0 = |A·h + s0| − |s0| (Å⁻¹, > 0 outside the sphere) of the "
                        "nominal reciprocal-lattice point; rotation: 0",
    "fraction_on_detector": "fraction of the observation's signal photons landing on the "
                            "panel's pixels",
    "rms_px": "(n,3) photon-weighted rms spread of the signal about xyz_px: x, y in pixels "
              "(point spread included), z in frames (0 for stills)",
    "phi_deg": "rotation: nominal crossing angle (degrees) of the reflection centre; stills: 0",
}


class ObservationTable:
    """Columns of observations.npz, appended image by image."""

    def __init__(self) -> None:
        self._parts: dict[str, list[np.ndarray]] = {k: [] for k in OBSERVATION_COLUMNS}

    def add(self, **columns) -> None:
        n = len(columns["experiment"])
        for key in OBSERVATION_COLUMNS:
            value = columns.get(key)
            if value is None:
                value = np.zeros(n)
            self._parts[key].append(np.asarray(value))

    def finish(self) -> dict[str, np.ndarray]:
        out = {}
        for key, parts in self._parts.items():
            width = 3 if key in ("miller_index", "xyz_px", "rms_px") else None
            empty = np.zeros((0, 3) if width else 0)
            out[key] = np.concatenate(parts) if parts else empty
        out["experiment"] = out["experiment"].astype(np.int64)
        out["miller_index"] = out["miller_index"].astype(np.int64).reshape(-1, 3)
        return out


def write_observations(columns: dict[str, np.ndarray], path: Path) -> None:
    """observations.npz (uncompressed, so that the same seed gives the same bytes)."""
    with open(path, "wb") as f:
        np.savez(f, **columns)


def write_mtz(unique, path: Path, model_f=None) -> None:
    """The true merged intensities: columns I and SIGI (= 1) on the non-anomalous asu, or
    I(+), SIGI(+), I(−), SIGI(−) when the crystal has anomalous scatterers; then also
    FMODEL, PHIFMODEL, the model's structure factors (their phases are what a phaser uses).

    The wavelength recorded in the MTZ is a placeholder (1 Å); the true one is in
    truth.json.
    """
    import iotbx.mtz
    from cctbx.array_family import flex

    arr = unique.customized_copy(sigmas=flex.double(unique.size(), 1.0))
    arr.set_observation_type_xray_intensity()
    dataset = arr.as_mtz_dataset(column_root_label="I", wavelength=1.0)
    if model_f is not None:
        dataset.add_miller_array(model_f, column_root_label="FMODEL")
    dataset.mtz_object().write(str(path))
    # Replace the columns' creation time stamps (re-read: a new object ignores set_source)
    # so that the same seed gives the same bytes.
    mtz = iotbx.mtz.object(str(path))
    for column in mtz.columns():
        column.set_source("dials.factored_simulate")
    mtz.write(str(path))


def experiment_list(design, image_paths: list[Path], crystals: list) -> ExperimentList:
    """The true experiments: one per still, or one for the sweep; imagesets on the images."""
    names = [str(p) for p in image_paths]
    experiments = ExperimentList()
    if design.stills:
        imageset = ImageSetFactory.make_imageset(names)
        for i, crystal in enumerate(crystals):
            experiments.append(Experiment(
                imageset=imageset[i:i + 1], beam=design.beam, detector=design.detector,
                crystal=crystal, identifier=f"factored-sim-{design.seed}-still-{i:05d}"))
    else:
        template = str(Path(names[0]).parent / "image_#####.cbf")
        sequence = ImageSetFactory.make_sequence(
            template, list(range(1, len(names) + 1)), beam=design.beam,
            detector=design.detector, goniometer=design.goniometer, scan=design.scan)
        experiments.append(Experiment(
            imageset=sequence, beam=design.beam, detector=design.detector,
            goniometer=design.goniometer, scan=design.scan, crystal=crystals[0],
            identifier=f"factored-sim-{design.seed}-sweep"))
    for expt in experiments:
        expt.imageset.set_beam(design.beam)
        expt.imageset.set_detector(design.detector)
    return experiments


def write_experiments(experiments: ExperimentList, path: Path) -> None:
    """Write models.expt with image paths relative to its directory (loads from any cwd)."""
    data = experiments.to_dict()
    base = path.parent.resolve()
    for imageset in data.get("imageset", []):
        if "template" in imageset:
            imageset["template"] = os.path.relpath(imageset["template"], base)
        if "images" in imageset:
            imageset["images"] = [os.path.relpath(p, base) for p in imageset["images"]]
    path.write_text(json.dumps(data, indent=2))


def write_json(data: dict, path: Path) -> None:
    path.write_text(json.dumps(data, indent=1, default=_plain))


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def write_heavy_atoms(structure, path: Path) -> None:
    """The anomalous scatterers' sites as a PDB file (CRYST1 and HETATM records)."""
    path.write_text(structure.as_pdb_file())

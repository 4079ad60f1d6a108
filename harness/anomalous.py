"""What phasers use, scored against the simulator's truth: CC_ano and anomalous map peaks.

* **CC_ano** per resolution shell: Pearson CC of the measured Bijvoet differences
  ΔI = I(+) − I(−) of acentric reflections with the true ones (the truth's I(+), I(−)),
  on the reflections both have.
* **Anomalous difference Fourier peak heights**: the map with coefficients
  ΔF·exp(i(φ_model − 90°)), ΔF = |F(+)| − |F(−)| (|F| = √max(I, 0)) and φ_model the phase
  of the model's structure factor (truth.mtz FMODEL), scaled to its rms (σ), read at each
  true heavy-atom site (truth/heavy_atoms.pdb) by interpolation.  The truth's own ΔF give
  the height an error-free measurement of the same reflections would reach.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from cctbx import miller
from iotbx.reflection_file_reader import any_reflection_file

from harness.evaluate import Shells, _pearson


def read_anomalous(path: str | Path, label: str = "I(+)") -> miller.array:
    """The anomalous intensity array (``I(+)``, ``I(-)``) of an MTZ."""
    for array in any_reflection_file(str(path)).as_miller_arrays(merge_equivalents=False):
        if array.info().labels[0] == label and array.anomalous_flag():
            return array
    raise ValueError(f"{path}: no anomalous intensity column {label}")


def read_model_f(path: str | Path) -> miller.array:
    """The model's complex structure factors (FMODEL, PHIFMODEL) of a truth.mtz."""
    for array in any_reflection_file(str(path)).as_miller_arrays():
        if array.info().labels[0] == "FMODEL":
            return array
    raise ValueError(f"{path}: no FMODEL column (not an anomalous simulation?)")


def _differences(array: miller.array, truth: miller.array) -> miller.array:
    """Bijvoet differences of ``array`` in the truth's symmetry, unique acentric asu."""
    a = array.customized_copy(crystal_symmetry=truth.crystal_symmetry()).map_to_asu()
    if not a.is_unique_set_under_symmetry():
        a = a.merge_equivalents().array()
    return a.anomalous_differences()


def bijvoet_d_spacings(truth: miller.array) -> np.ndarray:
    """d (Å) of the truth's acentric Bijvoet pairs (for shells common to every route)."""
    return _differences(truth, truth).d_spacings().data().as_numpy_array()


def cc_ano(measured: miller.array, truth: miller.array, shells: Shells) -> list[float]:
    """CC_ano per shell and overall (last): measured against true ΔI (module doc)."""
    obs, true = (_differences(measured, truth), _differences(truth, truth))
    obs, true = obs.common_sets(true)
    d = obs.d_spacings().data().as_numpy_array()
    x, y = obs.data().as_numpy_array(), true.data().as_numpy_array()
    shell = shells.assign(d)
    return [_pearson(x[shell == i], y[shell == i]) for i in range(len(shells))] + \
        [_pearson(x[shell >= 0], y[shell >= 0])]


def _delta_f(intensities: miller.array, truth: miller.array) -> miller.array:
    """ΔF = |F(+)| − |F(−)| with |F| = √max(I, 0), unique acentric asu."""
    a = intensities.customized_copy(crystal_symmetry=truth.crystal_symmetry(),
                                    sigmas=None).map_to_asu()
    if not a.is_unique_set_under_symmetry():
        a = a.merge_equivalents().array()
    from cctbx.array_family import flex

    amplitudes = np.sqrt(np.maximum(a.data().as_numpy_array(), 0.0))
    return a.customized_copy(data=flex.double(amplitudes)).anomalous_differences()


def peak_heights(measured: miller.array, truth: miller.array, model_f: miller.array,
                 sites, resolution_factor: float = 0.25) -> list[float]:
    """Anomalous difference Fourier height (σ) at each true site (module doc)."""
    from cctbx.array_family import flex

    delta = _delta_f(measured, truth)
    delta, phases = delta.common_sets(model_f.map_to_asu())
    phi = np.angle(phases.data().as_numpy_array()) - math.pi / 2
    coeff = delta.data().as_numpy_array() * np.exp(1j * phi)
    coefficients = delta.customized_copy(data=flex.complex_double(
        flex.double(coeff.real.copy()), flex.double(coeff.imag.copy())))
    fft = coefficients.fft_map(resolution_factor=resolution_factor)
    fft.apply_sigma_scaling()
    density = fft.real_map_unpadded()
    return [float(density.tricubic_interpolation(site)) for site in sites.sites_frac()]


def read_sites(path: str | Path):
    """The heavy-atom sites of truth/heavy_atoms.pdb as a cctbx xray.structure."""
    import iotbx.pdb

    return iotbx.pdb.input(file_name=str(path)).xray_structure_simple()


def score(merged_mtz: str | Path, truth_dir: str | Path, shells: Shells | None = None,
          ideal: miller.array | None = None) -> dict:
    """CC_ano by shell and peak heights of a merged anomalous MTZ, beside the truth's own ΔF
    and (if given) the ideal estimator's, both on the reflections the MTZ holds."""
    truth_dir = Path(truth_dir)
    truth = read_anomalous(truth_dir / "truth.mtz")
    measured = read_anomalous(merged_mtz).customized_copy(
        crystal_symmetry=truth.crystal_symmetry()).map_to_asu()
    shells = shells or Shells(_differences(measured, truth).d_spacings().data(), 10)
    model_f = read_model_f(truth_dir / "truth.mtz")
    sites = read_sites(truth_dir / "heavy_atoms.pdb")
    heights = peak_heights(measured, truth, model_f, sites)
    ceiling = peak_heights(truth.common_set(measured), truth, model_f, sites)
    cc = cc_ano(measured, truth, shells)
    result = {"cc_ano_by_shell": cc[:-1], "cc_ano": cc[-1],
              "d_ranges": [shells.d_range(i) for i in range(len(shells))],
              "n_bijvoet_pairs": int(_differences(measured, truth).size()),
              "peak_heights": heights, "mean_peak_height": float(np.mean(heights)),
              "mean_truth_peak_height": float(np.mean(ceiling))}
    if ideal is not None:
        same = ideal.customized_copy(crystal_symmetry=truth.crystal_symmetry()).map_to_asu() \
            .common_set(measured)
        ideal_cc = cc_ano(same, truth, shells)
        result.update(ideal_cc_ano_by_shell=ideal_cc[:-1], ideal_cc_ano=ideal_cc[-1],
                      mean_ideal_peak_height=float(np.mean(
                          peak_heights(same, truth, model_f, sites))))
    return result


def ideal_merged(observations: dict, symmetry, seed: int = 0) -> miller.array:
    """One realisation of the ideal estimator, merged with Bijvoet mates apart.

    Each observation measures its own I_true (per Bijvoet mate) with the simulator's ideal
    variance (true scale, partiality, profile and background known; Poisson only): a
    Gaussian draw x = I_true + N(0, V) per observation, inverse-variance merged.
    """
    from cctbx.array_family import flex

    v = np.asarray(observations["ideal_variance"], dtype=float)
    ok = np.isfinite(v) & (v > 0)
    rng = np.random.default_rng(seed)
    i_true = np.asarray(observations["i_true"], dtype=float)[ok]
    x = i_true + rng.standard_normal(ok.sum()) * np.sqrt(v[ok])
    hkl = np.asarray(observations["miller_index"], dtype=int)[ok]
    obs = miller.array(miller.set(symmetry, flex.miller_index(hkl.tolist()),
                                  anomalous_flag=True),
                       data=flex.double(x), sigmas=flex.double(np.sqrt(v[ok])))
    # an intensity array merges inverse-variance weighted (a plain one would average)
    return obs.set_observation_type_xray_intensity().map_to_asu().merge_equivalents().array()


def _coset_rotations(symmetry) -> list[set]:
    """The rotation matrices (as int tuples) of each coset of the crystal's point group in
    the lattice's: the settings a crystal can be indexed in."""
    import cctbx.sgtbx.cosets as cosets
    from cctbx.sgtbx import lattice_symmetry

    to_niggli = symmetry.change_of_basis_op_to_niggli_cell()
    lattice = lattice_symmetry.group(symmetry.change_basis(to_niggli).unit_cell(),
                                     max_delta=3.0).change_basis(to_niggli.inverse())
    partitions = cosets.left_decomposition(
        lattice.build_derived_point_group(),
        symmetry.space_group().build_derived_point_group()).partitions
    return [{tuple(int(round(v)) for v in op.r().as_double()) for op in part}
            for part in partitions]


def right_setting_fraction(factored_expt: Path, truth_expt: Path) -> float:
    """Fraction of stills in the majority setting relative to the truth.

    M = A_true⁻¹·A_out is an operator of the lattice's point group; crystals are in the
    same setting when their M lie in the same coset of the crystal's point group (the
    setting of the whole set is a gauge).
    """
    from dxtbx.model.experiment_list import ExperimentListFactory

    out = ExperimentListFactory.from_json_file(str(factored_expt), check_format=False)
    true = ExperimentListFactory.from_json_file(str(truth_expt), check_format=False)
    by_image = {e.imageset.get_path(0): e for e in true}
    cosets = _coset_rotations(true[0].crystal.get_crystal_symmetry())
    labels = []
    for e in out:
        t = by_image.get(e.imageset.get_path(0))
        if t is None:
            continue
        m = np.round(np.linalg.solve(np.reshape(t.crystal.get_A(), (3, 3)),
                                     np.reshape(e.crystal.get_A(), (3, 3)))).astype(int)
        forms = {tuple(m.ravel()), tuple(m.T.ravel()),
                 tuple(np.round(np.linalg.inv(m)).astype(int).ravel())}
        labels.append(next((k for k, c in enumerate(cosets) if forms & c), -1))
    if not labels:
        return float("nan")
    return float(np.bincount(np.array(labels) + 1).max() / len(labels))

"""Science tests of the simulator (dials.factored_simulate): things wrong physics would break."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cctbx import crystal, miller, sgtbx, uctbx
from dials.array_family import flex
from dxtbx.model.experiment_list import ExperimentListFactory

from dials_factored.command_line.factored_simulate import run
from dials_factored.simulate import physics
from dials_factored.simulate.geometry import Plane
from dials_factored.simulate.images import Background

#: Small but physical sets: default 1024² detector, few images, fewer samples.
STILLS_ARGS = ["mode=stills", "seed=3", "n_images=6", "monte_carlo.n_samples=1000"]
ROTATION_ARGS = ["mode=rotation", "seed=5", "n_images=12", "monte_carlo.n_samples=1000",
                 "intensity.scale=0.2", "crystal.mosaic=0.05"]  # narrow spots (the old default)


class Sim:
    """A simulated data set: truth files, images and the background model."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.truth = json.loads((directory / "truth" / "truth.json").read_text())
        self.params = self.truth["parameters"]
        with np.load(directory / "truth" / "observations.npz") as f:
            self.obs = {k: f[k] for k in f.files}
        self.experiments = ExperimentListFactory.from_json_file(
            str(directory / "truth" / "models.expt"), check_format=True)
        self.images = sorted((directory / "images").glob("*.cbf"))
        detector = self.experiments[0].detector
        bg = {k: v for k, v in self.params["background"].items() if k != "image_sigma"}
        self.bg_model = Background(**bg).model(Plane.from_panel(detector[0]),
                                               self.params["wavelength"])
        self.bad = self._defect_pixels()

    def image(self, i: int) -> np.ndarray:
        """Counts of image i (0-based) as float."""
        i = int(i)
        expt = self.experiments[i] if len(self.experiments) > 1 else self.experiments[0]
        index = 0 if len(self.experiments) > 1 else i
        return expt.imageset.get_raw_data(index)[0].as_numpy_array().astype(float)

    def background(self, i: int) -> np.ndarray:
        return self.bg_model * self.truth["per_image"]["background_factor"][i]

    def _defect_pixels(self) -> set:
        hot = {(int(x), int(y)) for x, y, _ in self.truth["hot_pixels"]["xy_value"]}
        zing = {(int(i), int(x), int(y)) for i, x, y, _ in
                self.truth["zingers"]["image_x_y_counts"]}
        return {"hot": hot, "zingers": zing}

    def clean_box(self, image: int, x0: int, y0: int, half: int) -> bool:
        """The box lies inside the panel and holds no hot pixel or zinger."""
        ny, nx = self.bg_model.shape
        if not (half <= x0 < nx - half and half <= y0 < ny - half):
            return False
        for x, y in self.bad["hot"]:
            if abs(x - x0) <= half and abs(y - y0) <= half:
                return False
        for i, x, y in self.bad["zingers"]:
            if i == image and abs(x - x0) <= half and abs(y - y0) <= half:
                return False
        return True

    def spreads(self) -> physics.Spreads:
        p = self.params
        return physics.Spreads(sigma_domain=p["sigma_domain"], mosaic=p["mosaic_rad"],
                               divergence=p["divergence"], bandwidth=p["bandwidth"],
                               psf=p["psf_px"])


def _simulate(directory: Path, args: list[str]) -> Sim:
    run([*args, f"output.directory={directory}", "output.log=None"])
    return Sim(directory)


@pytest.fixture(scope="module")
def stills(tmp_path_factory) -> Sim:
    return _simulate(tmp_path_factory.mktemp("stills"), STILLS_ARGS)


@pytest.fixture(scope="module")
def rotation(tmp_path_factory) -> Sim:
    return _simulate(tmp_path_factory.mktemp("rotation"), ROTATION_ARGS)


def _isolated(obs: dict, sel: np.ndarray, radius: float, min_counts: float = 1.0,
              frames: float = np.inf) -> np.ndarray:
    """Rows of ``sel`` with no other observation (> min_counts) within ``radius`` px."""
    keep = []
    xyz = obs["xyz_px"]
    other = obs["expected_counts"] > min_counts
    for i in np.flatnonzero(sel):
        same = (obs["experiment"] == obs["experiment"][i]) & other
        same[i] = False
        near = (np.hypot(*(xyz[same, :2] - xyz[i, :2]).T) < radius) & (
            np.abs(xyz[same, 2] - xyz[i, 2]) < frames)
        if not near.any():
            keep.append(i)
    return np.array(keep, dtype=int)


def _box(x: float, y: float, half: int):
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    return x0, y0, (slice(y0 - half, y0 + half + 1), slice(x0 - half, x0 + half + 1))


def _robust_z_checks(z: np.ndarray) -> None:
    """z of many spots: centred on 0 with unit spread (robustly: median, 68 % range)."""
    assert len(z) >= 20, len(z)
    lo, med, hi = np.percentile(z, [16, 50, 84])
    assert abs(med) < 0.25, (med, z)
    assert 0.8 < (hi - lo) / 2 < 1.25, ((hi - lo) / 2, z)


# --------------------------------------------------------------------------- geometry


def test_images_round_trip_to_truth_geometry(stills, rotation, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # truth/models.expt must load from any cwd
    for sim, n in ((stills, 6), (rotation, 12)):
        truth = ExperimentListFactory.from_json_file(
            str(sim.dir / "truth" / "models.expt"), check_format=True)
        imported = ExperimentListFactory.from_filenames([str(p) for p in sim.images])
        assert len(sim.images) == n
        ids = [e.identifier for e in truth]
        assert len(set(ids)) == len(ids) and all(ids)
        for expt in imported:
            assert expt.beam == truth[0].beam
            assert expt.detector == truth[0].detector
            assert expt.beam.get_polarization_fraction() == pytest.approx(0.999)
        assert type(imported[0].detector[0].get_px_mm_strategy()).__name__ == "SimplePxMmStrategy"
        data = imported[0].imageset.get_raw_data(0)[0]
        assert type(data).__name__ == "int"  # flex.int: int32 counts
    # stills: one experiment per image with its own orientation; imported as stills
    truth = stills.experiments
    assert len(truth) == 6 and len(stills.images) == 6
    assert all(e.goniometer is None and e.scan is None for e in truth)
    u = [np.array(e.crystal.get_U()) for e in truth]
    assert all(not np.allclose(u[0], v) for v in u[1:])
    imported = ExperimentListFactory.from_filenames([str(p) for p in stills.images])
    assert all(e.scan is None or e.scan.is_still() for e in imported)
    # rotation: one sweep; goniometer and scan recovered by the importer
    truth = rotation.experiments
    imported = ExperimentListFactory.from_filenames([str(p) for p in rotation.images])
    assert len(truth) == 1 and len(imported) == 1
    assert imported[0].goniometer == truth[0].goniometer
    assert imported[0].scan == truth[0].scan
    assert truth[0].scan.get_oscillation() == pytest.approx((0.0, 1.0))


def test_same_seed_gives_identical_files(tmp_path):
    args = ["mode=stills", "n_images=2", "detector.size=256,256", "monte_carlo.n_samples=200",
            "hot_pixels.count=3", "output.log=None"]
    for name in ("a", "b"):
        run([*args, "seed=7", f"output.directory={tmp_path / name}"])
    run([*args, "seed=8", f"output.directory={tmp_path / 'c'}"])
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file())
    assert len(files) == 6
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    image = Path("images/image_00001.cbf")
    assert (tmp_path / "a" / image).read_bytes() != (tmp_path / "c" / image).read_bytes()


def test_centroids_match_truth_and_dials_prediction(rotation):
    """Truth centroids = DIALS predictions from the true models (same geometry)."""
    obs = rotation.obs
    expt = rotation.experiments[0]
    pred = flex.reflection_table.from_predictions(expt, dmin=rotation.params["d_min"])
    table = {}
    for h, xyz in zip(pred["miller_index"], pred["xyzcal.px"]):
        table.setdefault(h, []).append(xyz)
    residuals = []
    for h, xyz, p in zip(obs["miller_index"], obs["xyz_px"], obs["partiality"]):
        cands = table.get(tuple(int(v) for v in h))
        if p < 0.99 or not cands:
            continue
        c = np.array(cands)
        residuals.append(xyz - c[np.argmin(np.abs(c[:, 2] - xyz[2]))])
    r = np.array(residuals)
    assert len(r) > 500
    assert np.all(np.abs(np.median(r, axis=0)) < [0.01, 0.01, 0.005])
    assert np.all(np.sqrt(np.mean(r ** 2, axis=0)) < [0.05, 0.05, 0.02])


# --------------------------------------------------------------------------- photons


def test_stills_box_sums_and_centroids(stills):
    """Σ(image − background) around strong isolated spots ≈ expected_counts; centroid ≈ xyz."""
    obs = stills.obs
    half = 4
    sel = (obs["expected_counts"] > 150) & (obs["fraction_on_detector"] > 0.999) & (
        obs["rms_px"][:, 0] < 1.2)
    rows = _isolated(obs, sel, radius=2 * half + 3)
    z, dxy = [], []
    for i in rows:
        img = obs["experiment"][i]
        x0, y0, box = _box(*obs["xyz_px"][i, :2], half)
        if not stills.clean_box(img, x0, y0, half):
            continue
        counts = stills.image(img)[box]
        bg = stills.background(img)[box]
        signal = counts - bg
        z.append((signal.sum() - obs["expected_counts"][i]) / np.sqrt(counts.sum()))
        if obs["expected_counts"][i] > 500:
            yy, xx = np.mgrid[box]
            dxy.append([np.sum(signal * (xx + 0.5)) / signal.sum() - obs["xyz_px"][i, 0],
                        np.sum(signal * (yy + 0.5)) / signal.sum() - obs["xyz_px"][i, 1]])
    _robust_z_checks(np.array(z))
    dxy = np.array(dxy)
    assert len(dxy) >= 10
    assert np.all(np.abs(np.median(dxy, axis=0)) < 0.05)
    assert np.median(np.hypot(*dxy.T)) < 0.12


def test_rotation_full_spots_sum_to_expected(rotation):
    """Over its frames, a fully recorded strong spot holds expected_counts photons."""
    obs = rotation.obs
    half = 4
    n_frames = len(rotation.images)
    sel = (obs["expected_counts"] > 150) & (obs["partiality"] > 0.999) & (
        obs["fraction_on_detector"] > 0.999) & (obs["rms_px"][:, 2] < 0.4)
    rows = _isolated(obs, sel, radius=2 * half + 3, frames=3)
    frames = {}
    z, dz = [], []
    for i in rows:
        f0 = int(np.floor(obs["xyz_px"][i, 2]))
        span = [f for f in range(f0 - 1, f0 + 2) if 0 <= f < n_frames]
        x0, y0, box = _box(*obs["xyz_px"][i, :2], half)
        if not all(rotation.clean_box(f, x0, y0, half) for f in span):
            continue
        if span[0] != f0 - 1 or span[-1] != f0 + 1:
            continue  # the spot could reach beyond the scan
        for f in span:
            if f not in frames:
                frames[f] = rotation.image(f)
        counts = np.array([frames[f][box] for f in span])
        signal = counts - rotation.background(0)[box][None]
        z.append((signal.sum() - obs["expected_counts"][i]) / np.sqrt(counts.sum()))
        per_frame = signal.sum(axis=(1, 2))
        dz.append(np.sum(per_frame * (np.array(span) + 0.5)) / per_frame.sum()
                  - obs["xyz_px"][i, 2])
    _robust_z_checks(np.array(z))
    assert abs(np.median(dz)) < 0.1  # frame centroids (quantised to frames) agree


def test_stills_partiality_follows_documented_formula(stills):
    """MC partiality = exp(−ε²/2R²) with R from the documented spreads; decreasing in |ε|."""
    obs = stills.obs
    spreads = stills.spreads()
    lam = stills.params["wavelength"]
    analytic = physics.analytic_partiality(obs["excitation_error"], obs["d"], lam, spreads)
    p = obs["partiality"]
    sel = analytic > 0.05
    assert sel.sum() > 300
    assert np.median(np.abs(p - analytic)[sel]) < 0.01
    assert np.percentile(np.abs(p - analytic)[sel], 95) < 0.03
    x = np.abs(obs["excitation_error"]) / physics.analytic_width(obs["d"], lam, spreads)
    means = [p[(x >= lo) & (x < lo + 0.5)].mean() for lo in np.arange(0, 2.5, 0.5)]
    assert np.all(np.diff(means) < 0) and means[0] > 0.9 and means[-1] < 0.1
    # and every photon expectation is the documented product
    expected = (stills.params["intensity_scale"] * obs["i_true"] * obs["scale"]
                * obs["polarisation"] * obs["lorentz"] * obs["partiality"])
    assert np.allclose(obs["expected_counts"], expected, rtol=1e-6)
    g = np.array(stills.truth["per_image"]["G"])[obs["experiment"]]
    b = np.array(stills.truth["per_image"]["B"])[obs["experiment"]]
    assert np.allclose(obs["scale"], g * np.exp(b / (4 * obs["d"] ** 2)))


def test_rotation_truth_columns(rotation):
    """E = K·I·scale·P·L·partiality; scale follows G(φ), B(φ); partials sit at the scan ends."""
    obs = rotation.obs
    expected = (rotation.params["intensity_scale"] * obs["i_true"] * obs["scale"]
                * obs["polarisation"] * obs["lorentz"] * obs["partiality"])
    assert np.allclose(obs["expected_counts"], expected, rtol=1e-6)
    r = rotation.params["rotation"]
    phi = r["phi_start"] + obs["xyz_px"][:, 2] * r["phi_width"]
    g = 1 + r["g_amplitude"] * np.sin(2 * np.pi * (phi - r["phi_start"]) / r["g_period"])
    b = r["b_drift"] * (phi - r["phi_start"]) / r["sweep_width"]
    narrow = obs["rms_px"][:, 2] < 0.3  # wide spots average G over a range of φ
    assert narrow.mean() > 0.9
    assert np.allclose(obs["scale"][narrow], (g * np.exp(b / (4 * obs["d"] ** 2)))[narrow],
                       rtol=5e-3)  # ½·G″·σ_φ² ≤ 0.003 here
    partial = obs["partiality"] < 0.9
    z = obs["xyz_px"][partial, 2]
    reach = 1 + 3 * obs["rms_px"][partial, 2]
    assert partial.any() and np.all((z < reach) | (z > len(rotation.images) - reach))
    # the Lorentz factor is 1/|m·(ŝ1×ŝ0)| ≥ 1/sin 2θ
    sin_2t = np.sin(2 * np.arcsin(rotation.params["wavelength"] / (2 * obs["d"])))
    assert np.all(obs["lorentz"] * sin_2t > 0.99)
    assert np.all(obs["excitation_error"] == 0) and np.all(obs["experiment"] == 0)


def test_polarisation_and_lorentz_match_dials_lp(stills, rotation):
    """The truth's P (stills) and L·P (rotation) are what DIALS' lp correction undoes."""
    for sim in (stills, rotation):
        obs = sim.obs
        sel = (obs["fraction_on_detector"] > 0.99) & (obs["lorentz"] < 10)
        table = flex.reflection_table()
        ids = obs["experiment"][sel]
        panel = sim.experiments[0].detector[0]
        lam = sim.params["wavelength"]
        s1 = [tuple(np.array(panel.get_pixel_lab_coord(tuple(xy))) /
                    np.linalg.norm(panel.get_pixel_lab_coord(tuple(xy))) / lam)
              for xy in obs["xyz_px"][sel, :2]]
        table["id"] = flex.int(ids.astype(int).tolist())
        table["s1"] = flex.vec3_double(s1)
        table["panel"] = flex.size_t(len(s1), 0)
        lp = np.array(table.compute_corrections(sim.experiments))
        product = lp * obs["polarisation"][sel] * obs["lorentz"][sel]
        tolerance = 2e-3 if sim is stills else 0.02
        assert np.median(np.abs(product - 1)) < tolerance / 4
        assert np.percentile(np.abs(product - 1), 99) < tolerance


def test_ideal_variance_at_least_poisson_bound(stills, rotation):
    for sim in (stills, rotation):
        obs = sim.obs
        finite = np.isfinite(obs["ideal_variance"])
        assert finite.mean() > 0.99
        poisson = obs["i_true"] ** 2 / obs["expected_counts"]
        ratio = obs["ideal_variance"][finite] / poisson[finite]
        assert np.all(ratio >= 1 - 1e-9)
        # background matters for weak spots, hardly for the strongest
        weak = obs["expected_counts"][finite] < 20
        strong = obs["expected_counts"][finite] > 2000
        assert np.median(ratio[weak]) > 2
        if strong.any():
            assert np.median(ratio[strong]) < 1.3


def test_truth_mtz_holds_the_true_intensities(stills):
    import iotbx.mtz

    arrays = iotbx.mtz.object(str(stills.dir / "truth" / "truth.mtz")).as_miller_arrays()
    truth = next(a for a in arrays if a.info().labels[0] == "I")
    assert truth.is_xray_intensity_array() and not truth.anomalous_flag()
    assert truth.space_group_info().type().lookup_symbol() == "P 21 21 21"
    assert truth.d_min() == pytest.approx(1.8, abs=0.01)
    assert truth.size() == truth.unique_under_symmetry().size()
    symmetry = crystal.symmetry(unit_cell=uctbx.unit_cell(stills.params["unit_cell"]),
                                space_group_info=sgtbx.space_group_info("P212121"))
    indices = flex.miller_index([tuple(int(v) for v in h) for h in stills.obs["miller_index"]])
    asu = miller.set(symmetry, indices, anomalous_flag=False).map_to_asu()
    matches = miller.match_multi_indices(miller_indices_unique=truth.indices(),
                                         miller_indices=asu.indices())
    assert matches.pairs().size() == len(indices)  # every observation is in the truth
    pairs = np.array(matches.pairs())
    values = truth.data().as_numpy_array()[pairs[:, 0]]
    assert np.allclose(values, stills.obs["i_true"][pairs[:, 1]], rtol=1e-5)


def test_truth_json_documents_files_defects_and_conventions(stills):
    t = stills.truth
    assert t["seed"] == 3
    assert len(t["per_image"]["G"]) == len(t["per_image"]["B"]) == 6
    assert t["hot_pixels"]["count"] == len(t["hot_pixels"]["xy_value"]) == 20
    assert t["zingers"]["count"] == len(t["zingers"]["image_x_y_counts"])
    assert set(stills.obs) <= set(t["observation_columns"])
    assert "B < 0" in t["conventions"]["scale"]
    for x, y, value in t["hot_pixels"]["xy_value"][:5]:
        assert stills.image(0)[y, x] == value == stills.image(5)[y, x]


# --------------------------------------------------------------------------- DIALS


@pytest.mark.slow
def test_dials_indexes_the_stills(tmp_path):
    """dials.import (no options) → dials.find_spots → dials.ssx_index index every still."""
    from harness import dials_programs as dp

    sim = _simulate(tmp_path / "sim", ["mode=stills", "seed=11", "n_images=8"])
    cell = sim.params["unit_cell"]
    stage = dp.index_stills(sim.images, tmp_path / "index", "P 21 21 21", cell, nproc=2)
    indexed = ExperimentListFactory.from_json_file(str(stage.files["expt"]),
                                                   check_format=False)
    assert len(indexed) == 8
    for expt in indexed:
        assert expt.crystal.get_unit_cell().is_similar_to(uctbx.unit_cell(cell), 0.01, 0.5)


@pytest.mark.slow
def test_dials_indexes_and_refines_the_sweep(tmp_path):
    from harness import dials_programs as dp

    sim = _simulate(tmp_path / "sim", ["mode=rotation", "seed=12", "n_images=30"])
    stage = dp.index_rotation(sim.images, tmp_path / "index", None)
    refined = ExperimentListFactory.from_json_file(str(stage.files["expt"]), check_format=False)
    cell = uctbx.unit_cell(sim.params["unit_cell"])
    assert refined[0].crystal.get_unit_cell().is_similar_to(cell, 0.01, 0.5)

"""The simulator's realistic extras: spot shapes, grid scans, module gaps and a beamstop."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from dxtbx.model.experiment_list import ExperimentListFactory

from dials_factored.command_line.factored_simulate import run
from dials_factored.simulate import shapes
from dials_factored.simulate.design import grid_scan_profile
from dials_factored.simulate.physics import Spreads

SMALL = ["mode=stills", "detector.size=256,256", "monte_carlo.n_samples=300", "d_min=2.0",
         "output.log=None"]


def _spreads(**kw) -> Spreads:
    base = dict(sigma_domain=4e-4, mosaic=5e-4, divergence=2e-4, bandwidth=2e-3, psf=1.0)
    return Spreads(**(base | kw))


def _excess_kurtosis(x: np.ndarray) -> float:
    x = x - x.mean()
    return float(np.mean(x ** 4) / np.mean(x ** 2) ** 2 - 3)


def test_gaussian_shapes_draw_the_original_stream():
    """Defaults are the old model exactly: same numbers from the same generator."""
    s = _spreads()
    a = shapes.detector_spread(1000, s, np.random.default_rng(1))
    b = np.random.default_rng(1).standard_normal((1000, 2)) * s.psf
    assert np.array_equal(a, b)
    a = shapes.mosaic_rotations(1000, s, np.random.default_rng(2))
    b = np.random.default_rng(2).standard_normal((1000, 3)) * s.mosaic
    assert np.array_equal(a, b)


def test_psf_tails_are_sharper_and_flat_top_blunter_than_a_gaussian():
    """Excess kurtosis of a marginal: 0 Gaussian, > 0 core + tails, −1 uniform disc;
    the flat top keeps the rms per axis (psf), the tails hold the stated fraction."""
    rng = np.random.default_rng(3)
    n = 200_000
    gauss = shapes.detector_spread(n, _spreads(), rng)[:, 0]
    assert abs(_excess_kurtosis(gauss)) < 0.1
    for shape in ("lorentzian_tails", "exponential_tails"):
        s = _spreads(psf_shape=shape, psf_tail_fraction=0.1, psf_tail_width=3.0)
        xy = shapes.detector_spread(n, s, rng)
        assert _excess_kurtosis(xy[:, 0]) > 2.0, shape
        far = np.hypot(*xy.T) > 5.0  # beyond 5 core σ: only the tail
        assert 0.03 < far.mean() < 0.1, (shape, far.mean())
    flat = shapes.detector_spread(n, _spreads(psf_shape="flat_top"), rng)
    assert _excess_kurtosis(flat[:, 0]) == pytest.approx(-1.0, abs=0.05)
    assert flat[:, 0].std() == pytest.approx(1.0, rel=0.02)
    assert np.hypot(*flat.T).max() <= 2.0


def test_cauchy_and_block_mosaicity():
    rng = np.random.default_rng(4)
    s = _spreads(mosaic_shape="cauchy")
    w = shapes.mosaic_rotations(200_000, s, rng)
    assert np.abs(w).max() <= shapes.CAUCHY_TRUNCATION * s.mosaic
    assert w.std() == pytest.approx(shapes.mosaic_rms(s), rel=0.02)
    # the quantile law of the truncated Cauchy: median |ω| = σ_m·tan(atan(c)/2)
    assert np.median(np.abs(w)) == pytest.approx(
        s.mosaic * math.tan(math.atan(shapes.CAUCHY_TRUNCATION) / 2), rel=0.02)
    blocks = shapes.block_orientations(3, s.mosaic, rng)
    w = shapes.mosaic_rotations(1000, _spreads(mosaic_shape="blocks"), rng, blocks)
    assert len(np.unique(w, axis=0)) == 3


def test_grid_scan_profile_falls_to_near_zero_at_the_ends():
    g = grid_scan_profile(41, 0.6, 0.1)
    assert g[20] == pytest.approx(1.0, abs=0.01)
    assert g[0] < 0.05 and g[-1] < 0.05
    assert np.all(np.diff(g[:21]) > 0) and np.all(np.diff(g[20:]) < 0)


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    """Seven grid-scan stills with tailed spots, module gaps and a beamstop."""
    out = tmp_path_factory.mktemp("grid")
    run([*SMALL, "seed=21", "n_images=7", "stills.grid_scan.enable=True",
         "stills.grid_scan.jitter=0.02", "detector.psf_shape=lorentzian_tails",
         "crystal.mosaic_shape=blocks", "detector.module_size=100,60",
         "detector.module_gap=7,17", "detector.beamstop_radius=12",
         "detector.beamstop_arm_width=6", "hot_pixels.count=0", "zingers.rate=0",
         f"output.directory={out}"])
    return out


def test_grid_scan_truth_is_one_crystal_with_a_smooth_scale(grid):
    truth = json.loads((grid / "truth" / "truth.json").read_text())
    g = np.array(truth["per_image"]["G"])
    assert g[3] > 0.8 and g[0] < 0.1 and g[-1] < 0.1, g
    expts = ExperimentListFactory.from_json_file(str(grid / "truth" / "models.expt"),
                                                 check_format=False)
    u0 = np.array(expts[0].crystal.get_U()).reshape(3, 3)
    angles = []
    for e in expts[1:]:
        u = np.array(e.crystal.get_U()).reshape(3, 3)
        cos = (np.trace(u @ u0.T) - 1) / 2
        angles.append(math.degrees(math.acos(min(1.0, cos))))
    # difference of two jitters of 0.02° rms per axis: rms angle 0.02·√6 ≈ 0.05°
    assert 0.0 < max(angles) < 0.2, angles
    assert len(truth["parameters"]["shapes"]["mosaic_blocks"]) == 1  # one crystal


def test_module_gaps_are_masked_and_the_beamstop_casts_a_shadow(grid):
    expts = ExperimentListFactory.from_json_file(str(grid / "truth" / "models.expt"),
                                                 check_format=True)
    imageset = expts[3].imageset
    data = imageset.get_raw_data(0)[0].as_numpy_array()
    mask = imageset.get_mask(0)[0].as_numpy_array()
    x = np.arange(256)
    y = np.arange(256)
    gap = (x % 107 >= 100)[None, :] | (y % 77 >= 60)[:, None]
    assert np.all(data[gap] == -1)
    assert np.all(data[~gap] >= 0)
    assert not mask[gap].any() and mask[~gap].all()  # dxtbx masks the gaps itself
    xx, yy = np.meshgrid(x + 0.5, y + 0.5)
    disc = (xx - 128) ** 2 + (yy - 128) ** 2 < 12 ** 2
    arm = (xx > 150) & (np.abs(yy - 128) < 3)
    assert data[disc & ~gap].sum() == 0 and data[arm & ~gap].sum() == 0
    ring = ((xx - 128) ** 2 + (yy - 128) ** 2 < 30 ** 2) & ~disc & ~gap & ~arm
    assert data[ring].mean() > 1.0
    with np.load(grid / "truth" / "observations.npz") as f:
        on = f["fraction_on_detector"]
    assert (on < 0.9).any() and (on > 0.99).any()  # spots cut by the gaps


def test_tailed_psf_widens_the_spots_in_the_photon_truth(tmp_path):
    """Same seed, the tails' photons spread further: truth rms_px grows by about the
    tail's share of the variance; the flat top (same rms per axis) keeps it."""
    rms = {}
    for shape in ("gaussian", "exponential_tails", "flat_top"):
        out = tmp_path / shape
        run([*SMALL, "seed=5", "n_images=2", "detector.psf=1.0",
             f"detector.psf_shape={shape}", "detector.psf_tail_fraction=0.2",
             "detector.psf_tail_width=2.0", f"output.directory={out}"])
        with np.load(out / "truth" / "observations.npz") as f:
            strong = f["fraction_on_detector"] > 0.99
            rms[shape] = float(np.median(f["rms_px"][strong, 0]))
    # exponential tail of scale 2: 3·2² = 12 px² per axis in 20 % of the photons
    assert rms["exponential_tails"] > 1.3 * rms["gaussian"], rms
    assert rms["flat_top"] == pytest.approx(rms["gaussian"], rel=0.1), rms

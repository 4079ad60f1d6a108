"""The DIALS program runner, and the indexing/DIALS pipelines on real data (slow)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness import dials_programs as dp

THERMOLYSIN_SPOTS = (
    "spotfinder.filter.min_spot_size=2",
    "spotfinder.threshold.dispersion.gain=25",
    "spotfinder.threshold.dispersion.global_threshold=100",
)


def test_program_path_prefers_the_interpreters_directory():
    path = dp.program_path("dials.version")
    assert Path(path).name == "dials.version"
    assert Path(path).is_file()


def test_run_program_records_log_time_and_memory(tmp_path):
    run = dp.run_program("dials.version", [], tmp_path, log_dir=tmp_path / "logs")
    assert run.returncode == 0
    assert run.args[0] == sys.executable
    assert run.log_path == tmp_path / "logs" / "dials.version.out"
    assert "DIALS 3." in run.log_path.read_text()
    assert run.wall_time > 0
    assert run.peak_rss_mb > 10
    assert run.as_dict()["program"] == "dials.version"


def test_failing_program_raises_one_line_error(tmp_path):
    with pytest.raises(RuntimeError) as err:
        dp.run_program("dials.show", ["not_a_param=3"], tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "dials.show failed with exit code 1" in message
    assert "Unknown command line parameter definition: not_a_param" in message


def test_missing_output_raises_even_on_exit_zero(tmp_path):
    # dials.import exits 0 when its input does not exist, without writing anything
    with pytest.raises(RuntimeError, match=r"dials.import exited 0 but did not write "
                                           r"imported.expt.*not found"):
        dp.run_program("dials.import", ["no_such_image.cbf"], tmp_path,
                       expect=["imported.expt"])


def test_timeout_kills_and_raises(tmp_path):
    with pytest.raises(RuntimeError, match="dials.version timed out"):
        dp.run_program("dials.version", [], tmp_path, timeout=0.01)


def test_stage_sums_times_and_keeps_peak_memory(tmp_path):
    stage = dp.Stage(tmp_path)
    for t, m in ((1.0, 100.0), (2.5, 300.0)):
        stage.add(dp.ProgramRun(["x"], 0, "dials.x", tmp_path / "x.out", t, m))
    assert stage.wall_time == pytest.approx(3.5)
    assert stage.peak_rss_mb == 300.0
    assert [t["wall_s"] for t in stage.timings()] == [1.0, 2.5]


@pytest.mark.slow
def test_index_and_integrate_real_thermolysin_stills(shared_data, tmp_path):
    from dxtbx.model.experiment_list import ExperimentListFactory

    images = sorted((shared_data / "stills_thermolysin_cspad" / "images").glob("*.cbf"))
    indexed = dp.index_stills(images, tmp_path / "index", "P6122",
                              (92.9, 92.9, 130.4, 90, 90, 120), nproc=2,
                              find_spots_args=THERMOLYSIN_SPOTS)
    experiments = ExperimentListFactory.from_json_file(str(indexed.files["expt"]),
                                                       check_format=False)
    assert len({e.imageset.get_path(0) for e in experiments}) == 4  # all four stills
    assert [r.name for r in indexed.runs] == ["dials.import", "dials.find_spots",
                                              "dials.ssx_index"]

    route = dp.dials_route_stills(indexed, tmp_path / "dials", nproc=2)
    assert route.files["merged_mtz"].is_file()
    assert not (tmp_path / "dials" / "integrated_2.refl").exists()


@pytest.mark.slow
def test_index_and_integrate_real_rotation_wedge(shared_data, tmp_path):
    images = sorted((shared_data / "rotation_lcys_sweep1" / "images").glob("*.cbf"))
    refined = dp.index_rotation(images, tmp_path / "index", "P212121", nproc=2)
    assert refined.files["expt"].name == "refined.expt"
    route = dp.dials_route_rotation(refined, tmp_path / "dials", nproc=2)
    assert route.files["merged_mtz"].is_file()

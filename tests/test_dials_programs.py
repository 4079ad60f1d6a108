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


def _fake_programs(monkeypatch, tmp_path, ellipsoid_fails: bool) -> list[list[str]]:
    """Replace run_program: dials.ssx_integrate algorithm=ellipsoid fails (as on a small
    set: exit 0, no integrated file) if ``ellipsoid_fails``; every other program writes
    its expected outputs.  Returns the list of command lines run."""
    calls = []

    def fake(name, args, cwd, log_dir=None, expect=(), timeout=None, launcher=()):
        args = [str(a) for a in args]
        calls.append([name, *args])
        log = Path(log_dir or cwd) / f"{name}.out"
        log.parent.mkdir(parents=True, exist_ok=True)
        if name == "dials.ssx_integrate" and "algorithm=ellipsoid" in args and ellipsoid_fails:
            log.write_text("Too few reflections to perform refinement\n")
            raise RuntimeError(f"{name} exited 0 but did not write integrated_1.expt in "
                               f"{cwd}; last log lines: Too few reflections to perform "
                               f"refinement (log: {log})")
        log.write_text("ok\n")
        for f in expect:
            (Path(cwd) / f).write_text("")
        return dp.ProgramRun([name], 0, name, log, 1.0, 10.0)

    monkeypatch.setattr(dp, "run_program", fake)
    return calls


def _indexed(tmp_path):
    return dp.Stage(tmp_path, files={"expt": tmp_path / "indexed.expt",
                                     "refl": tmp_path / "indexed.refl"})


def _algorithms(calls):
    return [a.split("=")[1] for c in calls if c[0] == "dials.ssx_integrate"
            for a in c if a.startswith("algorithm=")]


def test_stills_route_runs_the_default_ellipsoid_and_says_so(monkeypatch, tmp_path):
    calls = _fake_programs(monkeypatch, tmp_path, ellipsoid_fails=False)
    route = dp.dials_route_stills(_indexed(tmp_path), tmp_path / "dials")
    assert _algorithms(calls) == ["ellipsoid"]
    assert route.info["algorithm"] == "ellipsoid"
    assert "default" in route.info["reason"]
    assert [r.name for r in route.runs] == ["dials.ssx_integrate", "dials.scale",
                                            "dials.merge"]
    assert dp.Stage.from_dict(route.as_dict()).info == route.info


def test_stills_route_falls_back_to_stills_when_ellipsoid_fails(monkeypatch, tmp_path):
    calls = _fake_programs(monkeypatch, tmp_path, ellipsoid_fails=True)
    route = dp.dials_route_stills(_indexed(tmp_path), tmp_path / "dials")
    assert _algorithms(calls) == ["ellipsoid", "stills"]
    assert route.info["algorithm"] == "stills"
    assert "ellipsoid failed" in route.info["reason"]
    assert "Too few reflections" in route.info["reason"]
    assert "Too few reflections" in route.info["ellipsoid_error"]
    assert route.info["ellipsoid_wall_s"] >= 0
    # the failed attempt's log is kept, apart from the fallback's
    assert (tmp_path / "dials" / "ellipsoid_failed" / "dials.ssx_integrate.out").is_file()
    assert [r.name for r in route.runs] == ["dials.ssx_integrate", "dials.scale",
                                            "dials.merge"]


def test_stills_route_runs_only_the_algorithm_asked_for(monkeypatch, tmp_path):
    calls = _fake_programs(monkeypatch, tmp_path, ellipsoid_fails=True)
    route = dp.dials_route_stills(_indexed(tmp_path), tmp_path / "dials", algorithm="stills")
    assert _algorithms(calls) == ["stills"]
    assert route.info == {"requested": "stills", "algorithm": "stills",
                          "reason": "algorithm=stills (as asked)"}
    with pytest.raises(RuntimeError, match="Too few reflections"):
        dp.dials_route_stills(_indexed(tmp_path), tmp_path / "e", algorithm="ellipsoid")
    with pytest.raises(ValueError, match="algorithm must be"):
        dp.dials_route_stills(_indexed(tmp_path), tmp_path / "x", algorithm="summation")


def test_demo_both_runs_the_stills_algorithm_beside_ellipsoid(monkeypatch, tmp_path):
    from harness import demo

    calls = _fake_programs(monkeypatch, tmp_path, ellipsoid_fails=False)
    inputs = demo.Inputs(mode="stills", sim=dp.Stage(tmp_path), indexed=_indexed(tmp_path),
                         images=[], space_group="P1", unit_cell=(1,) * 6, bandwidth=0.0)
    routes = demo.dials_routes(inputs, tmp_path, 1, "both", report=lambda m: None)
    assert list(routes) == ["dials", "dials_stills"]
    assert _algorithms(calls) == ["ellipsoid", "stills"]
    assert routes["dials_stills"].info["algorithm"] == "stills"
    calls.clear()
    _fake_programs(monkeypatch, tmp_path, ellipsoid_fails=True)
    routes = demo.dials_routes(inputs, tmp_path / "small", 1, "both", report=lambda m: None)
    assert list(routes) == ["dials"]  # ellipsoid failed: the stills route is the only one
    assert routes["dials"].info["algorithm"] == "stills"


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
    # four stills: the default algorithm=ellipsoid may fail; then the fallback is recorded
    assert route.info["algorithm"] in ("ellipsoid", "stills")
    assert (route.info["algorithm"] == "ellipsoid") != ("ellipsoid_error" in route.info)


@pytest.mark.slow
def test_index_and_integrate_real_rotation_wedge(shared_data, tmp_path):
    images = sorted((shared_data / "rotation_lcys_sweep1" / "images").glob("*.cbf"))
    refined = dp.index_rotation(images, tmp_path / "index", "P212121", nproc=2)
    assert refined.files["expt"].name == "refined.expt"
    route = dp.dials_route_rotation(refined, tmp_path / "dials", nproc=2)
    assert route.files["merged_mtz"].is_file()

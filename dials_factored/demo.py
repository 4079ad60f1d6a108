"""The demo: simulate stills, process them with DIALS and with dials.factored_integrate, score.

``python -m dials_factored.demo --workdir demo_run`` (what ``make demo`` runs):

1. ``dials.factored_simulate mode=stills`` (the simulator's defaults, a fixed seed) writes
   images and the truth into ``<workdir>/simulate``;
2. dials.import → dials.find_spots → dials.ssx_index (``<workdir>/index``), with the true
   space group and cell as the indexing hints;
3. the DIALS route, dials.ssx_integrate algorithm=stills → dials.scale → dials.merge
   (``<workdir>/dials``), and the factored route, dials.factored_integrate → dials.merge →
   dials.export (``<workdir>/factored``), from the same indexed data;
4. both merged MTZ files are scored against the true intensities (CC by resolution shell,
   completeness, CC1/2, z of the observations), next to the CC an ideal estimator reaches
   (see :mod:`dials_factored.evaluate`); a Markdown table is printed and everything is
   written to ``<workdir>/demo_results.json``.

Any failing step, the factored route included, stops the demo with a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from dials_factored import dials_programs as dp
from dials_factored import evaluate as ev

#: Seed of the simulated data set (fixed, so every demo run sees the same data).
SEED = 1
#: Subdirectories the demo writes (and removes again before a new run).
STEPS = ("simulate", "index", "dials", "factored")
#: Stop the factored integration if it takes longer than this (seconds).
FACTORED_TIMEOUT = 420


def progress(message: str) -> None:
    """One progress line on stdout, flushed."""
    print(f"[demo] {message}", flush=True)


def simulate(workdir: Path, mode: str = "stills", n_images: int | None = None) -> dp.Stage:
    """Run the simulator (defaults, fixed seed); files images + truth."""
    stage = dp.Stage(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    args = [f"mode={mode}", f"seed={SEED}"] + ([f"n_images={n_images}"] if n_images else [])
    stage.add(dp.run_program("dials.factored_simulate", args, workdir,
                             expect=["truth/models.expt", "truth/truth.mtz",
                                     "truth/observations.npz"]))
    stage.files.update(images=workdir / "images", models=workdir / "truth" / "models.expt",
                       truth_json=workdir / "truth" / "truth.json",
                       truth_mtz=workdir / "truth" / "truth.mtz",
                       observations=workdir / "truth" / "observations.npz")
    return stage


def true_symmetry(models: Path) -> tuple[str, tuple[float, ...]]:
    """Space group symbol and unit cell of the simulated crystal."""
    from dxtbx.model.experiment_list import ExperimentListFactory

    crystal = ExperimentListFactory.from_json_file(str(models), check_format=False)[0].crystal
    symbol = crystal.get_space_group().type().lookup_symbol()
    return symbol, tuple(crystal.get_unit_cell().parameters())


def ideal_from_observations(path: Path, truth, shells: ev.Shells, on) -> ev.Score:
    """The ideal estimator's score, from the simulator's per-observation truth, on the
    reflections of the merged array ``on``."""
    obs = np.load(path)
    return ev.ideal_score(truth, obs["miller_index"], obs["ideal_variance"], shells, on=on)


def score_routes(sim: dp.Stage, routes: dict[str, dp.Stage], n_shells: int):
    """Scores of each route's merged MTZ and of the ideal, on shells of the truth.

    Returns (scores on each route's own reflections, scores on the reflections common
    to all routes, the ideal on the common reflections).
    """
    truth = ev.prepare_truth(ev.read_mtz_intensities(sim.files["truth_mtz"], "I"))
    shells = ev.Shells(truth.d_spacings().data(), n_shells)
    merged = {name: ev.read_mtz_intensities(stage.files["merged_mtz"], "IMEAN")
              for name, stage in routes.items()}
    own = {}
    for name, stage in routes.items():
        unmerged = ev.read_scaled_table(stage.files["scaled_expt"], stage.files["scaled_refl"])
        own[name] = ev.score_merged(merged[name], truth, shells, unmerged=unmerged)
    common = ev.on_common_reflections(merged, truth)
    on_common = {name: ev.score_merged(a, truth, shells) for name, a in common.items()}
    ideal = ideal_from_observations(sim.files["observations"], truth, shells,
                                    next(iter(common.values())))
    return own, on_common, ideal


def run(workdir: Path, nproc: int, n_shells: int = 10, mode: str = "stills",
        n_images: int | None = None) -> dict:
    """The whole demo; returns what it writes to ``demo_results.json``."""
    workdir = workdir.resolve()
    for step in STEPS:
        shutil.rmtree(workdir / step, ignore_errors=True)
    start = time.perf_counter()

    progress(f"1/5 simulating (dials.factored_simulate mode={mode})")
    sim = simulate(workdir / "simulate", mode, n_images)
    images = sorted(sim.files["images"].glob("*.cbf"))
    space_group, cell = true_symmetry(sim.files["models"])
    progress(f"    {len(images)} images, {space_group}, cell "
             f"{', '.join(f'{x:.2f}' for x in cell)} ({sim.wall_time:.0f} s)")

    if mode == "stills":
        progress("2/5 indexing (dials.import, dials.find_spots, dials.ssx_index)")
        indexed = dp.index_stills(images, workdir / "index", space_group, cell, nproc=nproc)
        progress(f"    done ({indexed.wall_time:.0f} s)")
        progress("3/5 DIALS route (dials.ssx_integrate algorithm=stills, dials.scale, "
                 "dials.merge)")
        dials_route = dp.dials_route_stills(indexed, workdir / "dials", nproc=nproc)
    else:
        progress("2/5 indexing (dials.import, dials.find_spots, dials.index, dials.refine)")
        indexed = dp.index_rotation(images, workdir / "index", space_group, nproc=nproc,
                                    unit_cell=cell)
        progress(f"    done ({indexed.wall_time:.0f} s)")
        progress("3/5 DIALS route (dials.integrate, dials.scale, dials.merge)")
        dials_route = dp.dials_route_rotation(indexed, workdir / "dials", nproc=nproc)
    progress(f"    done ({dials_route.wall_time:.0f} s)")

    progress("4/5 factored route (dials.factored_integrate, dials.merge, dials.export)")
    # the beam's bandwidth is a property of the source that a user knows; DIALS's stills
    # models have no place for it, so it is passed as a parameter
    bandwidth = json.loads(sim.files["truth_json"].read_text())["parameters"]["bandwidth"]
    factored = dp.factored_route(indexed, workdir / "factored", nproc=nproc,
                                 integrate_args=[f"beam.bandwidth={bandwidth}"],
                                 timeout=FACTORED_TIMEOUT)
    progress(f"    done ({factored.wall_time:.0f} s)")

    progress("5/5 scoring against the true intensities")
    routes = {"dials": dials_route, "factored": factored}
    scores, common, ideal = score_routes(sim, routes, n_shells)
    table = ("CC on the reflections both routes merged (completeness: each route's own):\n"
             + ev.format_table(common, ideal=ideal, ratio=("factored", "dials"),
                               completeness=scores)
             + "\n\nCC on each route's own reflections:\n"
             + ev.format_table(scores, ratio=("factored", "dials")))
    results = {
        "workdir": str(workdir), "mode": mode, "seed": SEED, "space_group": space_group,
        "unit_cell": cell,
        "n_images": len(images), "wall_time_s": round(time.perf_counter() - start, 1),
        "scores": {name: s.as_dict() for name, s in scores.items()},
        "scores_common": {name: s.as_dict() for name, s in common.items()},
        "ideal": ideal.as_dict(), "table": table,
        "timings": {name: stage.timings() for name, stage in
                    {"simulate": sim, "index": indexed, **routes}.items()},
    }
    (workdir / "demo_results.json").write_text(json.dumps(results, indent=1))
    print()
    print(table)
    print()
    for name, s in scores.items():
        progress(f"{name}: CC1/2 {s.overall.cc_half:.3f}, <I/σ> "
                 f"{s.overall.mean_i_over_sigma:.1f}, z rms {s.z.get('rms', float('nan')):.2f}"
                 f", {routes[name].wall_time:.0f} s, peak {routes[name].peak_rss_mb:.0f} MB")
    progress(f"total {results['wall_time_s']:.0f} s; results in "
             f"{workdir / 'demo_results.json'}")
    return results


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``python -m dials_factored.demo [--workdir DIR] [--nproc N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("demo_run"))
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--mode", choices=("stills", "rotation"), default="stills")
    parser.add_argument("--images", type=int, default=None,
                        help="number of images (default: the simulator's, 100 stills or 90 "
                             "rotation frames)")
    args = parser.parse_args(argv)
    try:
        run(args.workdir, args.nproc, mode=args.mode, n_images=args.images)
    except (RuntimeError, ValueError) as e:
        print(f"[demo] FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

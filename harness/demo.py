"""The demo: simulate stills, process them with DIALS and with dials.factored_integrate, score.

``python -m harness.demo --workdir demo_run`` (what ``make demo`` runs):

1. ``dials.factored_simulate mode=stills`` (the simulator's defaults, a fixed seed) writes
   images and the truth into ``<workdir>/simulate``;
2. dials.import → dials.find_spots → dials.ssx_index (``<workdir>/index``), with the true
   space group and cell as the indexing hints;
3. the DIALS route, dials.ssx_integrate → dials.scale → dials.merge (``<workdir>/dials``;
   dials.ssx_integrate's default algorithm=ellipsoid, and algorithm=stills only where
   ellipsoid fails, which the tables say; ``--dials-algorithm both`` also runs
   algorithm=stills where ellipsoid ran, as route ``dials_stills``), and the factored
   route, dials.factored_integrate → dials.merge → dials.export (``<workdir>/factored``),
   from the same indexed data;
4. both merged MTZ files are scored against the true intensities (CC by resolution shell,
   completeness, CC1/2, z of the observations), next to the CC an ideal estimator reaches
   (see :mod:`harness.evaluate`); a Markdown table is printed and everything is
   written to ``<workdir>/demo_results.json``.

Any failing step, the factored route included, stops the demo with a non-zero exit.
:func:`prepare` (steps 1-2), :func:`compare` (steps 3-4 and the scores) and
:meth:`Comparison.tables` are shared with the benchmark (``python -m benchmarks.run``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import dials_programs as dp
from harness import evaluate as ev

#: Seed of the simulated data set (fixed, so every demo run sees the same data).
SEED = 1
#: Stop the factored integration if it takes longer than this (seconds).
FACTORED_TIMEOUT = 420
#: What the DIALS route runs, per mode (for progress lines).
DIALS_ROUTE = {"stills": "dials.ssx_integrate (algorithm=ellipsoid, else stills), dials.scale, "
                         "dials.merge",
               "rotation": "dials.integrate, dials.scale, dials.merge"}
#: What indexing runs, per mode (for progress lines).
INDEXING = {"stills": "dials.import, dials.find_spots, dials.ssx_index",
            "rotation": "dials.import, dials.find_spots, dials.index, dials.refine"}


def progress(message: str) -> None:
    """One progress line on stdout, flushed."""
    print(f"[demo] {message}", flush=True)


@dataclass
class Inputs:
    """A simulated data set, indexed: what both routes start from."""

    mode: str
    sim: dp.Stage
    indexed: dp.Stage
    images: list[Path]
    space_group: str
    unit_cell: tuple[float, ...]
    #: the beam's relative bandwidth, from the simulator's truth (a user knows it)
    bandwidth: float

    @property
    def factored_args(self) -> list[str]:
        """Parameters of dials.factored_integrate for these data: the beam's bandwidth is
        a property of the source that a user knows, and DIALS's stills models have no
        place for it, so it is passed as a parameter."""
        return [f"beam.bandwidth={self.bandwidth}"]

    def as_dict(self) -> dict:
        """Plain data for JSON (see :meth:`from_dict`)."""
        return {"mode": self.mode, "sim": self.sim.as_dict(), "indexed": self.indexed.as_dict(),
                "images": [str(p) for p in self.images], "space_group": self.space_group,
                "unit_cell": list(self.unit_cell), "bandwidth": self.bandwidth}

    @classmethod
    def from_dict(cls, d: dict) -> Inputs:
        """The inputs recorded by :meth:`as_dict`."""
        return cls(mode=d["mode"], sim=dp.Stage.from_dict(d["sim"]),
                   indexed=dp.Stage.from_dict(d["indexed"]),
                   images=[Path(p) for p in d["images"]], space_group=d["space_group"],
                   unit_cell=tuple(d["unit_cell"]), bandwidth=d["bandwidth"])


@dataclass
class Comparison:
    """Both routes run on the same :class:`Inputs` and scored against the truth."""

    inputs: Inputs
    routes: dict[str, dp.Stage]
    #: each route's merged data on its own reflections
    scores: dict[str, ev.Score]
    #: each route's merged data on the reflections all routes merged
    common: dict[str, ev.Score]
    #: the ideal estimator on the common reflections
    ideal: ev.Score

    @property
    def dials_route_info(self) -> dict:
        """What each DIALS route ran and why (``Stage.info``), by route name."""
        return {name: stage.info for name, stage in self.routes.items()
                if name.startswith("dials")}

    @property
    def dials_route_note(self) -> str:
        """One line for the tables: which DIALS algorithm ran and why, per DIALS route."""
        return "; ".join(f"{name}: {info.get('reason', info.get('algorithm', '?'))}"
                         for name, info in self.dials_route_info.items())

    def tables(self) -> str:
        """The two Markdown CC tables: on the common reflections (with the ideal), and
        on each route's own reflections, after a line saying which DIALS algorithm ran."""
        return (f"DIALS route: {self.dials_route_note}\n\n"
                "CC on the reflections all routes merged (completeness: each route's own):\n"
                + ev.format_table(self.common, ideal=self.ideal, ratio=("factored", "dials"),
                                  completeness=self.scores)
                + "\n\nCC on each route's own reflections:\n"
                + ev.format_table(self.scores, ratio=("factored", "dials")))


def true_symmetry(models: Path) -> tuple[str, tuple[float, ...]]:
    """Space group symbol and unit cell of the simulated crystal."""
    from dxtbx.model.experiment_list import ExperimentListFactory

    crystal = ExperimentListFactory.from_json_file(str(models), check_format=False)[0].crystal
    symbol = crystal.get_space_group().type().lookup_symbol()
    return symbol, tuple(crystal.get_unit_cell().parameters())


def prepare(workdir: Path, mode: str, nproc: int, n_images: int | None = None,
            simulate_args: Sequence[str] = (), report=progress) -> Inputs:
    """Simulate (fixed seed) into ``<workdir>/simulate`` and index into ``<workdir>/index``.

    Both directories are emptied first.  ``simulate_args`` are extra phil parameters of
    dials.factored_simulate (e.g. ``detector.size=2463,2527``); ``report`` prints progress.
    """
    for step in ("simulate", "index"):
        shutil.rmtree(workdir / step, ignore_errors=True)
    report(f"simulating (dials.factored_simulate {' '.join([f'mode={mode}', *simulate_args])})")
    sim = dp.simulate(workdir / "simulate", mode, SEED, n_images, simulate_args)
    images = sorted(sim.files["images"].glob("*.cbf"))
    space_group, cell = true_symmetry(sim.files["models"])
    report(f"    {len(images)} images, {space_group}, cell "
           f"{', '.join(f'{x:.2f}' for x in cell)} ({sim.wall_time:.0f} s)")
    report(f"indexing ({INDEXING[mode]})")
    indexed = dp.index(images, workdir / "index", mode, space_group, cell, nproc=nproc)
    report(f"    done ({indexed.wall_time:.0f} s)")
    bandwidth = json.loads(sim.files["truth_json"].read_text())["parameters"]["bandwidth"]
    return Inputs(mode=mode, sim=sim, indexed=indexed, images=images, space_group=space_group,
                  unit_cell=cell, bandwidth=bandwidth)


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
    obs = np.load(sim.files["observations"])
    ideal = ev.ideal_score(truth, obs["miller_index"], obs["ideal_variance"], shells,
                           on=next(iter(common.values())))
    return own, on_common, ideal


def dials_routes(inputs: Inputs, workdir: Path, nproc: int, algorithm: str = "auto",
                 report=progress) -> dict[str, dp.Stage]:
    """The DIALS route ``dials`` (stills: algorithm=ellipsoid, else stills) and, with
    ``algorithm="both"`` where ellipsoid ran, ``dials_stills`` (algorithm=stills)."""
    report(f"DIALS route ({DIALS_ROUTE[inputs.mode]})")
    routes = {"dials": dp.dials_route(inputs.indexed, workdir / "dials", inputs.mode,
                                      nproc=nproc)}
    report(f"    {routes['dials'].info.get('reason', '')} ({routes['dials'].wall_time:.0f} s)")
    if (algorithm == "both" and inputs.mode == "stills"
            and routes["dials"].info.get("algorithm") == "ellipsoid"):
        report("DIALS route with algorithm=stills as well (--dials-algorithm both)")
        routes["dials_stills"] = dp.dials_route_stills(inputs.indexed, workdir / "dials_stills",
                                                       nproc=nproc, algorithm="stills")
        report(f"    done ({routes['dials_stills'].wall_time:.0f} s)")
    return routes


def compare(inputs: Inputs, workdir: Path, nproc: int, n_shells: int = 10,
            factored_timeout: float | None = FACTORED_TIMEOUT, export: bool = True,
            report=progress, dials_algorithm: str = "auto") -> Comparison:
    """The DIALS route (``<workdir>/dials``, see :func:`dials_routes` for
    ``dials_algorithm``) and the factored route (``<workdir>/factored``, with dials.export
    if ``export``) from the same indexed data, scored against the truth.

    The directories are emptied first; a failing program raises ``RuntimeError``.
    """
    for step in ("dials", "dials_stills", "factored"):
        shutil.rmtree(workdir / step, ignore_errors=True)
    dials = dials_routes(inputs, workdir, nproc, dials_algorithm, report)
    report("factored route (dials.factored_integrate, dials.merge"
           + (", dials.export)" if export else ")"))
    factored = dp.factored_route(inputs.indexed, workdir / "factored", nproc=nproc,
                                 integrate_args=inputs.factored_args,
                                 timeout=factored_timeout, export=export)
    report(f"    done ({factored.wall_time:.0f} s)")
    report("scoring against the true intensities")
    routes = {**dials, "factored": factored}
    scores, common, ideal = score_routes(inputs.sim, routes, n_shells)
    return Comparison(inputs=inputs, routes=routes, scores=scores, common=common, ideal=ideal)


def run(workdir: Path, nproc: int, n_shells: int = 10, mode: str = "stills",
        n_images: int | None = None, dials_algorithm: str = "auto") -> dict:
    """The whole demo; returns what it writes to ``demo_results.json``."""
    workdir = workdir.resolve()
    start = time.perf_counter()
    inputs = prepare(workdir, mode, nproc, n_images)
    comparison = compare(inputs, workdir, nproc, n_shells, dials_algorithm=dials_algorithm)
    scores, routes = comparison.scores, comparison.routes
    table = comparison.tables()
    results = {
        "workdir": str(workdir), "mode": mode, "seed": SEED,
        "space_group": inputs.space_group, "unit_cell": inputs.unit_cell,
        "n_images": len(inputs.images), "wall_time_s": round(time.perf_counter() - start, 1),
        "scores": {name: s.as_dict() for name, s in scores.items()},
        "scores_common": {name: s.as_dict() for name, s in comparison.common.items()},
        "ideal": comparison.ideal.as_dict(), "table": table,
        "dials_route": comparison.dials_route_info,
        "timings": {name: stage.timings() for name, stage in
                    {"simulate": inputs.sim, "index": inputs.indexed, **routes}.items()},
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
    """Command-line entry: ``python -m harness.demo [--workdir DIR] [--nproc N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("demo_run"))
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--mode", choices=("stills", "rotation"), default="stills")
    parser.add_argument("--images", type=int, default=None,
                        help="number of images (default: the simulator's, 100 stills or 90 "
                             "rotation frames)")
    parser.add_argument("--dials-algorithm", choices=("auto", "both"), default="auto",
                        help="stills: dials.ssx_integrate's default algorithm=ellipsoid, "
                             "algorithm=stills where it fails (auto), or also "
                             "algorithm=stills where ellipsoid runs (both)")
    args = parser.parse_args(argv)
    try:
        run(args.workdir, args.nproc, mode=args.mode, n_images=args.images,
            dials_algorithm=args.dials_algorithm)
    except (RuntimeError, ValueError) as e:
        print(f"[demo] FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

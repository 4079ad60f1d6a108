"""The scale benchmark: dials.factored_integrate on N simulated small-panel stills.

``python -m benchmarks.scale --sizes 300,1000,3000`` (issue 19): one simulation of the
largest N (384 × 384 pixel panel, 2.5 Å at the corners, ~100 spots per still), then
for every N the first N stills are integrated **from the simulator's true models
perturbed by typical stills-indexing errors** (no dials.ssx_index, which would dominate
the time): each crystal rotated about a random axis by a Gaussian angle of
``ORIENT_ERROR_DEG`` rms per axis and its reciprocal cell scaled by 1 + N(0,
``CELL_ERROR``²).  Printed and written to ``benchmarks/results/<date>-scale.json``:
N, wall time, time per still, peak resident memory of the process tree (psutil, MiB),
LM iterations (per cycle), the first outer cycle's seconds, the bytes each LM iteration
sums over ranks, and the CC to truth of the merged intensities (overall and by shell).
With ``--ranks 1,2`` the largest N is also run under ``mpirun -n R`` (``mp.method=mpi``,
``nproc=1`` per rank) for each R, and the speed-up over one rank is printed.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import time
from pathlib import Path

import numpy as np

from benchmarks import report as rp
from harness import dials_programs as dp
from harness import evaluate as ev

D_MIN = 2.5
DETECTOR = (384, 384)
SEED = 19
#: rms per axis of the orientation error of indexed stills (degrees)
ORIENT_ERROR_DEG = 0.03
#: rms relative error of the reciprocal cell of indexed stills
CELL_ERROR = 0.001


def simulate(workdir: Path, n_images: int) -> Path:
    """The simulated set in ``workdir/sim`` (reused when it holds enough stills)."""
    sim = workdir / "sim"
    truth = sim / "truth" / "models.expt"
    if truth.is_file() and _n_experiments(truth) >= n_images:
        rp.progress(f"reusing {n_images}+ simulated stills in {sim}")
        return sim
    sim.mkdir(parents=True, exist_ok=True)
    dp.run_program("dials.factored_simulate",
                   ["mode=stills", f"seed={SEED}", f"n_images={n_images}", f"d_min={D_MIN}",
                    f"detector.size={DETECTOR[0]},{DETECTOR[1]}"], sim,
                   expect=["truth/models.expt", "truth/truth.mtz"])
    return sim


def _n_experiments(expt: Path) -> int:
    return len(json.loads(expt.read_text())["experiment"])


def perturbed_models(sim: Path, n: int, out: Path, seed: int = 0) -> Path:
    """The first ``n`` true models with indexing-sized orientation and cell errors."""
    from dxtbx.model.experiment_list import ExperimentList, ExperimentListFactory
    from scitbx import matrix

    experiments = ExperimentListFactory.from_json_file(
        str(sim / "truth" / "models.expt"), check_format=False)
    rng = np.random.default_rng(seed)
    subset = ExperimentList()
    for expt in experiments[:n]:
        crystal = expt.crystal
        rotvec = rng.normal(0.0, np.radians(ORIENT_ERROR_DEG), 3)
        angle = float(np.linalg.norm(rotvec))
        rot = matrix.col(tuple(rotvec / angle)).axis_and_angle_as_r3_rotation_matrix(angle)
        crystal.set_U(rot * matrix.sqr(crystal.get_U()))
        crystal.set_B(matrix.sqr(crystal.get_B()) * (1.0 + rng.normal(0.0, CELL_ERROR)))
        subset.append(expt)
    out.parent.mkdir(parents=True, exist_ok=True)
    subset.as_file(str(out))
    return out


def cc_to_truth(sim: Path, run_dir: Path, n_shells: int = 10) -> dict:
    """CC of dials.merge's merged intensities to the truth, overall and by shell
    (the scoring of :mod:`harness.evaluate`, as in the other benchmarks)."""
    dp.run_program("dials.merge", ["factored.expt", "factored.refl", *dp.MERGE_ARGS], run_dir,
                   expect=["merged.mtz"])
    truth = ev.prepare_truth(ev.read_mtz_intensities(sim / "truth" / "truth.mtz"), D_MIN)
    merged = ev.read_mtz_intensities(run_dir / "merged.mtz")
    shells = ev.Shells(truth.d_spacings().data().as_numpy_array(), n_shells)
    unmerged = ev.read_scaled_table(run_dir / "factored.expt", run_dir / "factored.refl")
    score = ev.score_merged(merged, truth, shells, unmerged=unmerged)
    return {"overall": score.overall.cc, "by_shell": [row.cc for row in score.shells],
            "z_rms": score.overall.z_rms}


def integrate(sim: Path, n: int, workdir: Path, extra: list[str], ranks: int = 0,
              mpirun: str = "mpirun -n {ranks}") -> dict:
    """dials.factored_integrate on the first ``n`` perturbed stills, measured (under
    ``mpirun`` with ``ranks`` ranks when ``ranks`` > 0)."""
    run_dir = workdir / (f"n{n}" if not ranks else f"n{n}_ranks{ranks}")
    models = perturbed_models(sim, n, run_dir / "models.expt")
    args, launcher = [str(models), "nproc=1", *extra], []
    if ranks:
        args.append("mp.method=mpi")
        launcher = shlex.split(mpirun.format(ranks=ranks))
    run = dp.run_program("dials.factored_integrate", args, run_dir,
                         expect=["factored.refl", "factored_parameters.json"],
                         launcher=launcher)
    history = json.loads((run_dir / "factored_parameters.json").read_text())["history"]
    log = (run_dir / "dials.factored_integrate.log").read_text()
    sent = [float(v) for v in re.findall(r"([\d.e+]+) bytes summed over ranks", log)]
    normal = [int(v) for v in re.findall(r"(\d+) of them the normal equations", log)]
    row = {
        "n_stills": n,
        "ranks": ranks,
        "wall_time_s": run.wall_time,
        "time_per_still_s": run.wall_time / n,
        "peak_rss_mb": run.peak_rss_mb,
        "lm_iterations": [h["iterations"] for h in history],
        "cycle_seconds": [h["seconds"] for h in history],
        "bytes_summed_per_lm_iteration": sent,
        "bytes_normal_equations_per_lm_iteration": normal,
        "cc_truth": cc_to_truth(sim, run_dir),
    }
    rp.progress(f"N={n}: {row['wall_time_s']:.1f} s, {1e3 * row['time_per_still_s']:.1f} ms/still, "
                f"peak RSS {row['peak_rss_mb']:.0f} MiB, LM {row['lm_iterations']}, first cycle "
                f"{row['cycle_seconds'][0]:.1f} s, CC_truth {row['cc_truth']['overall']:.4f}")
    return row


def lm_cpu(sizes: list[int], per: int = 100, n_iterations: int = 5) -> list[dict]:
    """CPU seconds of ``fit.minimise`` alone (``n_iterations`` LM steps and the final
    covariance) on synthetic stills of ``per`` reflections (random statistics with the
    fit's structure: 5 parameters per still, 5 R1 nodes, gauge priors): the cost of the
    linear algebra and the Jacobian against N, without image passes or load noise."""
    from dials_factored.fit import FactoredTarget, Observations, Priors, minimise
    from dials_factored.layout import Layout

    rows = []
    for n_still in sorted(sizes):
        rng = np.random.default_rng(7)
        n = n_still * per
        r1, n_bins = 0.002, 5
        b0 = rng.integers(0, n_bins - 1, n)
        obs = Observations(
            j=rng.exponential(300, n) + 5, sigma_j=rng.uniform(5, 30, n),
            i_ref=rng.exponential(400, n) + 10, attenuation=np.ones(n),
            inv_4d2=1 / (4 * rng.uniform(2.0, 8.0, n) ** 2), k0=np.repeat(np.arange(n_still), per),
            k1=np.repeat(np.arange(n_still), per), w=np.zeros(n), use1=rng.random(n) > 0.1,
            group=None, bootstrapped=np.zeros(n, bool), stills=True,
            eps=rng.normal(0, 4e-4, n), rbw_sq=np.full(n, 1e-8), use2=rng.random(n) > 0.5,
            m_a=np.full(n, 0.5 * r1 ** 2), m_b=np.full(n, 0.6 * r1 ** 2),
            sigma_a=np.full(n, 0.1 * r1 ** 2), sigma_b=np.full(n, 0.1 * r1 ** 2),
            area=np.full(n, 1e-7), window_a=np.full(n, 9 * r1 ** 2),
            window_b=np.full(n, 9 * r1 ** 2), b0=b0, b1=b0 + 1, u=rng.random(n),
            deps_x=rng.normal(0, 0.3, n), deps_y=rng.normal(0, 0.3, n),
            deps_s=rng.normal(0, 0.2, n),
            width_pairs=(np.arange(n_bins - 1), np.arange(1, n_bins)))
        layout = Layout(n_still, n_bins, False, n_orient=n_still)
        priors = Priors(np.log(5e-4), 0.5, np.log(5e-4), 1.0, 20.0, 0.1, 2.0, 0.3,
                        log_r1_mean=np.log(r1), log_r1_sigma=0.5, gauge_sigma=0.01)
        x0 = np.zeros(layout.size)
        x0[layout.log_r0] = x0[layout.log_eta] = np.log(5e-4)
        x0[layout.log_r1a] = np.log(r1)
        cpu = time.process_time()
        minimise(FactoredTarget(obs, layout, priors), x0, max_iterations=n_iterations,
                 relative_step=0, relative_decrease=None)
        cpu = time.process_time() - cpu
        rows.append({"n_stills": n_still, "n_parameters": layout.size, "cpu_s": cpu,
                     "cpu_per_still_ms": 1e3 * cpu / n_still})
        rp.progress(f"LM only, N={n_still}: {cpu:.2f} s CPU for {n_iterations} iterations "
                    f"({1e3 * cpu / n_still:.2f} ms per still)")
    return rows


def table(rows: list[dict]) -> str:
    """The Markdown table of the runs (ratios to the smallest N)."""
    lines = ["| N | wall (s) | ms/still | ratio | peak RSS (MiB) | ratio | first cycle (s) "
             "| LM iterations | bytes/LM iteration (normal eq.) | CC_truth |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    base = rows[0]
    for r in rows:
        lines.append(
            f"| {r['n_stills']} | {r['wall_time_s']:.1f} | {1e3 * r['time_per_still_s']:.1f} "
            f"| {r['time_per_still_s'] / base['time_per_still_s']:.2f} "
            f"| {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / base['peak_rss_mb']:.2f} "
            f"| {r['cycle_seconds'][0]:.1f} | {sum(r['lm_iterations'])} "
            f"| {max(r['bytes_summed_per_lm_iteration'], default=0):.0f} "
            f"({max(r['bytes_normal_equations_per_lm_iteration'], default=0)}) "
            f"| {r['cc_truth']['overall']:.4f} |")
    return "\n".join(lines)


def mpi_table(rows: list[dict]) -> str:
    """The Markdown table of the MPI runs (speed-up over the one-rank run)."""
    lines = ["| N | ranks | wall (s) | speed-up | peak PSS (MiB) | bytes/LM iteration |",
             "|---|---|---|---|---|---|"]
    base = rows[0]["wall_time_s"]
    for r in rows:
        lines.append(f"| {r['n_stills']} | {r['ranks']} | {r['wall_time_s']:.1f} "
                     f"| {base / r['wall_time_s']:.2f} | {r['peak_rss_mb']:.0f} "
                     f"| {max(r['bytes_summed_per_lm_iteration'], default=0):.0f} |")
    return "\n".join(lines)


def run(sizes: list[int], workdir: Path, extra: list[str] = (), ranks: list[int] = (),
        mpirun: str = "mpirun -n {ranks}") -> dict:
    """Simulate once, integrate every size (and the largest under MPI with each number of
    ``ranks``); the results (``report`` is the table)."""
    t0 = time.time()
    sim = simulate(workdir, max(sizes))
    rows = [integrate(sim, n, workdir, list(extra)) for n in sorted(sizes)]
    mpi_rows = [integrate(sim, max(sizes), workdir, list(extra), r, mpirun) for r in ranks]
    truth = json.loads((sim / "truth" / "truth.json").read_text())["parameters"]
    return {"mode": "scale", "simulation": {k: truth[k] for k in (
                "seed", "n_images", "d_min", "detector_size")},
            "start_models": f"simulator truth perturbed: {ORIENT_ERROR_DEG}° rms per axis, "
                            f"cell {CELL_ERROR:g} rms",
            "integrate_args": ["nproc=1", *extra], "runs": rows, "mpi_runs": mpi_rows,
            "report": table(rows) + ("\n\n" + mpi_table(mpi_rows) if mpi_rows else ""),
            "environment": rp.environment(),
            "wall_time_s": time.time() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale",
                                description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="300,1000,3000",
                   help="numbers of stills (default %(default)s)")
    p.add_argument("--workdir", type=Path, default=rp.REPO / "benchmarks" / "work" / "scale")
    p.add_argument("--results", type=Path, default=rp.REPO / "benchmarks" / "results")
    p.add_argument("--lm-only", action="store_true",
                   help="time fit.minimise alone on synthetic stills of these sizes")
    p.add_argument("--ranks", default="", help="MPI ranks to run the largest N with, e.g. 1,2")
    p.add_argument("--mpirun", default="mpirun -n {ranks}",
                   help="the MPI launcher, {ranks} replaced (default %(default)r)")
    p.add_argument("extra", nargs="*", help="extra dials.factored_integrate parameters")
    args = p.parse_args(argv)
    if args.lm_only:
        rows = lm_cpu([int(s) for s in args.sizes.split(",")])
        path = rp.write_results({"mode": "scale-lm", "runs": rows,
                                 "environment": rp.environment()}, args.results, "scale-lm")
        rp.progress(f"scale-lm: results in {path}")
        return 0
    ranks = [int(r) for r in args.ranks.split(",") if r]
    results = run([int(s) for s in args.sizes.split(",")], args.workdir, args.extra, ranks,
                  args.mpirun)
    path = rp.write_results(results, args.results, "scale")
    print(results["report"])
    rp.progress(f"scale: results in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

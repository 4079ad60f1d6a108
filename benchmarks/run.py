"""Benchmark dials.factored_integrate against the DIALS routes: time, memory and accuracy.

``python -m benchmarks.run`` (what ``make bench`` runs) benchmarks, one after the other:

* ``stills``: 300 simulated stills (seed 1, 1.8 Å, a Pilatus 6M-sized panel, background,
  hot pixels, zingers), indexed with dials.ssx_index; DIALS route dials.ssx_integrate +
  dials.scale + dials.merge against dials.factored_integrate + dials.merge, plus
  dials.factored_integrate on the first 100 stills (peak memory growth);
* ``rotation``: a simulated 90 × 1° sweep, indexed and refined; DIALS route
  dials.integrate + dials.scale + dials.merge against dials.factored_integrate + dials.merge;
* ``rotation_angular``: issue 16's sweep, DIALS's spot model (angular mosaic spread
  σ_m = 0.15°, beam divergence 0.035°) on 0.1 mm pixels at 150 mm, 1° frames, a 1340²
  panel (1.8 Å at the corners; ``--angular-detector`` for a smaller one, the resolution
  follows); the same two routes, plus the per-cycle pixel pass rate from the log;
* ``real``: both routes on the shared real sets with images (skipped when absent);
* ``lowbg`` and ``readnoise`` (issue 18): 100 simulated stills on a 1024×1024 panel at
  0.05 photons/px of background, photon counting and on an integrating detector (gain
  10, read noise 0.3 photons), both routes as for ``stills``, with the rms z target;
* ``anomalous`` (not run by default): Se stills in P4₃ (indexing ambiguity) and P4₃2₁2
  (control), CC_ano and anomalous map peak heights for both routes and the ideal
  estimator (:mod:`benchmarks.anomalous`);
* ``scale`` (not run by default): dials.factored_integrate on N = 1,000, 3,000 … small-panel
  simulated stills, time per still and peak memory against N (:mod:`benchmarks.scale`).

Every program's wall time and peak resident memory (its whole process tree) is recorded,
and for simulated data the time to read and decode all images with dxtbx (1 and 2
processes), the floor no integration program can beat.  Simulated results are scored
against the truth (CC_truth overall and in 10 shells, with the ideal estimator, CC1/2 by
shell, completeness, rms z) and set against the targets of issue 5.  Each mode writes
``<results>/<date>-<mode>.json`` and prints a Markdown report (targets, factored/DIALS
ratios, tables by shell, every step).  Simulation and indexing are not part of any
comparison; ``--reuse`` skips them when an earlier run left data made with the same
parameters.  A failing program stops the benchmark with exit code 1.

Run it on a quiet machine: the numbers are wall times.  Small sizes for a smoke test::

    python -m benchmarks.run --modes stills --stills 8 --memory-sizes 4 --detector 512,512
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import anomalous, real, scale, simulated
from benchmarks import report as rp

#: The modes, in the order they run.
MODES = ("stills", "rotation", "rotation_angular", "real", *simulated.STILLS_CASES,
         "anomalous", "scale")
#: What ``make bench`` runs without --modes (the others are long or for one issue).
DEFAULT_MODES = ("stills", "rotation", "rotation_angular", "real", *simulated.STILLS_CASES)


def _ints(text: str) -> list[int]:
    """Comma-separated positive integers ("" → none)."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"values must be positive: {text!r}")
    return values


def _detector(text: str) -> tuple[int, int]:
    values = _ints(text)
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"need FAST,SLOW pixels: {text!r}")
    return values[0], values[1]


def parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.run",
                                description=__doc__.splitlines()[0])
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(DEFAULT_MODES),
                   help=f"what to benchmark (default: {' '.join(DEFAULT_MODES)})")
    p.add_argument("--scale-sizes", type=_ints, default=[1000, 3000], metavar="N[,N...]",
                   help="scale mode: numbers of stills (default 1000,3000)")
    p.add_argument("--stills", type=int, default=simulated.DEFAULT_IMAGES["stills"],
                   help="number of simulated stills (default %(default)s)")
    p.add_argument("--rotation", type=int, default=simulated.DEFAULT_IMAGES["rotation"],
                   help="number of simulated 1° rotation frames (default %(default)s)")
    p.add_argument("--anomalous", type=int, default=300,
                   help="anomalous mode: simulated Se stills per space group (P4_3 and the "
                        "P4_32_12 control; default %(default)s)")
    p.add_argument("--angular", type=int,
                   default=simulated.DEFAULT_IMAGES["rotation_angular"],
                   help="number of 1° frames of the rotation_angular case (default "
                        "%(default)s)")
    p.add_argument("--angular-detector", type=_detector,
                   default=simulated.ANGULAR["detector"], metavar="FAST,SLOW",
                   help="rotation_angular panel in 0.1 mm pixels at 150 mm (default "
                        "1340,1340; its corners set the resolution)")
    p.add_argument("--detector", type=_detector, default=simulated.PILATUS_6M,
                   metavar="FAST,SLOW",
                   help="simulated panel size in pixels (default 2463,2527, a Pilatus 6M)")
    p.add_argument("--case-stills", type=int, default=simulated.CASE_IMAGES,
                   help="stills of the lowbg and readnoise cases (default %(default)s)")
    p.add_argument("--case-detector", type=_detector, default=simulated.CASE_DETECTOR,
                   metavar="FAST,SLOW",
                   help="panel of the lowbg and readnoise cases (default 1024,1024)")
    p.add_argument("--d-min", type=float, default=1.8,
                   help="resolution at the detector corners (Å, default %(default)s)")
    p.add_argument("--memory-sizes", type=_ints, default=[100], metavar="N[,N...]",
                   help="stills: also run dials.factored_integrate on the first N stills, "
                        "for the growth of its peak memory (default 100; '' for none)")
    p.add_argument("--ranks", type=_ints, default=[], metavar="N[,N...]",
                   help="also run dials.factored_integrate mp.method=mpi under mpirun with "
                        "these numbers of ranks (e.g. 1,2); skipped with a message without "
                        "mpirun or mpi4py")
    p.add_argument("--mpirun", default="mpirun -n {ranks}",
                   help="the MPI launcher, {ranks} replaced (default %(default)r)")
    p.add_argument("--nproc", type=int, default=2,
                   help="nproc of every program (default %(default)s)")
    p.add_argument("--dials-algorithm", choices=("auto", "both"), default="auto",
                   help="stills: dials.ssx_integrate's default algorithm=ellipsoid, falling "
                        "back to algorithm=stills where it fails (auto), or both routes "
                        "where both run (default %(default)s)")
    p.add_argument("--shells", type=int, default=10,
                   help="resolution shells (default %(default)s)")
    p.add_argument("--timeout", type=float, default=None,
                   help="stop a dials.factored_integrate run after this many seconds")
    p.add_argument("--reuse", action="store_true",
                   help="reuse the simulated and indexed data of an earlier run in the "
                        "work directory if made with the same parameters")
    p.add_argument("--workdir", type=Path, default=rp.REPO / "benchmarks" / "work",
                   help="where the programs run (default benchmarks/work)")
    p.add_argument("--results", type=Path, default=rp.REPO / "benchmarks" / "results",
                   help="where <date>-<mode>.json is written (default benchmarks/results)")
    p.add_argument("--data", type=Path, default=None,
                   help="the shared real data (default $DIALS_FACTORED_DATA, else "
                        "../shared/data)")
    p.add_argument("--real-sets", nargs="+", choices=[s.name for s in real.SETS],
                   default=None, help="real mode: only these sets (default: all)")
    return p


def run_mode(mode: str, args: argparse.Namespace) -> dict | None:
    """One mode's results (None: real data absent)."""
    if mode == "anomalous":
        return anomalous.run_both(anomalous.Settings(
            workdir=args.workdir / "anomalous", n_images=args.anomalous, nproc=args.nproc))
    if mode == "scale":
        return scale.run(args.scale_sizes, args.workdir / "scale", ranks=args.ranks,
                         mpirun=args.mpirun)
    if mode == "real":
        return real.run(args.data, args.workdir, nproc=args.nproc, n_shells=args.shells,
                        names=args.real_sets)
    case = mode in simulated.STILLS_CASES
    n_images = (args.case_stills if case else
                {"stills": args.stills, "rotation": args.rotation,
                 "rotation_angular": args.angular}[mode])
    detector, d_min = (args.case_detector if case else args.detector), args.d_min
    if mode == "rotation_angular":
        detector = args.angular_detector
        d_min = simulated.corner_d_min(detector)
    settings = simulated.Settings(
        case=mode, n_images=n_images, workdir=args.workdir / mode, nproc=args.nproc,
        n_shells=args.shells, detector=detector, d_min=d_min, reuse=args.reuse,
        timeout=args.timeout, memory_sizes=() if case else args.memory_sizes,
        ranks=() if case else args.ranks, mpirun=args.mpirun,
        dials_algorithm=args.dials_algorithm)
    return simulated.run(settings)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen modes; 0 on success, 1 when a program failed."""
    args = parser().parse_args(argv)
    for mode in args.modes:
        rp.progress(f"=== {mode} ===")
        try:
            results = run_mode(mode, args)
        except (RuntimeError, ValueError) as e:
            print(f"[bench] FAILED ({mode}): {e}", file=sys.stderr, flush=True)
            return 1
        if results is None:
            continue
        results["command"] = ["python", "-m", "benchmarks.run",
                              *(sys.argv[1:] if argv is None else argv)]
        path = rp.write_results(results, args.results, mode)
        print()
        print(results["report"])
        print()
        rp.progress(f"{mode}: {results['wall_time_s']:.0f} s; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Integrate and scale indexed stills or rotation data in one factored likelihood.

Every reflection's shoebox is reduced to its profile-fit amplitude J (Term 1,
Fisher-weighted with the model-expected variance) and its shape second moment
M₂ (Term 2); the per-image scale G, the Debye-Waller factor B, the partiality
width R0 and the profile width R1(d) are fitted jointly against them with a
scitbx Levenberg–Marquardt minimiser, against an external reference or a
reference bootstrapped from the data.  The output is integrated *and scaled*:
dials.merge and dials.export accept it as it is, and dials.scale can take it
further.

Examples::

  dials.factored_integrate indexed.expt indexed.refl
  dials.factored_integrate refined.expt refined.refl reference=model.pdb d_min=1.8
  dials.factored_integrate indexed.expt indexed.refl beam.bandwidth=0.0025 nproc=2
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

from dials.util import Sorry, log, show_mail_handle_errors
from dials.util.options import ArgumentParser, flatten_experiments, flatten_reflections

from dials_factored.phil import phil_scope
from dials_factored.progress import progress_printer

logger = logging.getLogger("dials.factored_integrate")


@show_mail_handle_errors()
def run(args: list[str] | None = None, phil=phil_scope) -> None:
    parser = ArgumentParser(
        usage="dials.factored_integrate indexed.expt indexed.refl [options]",
        phil=phil,
        epilog=__doc__,
        read_experiments=True,
        read_reflections=True,
        check_format=True,
    )
    try:
        params, options, experiments, strong = _parse(parser, args)
        if not (params.input.experiments or params.input.reflections):
            parser.print_help()
            return
        world = _world(params)
        _validate(params, experiments, strong)  # before the log file: bad input leaves no file
        if world.rank == 0:
            _start_log(params, options, phil)
        writes = _integrate(params, experiments, strong, world)
    except KeyboardInterrupt:
        raise Sorry("interrupted by the user (Ctrl-C); nothing was written") from None
    if world.rank != 0:
        return
    if _write_all(writes):
        raise Sorry("interrupted by the user (Ctrl-C) while the outputs were written; "
                    "they were completed first")
    logger.info("Saved %s", ", ".join(path for _, _, path in writes))


def _start_log(params, options, phil) -> None:
    """Open the log file; log the version, the inputs and the parameters changed."""
    log.config(verbosity=options.verbose, logfile=params.output.log)
    from dials.util.version import dials_version

    logger.info(dials_version())
    logger.info("Input: %s", " ".join(
        i.filename for i in params.input.experiments + params.input.reflections))
    # the diff of our own scope only: DIALS's parser.diff_phil would load the inputs again
    diff = phil.fetch_diff(source=phil.format(python_object=params)).as_str()
    if diff:
        logger.info("The following parameters have been modified:\n%s", diff)


def _parse(parser, args):
    """Parameters, options, experiments and the reflection table (or None); Sorry on errors."""
    try:
        params, options, unhandled = parser.parse_args(
            args=args, show_diff_phil=False, return_unhandled=True
        )
    except RuntimeError as e:  # an invalid PHIL value (libtbx.phil raises RuntimeError)
        raise Sorry(f"invalid parameter: {_first_line(str(e))}") from None
    if unhandled:
        raise Sorry(_unhandled_error(unhandled))
    try:
        experiments = flatten_experiments(params.input.experiments)
    except RuntimeError as e:  # e.g. the same experiments given twice
        raise Sorry(f"could not combine the experiment files: {_first_line(str(e))}") from None
    reflections = flatten_reflections(params.input.reflections)
    if len(reflections) > 1:
        raise Sorry("give one reflection table (it may hold many stills)")
    return params, options, experiments, reflections[0] if reflections else None


def _validate(params, experiments, strong) -> None:
    """Everything that can be checked before reading an image (one Sorry if not)."""
    from dials_factored import inputs, reference
    from dials_factored.merging import symmetry_of

    inputs.check_parameters(params)
    inputs.check_experiments(experiments, [i.filename for i in params.input.experiments])
    inputs.check_reflections(strong, experiments)
    out = params.output
    inputs.check_outputs([out.experiments, out.reflections, out.parameters, out.log, out.html,
                         out.posterior],
                         inputs.input_paths(params, experiments))
    inputs.check_scratch(out.scratch)
    try:
        reference.check(params.reference, symmetry_of(experiments))
    except ValueError as e:
        raise Sorry(str(e)) from None


def _world(params):
    """The processes of this run: serial, or the MPI ranks (``mp.method=mpi``)."""
    from dials_factored import collective

    if params.mp.method != "mpi":
        return collective.world()
    try:
        world = collective.use_mpi()
    except ImportError:
        raise Sorry("mp.method=mpi needs mpi4py (Debian: python3-mpi4py, openmpi-bin); "
                    "run the install command") from None
    if world.rank != 0:  # only rank 0 logs; the others report errors only
        logging.getLogger("dials").setLevel(logging.ERROR)
    return world


def _integrate(params, experiments, strong, world) -> list:
    """Run the integration; return the outputs to write as (writer, data, path).

    Under MPI every rank integrates its share; rank 0 gathers the reflections
    and returns the outputs, the other ranks return nothing.
    """
    from dials_factored import output
    from dials_factored.integrate import run_factored
    from dials_factored.output_geometry import (
        add_observed_geometry,
        apply_orientation_corrections,
    )
    from dials_factored.reflections import AgreedError

    start = time.time()
    try:
        result = run_factored(experiments, strong, params, progress=progress_printer(
            logger, "read") if world.rank == 0 else None)
    except AgreedError as e:  # raised on every rank at once
        if world.size > 1:
            # every rank says it, one after the other (lines of ranks writing at once get
            # mixed), before any exits (mpirun stops the others at the first exit)
            for rank in range(world.size):
                if rank == world.rank:
                    print(f"Sorry: {e}", flush=True)
                world.comm.Barrier()
            sys.exit(1)
        raise Sorry(str(e)) from None
    except (ValueError, OSError) as e:  # bad data, or a full or failing disk
        logger.debug("Stopped by", exc_info=True)
        if world.size > 1:  # on this rank only: the others must not wait for it
            print(f"Sorry: {e} (MPI rank {world.rank})", flush=True)
            world.comm.Abort(1)
        raise Sorry(str(e)) from None
    except Exception:  # a fault on one rank must not leave the others waiting
        if world.size > 1:
            import traceback

            traceback.print_exc()
            world.comm.Abort(1)
        raise
    if world.size > 1:
        result = _gathered(result, world)
        if world.rank != 0:
            return []
    add_observed_geometry(result.table, experiments, strong)
    if len(result.table) == 0:
        raise Sorry("no reflection could be integrated: no predicted reflection has usable "
                    "pixels (all masked, outside the trusted range or overloaded); nothing "
                    "was written")
    logger.info("Integrated %d reflections in %.1f s", len(result.table), time.time() - start)
    shells = _log_statistics(result, experiments)
    if apply_orientation_corrections(experiments, result.parameters, result.table):
        logger.info("Crystal orientations updated with the fitted corrections (stills); "
                    "s1, xyzcal and excitation errors predicted again from them")
    writes = [
        (output.write_reflections, result.table, params.output.reflections),
        (output.write_experiments, experiments, params.output.experiments),
        (output.write_json, {"parameters": result.parameters, "history": result.history,
                             "timings": result.timings}, params.output.parameters),
    ]
    if params.output.html:
        from dials_factored.report import render

        writes.append((output.write_text, render(result, shells), params.output.html))
    if params.output.posterior:
        from dials_factored.posterior_output import posterior_mtz

        mtz = posterior_mtz(result, experiments, params)
        if mtz is not None:
            writes.append((output.write_mtz, mtz, params.output.posterior))
    return writes


def _gathered(result, world):
    """The result of all ranks on rank 0: their reflections and diagnostics joined."""
    import numpy as np

    tables = world.gather(result.table)
    z = world.gather(result.diagnostics["z_term1"])
    outliers = world.gather(result.diagnostics["outliers_per_image"])
    if world.rank != 0:
        return result
    for table in tables[1:]:
        tables[0].extend(table)
    n = max(len(c) for c in outliers)
    result.table = tables[0]
    result.diagnostics = {
        "z_term1": np.concatenate(z),
        "outliers_per_image": sum(np.pad(c, (0, n - len(c))) for c in outliers),
    }
    return result


def _write_all(writes) -> bool:
    """Write every output (each atomically); a Ctrl-C meanwhile is held until all are
    written, so that an interrupted run leaves all outputs or none.  True if one came."""
    pending = []
    previous = signal.signal(signal.SIGINT, lambda *_: pending.append(True))
    try:
        for n, (write, data, path) in enumerate(writes):
            try:
                write(data, path)
            except OSError as e:
                done = ", ".join(str(p) for _, _, p in writes[:n]) or "nothing"
                raise Sorry(f"could not write {path} ({e.strerror or e}); written before it: "
                            f"{done}") from None
    finally:
        signal.signal(signal.SIGINT, previous)
    return bool(pending)


def _first_line(message: str) -> str:
    """The first line of an error, without DIALS's "please report" preamble."""
    message = message.split(": ", 1)[1] if message.startswith("Please report") else message
    return message.splitlines()[0] if message else "(no message)"


def _unhandled_error(unhandled: list[str]) -> str:
    """Why arguments were not understood: a missing file, an unreadable one, or a typo."""
    for arg in unhandled:
        if "=" in arg and not os.path.exists(arg):
            continue
        if not os.path.exists(arg):
            return f"input file {arg} does not exist"
        if os.path.isdir(arg):
            return f"input {arg} is a directory, not an .expt or .refl file"
        if not os.access(arg, os.R_OK):
            return f"input file {arg} is not readable (permission denied)"
        return _unreadable_file(arg)
    return f"unrecognised parameter(s): {' '.join(unhandled)} (see -c for the parameters)"


def _unreadable_file(path: str) -> str:
    """Why DIALS could not read an existing file: corrupt, or experiments whose images fail."""
    from dxtbx.model.experiment_list import ExperimentListFactory

    corrupt = (f"could not read {path} as DIALS experiments (.expt) or reflections (.refl): "
               "truncated, corrupt or another format")
    try:
        experiments = ExperimentListFactory.from_json_file(path, check_format=False)
    except Exception:  # json, dxtbx or msgpack errors of every kind: not experiments
        return corrupt
    images = [p for iset in experiments.imagesets() for p in iset.paths()]
    if not images:
        return corrupt
    bad = [p for p in images if not os.access(p, os.R_OK)]
    if bad:
        return (f"{path} refers to {len(bad)} image file(s) that do not exist or cannot be "
                f"read: {', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}")
    return f"the images of {path} could not be opened (unknown format or corrupt)"


def _log_statistics(result, experiments):
    """Log the fitted parameters and CC½, ⟨I/σ⟩ by shell; return the shell rows."""
    import numpy as np

    from dials_factored.arrays import to_numpy
    from dials_factored.merging import asu_groups, symmetry_of
    from dials_factored.statistics import format_shells, merging_statistics

    p = result.parameters
    g = np.array([n["G"] for n in p["nodes"]])
    b = np.array([n["B"] for n in p["nodes"]])
    logger.info("Fitted G: median %.3f, range %.3f-%.3f; B: mean %.2f, sd %.2f Å²",
                np.median(g), g.min(), g.max(), b.mean(), b.std())
    logger.info("Fitted R1(d) nodes (Å⁻¹): %s", " ".join(f"{r:.5f}" for r in p["r1_a"]))
    if "r0" in p:
        logger.info("Fitted R0 = %.5f Å⁻¹, mosaic spread η = %.4f°", p["r0"], p["mosaic_deg"])
    else:
        logger.info("Fitted φ widths: angular mosaic spread σ_m = %.4f° (DIALS's sigma_m), "
                    "radial R0 = %.5f Å⁻¹", p["sigma_m_deg"], p["radial_r0"])
    logger.info("Outlier pixels masked (hot pixels, zingers): %d", p["outlier_pixels"])
    for warning in p.get("warnings", []):
        logger.warning("Warning: %s", warning)
    if not p.get("warnings"):
        logger.info("Plausibility checks passed (convergence, priors, widths, outliers)")
    if "g_r1_coupling" in p:
        c = p["g_r1_coupling"]
        logger.info("Measured G–R1 coupling (J refitted with R1 × 0.8 and × 1.2): "
                    "d log G / d log R1 median %.4f, max |·| %.4f; d B / d log R1 median "
                    "%.4f, max |·| %.4f Å² over %d nodes", c["dlogg_dlogr1_median"],
                    c["dlogg_dlogr1_max_abs"], c["db_dlogr1_median"], c["db_dlogr1_max_abs"],
                    c["n_nodes"])
    if "correlation" in p:
        names = p["correlation"]["parameters"]
        logger.info("Parameter correlations (%s; R1 is absent: no residual couples it to"
                    " these, see g_r1_coupling):", ", ".join(names))
        for name, row in zip(names, p["correlation"]["matrix"]):
            logger.info("  %-20s %s", name, " ".join(f"{v:+.3f}" for v in row))
    t = result.table
    sel = t.get_flags(t.flags.scaled)
    t = t.select(sel)
    if len(t) == 0:
        return []
    _, group = asu_groups(t["miller_index"], symmetry_of(experiments))
    isf = to_numpy(t["inverse_scale_factor"])
    values = to_numpy(t["intensity.scale.value"]) / isf
    variances = to_numpy(t["intensity.scale.variance"]) / isf ** 2
    shells = merging_statistics(group, to_numpy(t["d"]), values, variances)
    logger.info("Merging statistics of the scaled output:\n%s", format_shells(shells))
    _log_anomalous_signal(t, experiments, group, values, p.get("anomalous", False))
    return shells


def _log_anomalous_signal(table, experiments, group, values, anomalous: bool) -> None:
    """Log CC_ano½ of the scaled output; warn when significant but mates were merged."""
    import numpy as np

    from dials_factored.arrays import miller_keys, to_numpy
    from dials_factored.merging import asu_groups, symmetry_of
    from dials_factored.statistics import anomalous_signal

    symmetry = symmetry_of(experiments)
    plus = miller_keys(to_numpy(asu_groups(table["miller_index"], symmetry, True)[0])) == \
        miller_keys(to_numpy(asu_groups(table["miller_index"], symmetry, False)[0]))
    ok = np.isfinite(values)
    cc, n = anomalous_signal(group[ok], plus[ok], values[ok])
    threshold = 3 / np.sqrt(max(n, 1))
    logger.info("Anomalous signal: CC_ano½ = %.3f over %d Bijvoet pairs (3/√n = %.3f)",
                cc, n, threshold)
    if not anomalous and n >= 100 and cc > threshold:
        logger.warning("Warning: the data carry a significant anomalous signal (CC_ano½ "
                       "%.3f > %.3f) but Bijvoet mates were merged in the fit: rerun with "
                       "anomalous=true to keep I(+) and I(−) apart", cc, threshold)


if __name__ == "__main__":
    run(sys.argv[1:])

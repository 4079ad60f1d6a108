"""xia2.ssx with dials.factored_integrate as its integration stage (serial stills).

xia2.ssx has no plugin hooks (it runs dials.ssx_integrate in-process), so this command
composes it from three file-level stages in the working directory, in xia2's layout:

1. ``xia2.ssx workflow.steps=find_spots+index``: dials.import, the joint geometry
   refinement (``geometry_refinement/``, unless ``reference_geometry`` is given), and
   spot finding and indexing in ``batch_N/`` (``indexed.expt``, ``indexed.refl``);
2. ``dials.factored_integrate`` on every ``batch_N/indexed.*``, writing
   ``batch_N/factored.*`` and, for xia2's reducer, ``batch_N/integrated_1.{expt,refl}``
   (stale ``integrated*`` files of an earlier run there are removed first);
3. ``xia2.ssx workflow.steps=reduce``: unit-cell filtering, reindexing where the
   lattice is ambiguous, dials.scale and dials.merge, ending with xia2's merged MTZ and
   reports (``data_reduction/scale/merged.mtz``, ``dials.merge.html``,
   ``dials.scale.html``; copies in ``DataFiles/`` and ``LogFiles/``).

xia2's reducer always re-scales (a KB model per still, no error model).  The
``integrated_1.refl`` files are ``factored.refl`` without our scale columns: there, as
everywhere in our output, ``intensity.prf`` is already the full-reflection estimate
(our profile-fitted amplitude divided by our fitted partiality), which is what DIALS
means by a profile-fitted intensity (dials.scale divides only summation intensities by
the partiality).  The generated scaling PHIL sets ``reflection_selection.intensity_choice``
(``factored_xia2.intensity_choice``, default profile) and ``scaling_options.nproc``; a
``scaling.phil`` of the user is applied after it.  Our own scale factors stay in
``batch_N/factored.refl``, which ``dials.merge`` merges as they are.

Accepts every parameter of xia2.ssx (``-c`` lists them) plus dials.factored_integrate's
under ``factored.`` (its ``nproc`` and ``d_min`` are xia2's; no ``mp.method=mpi``).
Debian's DIALS has no Eigen, so unless a ``geometry_refinement.phil`` is given the joint
refinement uses the dense LevMar engine.

Examples::

  dials.factored_xia2_ssx directory=images space_group=P212121 \\
      unit_cell=40,50,60,90,90,90 factored.beam.bandwidth=0.002 multiprocessing.nproc=2
  dials.factored_xia2_ssx template=images/image_#####.cbf space_group=P212121 \\
      unit_cell=40,50,60,90,90,90 reference_geometry=geometry_refinement/refined.expt
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
from pathlib import Path

import iotbx.phil
import libtbx.phil
from dials.util import Sorry, log, show_mail_handle_errors
from dials.util.options import ArgumentParser
from libtbx import Auto
from libtbx.introspection import number_of_processors

from dials_factored.command_line import factored_integrate
from dials_factored.programs import run_program

try:
    from xia2.Modules.SSX.xia2_ssx import full_phil_str as XIA2_SSX_PHIL
except ImportError:  # xia2 is optional: scripts/install.sh installs it when vendored
    XIA2_SSX_PHIL = None

logger = logging.getLogger("dials.factored_xia2_ssx")

#: dials.factored_integrate parameters that this command sets itself (it runs each batch
#: with nproc forked processes, not under MPI).
_OWN_INTEGRATE_PARAMETERS = ("nproc", "d_min", "output", "mp")
#: The joint geometry refinement without Eigen (xia2 asks for SparseLevMar).
DENSE_REFINEMENT_PHIL = """refinement.refinery.engine = LevMar
refinement.parameterisation.sparse = False
"""
#: Files the reduction must leave (relative to the working directory).
REDUCTION_OUTPUTS = ("data_reduction/scale/merged.mtz", "data_reduction/scale/dials.merge.html",
                     "DataFiles/merged.mtz")
#: Columns of our scaled output that would be taken for starting values by dials.scale.
SCALE_COLUMNS = ("inverse_scale_factor", "inverse_scale_factor_variance",
                 "intensity.scale.value", "intensity.scale.variance")

_integrate_scope = iotbx.phil.parse("")
_integrate_scope.objects = [o for o in factored_integrate.phil_scope.objects
                            if o.name not in _OWN_INTEGRATE_PARAMETERS]

_own_phil = """
factored_xia2 {
  intensity_choice = *profile sum combine
    .type = choice
    .help = "The intensities xia2's dials.scale re-scales and merges: profile (our"
            "intensity.prf: the profile-fitted amplitude over our fitted partiality), sum (the"
            "foreground sum, divided by the partiality by dials.scale) or DIALS's combination."
  log = dials.factored_xia2_ssx.log
    .type = path
    .help = "The log of this command (xia2.ssx writes its own logs)."
}
"""

phil_scope = None
if XIA2_SSX_PHIL is not None:
    phil_scope = iotbx.phil.parse(XIA2_SSX_PHIL + _own_phil)
    phil_scope.adopt(libtbx.phil.scope(name="factored", objects=_integrate_scope.objects))


@show_mail_handle_errors()
def run(args: list[str] | None = None) -> None:
    if phil_scope is None:
        raise Sorry("xia2 is not installed in this environment: run scripts/install.sh with "
                    "../shared/vendor/xia2-3.12.0-min.tar.gz present (README, 'Using it from "
                    "xia2')")
    parser = ArgumentParser(
        usage="dials.factored_xia2_ssx template=images_#####.cbf space_group=x unit_cell=y "
              "[factored.beam.bandwidth=b] [options]",
        phil=phil_scope,
        epilog=__doc__,
        read_experiments=False,
        read_reflections=False,
        check_format=False,
    )
    params, options = parser.parse_args(args=args, show_diff_phil=False)
    if not (params.image or params.template or params.directory):
        parser.print_help()
        return
    log.config(verbosity=options.verbose, logfile=params.factored_xia2.log)
    from dials.util.version import dials_version

    logger.info(dials_version())
    working = phil_scope.format(python_object=params)
    diff = phil_scope.fetch_diff(source=working).as_str()
    if diff:
        logger.info("The following parameters have been modified:\n%s", diff)
    if params.multiprocessing.nproc is Auto:
        params.multiprocessing.nproc = number_of_processors(return_value_if_unknown=1)
    try:
        run_stages(Path.cwd(), params, working)
    except RuntimeError as e:
        raise Sorry(str(e)) from None


def run_stages(workdir: Path, params, working: iotbx.phil.scope) -> None:
    """The three stages in ``workdir``; a failure raises RuntimeError naming the program."""
    nproc = params.multiprocessing.nproc
    xia2_args = _xia2_arguments(workdir, params, working)
    refine_args = []
    if params.reference_geometry is None and params.geometry_refinement.phil is None \
            and not _has_eigen():
        (workdir / "dials.factored_xia2_ssx.refine.phil").write_text(DENSE_REFINEMENT_PHIL)
        refine_args = ["geometry_refinement.phil=dials.factored_xia2_ssx.refine.phil"]

    logger.info("\n1/3 xia2.ssx workflow.steps=find_spots+index (nproc=%d)", nproc)
    log_path, wall_time = run_program(
        "xia2.ssx", [*xia2_args, *refine_args, "workflow.steps=find_spots+index"],
        workdir, log_dir=workdir / "dials.factored_xia2_ssx.index")
    if not (params.space_group and params.indexing.unit_cell):
        logger.info("xia2.ssx assessed the crystals (assess_crystals/, %s); rerun with "
                    "space_group= and unit_cell= to integrate", log_path)
        return
    batches = [b for b in sorted(workdir.glob("batch_*"), key=_batch_number)
               if _n_experiments(b / "indexed.expt")]
    if not batches:
        raise RuntimeError(f"xia2.ssx indexed nothing (no batch_*/indexed.expt with crystals): "
                           f"{_last_error(log_path)} (log: {log_path})")
    logger.info("    %s indexed in %.0f s", ", ".join(
        f"{b.name}: {_n_experiments(b / 'indexed.expt')} crystals" for b in batches),
        wall_time)

    logger.info("\n2/3 dials.factored_integrate on %d batch(es) (nproc=%d)", len(batches), nproc)
    integrate_phil = _integrate_scope.fetch_diff(
        source=_integrate_scope.format(python_object=params.factored)).as_str()
    d_min = [f"d_min={params.d_min}"] if params.d_min else []
    for batch in batches:
        (batch / "factored_integrate.phil").write_text(integrate_phil)
        _, wall_time = run_program(
            "dials.factored_integrate",
            ["indexed.expt", "indexed.refl", "factored_integrate.phil", f"nproc={nproc}", *d_min],
            batch, expect=["factored.expt", "factored.refl"])
        n = write_for_xia2(batch)
        logger.info("    %s: %d reflections integrated in %.0f s", batch.name, n, wall_time)

    logger.info("\n3/3 xia2.ssx workflow.steps=reduce")
    scaling_phil = workdir / "dials.factored_xia2_ssx.scaling.phil"
    user_scaling = Path(params.scaling.phil).read_text() if params.scaling.phil else ""
    scaling_phil.write_text(
        f"reflection_selection.intensity_choice = {params.factored_xia2.intensity_choice}\n"
        f"scaling_options.nproc = {nproc}\n{user_scaling}")
    reference = params.reference_geometry or workdir / "geometry_refinement" / "refined.expt"
    log_path, _ = run_program(
        "xia2.ssx", [*xia2_args, f"reference_geometry={Path(reference).resolve()}",
                     f"scaling.phil={scaling_phil}", "workflow.steps=reduce"],
        workdir, log_dir=workdir / "dials.factored_xia2_ssx.reduce", expect=REDUCTION_OUTPUTS)
    _copy_into_xia2_folders(workdir, batches)
    logger.info("%s", _reduction_summary(log_path))
    logger.info("Merged MTZ: %s; report: %s", workdir / REDUCTION_OUTPUTS[0],
                workdir / REDUCTION_OUTPUTS[1])


def _xia2_arguments(workdir: Path, params, working: iotbx.phil.scope) -> list[str]:
    """xia2.ssx's parameters as the user set them, in a PHIL file given as the first
    argument (arguments after it override it: nproc, steps, the reduction's files)."""
    diff = iotbx.phil.parse(XIA2_SSX_PHIL).fetch_diff(source=working)
    path = workdir / "dials.factored_xia2_ssx.xia2.phil"
    path.write_text(diff.as_str())
    return [str(path), f"multiprocessing.nproc={params.multiprocessing.nproc}"]


def write_for_xia2(batch: Path) -> int:
    """``integrated_1.{expt,refl}`` in ``batch`` from our ``factored.{expt,refl}``.

    As an integration output for dials.scale: the columns as dials.factored_integrate
    wrote them (``intensity.prf`` is already the full-reflection estimate J/p, as DIALS
    means it) without our scale columns (dials.scale would start from them), and only
    reflections with a positive partiality.  Returns the number of reflections.
    """
    from dials.array_family import flex

    for stale in [*batch.glob("integrated*.expt"), *batch.glob("integrated*.refl")]:
        logger.info("    removing %s (an earlier integration)", stale)
        stale.unlink()
    table = flex.reflection_table.from_file(str(batch / "factored.refl"))
    table = table.select(table["partiality"] > 0)
    for column in SCALE_COLUMNS:
        del table[column]
    table.as_file(str(batch / "integrated_1.refl"))
    shutil.copyfile(batch / "factored.expt", batch / "integrated_1.expt")
    return len(table)


def _has_eigen() -> bool:
    """Whether DIALS's sparse refinement engine (which needs Eigen) is available."""
    try:
        from scitbx.examples.bevington import non_linear_ls_eigen_wrapper  # noqa: F401
    except ImportError:
        return False
    return True


def _batch_number(path: Path) -> int:
    return int(path.name.split("_")[-1])


def _n_experiments(path: Path) -> int:
    """Number of experiments in an .expt file (0 when it is absent)."""
    if not path.is_file():
        return 0
    from dxtbx.model.experiment_list import ExperimentListFactory

    return len(ExperimentListFactory.from_json_file(str(path), check_format=False))


def _last_error(log_path: Path) -> str:
    """The last line of a xia2 log that reports an error, else its last line."""
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"(Error|Unable|No )", ln)]
    return (errors or lines or ["(empty log)"])[-1]


def _copy_into_xia2_folders(workdir: Path, batches: list[Path]) -> None:
    """Our integrated files into DataFiles/ and our logs into LogFiles/, named as xia2
    names its own (``integrated_1_batch_1.expt``)."""
    for batch in batches:
        for name, folder in (("integrated_1.expt", "DataFiles"), ("integrated_1.refl", "DataFiles"),
                             ("dials.factored_integrate.log", "LogFiles"),
                             ("dials.factored_integrate.html", "LogFiles")):
            source = batch / name
            if source.is_file():
                stem, suffix = name.rsplit(".", 1)
                shutil.copyfile(source, workdir / folder / f"{stem}_{batch.name}.{suffix}")


def _reduction_summary(log_path: Path) -> str:
    """xia2's merging statistics table from the reduction's log."""
    lines = log_path.read_text(errors="replace").splitlines()
    start = next((i for i, ln in enumerate(lines) if "crystals scaled in space group" in ln), 0)
    end = next((i for i, ln in enumerate(lines) if ln.startswith("Total unique")), len(lines) - 1)
    return "\n".join(lines[start:end + 1])


if __name__ == "__main__":
    run(sys.argv[1:])

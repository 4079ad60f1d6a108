"""Checks of the user's input, each failing with one clear sentence (no traceback).

They run before the log file is opened and before any image is read, so that bad
input leaves no file behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from dials.array_family import flex
from dials.util import Sorry

from dials_factored.arrays import to_numpy

#: Columns the indexed reflection table must have, and their flex types.
REQUIRED_COLUMNS = {"id": flex.int, "miller_index": flex.miller_index}


#: Parameters that divide or enter a logarithm, so must be > 0 (None: not given), and why.
POSITIVE_PARAMETERS = {
    "detector.gain": "pixel values are divided by it",
    "partiality.r0": "R0 is fitted on a log scale",
    "partiality.mosaic": "η is fitted on a log scale",
    "partiality.log_r0_prior_sigma": "the prior divides by its σ",
    "partiality.log_mosaic_prior_sigma": "the prior divides by its σ",
    "profile.r1": "R1 is fitted on a log scale",
    "profile.mosaicity": "the mosaicity is fitted on a log scale",
    "profile.smoothness": "the prior divides by its σ",
    "scale.b_prior_sigma": "the prior divides by its σ",
    "scale.smoothness.log_g": "the prior divides by its σ",
    "scale.smoothness.b": "the prior divides by its σ",
    "refinement.orientation_prior_sigma": "the prior divides by its σ",
}


def check_parameters(params) -> None:
    """Every parameter of ``POSITIVE_PARAMETERS`` that is given must be > 0."""
    for path, reason in POSITIVE_PARAMETERS.items():
        value = params
        for name in path.split("."):
            value = getattr(value, name)
        if value is not None and not value > 0:
            raise Sorry(f"{path}={value:g} must be positive ({reason})")


def check_experiments(experiments, files=()) -> None:
    """``files``: the .expt files given (named when they hold no experiment)."""
    if len(experiments) == 0:
        if files:
            raise Sorry(f"the experiment list {', '.join(files)} holds no experiments: pass "
                        "an indexed or refined .expt file")
        raise Sorry("no experiments were given: pass an indexed or refined .expt file")
    for i, expt in enumerate(experiments):
        if expt.crystal is None:
            raise Sorry(f"experiment {i} has no crystal model: index the data first "
                        "(dials.index or dials.ssx_index)")
        if expt.imageset is None:
            raise Sorry(f"experiment {i} has no images attached")
        if expt.detector is None or expt.beam is None:
            raise Sorry(f"experiment {i} lacks a beam or detector model")
    groups = sorted({e.crystal.get_space_group().type().lookup_symbol() for e in experiments})
    if len(groups) > 1:
        raise Sorry(f"the experiments have different space groups ({', '.join(groups)}): "
                    "reindex them to one")


def check_reflections(reflections, experiments) -> None:
    """The indexed table must belong to these experiments."""
    if reflections is None:
        return
    if len(reflections) == 0:
        raise Sorry("the reflection table is empty")
    _check_columns(reflections)
    ids = np.unique(to_numpy(reflections["id"]))
    ids = ids[ids != -1]
    if len(ids) == 0:
        raise Sorry("the reflection table has no indexed reflections (all id = -1)")
    orphans = ids[(ids < 0) | (ids >= len(experiments))]
    if len(orphans):
        raise Sorry(f"the reflection table refers to experiment id(s) {_few(orphans)} but "
                    f"only {len(experiments)} experiment(s) were given (ids 0-"
                    f"{len(experiments) - 1}): the .refl does not belong to this .expt")
    _check_identifiers(reflections, experiments, ids)


def _check_columns(reflections) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in reflections]
    if missing:
        raise Sorry(f"the reflection table lacks required column(s): {', '.join(missing)} "
                    "(give the indexed .refl from dials.index, dials.refine or dials.ssx_index)")
    for column, kind in REQUIRED_COLUMNS.items():
        if not isinstance(reflections[column], kind):
            raise Sorry(f"the reflection table column {column} has the wrong type "
                        f"({type(reflections[column]).__name__}, expected {kind.__name__})")


def _check_identifiers(reflections, experiments, ids) -> None:
    """Every used id maps to the identifier of the experiment with that index."""
    expt_ids = [e.identifier for e in experiments]
    if not any(expt_ids):
        return
    table_ids = dict(reflections.experiment_identifiers())
    if not table_ids:
        raise Sorry("the reflection table has no experiment identifiers, so its reflections "
                    "cannot be matched to the experiments: give the .refl written together "
                    "with this .expt")
    for i in ids.tolist():
        if table_ids.get(i) != expt_ids[i]:
            raise Sorry(f"experiment identifiers do not match: reflection id {i} is "
                        f"'{table_ids.get(i, '(none)')}' but experiment {i} is "
                        f"'{expt_ids[i]}': the .refl does not belong to this .expt")


def _few(values, n: int = 5) -> str:
    text = ", ".join(str(v) for v in values[:n])
    return text + (", ..." if len(values) > n else "")


def check_outputs(outputs, inputs) -> None:
    """Output paths: not an input, not a directory, not repeated, in a writable directory."""
    from dials_factored.output import check_paths

    outputs = [p for p in outputs if p]
    check_paths(outputs, inputs)
    seen = {}
    for out in outputs:
        path = Path(out).resolve()
        if path.is_dir():
            raise Sorry(f"output {out} is a directory; give a file name")
        if path in seen:
            raise Sorry(f"outputs {seen[path]} and {out} are the same file; give distinct names")
        seen[path] = out


def check_scratch(directory: str | None) -> None:
    """The directory for the temporary pixel store (None: the system's) must be writable."""
    if directory and not (os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK)):
        raise Sorry(f"output.scratch {directory} is not a writable directory")


def input_paths(params, experiments) -> list[str]:
    """Every file the command reads: .expt, .refl, the reference and the images."""
    paths = [i.filename for i in params.input.experiments + params.input.reflections]
    if params.reference:
        paths.append(params.reference)
    for imageset in experiments.imagesets():
        paths.extend(imageset.paths())
    return list(dict.fromkeys(paths))

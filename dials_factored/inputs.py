"""Checks of the user's input, each failing with one clear sentence (no traceback)."""

from __future__ import annotations

from dials.util import Sorry


def check_experiments(experiments) -> None:
    if len(experiments) == 0:
        raise Sorry("no experiments were given: pass an indexed or refined .expt file")
    for i, expt in enumerate(experiments):
        if expt.crystal is None:
            raise Sorry(f"experiment {i} has no crystal model: index the data first "
                        "(dials.index or dials.ssx_index)")
        if expt.imageset is None:
            raise Sorry(f"experiment {i} has no images attached")
        if expt.detector is None or expt.beam is None:
            raise Sorry(f"experiment {i} lacks a beam or detector model")


def check_reflections(reflections, experiments) -> None:
    """The indexed table must belong to these experiments."""
    if reflections is None:
        return
    if len(reflections) == 0:
        raise Sorry("the reflection table is empty")
    missing = [c for c in ("id", "miller_index") if c not in reflections]
    if missing:
        raise Sorry(f"the reflection table lacks required column(s): {', '.join(missing)}")
    ids = set(reflections["id"]) - {-1}
    if not ids:
        raise Sorry("the reflection table has no indexed reflections (all id = -1)")
    if max(ids) >= len(experiments) or min(ids) < 0:
        raise Sorry(f"the reflection table refers to experiment ids {sorted(ids)[:5]}... "
                    f"but only {len(experiments)} experiments were given")
    table_ids = dict(reflections.experiment_identifiers())
    expt_ids = {i: e.identifier for i, e in enumerate(experiments)}
    for i, ident in table_ids.items():
        if i in expt_ids and expt_ids[i] and ident != expt_ids[i]:
            raise Sorry(f"experiment identifiers do not match: reflection id {i} is "
                        f"'{ident}' but experiment {i} is '{expt_ids[i]}'")

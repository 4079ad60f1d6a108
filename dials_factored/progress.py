"""Progress lines in the log, about every 10 % of a long loop (DIALS style)."""

from __future__ import annotations

import logging


def progress_printer(logger: logging.Logger, verb: str):
    """A callback ``show(done, total)`` that logs "  <verb> done/total images"."""
    state = {"last": -1}

    def show(done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth != state["last"] or done == total:
            state["last"] = tenth
            logger.info("  %s %d/%d images", verb, done, total)

    return show

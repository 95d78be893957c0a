"""The log file of a run directory, ``DIR/run.log``.

What a user reads on the screen is one line per problem (:mod:`benchlab.messages`).
The full text behind such a line, a library's error of several lines (torch's
page of advice when a file is not plain tensors) or what a damaged file held, is
logged at DEBUG level and kept here, with every other record benchlab logs while
it works on the directory, each stamped with its time. The file is created by the
first record, so a run that logged nothing has none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LOG_NAME", "run_log"]

LOG_NAME = "run.log"


class _LogFile(logging.FileHandler):
    """A file handler that never prints its own failures (a full disk) on the screen."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass


@contextmanager
def run_log(directory: Path) -> Iterator[Path]:
    """Keep what the ``benchlab`` loggers log, details included, in ``directory/run.log``."""
    path = Path(directory) / LOG_NAME
    handler = _LogFile(path, encoding="utf-8", delay=True)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("benchlab")
    before = logger.level
    if logger.getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(before)

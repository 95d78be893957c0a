"""benchlab from Python (a notebook, a script): :func:`run` a suite, :func:`open` a
finished run.

``run`` goes the way ``benchlab run`` goes: the suite is read and validated with
the same ``--set`` overrides, the output directory claimed with the same checks,
the jobs run by the same runner and the report drawn; a problem is raised as an
exception carrying the line the command prints (:class:`benchlab.suite.SuiteError`
with one line per problem, a :class:`ValueError` otherwise).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchlab.runview import Run

__all__ = ["Run", "open", "run"]

log = logging.getLogger("benchlab")


def run(suite: str | Path, *, set: Mapping[str, Any] | Sequence[str] | None = None,  # noqa: A002
        out: str | Path | None = None, device: str = "auto", executor: str = "local",
        workers: int | None = None, scheduler: str | None = None, registry=None) -> Run:
    """Run ``suite`` (a YAML file) and return the finished :class:`Run`.

    ``set``: overrides, ``{"train.runs": 2}`` or ``["train.runs=2"]`` (the CLI's
    ``--set``: dotted paths, list items by index). ``out``: a new or empty
    directory (default ``results/<suite>/<UTC time>/``). ``device``: ``auto``,
    ``cpu`` or ``cuda``. ``executor="dask"`` runs the jobs on a Dask cluster:
    ``workers`` local processes, or the running cluster at ``scheduler``.
    ``registry``: the components to use (default: every installed plugin).
    """
    from benchlab.outdir import claim, claim_new
    from benchlab.plugins import default_registry
    from benchlab.report import render
    from benchlab.runner import default_output_dir, run_suite
    from benchlab.suite import load_suite

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {device!r}")
    if executor not in ("local", "dask"):
        raise ValueError(f"executor: expected 'local' or 'dask', got {executor!r}")
    if executor == "local" and (workers or scheduler):
        raise ValueError("workers and scheduler apply to executor='dask' only")
    registry = registry if registry is not None else default_registry()
    loaded = load_suite(str(suite), registry, overrides(set))
    where, held = (claim(Path(out), f"out={out}") if out is not None
                   else claim_new(default_output_dir(loaded)))
    try:
        make = None
        if executor == "dask":
            from benchlab.executors.dask import DaskExecutor

            make = DaskExecutor.factory(device, scheduler=scheduler, workers=workers)
        try:
            outcome = run_suite(loaded, registry, where, device=device, executor=make)
        except KeyboardInterrupt:
            log.warning("interrupted; the finished jobs are kept in %s. Continue with: "
                        "benchlab run --resume %s", where, where)
            raise
        render(where)
    finally:
        held.release()
    if outcome.failed:
        log.warning("%d job(s) failed (see run.failed and %s)", len(outcome.failed),
                    where / "summary.md")
    return Run(where, failed=outcome.failed)


def open(path: str | Path) -> Run:  # noqa: A001 - benchlab.open(DIR), as the README reads
    """The finished (or interrupted) run in the directory ``path``."""
    return Run.open(path)


def overrides(values: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """``{"train.runs": 2}`` as the CLI's ``--set`` strings (``train.runs=2``); values
    are written as JSON, which YAML reads back as the same value."""
    if values is None:
        return []
    if isinstance(values, str):
        return [values]
    if not isinstance(values, Mapping):
        return [str(v) for v in values]
    found = []
    for path, value in values.items():
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            raise ValueError(f"set: {path}: expected a value YAML can hold (a number, a "
                             f"string, a list, a mapping, None), got {type(value).__name__}"
                             ) from None
        found.append(f"{path}={text}")
    return found

"""The result sinks of a run (``benchlab run --track NAME``), and what happens when one fails.

:class:`Trackers` opens the sinks a run names and hands each event
(:mod:`benchlab.sinks`) to every one of them. **A failing tracker never costs the
benchmark**: the run directory is written before any sink hears of a job, and a
sink that raises is told nothing more in this run. One line says so, naming the
command that catches it up (``--resume`` tells a sink every job finished earlier,
and the sink logs those it has not logged); the full text goes to ``run.log``.
The run goes on and its exit status is that of its jobs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from pathlib import Path
from traceback import format_exception
from typing import Any

import yaml

from benchlab.jobs import Job
from benchlab.messages import describe
from benchlab.plugins import Registry
from benchlab.sinks import TRACKING_DIR, JobRecorded, RunEnded, RunStarted, Sink, SinkState
from benchlab.store import JobRecord, RunStore

__all__ = ["TrackerError", "Trackers", "job_recorded", "run_files", "tracked_before"]

log = logging.getLogger("benchlab.tracking")
Log = Callable[[str], None]

#: files of a run directory a sink keeps as artifacts at the end
_ARTIFACT_SUFFIXES = (".md", ".png", ".csv", ".yaml", ".json", ".log")


class TrackerError(ValueError):
    """A sink named by ``--track`` cannot be opened (unknown, bad parameters, library missing)."""


class Trackers:
    """The open sinks of one run; each event goes to every sink still on."""

    def __init__(self, sinks: Sequence[tuple[str, Sink]] = (), *, directory: Path | None = None,
                 log: Log = print):
        self._sinks = list(sinks)
        self._names = [name for name, _ in self._sinks]
        self.directory = directory
        self.failed: dict[str, str] = {}  # sink name -> the one line said when it failed
        self._log = log

    @classmethod
    def open(cls, names: Iterable[str], registry: Registry, run_dir: Path, *,
             log: Log = print) -> Trackers:
        """Open the sinks ``names`` for the run in ``run_dir``; TrackerError when one cannot."""
        sinks = []
        for name in dict.fromkeys(names):
            if not registry.has("sink", name):
                raise TrackerError(f"--track {name}: {registry.missing_message('sink', name)}")
            component = registry.get("sink", name)
            try:
                params = component.validate_params({})
                sinks.append((name, component.obj(params, SinkState(run_dir, name))))
            except ImportError as exc:  # a library the sink needs: how to install it
                raise TrackerError(f"--track {name}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - bad parameters or any refusal of the sink
                raise TrackerError(f"--track {name}: {describe(exc)}") from None
        return cls(sinks, directory=Path(run_dir), log=log)

    def __bool__(self) -> bool:
        return bool(self._sinks)

    @property
    def names(self) -> list[str]:
        """Every sink opened, those switched off since included."""
        return list(self._names)

    # -- events -----------------------------------------------------------------
    def begin(self, store: RunStore, suite_name: str, resumed: bool, jobs: Sequence[Job],
              done: set[str]) -> None:
        """The run starts: tell the sinks, then (``--resume``) the jobs finished earlier."""
        if not self:
            return
        suite = yaml.safe_load((store.root / "suite.yaml").read_text()) or {}
        self._tell("start", RunStarted(suite_name, store.root, suite, resumed,
                                       tuple(job.id for job in jobs)))
        records = store.records() if done else {}
        for job in jobs:
            if job.id in done and job.id in records and self:
                rows = _plain(store.collect([job.id], {job.id}).to_dict("records"))
                self.record(job_recorded(job, records[job.id], rows, earlier=True))

    def record(self, job: JobRecorded) -> None:
        self._tell("record", job)

    def end(self, run: RunEnded) -> None:
        self._tell("end", run)

    def _tell(self, method: str, event: Any) -> None:
        for name, sink in list(self._sinks):
            try:
                getattr(sink, method)(event)
            except Exception as exc:  # noqa: BLE001 - a tracker must not cost the benchmark
                self._sinks.remove((name, sink))
                where = f" {self.directory}" if self.directory else ""
                line = (f"tracker {name} failed ({describe(exc)}); it is off for the rest "
                        f"of this run, whose results are kept in{where} as usual; "
                        f"`benchlab run --resume{where} --track {name}` logs what it missed")
                self.failed[name] = line
                self._log(line)
                log.debug("tracker %s failed in %s:\n%s", name, method,
                          "".join(format_exception(type(exc), exc, exc.__traceback__)))


def job_recorded(job: Job, record: JobRecord, rows: Iterable[dict[str, Any]],
                 earlier: bool = False) -> JobRecorded:
    """The event of a job recorded in the run directory."""
    spec = {k: v for k, v in job.to_dict().items()
            if k not in ("id", "kind", "train_job", "attack_job")}
    values = {f.name: getattr(record, f.name) for f in fields(JobRecord)}
    return JobRecorded(**values, spec=spec, rows=tuple(_plain(rows)), earlier=earlier)


def _plain(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with empty cells (NaN as pandas reads them) as None."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v)
             for k, v in row.items()} for row in rows]


def run_files(directory: Path) -> tuple[Path, ...]:
    """The tables, summary, plots and settings of a run directory (its top level)."""
    return tuple(sorted(p for p in Path(directory).iterdir()
                        if p.is_file() and p.suffix in _ARTIFACT_SUFFIXES
                        and not p.name.startswith(".")))


def tracked_before(directory: Path) -> list[str]:
    """The sinks that kept a record in ``directory`` (a run tracked before)."""
    folder = Path(directory) / TRACKING_DIR
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []

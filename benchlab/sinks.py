"""What a result sink (an experiment tracker) receives, and what it may keep.

A sink is a component of kind ``sink``: ``register(name, open, params=Params)``
where ``open(params, state) -> Sink``. ``benchlab run --track NAME`` opens it once
per run; the runner then tells it, in order:

``start(RunStarted)``
    the run begins, or is resumed (``resumed``): the suite as run, the job ids;
``record(JobRecorded)``
    a job was recorded in the run directory, ok or failed, with its rows (the
    lines of ``results.csv``). On ``--resume`` the jobs finished earlier are told
    again first, with ``earlier=True``: a sink logs those it has not logged yet
    (it was off, or failed, when they finished) and skips the others;
``end(RunEnded)``
    the run is over (finished, some jobs failed, or interrupted), after the
    summary and plots were written: ``files`` are the run's tables, summary and
    plots, to keep as artifacts.

``state`` is the sink's own record in the run directory
(``DIR/tracking/NAME.json``): what it saved last time (``state.data``, empty for a
new run), and ``state.save(data)`` to replace it. A sink keeps there what lets a
resumed run reattach (a tracker's run id) and which jobs it has logged, so that a
resumed run duplicates nothing. ``state.directory`` (``DIR/tracking/NAME/``) is
the sink's for any file of its own (a local store).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from benchlab.files import atomic_write_text

__all__ = ["JobRecorded", "RunEnded", "RunStarted", "Sink", "SinkState", "TRACKING_DIR"]

TRACKING_DIR = "tracking"


@dataclass(frozen=True)
class RunStarted:
    name: str  # the suite's name
    directory: Path  # the run directory
    suite: dict[str, Any]  # the suite as run (suite.yaml), defaults filled in
    resumed: bool
    jobs: tuple[str, ...]  # every job of the run, in order


@dataclass(frozen=True)
class JobRecorded:
    id: str
    kind: str  # train, attack, explain
    status: str  # ok, failed
    message: str  # why it failed ("" when ok)
    seconds: float
    where: str  # the worker, host and device it ran on
    #: the job as expanded from the suite: model, dataset, train, run, seed, attack,
    #: eps, explainer, evaluate, procedure (JSON values)
    spec: dict[str, Any]
    #: its lines of results.csv: job, model, ..., epoch, step, attack, eps, explainer,
    #: metric, value (None where empty)
    rows: tuple[dict[str, Any], ...] = ()
    earlier: bool = False  # finished in an earlier run of this directory (--resume)


@dataclass(frozen=True)
class RunEnded:
    status: Literal["finished", "failed", "interrupted"]  # failed: some job failed
    ran: int
    failed: int
    skipped: int  # done in an earlier run
    files: tuple[Path, ...] = field(default=())  # summary, tables, plots


@runtime_checkable
class Sink(Protocol):
    """An open sink: what ``open(params, state)`` returns."""

    def start(self, run: RunStarted) -> None: ...

    def record(self, job: JobRecorded) -> None: ...

    def end(self, run: RunEnded) -> None: ...


class SinkState:
    """A sink's record in the run directory, ``DIR/tracking/NAME.json``."""

    def __init__(self, run_dir: Path, name: str):
        self.path = Path(run_dir) / TRACKING_DIR / f"{name}.json"
        self.directory = Path(run_dir) / TRACKING_DIR / name
        self.data: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.path}: unreadable ({exc}); move it away to track "
                             "this run afresh") from None
        if not isinstance(data, dict):
            raise ValueError(f"{self.path}: expected a JSON object, got {type(data).__name__}")
        return data

    def save(self, data: dict[str, Any]) -> None:
        self.data = data
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(data, indent=1, sort_keys=True))

"""The worker deaths each task of the Dask executor lived through, for its failure message.

The scheduler publishes one ``remove-worker`` event per worker it loses (on its
``all`` topic) naming the tasks the worker was processing, running or queued, and
the scattered data only it held. A task is hit by the death of the worker it was
processing on ("its worker") or, when it was not there, by the death of the
worker holding one of its shared inputs (its weights). Dask reruns the first under
the same key, up to ``distributed.scheduler.allowed-failures`` times, and counts
nothing of the second; the executor resubmits the second under a new key. Counts
are kept per task, over all of its keys, so that the message of a task that
failed says what happened to it, whichever way it was retried.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

TOPIC = "all"  # the scheduler's topic of cluster-wide events


class WorkerDeaths:
    """Counts, per task, the deaths of its workers; fed by the scheduler's events.

    :meth:`on_event` runs in the client's event loop, the other methods in the
    caller's thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._task_of: dict[str, str] = {}  # Dask key -> task key
        self._inputs_of: dict[str, frozenset[str]] = {}  # Dask key -> its shared inputs' keys
        self._ran: Counter[str] = Counter()  # Dask key -> deaths of the worker processing it
        self._held: Counter[str] = Counter()  # task key -> deaths of its inputs' holder
        self._keys: dict[str, list[str]] = {}  # task key -> its Dask keys, in order
        self.lost: set[str] = set()  # keys of scattered data lost with a worker
        self.workers_lost = 0

    def watch(self, key: str, task: str, inputs: Iterable[str] = ()) -> None:
        """Count deaths for Dask ``key``, which runs ``task`` and reads ``inputs``."""
        with self._lock:
            self._task_of[key] = task
            self._inputs_of[key] = frozenset(inputs)
            self._keys.setdefault(task, []).append(key)

    def done(self, key: str) -> None:
        """Dask ``key`` has finished, one way or the other: later events cannot hit it."""
        with self._lock:
            self._task_of.pop(key, None)
            self._inputs_of.pop(key, None)

    def on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        if not isinstance(msg, dict) or msg.get("action") != "remove-worker" \
                or msg.get("expected"):
            return
        processing = {str(k) for k in msg.get("processing-tasks", ())}
        lost = {str(k) for k in msg.get("lost-scattered-tasks", ())}
        with self._lock:
            self.workers_lost += 1
            self.lost |= lost
            for key, task in self._task_of.items():
                if key in processing:
                    self._ran[key] += 1
                elif self._inputs_of[key] & lost:
                    self._held[task] += 1

    def of(self, task: str, *, killed: str | None = None, allowed: int = 0) -> tuple[int, int]:
        """(deaths of the workers ``task`` was processing on, deaths of its inputs' holders).

        ``killed``: the key Dask gave up on after ``allowed`` retries. Dask reports
        that before the event of the death that made it give up, so for that key
        the count is Dask's own: one more than it allowed.
        """
        with self._lock:
            ran = {key: self._ran[key] for key in self._keys.get(task, [])}
            held = self._held[task]
        if killed is not None:
            ran[killed] = max(ran.get(killed, 0), allowed + 1)
        return sum(ran.values()), held

    def hit(self) -> list[str]:
        """The tasks at least one worker death made run again, in the order first seen."""
        with self._lock:
            return [task for task, keys in self._keys.items()
                    if self._held[task] or any(self._ran[key] for key in keys)]

    def message(self, task: str, *, allowed: int, killed: str | None = None) -> str:
        """Why ``task`` failed: how many times its workers died, against the retries allowed."""
        ran, held = self.of(task, killed=killed, allowed=allowed)
        said = [f"its worker died {_times(ran)}"] if ran or not held else []
        if held:
            said.append(f"the worker holding its inputs died {_times(held)}")
        return (" and ".join(said)
                + f" (allowed: {allowed} {'retry' if allowed == 1 else 'retries'})")


def _times(n: int) -> str:
    return f"{n} time" if n == 1 else f"{n} times"

"""The in-process executor: tasks run one after the other, in the calling process."""

from __future__ import annotations

import time
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchlab import guards, training
from benchlab.execute import Workspace, train_config
from benchlab.executors.contract import Done, Task, run_task
from benchlab.jobs import Job
from benchlab.plugins import Registry


class LocalExecutor:
    streams_epochs = True

    def __init__(self, registry: Registry, device: torch.device, root: Path,
                 on_epoch: Callable[[str, dict[str, float]], None] | None = None,
                 on_checkpoint: Callable[[str, bytes], None] | None = None):
        self.workspace = Workspace(registry, device, root)
        self.device_type = self.workspace.device.type
        self.on_epoch = on_epoch
        self.on_checkpoint = on_checkpoint
        self._queue: deque[Task] = deque()

    def pack_size(self, job: Job) -> int:
        if self.workspace.device.type != "cpu":  # on CUDA: many runs, batched per model
            return training.runs_per_task(train_config(job), self.workspace.device)
        # one run per core, each with training.THREADS_PER_RUN intra-op threads
        return max(1, training.pack_size(train_config(job), self.workspace.device)
                   // training.THREADS_PER_RUN)

    def share(self, name: str, value: Any) -> Any:
        return value

    def release(self, name: str) -> None:
        pass

    def submit(self, task: Task) -> None:
        self._queue.append(task)

    def describe(self) -> dict[str, Any]:
        return {"executor": "local"}

    def pending(self) -> int:
        return len(self._queue)

    def next_done(self) -> Done:
        if not self._queue:
            raise LookupError("no task is pending")
        task = self._queue.popleft()
        started = time.perf_counter()
        try:
            return Done(task, run_task(task, self.workspace, self.on_epoch,
                                       self.on_checkpoint))
        except guards.ComponentError as exc:
            return Done(task, error=str(exc), seconds=time.perf_counter() - started,
                        traceback=traceback.format_exc())
        except Exception as exc:  # noqa: BLE001 - not a component's fault: fail this task only
            return Done(task, error=f"internal error: {type(exc).__name__}: {exc}",
                        seconds=time.perf_counter() - started, traceback=traceback.format_exc())

    def close(self) -> None:
        self._queue.clear()

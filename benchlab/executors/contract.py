"""The contract between the runner and an executor: tasks in, finished tasks out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from benchlab import execute
from benchlab.jobs import Job, JobKind

__all__ = ["Done", "Executor", "Task", "run_task"]


@dataclass(frozen=True)
class Task:
    """Jobs to execute together, with their inputs.

    ``inputs`` holds ``state`` (the trained weights, or an executor's handle on them
    from :meth:`Executor.share`), ``adversarial`` (an attack's product, for an
    explain job with an attack) and ``keep`` (how many adversarial images an attack
    returns); for a train task, ``checkpoints`` (job id -> the checkpoint its run
    continues from, as bytes), ``checkpoint`` (whether to hand out checkpoints)
    and ``checkpoint_every`` (steps between checkpoints inside an epoch; None: at
    the end of epochs only).
    """

    kind: JobKind
    jobs: tuple[Job, ...]
    inputs: dict[str, Any] = field(default_factory=dict)
    priority: int = 0  # lower runs first where there is a choice

    @property
    def key(self) -> str:
        return self.jobs[0].id


@dataclass
class Done:
    """A finished task: its jobs' results, or the failure that stopped all of them."""

    task: Task
    results: list[execute.JobResult] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    traceback: str = ""  # of the failure, for the job's log file


class Executor(Protocol):
    """What the runner needs from a place that runs tasks."""

    #: whether ``on_epoch`` is called as epochs finish (else only with the result)
    streams_epochs: bool
    #: the kind of device train jobs run on ("cpu", "cuda"): part of a model's identity
    device_type: str

    def pack_size(self, job: Job) -> int:
        """How many runs of ``job``'s configuration to train in one task."""

    def share(self, name: str, value: Any) -> Any:
        """A handle on ``value`` (reused by several tasks) to put in task inputs."""

    def release(self, name: str) -> None:
        """Forget a shared value no pending task needs any more."""

    def submit(self, task: Task) -> None: ...

    def next_done(self) -> Done:
        """Block until a submitted task has finished; raise LookupError if none is pending."""

    def pending(self) -> int: ...

    def describe(self) -> dict[str, Any]:
        """Where the jobs run, for environment.json."""

    def close(self) -> None:
        """Stop everything still running or queued, and let go of resources."""


def run_task(task: Task, ws: execute.Workspace,
             on_epoch: Callable[[str, dict[str, float]], None] | None = None,
             on_checkpoint: execute.OnCheckpoint | None = None) -> list[execute.JobResult]:
    """Execute ``task`` in ``ws``: the same call wherever the task runs.

    ``on_checkpoint(job_id, blob)`` receives the checkpoints of a train task's runs
    when its inputs ask for them.
    """
    inputs = task.inputs
    if task.kind == "train":
        wanted = inputs.get("checkpoint", False) and on_checkpoint is not None
        return execute.train_pack(task.jobs, ws, on_epoch, resume=inputs.get("checkpoints"),
                                  on_checkpoint=on_checkpoint if wanted else None,
                                  checkpoint_every=inputs.get("checkpoint_every"))
    (job,) = task.jobs
    if task.kind == "attack":
        return [execute.attack(job, ws, inputs["state"], inputs.get("keep", 0))]
    return [execute.explain(job, ws, inputs["state"], inputs.get("adversarial"))]

"""The Dask executor: tasks run on the workers of a Dask distributed cluster.

A ``LocalCluster`` of worker processes on this machine, or any running cluster
reached through its scheduler's address (``dask scheduler`` + ``dask worker``,
``dask-jobqueue`` on Slurm/PBS/SGE, the Kubernetes operator). Workers run the job
functions of :mod:`benchlab.execute` with their own plugin registry and data root;
weights travel to them (scattered once per model) and rows and products travel
back, so the workers need no filesystem shared with this process.

A worker process that dies while running a task is replaced and its task
rescheduled by Dask, up to ``distributed.scheduler.allowed-failures`` times; a task
whose shared inputs died with a worker is resubmitted with them scattered again, up
to ``retries`` times. After that the task's jobs fail with a message that says how
many times its workers died (``deaths.py`` counts them).

Checkpoints of training runs travel the same way as epoch records, and the client
stays the only writer: a worker keeps the latest checkpoint of each of its runs in
the scheduler's metadata (one per running job, replaced as the run goes on) and
tells the client, which writes it to the run directory. A task restarted on another
worker (after its first one died) starts from that latest checkpoint, and the
client clears it when the job is finished.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from torch import device as torch_device

from benchlab import guards
from benchlab.execute import JobResult, Workspace, resolve_device
from benchlab.executors.contract import Done, Task, run_task
from benchlab.executors.deaths import TOPIC as DEATHS_TOPIC
from benchlab.executors.deaths import WorkerDeaths
from benchlab.jobs import Job

INSTALL_HINT = "--executor dask needs Dask distributed: pip install 'benchlab[dask]'"
EPOCH_TOPIC = "benchlab-epoch"


class ExecutorError(ValueError):
    """The cluster cannot be used (not installed, not reachable): one line, exit status 2."""


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ExecutorError(INSTALL_HINT) from None
    return distributed


#: how long a LocalCluster of benchlab's waits for a lost worker's nanny to restart it
LOST_WORKER_TIMEOUT = "10 minutes"


class DaskExecutor:
    """Run tasks on a Dask cluster; the calling process stays the only writer of results.

    ``scheduler``: address of a running cluster's scheduler; without it a
    ``LocalCluster`` of ``workers`` processes (default: one per core) with one
    thread each is started here and shut down by :meth:`close`. ``retries``: how
    many times a task whose worker died is rescheduled (LocalCluster only; a
    running cluster's scheduler has its own setting), and how many times a task
    whose shared inputs were lost with a worker is resubmitted (any cluster).
    """

    streams_epochs = True

    def __init__(self, device: str = "auto", *, scheduler: str | None = None,
                 workers: int | None = None, retries: int = 2,
                 on_epoch: Callable[[str, dict[str, float]], None] | None = None,
                 on_checkpoint: Callable[[str, bytes], None] | None = None):
        distributed = _distributed()
        import dask
        from dask.utils import parse_timedelta

        self.device = device
        self.retries = retries
        self._cluster = None
        self._patience = None
        if scheduler:
            # Dask's own setting (DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT), 30 s by default
            timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"))
            where: dict[str, Any] = {"address": scheduler}
            if Path(scheduler).is_file():  # written by dask scheduler --scheduler-file
                where = {"scheduler_file": scheduler}
            else:
                try:
                    distributed.comm.resolve_address(scheduler)
                except (OSError, ValueError) as exc:
                    raise ExecutorError(f"--scheduler {scheduler}: not a reachable address "
                                        f"({exc})") from None
            try:
                self.client = distributed.Client(**where, timeout=timeout,
                                                 set_as_default=False)
            except (OSError, TimeoutError, ValueError, KeyError) as exc:
                raise ExecutorError(f"--scheduler {scheduler}: no Dask scheduler reachable "
                                    f"there within {timeout:g} s ({type(exc).__name__})"
                                    ) from None
        else:
            # A LocalCluster closes the nanny of a worker that has not come back within
            # this (15 s by default): a worker restarted after a crash that imports torch
            # on a loaded machine can take longer, and the cluster would be left with no
            # worker for good. Dask reads it when a worker goes, so it holds until close().
            self._patience = dask.config.set(
                {"distributed.deploy.lost-worker-timeout": LOST_WORKER_TIMEOUT})
            gpus = _cuda_devices() if device in ("auto", "cuda") else 0
            n = workers or gpus or os.cpu_count() or 1
            # Dask's nannies set MALLOC_TRIM_THRESHOLD_ for their workers, which makes
            # glibc hand freed activations back every step: training pays the page faults
            environ = {k: v for k, v in
                       dask.config.get("distributed.nanny.pre-spawn-environ").items()
                       if k != "MALLOC_TRIM_THRESHOLD_"}
            with self._unless_started(), \
                    dask.config.set({"distributed.scheduler.allowed-failures": retries,
                                     "distributed.nanny.pre-spawn-environ": environ}), \
                    _workers_ignore_ctrl_c():
                # ":0": any free port for the scheduler's HTTP server (8787 may be taken
                # by another cluster, and Dask warns on screen when it is). Dask's log
                # lines stay off the screen up to ERROR: a job that fails says why in
                # jobs.csv and its log file, and the shutdown after Ctrl-C logs a worker's
                # lost heartbeat with a traceback.
                self._cluster = distributed.LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True,
                    dashboard_address=":0", silence_logs=logging.CRITICAL,
                    resources={"GPU": 1} if gpus else None)
                self.client = distributed.Client(self._cluster, set_as_default=False)
            # and a worker the nanny restarts later (after a crash) ignores it too
            self.client.register_worker_callbacks(setup=_ignore_ctrl_c)
        self._as_completed = distributed.as_completed(loop=self.client.loop)
        self._tasks: dict[Any, Task] = {}
        self._shared: dict[str, Any] = {}
        self._values: dict[str, Any] = {}
        self._name_of: dict[str, str] = {}  # key of every scattering of a shared value -> name
        #: the deaths of workers each task lived through (``deaths.hit()``: tasks retried)
        self.deaths = WorkerDeaths()
        self.client.subscribe_topic(DEATHS_TOPIC, self.deaths.on_event)
        self._resubmitted: dict[str, int] = {}
        self._started: dict[Any, float] = {}
        # where this client's tasks keep their latest checkpoints, in the scheduler's metadata
        self._channel = f"benchlab-checkpoints-{uuid.uuid4().hex}"
        self._gpu = self._wants_gpu()
        self.device_type = "cuda" if self._gpu or device == "cuda" else "cpu"
        self._on_epoch, self._on_checkpoint = on_epoch, on_checkpoint
        if on_epoch is not None or on_checkpoint is not None:
            self.client.subscribe_topic(EPOCH_TOPIC, self._event)
        if on_epoch is None:
            self.streams_epochs = False

    async def _event(self, event: tuple[float, dict[str, Any]]) -> None:
        """An epoch record or a new checkpoint from a worker (in the client's event loop)."""
        message = event[1]
        if message.get("channel") not in (None, self._channel):
            return  # another client's run on the same cluster
        if "record" in message:
            if self._on_epoch is not None:
                self._on_epoch(message["job"], message["record"])
        elif message.get("checkpoint") and self._on_checkpoint is not None:
            blob = await self.client.scheduler.get_metadata(
                keys=[self._channel, message["job"]], default=None)
            if blob is not None:
                self._on_checkpoint(message["job"], blob)

    @classmethod
    def factory(cls, device: str = "auto", **options: Any) -> Callable[..., DaskExecutor]:
        """What :func:`benchlab.runner.run_suite` takes as its ``executor``."""
        def make(*, on_epoch: Callable[[str, dict[str, float]], None] | None = None,
                 on_checkpoint: Callable[[str, bytes], None] | None = None,
                 **_: Any) -> DaskExecutor:
            return cls(device, on_epoch=on_epoch, on_checkpoint=on_checkpoint, **options)
        return make

    def _wants_gpu(self) -> bool:
        """Train and attack tasks ask for a GPU when the device will be CUDA."""
        if self.device not in ("auto", "cuda"):
            return False
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        has_gpu = any(w.get("resources", {}).get("GPU", 0) > 0 for w in workers)
        if self.device == "cuda" and not has_gpu:
            self.close()
            raise ExecutorError("--device cuda: no worker of the cluster advertises a GPU "
                                "(start workers with: dask worker ... --resources GPU=1)")
        return has_gpu

    @contextmanager
    def _unless_started(self) -> Iterator[None]:
        """Undo the cluster settings if the cluster or its client fails to start."""
        try:
            yield
        except BaseException:
            if self._cluster is not None:
                self._cluster.close()
            if self._patience is not None:
                self._patience.__exit__(None, None, None)
            raise

    def workers(self) -> dict[str, dict[str, Any]]:
        return self.client.scheduler_info(n_workers=-1)["workers"]

    def pack_size(self, job: Job) -> int:
        # One run per worker thread, as the trainer packs one run per core.
        threads = [w.get("nthreads", 1) for w in self.workers().values()]
        return max(1, min(threads, default=1))

    def share(self, name: str, value: Any) -> Any:
        if name not in self._shared:
            # a list, so that the dict of tensors travels as one piece
            (future,) = self.client.scatter([value], hash=False)
            self._shared[name], self._values[name] = future, value
            self._name_of[future.key] = name
        return self._shared[name]

    def release(self, name: str) -> None:
        future = self._shared.pop(name, None)
        self._values.pop(name, None)
        self._name_of = {k: n for k, n in self._name_of.items() if n != name}
        if future is not None:
            future.release()

    def _fresh(self, inputs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """``inputs`` with every shared value's live handle, and whether one was replaced.

        Scattered data lives on one worker only; when that worker dies, it is gone and
        is scattered again. A handle given out before that (the runner keeps them) is
        replaced by the new one.
        """
        fresh, replaced = dict(inputs), False
        for key, value in inputs.items():
            name = self._name_of.get(value.key) if isinstance(value, _distributed().Future) \
                else None
            if name is None:
                continue
            current = self._shared[name]
            if current.status != "finished" or current.key in self.deaths.lost:
                del self._shared[name]
                current = self.share(name, self._values[name])
            if current is not value:
                fresh[key], replaced = current, True
        return fresh, replaced

    def _reshare_lost(self, task: Task) -> Task | None:
        """``task`` with its lost shared inputs scattered again, or None if none was lost."""
        inputs, replaced = self._fresh(task.inputs)
        return Task(task.kind, task.jobs, inputs, task.priority) if replaced else None

    def submit(self, task: Task) -> None:
        resources = {"GPU": 1} if self._gpu and task.kind in ("train", "attack") else None
        inputs, replaced = self._fresh(task.inputs)
        if replaced:
            task = Task(task.kind, task.jobs, inputs, task.priority)
        key = f"{task.key}-{uuid.uuid4().hex[:8]}"
        self.deaths.watch(key, task.key, (v.key for v in inputs.values()
                                          if isinstance(v, _distributed().Future)))
        if task.kind == "train":
            inputs = {**inputs, "channel": self._channel}
        future = self.client.submit(
            execute_on_worker, task.kind, [job.to_dict() for job in task.jobs], inputs,
            self.device, key=key, resources=resources, priority=-task.priority, pure=False)
        self._tasks[future] = task
        self._started[future] = time.perf_counter()
        self._as_completed.add(future)

    def describe(self) -> dict[str, Any]:
        info = self.client.scheduler_info(n_workers=-1)
        return {"executor": "dask", "scheduler": info.get("address"),
                "workers": {address: {"host": w.get("host"), "nthreads": w.get("nthreads"),
                                      "resources": w.get("resources", {})}
                            for address, w in info["workers"].items()}}

    def pending(self) -> int:
        return len(self._tasks)

    def _next_finished(self) -> Done | None:
        if not self._tasks:
            raise LookupError("no task is pending")
        distributed = _distributed()
        future = next(self._as_completed)
        task = self._tasks.pop(future)
        seconds = time.perf_counter() - self._started.pop(future)
        try:
            results: list[JobResult] = future.result()
        except guards.ComponentError as exc:
            trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            return Done(task, error=str(exc), seconds=seconds, traceback=trace)
        except distributed.KilledWorker as exc:
            died = self.deaths.message(task.key, allowed=exc.allowed_failures,
                                       killed=future.key)
            return Done(task, error=f"{died}; the last was {exc.last_worker.address}",
                        seconds=seconds)
        except Exception as exc:
            again = self._reshare_lost(task)
            if again is None:
                # Not a component's fault, as in the local executor: fail this task only.
                trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                return Done(task, error=f"internal error: {type(exc).__name__}: {exc}",
                            seconds=seconds, traceback=trace)
            if self._resubmitted.get(task.key, 0) >= self.retries:
                return Done(task, error=self.deaths.message(task.key, allowed=self.retries),
                            seconds=seconds)
            self._resubmitted[task.key] = self._resubmitted.get(task.key, 0) + 1
            self.submit(again)
            return None
        finally:
            self.deaths.done(future.key)
            future.release()
        return Done(task, results)

    def next_done(self) -> Done:
        """The next finished task; a task whose shared inputs were lost with a worker is
        scattered again and resubmitted (up to ``retries`` times) without coming back."""
        while True:
            done = self._next_finished()
            if done is not None:
                if done.task.kind == "train":
                    for job in done.task.jobs:  # its checkpoints are of no use now
                        self.client.set_metadata([self._channel, job.id], None)
                return done

    def close(self) -> None:
        futures = list(self._tasks)
        self._tasks.clear()
        try:
            if futures:
                self.client.cancel(futures, force=True)
            for future in self._shared.values():
                future.release()
            self._shared.clear()
            self.client.set_metadata([self._channel], None)
        finally:
            # first: the scheduler would publish this client's removal to this client
            with suppress(_distributed().client.ClosedClientError):
                self.client.unsubscribe_topic(DEATHS_TOPIC)
            self.client.close()
            if self._cluster is not None:
                self._cluster.close()
            if self._patience is not None:
                self._patience.__exit__(None, None, None)
                self._patience = None


@contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Start worker processes with SIGINT ignored (they inherit it), then restore it.

    Ctrl-C in a terminal reaches the whole foreground process group: without this,
    every worker of a LocalCluster dies of it at once, printing its traceback, while
    the client is still cancelling tasks. With it the client alone is interrupted
    and shuts the cluster down in order. Outside the main thread (where signal
    handlers cannot be set) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _ignore_ctrl_c() -> None:
    """Run on every worker of a LocalCluster benchlab started, including restarted ones.

    SIGTERM too: a batch system may send it to every process of a job, and the
    client, which stops on it as on Ctrl-C, shuts the workers down in order.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# --------------------------------------------------------------------------- on the worker

_WORKSPACES: dict[str, Workspace] = {}


def _workspace(device: str) -> Workspace:
    """This worker process's workspace: its plugins, its device, its data root."""
    if device not in _WORKSPACES:
        from benchlab.data import data_root
        from benchlab.plugins import default_registry

        resolved = resolve_device(device)
        if resolved.type == "cuda" and resolved.index is None:
            # the workers of a LocalCluster share this machine's GPUs: worker i takes GPU i
            from distributed import get_worker

            name = get_worker().name
            if isinstance(name, int) and _cuda_devices() > 1:
                resolved = torch_device(f"cuda:{name % _cuda_devices()}")
        _WORKSPACES[device] = Workspace(default_registry(), resolved, data_root())
    return _WORKSPACES[device]


def execute_on_worker(kind: str, jobs: list[dict[str, Any]], inputs: dict[str, Any],
                      device: str) -> list[JobResult]:
    """Run one task on the worker this is called on (the task as plain data)."""
    from distributed import get_worker

    worker = get_worker()
    inputs = dict(inputs)
    channel = inputs.pop("channel", None)

    def on_epoch(job_id: str, record: dict[str, float]) -> None:
        worker.log_event(EPOCH_TOPIC, {"job": job_id, "record": record, "channel": channel})

    on_checkpoint = None
    if channel is not None:
        from distributed import get_client

        client = get_client()
        # a retry on this worker: the checkpoints the task's earlier attempts left
        latest = {job["id"]: client.get_metadata([channel, job["id"]], default=None)
                  for job in jobs}
        latest = {job_id: blob for job_id, blob in latest.items() if blob is not None}
        if latest:
            inputs["checkpoints"] = {**inputs.get("checkpoints", {}), **latest}

        def on_checkpoint(job_id: str, blob: bytes) -> None:
            client.set_metadata([channel, job_id], blob)
            worker.log_event(EPOCH_TOPIC, {"job": job_id, "checkpoint": True,
                                           "channel": channel})

    task = Task(kind, tuple(Job.from_dict(j) for j in jobs), inputs)  # type: ignore[arg-type]
    results = run_task(task, _workspace(device), on_epoch, on_checkpoint)
    for result in results:
        result.where["worker"] = worker.address
    return results

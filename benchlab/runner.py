"""Scheduling a suite's jobs and storing what each one measured.

The runner expands a suite into jobs, skips those already finished (``--resume``),
serves trained models from the model cache, and hands the rest to an executor as
tasks (several seeds of one configuration train together when the trainer says
that pays off) as soon as the jobs they depend on have finished. It is the only
writer of the run directory and of the model cache: executors hand back rows and
products (weights, adversarial images, grid data) as values. A component that
raises or breaks its contract (:mod:`benchlab.guards`) fails only the jobs that
use it and the jobs that depend on those.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from benchlab.cache import ModelCache
from benchlab.data import data_root
from benchlab.environment import environment
from benchlab.execute import JobResult, split_records, train_rows
from benchlab.executors import Done, Executor, Task
from benchlab.files import atomic_write_text
from benchlab.identity import expected_state, model_identity, model_key
from benchlab.jobs import Job, expand
from benchlab.plugins import Registry
from benchlab.store import JobRecord, RunStore
from benchlab.suite import Suite

__all__ = ["Outcome", "default_output_dir", "resolve_device", "run_suite"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (use auto or cpu)")
    return torch.device(name)


def default_output_dir(suite: Suite, base: Path = Path("results")) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return base / suite.name / stamp


@dataclass
class Outcome:
    out_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def run_suite(suite: Suite, registry: Registry, out_dir: Path, *, device: str = "auto",
              resume: bool = False, cache: ModelCache | None = None,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
              executor: Callable[..., Executor] | None = None) -> Outcome:
    """Run every job of ``suite`` not yet finished in ``out_dir``; return what happened.

    ``executor(registry=, device=, root=, on_epoch=)`` makes the executor the jobs
    run on (default: :class:`~benchlab.executors.local.LocalExecutor`, in this process).
    Another executor resolves ``device`` where it runs the jobs.
    """
    dev = resolve_device(device) if executor is None else device
    if executor is None:
        from benchlab.executors.local import LocalExecutor

        executor = LocalExecutor
    bar = tqdm(total=0, unit="step", desc=suite.name, disable=None, file=sys.stderr,
               dynamic_ncols=True)
    try:
        # first: a cluster that cannot be reached leaves no run directory behind
        ex = executor(registry=registry, device=dev, root=data_root(),
                      on_epoch=lambda job_id, record: bar.update(1))
    except BaseException:
        bar.close()
        raise
    try:
        return _run(suite, registry, Path(out_dir), dev, resume, cache or ModelCache(), log,
                    ex, bar)
    finally:
        ex.close()
        bar.close()


def _run(suite: Suite, registry: Registry, out_dir: Path, dev: torch.device | str,
         resume: bool, cache: ModelCache, log: Callable[[str], None], ex: Executor,
         bar: Any) -> Outcome:
    out_dir.mkdir(parents=True, exist_ok=True)
    store = RunStore(out_dir)
    atomic_write_text(out_dir / "suite.yaml", suite.to_yaml())
    env_path = out_dir / "environment.json"
    env = {**environment(dev, suite, registry), **ex.describe()}
    if resume and env_path.exists():
        previous = json.loads(env_path.read_text())
        env = {**previous, "resumed": [*previous.get("resumed", []), env["started"]]}
    atomic_write_text(env_path, json.dumps(env, indent=2))

    jobs = expand(suite)
    cache = cache or ModelCache()
    done: set[str] = set()
    if resume:
        done, damaged = store.verified()
        for job_id, problem in damaged.items():
            log(f"damaged job {job_id}: {problem}; running it again")
            store.forget(job_id)
        done = _with_models(jobs, done, cache, registry, log, ex.device_type)
    else:
        for job in jobs:
            store.forget(job.id)
    # results.csv and jobs.csv restart from the finished jobs; each job then adds its lines
    order = [job.id for job in jobs]
    store.write_results(order, jobs=done)
    for failure in registry.failures:
        log(f"warning: plugin {failure.plugin} ({failure.distribution}) was not loaded: "
            f"{failure.error}")
    pending = [job for job in jobs if job.id not in done]
    bar.total = sum(int(j.train["epochs"]) if j.kind == "train" else 1 for j in pending)
    bar.refresh()
    runner = _Scheduler(jobs, done, store, cache, registry, bar, ex.device_type)
    try:
        runner.run(ex)
    finally:
        store.write_results(runner.order)
    return Outcome(out_dir, ran=runner.ran, skipped=[j.id for j in jobs if j.id in done],
                   failed=runner.failed)


def _with_models(jobs: list[Job], done: set[str], cache: ModelCache, registry: Registry,
                 log: Callable[[str], None], device_type: str = "cpu") -> set[str]:
    """``done`` less the finished train jobs whose model left the cache (or was damaged)
    while jobs still to run need it: those train again, with the same seed."""
    needed = {dep for job in jobs if job.id not in done for dep in job.deps}
    done = set(done)
    for job in jobs:
        if job.kind == "train" and job.id in done and job.id in needed:
            key = model_key(model_identity(job, registry, device_type))
            if cache.load(key, like=expected_state(job, registry)) is None:
                log(f"{job.id}: its trained model is not in the model cache {cache.root}; "
                    "training it again")
                done.discard(job.id)
    return done


class _Scheduler:
    """Which jobs are ready, what they are given, and where their results are written."""

    def __init__(self, jobs: list[Job], done: set[str], store: RunStore, cache: ModelCache,
                 registry: Registry, bar: Any, device_type: str):
        self.jobs = {job.id: job for job in jobs}
        self.order = [job.id for job in jobs]
        self.rank = {job_id: i for i, job_id in enumerate(self.order)}
        self.store, self.cache, self.registry, self.bar = store, cache, registry, bar
        self.device_type = device_type
        self.resolved: dict[str, bool] = {job_id: True for job_id in done}  # id -> ok
        self.ran: list[str] = []
        self.failed: dict[str, str] = {}
        self.waiting = [job for job in jobs if job.id not in done and job.kind != "train"]
        # how many not yet finished jobs read each job's product
        self.readers: dict[str, int] = {}
        for job in self.waiting:
            for dep in job.deps:
                self.readers[dep] = self.readers.get(dep, 0) + 1
        # attack job id -> how many of its adversarial images explain jobs will read
        self.keep: dict[str, int] = {}
        for job in jobs:
            if job.kind == "explain" and job.attack is not None:
                attack_id = job.deps[-1]
                self.keep[attack_id] = max(self.keep.get(attack_id, 0),
                                           job.evaluate["explain_size"])
        self.shared: dict[str, Any] = {}

    # -- the loop --------------------------------------------------------------
    def run(self, ex: Executor) -> None:
        self._submit_training(ex)
        self._submit_ready(ex)
        while ex.pending():
            finished = ex.next_done()
            if finished.resubmitted:
                continue
            self._collect(finished, ex)
            self._submit_ready(ex)

    def _submit_training(self, ex: Executor) -> None:
        groups: dict[tuple[Any, ...], list[Job]] = {}
        for job in self.jobs.values():
            if job.kind == "train" and job.id not in self.resolved:
                groups.setdefault(job.pack_key(), []).append(job)
        for group in groups.values():
            size = ex.pack_size(group[0])
            for start in range(0, len(group), size):
                chunk = group[start:start + size]
                todo = []
                for job in chunk:
                    cached = self._cached(job)
                    if cached is None:
                        todo.append(job)
                        continue
                    self.bar.update(len(split_records(cached[1])[0]))
                    self._finish(job, JobResult(job.id, train_rows(job, cached[1])))
                if todo:
                    self._start(ex, Task("train", tuple(todo), priority=self._rank(todo[0])))

    def _submit_ready(self, ex: Executor) -> None:
        still = []
        for job in self.waiting:
            if not all(dep in self.resolved for dep in job.deps):
                still.append(job)
                continue
            failed_dep = next((d for d in job.deps if not self.resolved[d]), None)
            if failed_dep is not None:
                self._finish(job, JobResult(job.id, error=f"not run: {failed_dep} failed"))
                self.bar.update(1)
                continue
            try:
                inputs = self._inputs(job, ex)
            except _MissingInput as exc:
                self._finish(job, JobResult(job.id, error=str(exc)))
                self.bar.update(1)
                continue
            self._start(ex, Task(job.kind, (job,), inputs, priority=self._rank(job)))
        self.waiting = still

    def _start(self, ex: Executor, task: Task) -> None:
        ex.submit(task)

    def _rank(self, job: Job) -> int:
        return self.rank[job.id]

    # -- inputs and products ---------------------------------------------------
    def _key(self, job: Job) -> str:
        """Where the trained model of ``job`` lives in the model cache."""
        return model_key(model_identity(job, self.registry, self.device_type))

    def _inputs(self, job: Job, ex: Executor) -> dict[str, Any]:
        train_id = job.deps[0]
        if train_id not in self.shared:
            cached = self._cached(job)
            if cached is None:
                raise _MissingInput(
                    f"no trained model '{job.model.key}' (run {job.run}) in the model cache "
                    f"{self.cache.root}; run the suite again without --resume to train it")
            self.shared[train_id] = ex.share(train_id, cached[0])
        inputs: dict[str, Any] = {"state": self.shared[train_id]}
        if job.kind == "attack":
            inputs["keep"] = self.keep.get(job.id, 0)
        elif job.attack is not None:
            attack_id = job.deps[-1]
            problem = self.store.damage(attack_id)
            try:
                if problem is not None:
                    raise ValueError(problem)
                inputs["adversarial"] = torch.load(self.store.artifact(attack_id),
                                                   map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any unreadable file fails this job only
                raise _MissingInput(f"adversarial images of {attack_id} cannot be read "
                                    f"({exc}); resume the run to redo {attack_id}") from exc
        return inputs

    def _cached(self, job: Job) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]] | None:
        return self.cache.load(self._key(job),
                               like=expected_state(job, self.registry))

    def _collect(self, finished: Done, ex: Executor) -> None:
        task = finished.task
        models = list(dict.fromkeys(job.model.key for job in task.jobs))
        if finished.error is not None and task.kind == "train" and len(models) > 1:
            # A pack of several models failed as a whole: train each model's runs on
            # their own, so that one model's failure fails its jobs only.
            for key in models:
                jobs = tuple(job for job in task.jobs if job.model.key == key)
                self._start(ex, Task("train", jobs, priority=self._rank(jobs[0])))
            return
        if finished.error is not None:
            for job in task.jobs:
                self._finish(job, JobResult(job.id, error=finished.error,
                                            seconds=finished.seconds), finished.traceback)
        for result in finished.results:
            job = self.jobs[result.job_id]
            if result.ok and job.kind == "train":
                assert result.product is not None
                ident = model_identity(job, self.registry, self.device_type)
                self.cache.save(model_key(ident), result.product["state_dict"],
                                result.product["epochs"], ident)
                if not ex.streams_epochs:
                    self.bar.update(len(split_records(result.product["epochs"])[0]))
            elif result.ok and result.product is not None:
                self.store.artifacts_dir.mkdir(parents=True, exist_ok=True)
                torch.save(result.product, self.store.artifact(job.id))
            self._finish(job, result)
            if job.kind != "train":
                self.bar.update(1)
        for job in task.jobs:
            for dep in job.deps:
                self.readers[dep] -= 1
                if self.readers[dep] == 0 and dep in self.shared:
                    ex.release(dep)
                    del self.shared[dep]

    def _finish(self, job: Job, result: JobResult, traceback: str = "") -> None:
        status = "ok" if result.ok else "failed"
        message = result.error or ""
        log_note = ""
        if traceback:
            log = self.store.save_log(job.id, f"{job.id}: {message}\n\n{traceback}")
            log_note = f" (traceback: {log})"
        where = _where(result.where)
        self.store.save_job(JobRecord(job.id, job.kind, status, message,
                                      round(result.seconds, 3), where),
                            result.rows if result.ok else [])
        self.resolved[job.id] = result.ok
        if result.ok:
            self.ran.append(job.id)
        else:
            self.failed[job.id] = message
            self.bar.write(f"FAILED {job.id}: {message}{log_note}", file=sys.stderr)
        if self.bar.disable and result.ok and result.where:
            # no progress bar (stderr is a file or a pipe): one line per finished job
            print(f"done {job.id} on {where}: {_headline(result.rows)} "
                  f"in {result.seconds:.1f} s", file=sys.stderr, flush=True)


def _where(where: dict[str, str]) -> str:
    if not where:
        return ""
    return (f"{where.get('worker', 'local')} on {where.get('host', '?')} "
            f"(pid {where.get('pid', '?')}), {where.get('device', '?')}")


_HEADLINE = ("test_acc", "accuracy", "cam_similarity")


def _headline(rows: list[dict[str, Any]]) -> str:
    """A job's headline number: its last test accuracy, attacked accuracy or similarity."""
    for metric in _HEADLINE:
        values = [r for r in rows if r["metric"] == metric]
        if values:
            last = values[-1]
            at = f" at eps {last['eps']:g}" if last.get("eps") else ""
            return f"{metric} {last['value']:.4f}{at}"
    return f"{len(rows)} rows"


class _MissingInput(Exception):
    """A job's input (weights, adversarial images) from an earlier run is missing."""

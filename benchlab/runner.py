"""Running a suite: its stages, in order, each handing the next what it needs.

1. **prepare** the run directory: the suite as run (``suite.yaml``) and the machine
   (``environment.json``);
2. **plan**: expand the suite into jobs (:mod:`benchlab.jobs`), keep the jobs already
   finished (``--resume``: their files verify, and the models later jobs need are
   still in the model cache), and hand the rest to the :mod:`benchlab.scheduler`;
3. **loop**: serve trained models from the model cache, submit every job that is
   ready to the executor (several seeds of one configuration train together when
   the executor says that pays off), and store what each finished task gives back;
   a suite whose ``train.runs`` is a range then makes a **look**
   (:mod:`benchlab.looks`, kept in ``looks.json``) and, while the claim is
   undecided, adds the next look's runs and loops again;
4. **store** the consolidated tables (``results.csv``, ``jobs.csv``), also when the
   loop is interrupted.

From plan to store, what benchlab logs is also kept in the directory's ``run.log``
(:mod:`benchlab.runlog`), with the full text behind each one-line warning.

The runner is the only writer of the run directory (:mod:`benchlab.store`) and of
the model cache (:mod:`benchlab.cache`): executors hand back rows and products
(weights, adversarial images, grid data) as values. A component that raises or
breaks its contract (:mod:`benchlab.guards`) fails only the jobs that use it and
the jobs that depend on those.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from traceback import format_exception
from typing import Any

import torch

from benchlab.cache import ModelCache
from benchlab.checkpoints import CheckpointDamaged, Checkpoints
from benchlab.data import data_root
from benchlab.environment import bf16_warning, environment
from benchlab.execute import JobResult, resolve_device, split_records, train_rows
from benchlab.executors import Done, Executor, Task
from benchlab.files import atomic_write_text
from benchlab.identity import expected_state, model_identity, model_key
from benchlab.jobs import Job, expand
from benchlab.looks import design_of, look, pairs_of, read_looks, settings_of, write_looks
from benchlab.plugins import Registry
from benchlab.progress import Progress, describe_where
from benchlab.runlog import run_log
from benchlab.scheduler import Ready, Scheduler
from benchlab.store import JobRecord, RunStore, read_results
from benchlab.suite import Suite
from benchlab.tracking import Trackers, job_recorded

__all__ = ["Outcome", "default_output_dir", "resolve_device", "run_suite"]

Log = Callable[[str], None]


def default_output_dir(suite: Suite, base: Path = Path("results")) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return base / suite.name / stamp


@dataclass
class Outcome:
    out_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    #: train jobs of ``ran`` whose trained model came from the model cache (not trained)
    reused: list[str] = field(default_factory=list)


def run_suite(suite: Suite, registry: Registry, out_dir: Path, *, device: str = "auto",
              resume: bool = False, cache: ModelCache | None = None,
              log: Log = lambda s: print(s, file=sys.stderr),
              executor: Callable[..., Executor] | None = None,
              checkpoint: bool = True, checkpoint_every: int | None = None,
              trackers: Trackers | None = None) -> Outcome:
    """Run every job of ``suite`` not yet finished in ``out_dir``; return what happened.

    ``executor(registry=, device=, root=, on_epoch=, on_checkpoint=)`` makes the
    executor the jobs run on (default: :class:`~benchlab.executors.local.LocalExecutor`,
    in this process). Another executor resolves ``device`` where it runs the jobs.

    With ``checkpoint`` (the default) every train job keeps a checkpoint of each run
    in ``out_dir`` at the end of every epoch, and every ``checkpoint_every``
    optimisation steps when that is set; an interrupted train job continues from it.

    ``trackers`` (:mod:`benchlab.tracking`) are told as the run starts and as each
    job is recorded; the caller tells them its end, after the report.
    """
    dev = resolve_device(device) if executor is None else device
    if executor is None:
        from benchlab.executors.local import LocalExecutor

        executor = LocalExecutor
    progress = Progress(suite.name)
    run: _Run | None = None

    def checkpointed(job_id: str, blob: bytes) -> None:
        if run is not None:
            run.checkpointed(job_id, blob)

    try:
        # first: a cluster that cannot be reached leaves no run directory behind
        ex = executor(registry=registry, device=dev, root=data_root(),
                      on_epoch=lambda job_id, record: progress.advance(),
                      on_checkpoint=checkpointed)
    except BaseException:
        progress.close()
        raise
    try:
        run = _Run(suite, registry, RunStore(Path(out_dir)), cache or ModelCache(), ex,
                   progress, log, trackers or Trackers())
        run.checkpoint, run.checkpoint_every = checkpoint, checkpoint_every
        run.prepare(dev, resume)
        with run_log(run.store.root):
            run.plan(resume)
            try:
                run.loop()
            finally:
                run.store_tables()
        return run.outcome()
    finally:
        ex.close()
        progress.close()


class _MissingInput(Exception):
    """A job's input (weights, adversarial images) from an earlier run is missing.

    ``detail``: the full text behind the one-line message, kept in the job's log file.
    """

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


class _Run:
    """One run of a suite, stage by stage (see the module's docstring)."""

    def __init__(self, suite: Suite, registry: Registry, store: RunStore, cache: ModelCache,
                 ex: Executor, progress: Progress, log: Log, trackers: Trackers):
        self.suite, self.registry, self.store, self.cache = suite, registry, store, cache
        self.ex, self.progress, self.log, self.trackers = ex, progress, log, trackers
        self.jobs: list[Job] = []
        self.done: set[str] = set()
        self.scheduler = Scheduler([], [])
        self.shared: dict[str, Any] = {}  # train job id -> the executor's handle on weights
        self.ran: list[str] = []
        self.failed: dict[str, str] = {}
        self.reused: list[str] = []
        self.checkpoints = Checkpoints(store.root)
        self.checkpoint, self.checkpoint_every = True, None
        self._keys: dict[str, str] = {}  # train job id -> model key
        self.design = design_of(suite)  # None: a fixed number of runs
        self.looks: list[dict[str, Any]] = []
        self.planned: int | None = None  # runs per model of the coming look

    # -- 1. prepare -----------------------------------------------------------
    def prepare(self, device: torch.device | str, resume: bool) -> None:
        root = self.store.root
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / "suite.yaml", self.suite.to_yaml())
        env_path = root / "environment.json"
        env = {**environment(device, self.suite, self.registry), **self.ex.describe()}
        if resume and env_path.exists():
            previous = json.loads(env_path.read_text())
            env = {**previous, "resumed": [*previous.get("resumed", []), env["started"]]}
        atomic_write_text(env_path, json.dumps(env, indent=2))
        if isinstance(device, torch.device) and (warning := bf16_warning(self.suite, device)):
            self.log(warning)

    # -- 2. plan --------------------------------------------------------------
    def plan(self, resume: bool) -> None:
        self._plan_looks(resume)
        self.jobs = expand(self.suite, self.planned)
        if resume:
            done, damaged = self.store.verified()
            for job_id, problem in damaged.items():
                self.log(f"damaged job {job_id}: {problem}; running it again")
                self.store.forget(job_id)
            self.done = self._with_models(done)
        else:
            for job in expand(self.suite, self.suite.train.max_runs):
                self.store.forget(job.id)
        # results.csv and jobs.csv restart from the finished jobs; each job then adds its lines
        self.store.write_results([job.id for job in self.jobs], jobs=self.done)
        for failure in self.registry.failures:
            self.log(f"warning: plugin {failure.plugin} ({failure.distribution}) was not "
                     f"loaded: {failure.error}")
        self.trackers.begin(self.store, self.suite.name, resume, self.jobs, self.done)
        self.progress.expect(job for job in self.jobs if job.id not in self.done)
        self.scheduler = Scheduler(self.jobs, self.done)
        for job_id in self.checkpoints.jobs():
            if job_id not in self.scheduler.jobs or job_id in self.done:
                self.checkpoints.remove(job_id)  # of a job finished, or no longer in the suite

    def _plan_looks(self, resume: bool) -> None:
        """The runs per model to train now: a range's ``min``, or on ``--resume`` those
        of the look the recorded looks asked for (those looks are kept)."""
        if self.design is None:
            return
        self.looks = read_looks(self.store.root) if resume else []
        self.planned = self.design.min_runs
        if self.looks:
            last = self.looks[-1]
            self.planned = last["next"] or last["planned"]
        self.looks = [x for x in self.looks if x["planned"] < self.planned]
        write_looks(self.store.root, self.design, self.looks)

    def _with_models(self, done: set[str]) -> set[str]:
        """``done`` less the finished train jobs whose model left the cache (or was damaged)
        while jobs still to run need it: those train again, with the same seed."""
        needed = {dep for job in self.jobs if job.id not in done for dep in job.deps}
        done = set(done)
        for job in self.jobs:
            if job.kind == "train" and job.id in done and job.id in needed \
                    and self._cached(job) is None:
                self.log(f"{job.id}: its trained model is not in the model cache "
                         f"{self.cache.root}; training it again")
                done.discard(job.id)
        return done

    # -- 3. loop --------------------------------------------------------------
    def loop(self) -> None:
        while True:
            self._drain()
            if self.design is None or self.planned is None or not self._look():
                return

    def _look(self) -> bool:
        """Test the claim with the runs so far; True when it adds the next look's runs."""
        assert self.design is not None and self.planned is not None
        self.store.write_results(self.scheduler.order)
        pairs, robust_pairs = pairs_of(self.suite)
        made = look(self.design, read_results(self.store.root), settings_of(self.suite),
                    self.planned, self.looks, pairs, robust_pairs)
        self.looks.append(made)
        write_looks(self.store.root, self.design, self.looks)
        decided = "; ".join(f"{p['part']}: {p['decision']}" for p in made["parts"])
        self.log(f"look {made['look']} at {self.planned} runs per model: "
                 f"{decided or 'nothing to test'}")
        if made["next"] is None:
            self.log(f"stopping: {made['why']}")
            return False
        self.log(f"adding runs {self.planned}-{made['next'] - 1} of each model "
                 f"({made['why']})")
        self.planned = made["next"]
        self.jobs = expand(self.suite, self.planned)
        self.progress.more(self.scheduler.extend(self.jobs))
        return True

    def _drain(self) -> None:
        before = len(self.reused)
        def needs_training(job: Job) -> bool:
            return not self._from_cache(job) and \
                not self.scheduler.wait_for_twin(self._model_key(job), job)

        for pack in list(self.scheduler.training_packs(self.ex.pack_size, needs_training)):
            self._submit_training(tuple(pack))
        if len(self.reused) > before:
            reused = self.reused[before:]
            shown = ", ".join(reused[:4]) + (", ..." if len(reused) > 4 else "")
            self.log(f"reused {len(reused)} trained model(s) from the model cache "
                     f"{self.cache.root} instead of training them ({shown})")
        self._submit_ready()
        while self.ex.pending():
            self._collect(self.ex.next_done())
            self._submit_ready()

    def _submit_training(self, jobs: tuple[Job, ...]) -> None:
        inputs: dict[str, Any] = {"checkpoint": self.checkpoint,
                                  "checkpoint_every": self.checkpoint_every}
        resume = {}
        for job in jobs:
            if (found := self._checkpoint_of(job)) is not None:
                resume[job.id] = found
        if resume:
            inputs["checkpoints"] = resume
        self.ex.submit(Task("train", jobs, inputs, priority=self.scheduler.priority(jobs[0])))

    def _checkpoint_of(self, job: Job) -> bytes | None:
        """The verified checkpoint job ``job`` continues from, or None (said when damaged)."""
        try:
            found = self.checkpoints.load(job.id, self._model_key(job))
        except CheckpointDamaged as exc:
            self.log(f"damaged checkpoint of {job.id}: {exc}; training it from its first epoch")
            self.checkpoints.remove(job.id)
            return None
        if found is None:
            return None
        blob, at = found
        within = f", step {at['batch']} of epoch {at['epoch'] + 1}" if at["batch"] else ""
        self.log(f"{job.id}: continuing from its checkpoint after epoch {at['epoch']} of "
                 f"{job.train.epochs}{within}")
        self.progress.advance(at["epoch"])
        return blob

    def checkpointed(self, job_id: str, blob: bytes) -> None:
        """Keep the latest checkpoint of a train job still running (any thread)."""
        job = self.scheduler.jobs.get(job_id)
        if job is not None and job.kind == "train" and job_id not in self.scheduler.resolved:
            self.checkpoints.save(job_id, blob, self._model_key(job))

    def _model_key(self, job: Job) -> str:
        if job.id not in self._keys:
            self._keys[job.id] = model_key(model_identity(job, self.registry,
                                                          self.ex.device_type))
        return self._keys[job.id]

    def _twins_of(self, job: Job) -> None:
        """Finish the jobs that waited for train job ``job``: from the model cache it
        filled, or, when it failed, by training them after all."""
        for twin in self.scheduler.twins_of(self._model_key(job)):
            if self._from_cache(twin):
                self.log(f"{twin.id}: the same model as {job.id} (only their labels "
                         "differ), trained once")
            else:
                self._submit_training((twin,))

    def _from_cache(self, job: Job) -> bool:
        """Finish train job ``job`` from the model cache, if its model is there."""
        cached = self._cached(job)
        if cached is None:
            return False
        self.progress.advance(len(split_records(cached[1])[0]))
        self.reused.append(job.id)
        self._finish(job, JobResult(job.id, train_rows(job, cached[1]),
                                    where={"reused": "model cache"}))
        return True

    def _submit_ready(self) -> None:
        # until nothing more is ready: a job not run makes its own dependants ready
        while batch := self.scheduler.ready():
            self._submit(batch)

    def _submit(self, batch: list[Ready]) -> None:
        for ready in batch:
            job = ready.job
            if ready.blocked_by is not None:
                self._finish(job, JobResult(job.id, error=f"not run: {ready.blocked_by} failed"))
                self.progress.advance()
                continue
            try:
                inputs = self._inputs(job)
            except _MissingInput as exc:
                self._finish(job, JobResult(job.id, error=str(exc)), exc.detail)
                self.progress.advance()
                continue
            self.ex.submit(Task(job.kind, (job,), inputs,
                                priority=self.scheduler.priority(job)))

    def _inputs(self, job: Job) -> dict[str, Any]:
        train_id = job.train_job
        assert train_id is not None
        if train_id not in self.shared:
            cached = self._cached(job)
            if cached is None:
                raise _MissingInput(
                    f"no trained model '{job.model.key}' (run {job.run}) in the model cache "
                    f"{self.cache.root}; run the suite again without --resume to train it")
            self.shared[train_id] = self.ex.share(train_id, cached[0])
        inputs: dict[str, Any] = {"state": self.shared[train_id]}
        if job.kind == "attack":
            inputs["keep"] = self.scheduler.keep.get(job.id, 0)
        elif job.attack_job is not None:
            try:
                inputs["adversarial"] = self.store.load_artifact(job.attack_job)
            except ValueError as exc:
                raise _MissingInput(f"adversarial images of {job.attack_job} cannot be read "
                                    f"({exc}); resume the run to redo {job.attack_job}",
                                    "".join(format_exception(type(exc), exc, exc.__traceback__))
                                    ) from exc
        return inputs

    def _cached(self, job: Job) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]] | None:
        """The trained model of ``job`` (weights, records) from the model cache, or None."""
        key = model_key(model_identity(job, self.registry, self.ex.device_type))
        return self.cache.load(key, like=expected_state(job, self.registry))

    def _collect(self, finished: Done) -> None:
        task = finished.task
        models = list(dict.fromkeys(job.model.key for job in task.jobs))
        if finished.error is not None and task.kind == "train" and len(models) > 1:
            # A pack of several models failed as a whole: train each model's runs on
            # their own, so that one model's failure fails its jobs only.
            for key in models:
                self._submit_training(tuple(job for job in task.jobs if job.model.key == key))
            return
        if finished.error is not None:
            for job in task.jobs:
                self._finish(job, JobResult(job.id, error=finished.error,
                                            seconds=finished.seconds), finished.traceback)
        for result in finished.results:
            job = self.scheduler.jobs[result.job_id]
            if result.ok and job.kind == "train":
                assert result.product is not None
                ident = model_identity(job, self.registry, self.ex.device_type)
                self.cache.save(model_key(ident), result.product["state_dict"],
                                result.product["epochs"], ident)
                if not self.ex.streams_epochs:
                    self.progress.advance(len(split_records(result.product["epochs"])[0]))
            elif result.ok and result.product is not None:
                self.store.save_artifact(job.id, result.product)
            self._finish(job, result)
            if job.kind != "train":
                self.progress.advance()
        for job in task.jobs:
            if job.kind == "train":
                self._twins_of(job)
        for dep in self.scheduler.read_by(task.jobs):
            if dep in self.shared:
                self.ex.release(dep)
                del self.shared[dep]

    def _finish(self, job: Job, result: JobResult, traceback: str = "") -> None:
        message = result.error or ""
        log_path = None
        if traceback:
            log_path = self.store.save_log(job.id, f"{job.id}: {message}\n\n{traceback}")
        record = JobRecord(job.id, job.kind, "ok" if result.ok else "failed", message,
                           round(result.seconds, 3), describe_where(result.where))
        self.store.save_job(record, result.rows if result.ok else [])
        self.trackers.record(job_recorded(job, record, result.rows if result.ok else []))
        self.scheduler.resolve(job.id, result.ok)
        if job.kind == "train":
            self.checkpoints.remove(job.id)  # its model is in the cache, or it failed
        if result.ok:
            self.ran.append(job.id)
            self.progress.finished(job, result.rows, result.seconds, result.where)
        else:
            self.failed[job.id] = message
            self.progress.failed(job, message, str(log_path) if log_path else None)

    # -- 4. store -------------------------------------------------------------
    def store_tables(self) -> None:
        self.store.write_results(self.scheduler.order)
        self.checkpoints.tidy()

    def outcome(self) -> Outcome:
        return Outcome(self.store.root, ran=self.ran,
                       skipped=[j.id for j in self.jobs if j.id in self.done],
                       failed=self.failed, reused=self.reused)

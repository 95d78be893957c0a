"""Which jobs can run now: the bookkeeping of a run, with no I/O.

The scheduler knows every job of a run, which are finished (ok or failed), which
wait for the jobs they depend on, and how many not yet finished jobs still read
each job's product, so a shared input (a model's weights on a cluster) can be let
go as soon as nobody needs it. It decides nothing about files, caches or where a
job runs: the runner asks it what is ready and tells it what finished.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from benchlab.jobs import Job

__all__ = ["Ready", "Scheduler"]


@dataclass(frozen=True)
class Ready:
    """A job whose dependencies are all resolved; ``blocked_by`` names one that failed."""

    job: Job
    blocked_by: str | None = None


class Scheduler:
    """The state of one run's jobs: finished, waiting, and who still reads what."""

    def __init__(self, jobs: Iterable[Job], done: Iterable[str]):
        self.jobs: dict[str, Job] = {}
        self.order: list[str] = []
        self.rank: dict[str, int] = {}
        self.resolved: dict[str, bool] = {job_id: True for job_id in done}  # id -> ok
        self._waiting: list[Job] = []
        # how many not yet finished jobs read each job's product
        self._readers: dict[str, int] = {}
        # attack job id -> how many of its adversarial images explain jobs will read
        self.keep: dict[str, int] = {}
        # model key -> train jobs of the same model as one being trained (two entries
        # differing only in their labels): they wait for it and take its model
        self._twins: dict[str, list[Job]] = {}
        self.extend(jobs)

    def extend(self, jobs: Iterable[Job]) -> list[Job]:
        """Take ``jobs`` as the run's jobs, in their order: those not known yet are added
        (more runs, after a look of a sequential run); returns the added ones."""
        jobs = list(jobs)
        added = [job for job in jobs if job.id not in self.jobs]
        self.jobs.update((job.id, job) for job in added)
        self.order = [job.id for job in jobs] + [i for i in self.order
                                                 if i not in {j.id for j in jobs}]
        self.rank = {job_id: i for i, job_id in enumerate(self.order)}
        waiting = [job for job in added if job.id not in self.resolved and job.kind != "train"]
        self._waiting += waiting
        for job in waiting:
            for dep in job.deps:
                self._readers[dep] = self._readers.get(dep, 0) + 1
        for job in added:
            if job.kind == "explain" and job.attack_job is not None:
                self.keep[job.attack_job] = max(self.keep.get(job.attack_job, 0),
                                                job.evaluation.explain_size)
        return added

    def training_packs(self, pack_size: Callable[[Job], int],
                       needs_training: Callable[[Job], bool] = lambda job: True
                       ) -> Iterator[list[Job]]:
        """The train jobs still to run, in packs of one configuration (:meth:`Job.pack_key`)
        of at most ``pack_size(first job)`` runs, in job order.

        ``needs_training(job)`` is asked of every job, in job order, before any pack is
        made; the jobs it says no to (a model found in the cache) take no place in a
        pack, so the others fill whole packs."""
        groups: dict[tuple[Any, ...], list[Job]] = {}
        for job in list(self.jobs.values()):
            if job.kind == "train" and job.id not in self.resolved and needs_training(job):
                groups.setdefault(job.pack_key(), []).append(job)
        for group in groups.values():
            size = pack_size(group[0])
            for start in range(0, len(group), size):
                yield group[start:start + size]

    def wait_for_twin(self, model_key: str, job: Job) -> bool:
        """Whether a train job submitted before trains model ``model_key`` too: then
        train job ``job`` waits for it (:meth:`twins_of`) instead of training it again."""
        if model_key in self._twins:
            self._twins[model_key].append(job)
            return True
        self._twins[model_key] = []
        return False

    def twins_of(self, model_key: str) -> list[Job]:
        """The train jobs that waited for the one training model ``model_key``."""
        return self._twins.pop(model_key, [])

    def ready(self) -> list[Ready]:
        """The waiting jobs whose dependencies are resolved (taken off the waiting list)."""
        ready, still = [], []
        for job in self._waiting:
            if not all(dep in self.resolved for dep in job.deps):
                still.append(job)
                continue
            ready.append(Ready(job, next((d for d in job.deps if not self.resolved[d]), None)))
        self._waiting = still
        return ready

    def resolve(self, job_id: str, ok: bool) -> None:
        self.resolved[job_id] = ok

    def read_by(self, jobs: Iterable[Job]) -> list[str]:
        """``jobs`` have finished reading their inputs: the dependencies nobody reads now."""
        unread = []
        for job in jobs:
            for dep in job.deps:
                self._readers[dep] -= 1
                if self._readers[dep] == 0:
                    unread.append(dep)
        return unread

    def priority(self, job: Job) -> int:
        """Lower runs first where an executor has a choice: the suite's order."""
        return self.rank[job.id]

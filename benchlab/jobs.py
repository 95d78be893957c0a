"""Expanding a validated suite into independent jobs.

A job is a small, JSON-serialisable unit of work with everything it needs named in
its own fields: component names and validated parameters, the dataset slice, the
training configuration and the seed. Nothing in a job points at live objects, so
another executor (a process pool, a cluster) could take jobs as they are.

Three kinds, run in this order:

``train``    one model trained with one seed (writes a checkpoint to the model cache)
``attack``   one attack, at its list of epsilons, on one trained model
``explain``  one explainer on the clean and the attacked images of one attack job
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from benchlab.suite import Suite

JobKind = Literal["train", "attack", "explain"]


@dataclass(frozen=True)
class ComponentSpec:
    key: str  # the suite's label for it (its name unless relabelled)
    name: str  # registered component name
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """Which dataset, and how many of the first samples of each split (None: all)."""

    name: str
    train_size: int | None
    test_size: int | None

    def size(self, which: str) -> int | None:
        return self.train_size if which == "train" else self.test_size


@dataclass(frozen=True)
class TrainSpec:
    """How a model is trained: the suite's ``train`` section less ``runs`` and ``seed``."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    momentum: float
    test_batch_size: int
    precision: str
    eval_every: int | None  # learning curves: every N steps (None: off)
    eval_size: int | None  # ... on the first N test images
    lr_schedule: str = "constant"  # or "cyclic"; a default: job files written before it


@dataclass(frozen=True)
class EvalSpec:
    """How a trained model is attacked and explained (the suite's ``evaluate`` section,
    with the sizes of this job's attack or explainer)."""

    test_size: int | None  # images attacked
    explain_size: int  # images explained
    count: int  # images in a grid figure
    runs: int | None  # runs attacked and explained (None: all)
    batch_size: int


@dataclass(frozen=True)
class Job:
    id: str
    kind: JobKind
    model: ComponentSpec
    dataset: DatasetSpec
    train: TrainSpec
    run: int
    seed: int
    attack: ComponentSpec | None = None
    eps: tuple[float, ...] = ()
    explainer: ComponentSpec | None = None
    evaluate: EvalSpec | None = None  # attack and explain jobs
    # what the job depends on, by name: the train job whose model it uses (attack and
    # explain jobs) and the attack job whose images it explains (explain jobs)
    train_job: str | None = None
    attack_job: str | None = None
    # the training procedure of the model's entry, else of the suite (None: none named,
    # the standard step)
    procedure: ComponentSpec | None = None

    @property
    def deps(self) -> tuple[str, ...]:
        """The jobs this one needs finished first."""
        return tuple(d for d in (self.train_job, self.attack_job) if d is not None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        data = dict(data)
        for key in ("model", "attack", "explainer", "procedure"):
            if data.get(key) is not None:
                data[key] = ComponentSpec(**data[key])
        data["eps"] = tuple(data.get("eps", ()))
        data["dataset"] = DatasetSpec(**data["dataset"])
        data["train"] = TrainSpec(**data["train"])
        if data.get("evaluate") is not None:
            data["evaluate"] = EvalSpec(**data["evaluate"])
        return cls(**data)

    def pack_key(self) -> tuple[Any, ...]:
        """Jobs with equal pack keys may be trained together: the same data and training
        configuration; their models and seeds may differ (each run computes alone)."""
        if self.procedure is None:
            return (self.kind, self.dataset, self.train)
        return (self.kind, self.dataset, self.train, self.procedure.name,
                json.dumps(self.procedure.params, sort_keys=True))

    @property
    def evaluation(self) -> EvalSpec:
        """How an attack or explain job evaluates (a train job has no such settings)."""
        if self.evaluate is None:
            raise ValueError(f"{self.kind} job {self.id} has no evaluation settings")
        return self.evaluate


def _spec(ref) -> ComponentSpec:
    return ComponentSpec(ref.key, ref.name, ref.params.model_dump(mode="json"))


def expand(suite: Suite, runs: int | None = None) -> list[Job]:
    """All jobs of a suite, each after the jobs it depends on: ``runs`` runs per model
    (default: ``train.runs``, or a range's ``min``, the runs before its first look)."""
    runs = suite.train.first_runs if runs is None else runs
    dataset = DatasetSpec(**suite.dataset.model_dump(mode="json"))
    train = TrainSpec(**suite.train.model_dump(mode="json",
                                               exclude={"runs", "seed", "procedure"}))
    default = _spec(suite.train.procedure) if suite.train.procedure is not None else None
    evaluate = EvalSpec(**suite.evaluate.model_dump(mode="json"))
    evaluated_runs = runs if suite.evaluate.runs is None else min(suite.evaluate.runs, runs)
    jobs: list[Job] = []
    for ref in suite.models:
        model = _spec(ref)
        procedure = _spec(ref.procedure) if ref.procedure is not None else default
        for run in range(runs):
            seed = suite.train.seed + run
            common = dict(model=model, dataset=dataset, train=train, run=run, seed=seed,
                          procedure=procedure)
            train_id = f"train-{model.key}-r{run:02d}"
            jobs.append(Job(id=train_id, kind="train", **common))
            if run >= evaluated_runs:
                continue
            attacks: list[ComponentSpec | None] = [_spec(a) for a in suite.attacks] or [None]
            eps_of = {a.key: tuple(a.eps) for a in suite.attacks}
            size_of = {a.key: a.test_size for a in suite.attacks}
            for attack in attacks:
                attack_id = None
                if attack is not None:
                    attack_id = f"attack-{model.key}-r{run:02d}-{attack.key}"
                    test_size = size_of[attack.key] or suite.evaluate.test_size
                    jobs.append(Job(id=attack_id, kind="attack", attack=attack,
                                    eps=eps_of[attack.key],
                                    evaluate=replace(evaluate, test_size=test_size),
                                    train_job=train_id, **common))
                for ex_ref in suite.explainers:
                    explainer = _spec(ex_ref)
                    size = ex_ref.test_size or suite.evaluate.explain_size
                    if attack is not None:
                        attack_size = size_of[attack.key] or suite.evaluate.test_size
                        size = min(size, attack_size) if attack_size else size
                    attack_part = attack.key if attack is not None else "clean"
                    jobs.append(Job(
                        id=f"explain-{model.key}-r{run:02d}-{attack_part}-{explainer.key}",
                        kind="explain", attack=attack,
                        eps=eps_of[attack.key] if attack is not None else (),
                        explainer=explainer, evaluate=replace(evaluate, explain_size=size),
                        train_job=train_id, attack_job=attack_id, **common))
    return jobs

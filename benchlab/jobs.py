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
    from benchlab.suite.schema import AttackRef, ModelRef, Suite

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
    # the dataset's parameters from the suite ({}: none; left out of the cache key then)
    params: dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:  # params is a dict: hashed as its sorted JSON
        return hash((self.name, self.train_size, self.test_size,
                     json.dumps(self.params, sort_keys=True)))

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
    test_batch_size: int | str  # a number, or "auto" (benchlab.inference)
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
        data = asdict(self)
        if not data["dataset"]["params"]:
            del data["dataset"]["params"]  # as jobs were written before datasets took any
        return data

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
    dataset = DatasetSpec(**suite.dataset.model_dump(mode="json",
                                                     include={"name", "train_size",
                                                              "test_size"}),
                          params=suite.dataset.params)
    default = _spec(suite.train.procedure) if suite.train.procedure is not None else None
    evaluate = EvalSpec(**suite.evaluate.model_dump(mode="json"))
    evaluated_runs = runs if suite.evaluate.runs is None else min(suite.evaluate.runs, runs)
    jobs: list[Job] = []
    for ref in suite.models:
        model = _spec(ref)
        procedure = _spec(ref.procedure) if ref.procedure is not None else default
        train = TrainSpec(**suite.train_of(ref).model_dump(
            mode="json", exclude={"runs", "seed", "procedure"}))
        for run in range(runs):
            seed = suite.train.seed + run
            common = dict(model=model, dataset=dataset, train=train, run=run, seed=seed,
                          procedure=procedure)
            train_id = f"train-{model.key}-r{run:02d}"
            jobs.append(Job(id=train_id, kind="train", **common))
            if run < evaluated_runs:
                jobs += _evaluations(suite, ref, evaluate, train_id, common)
    return jobs


def _evaluations(suite: Suite, model: ModelRef, evaluate: EvalSpec, train_id: str,
                 common: dict[str, Any]) -> list[Job]:
    """The attack and explain jobs of one trained model, as the selectors allow."""
    jobs: list[Job] = []
    run = common["run"]
    attacks: list[AttackRef | None] = [a for a in suite.attacks
                                       if a.only is None or model.selected_by(a.only.models)]
    for ref in attacks or ([None] if not suite.attacks else []):
        attack = _spec(ref) if ref is not None else None
        attack_id = None
        attack_size = None
        if ref is not None:
            attack_id = f"attack-{model.key}-r{run:02d}-{ref.key}"
            attack_size = ref.test_size or suite.evaluate.test_size
            jobs.append(Job(id=attack_id, kind="attack", attack=attack, eps=tuple(ref.eps),
                            evaluate=replace(evaluate, test_size=attack_size),
                            train_job=train_id, **common))
        for ex_ref in suite.explainers:
            only = ex_ref.only
            eps = tuple(ref.eps) if ref is not None else ()
            if only is not None:
                if not model.selected_by(only.models) or (
                        ref is not None and not ref.selected_by(only.attacks)):
                    continue
                if only.eps is not None and ref is not None:
                    eps = tuple(e for e in eps if e in only.eps)
                    if not eps:
                        continue
            explainer = _spec(ex_ref)
            size = ex_ref.test_size or suite.evaluate.explain_size
            if attack_size:
                size = min(size, attack_size)
            attack_part = ref.key if ref is not None else "clean"
            jobs.append(Job(
                id=f"explain-{model.key}-r{run:02d}-{attack_part}-{explainer.key}",
                kind="explain", attack=attack, eps=eps,
                explainer=explainer, evaluate=replace(evaluate, explain_size=size),
                train_job=train_id, attack_job=attack_id, **common))
    return jobs

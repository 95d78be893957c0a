"""The shape of a suite: its sections, their keys, types, ranges and defaults.

Every default a suite has is written here, once. The report reads its own
defaults (``REPORT_*``) from here too, so that a run without a ``report`` section
and the report it renders agree.

These models check what can be checked without the registry; component names and
parameters are checked against the registry in :mod:`benchlab.suite.validate`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from benchlab.components import Params
from benchlab.suite.problems import LocatedError, explain

_LABEL = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# Names and labels become parts of file names (job ids, plots): 64 characters
# keep the longest job id well under the usual 255-byte limit of a file name.
MAX_LABEL = 64
Label = Annotated[str, Field(pattern=_LABEL, max_length=MAX_LABEL)]
MAX_SEED = 2**32 - 1  # every seed of a run must fit the generators that take it

# The report section's defaults, as plain values for code that reads a run's
# suite.yaml as a mapping (the report) rather than through these models.
#: accuracies whose first epoch the report gives
REPORT_THRESHOLDS: tuple[float, ...] = (0.98, 0.99)
#: significance level of every test in the report
REPORT_ALPHA = 0.05
#: accuracies whose first step the learning-curve report gives
REPORT_STEP_THRESHOLDS: tuple[float, ...] = (0.97, 0.98)
#: epochs over which the learning curves' mean accuracy (area under the curve) is taken
REPORT_AUC_EPOCHS = 1.0
#: equivalence margin of the final test accuracy, percentage points (None: no TOST)
REPORT_EQUIVALENCE_MARGIN: float | None = None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: a suite whose sweeps expand to more jobs than this runs only when asked explicitly
SWEEP_MAX_JOBS = 200


class DatasetRef(BaseModel):
    """Which dataset, and how many of its samples (the first N of each split); every
    other key is one of the dataset's parameters."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    name: str
    train_size: Annotated[int, Field(gt=0)] | None = None
    test_size: Annotated[int, Field(gt=0)] | None = None
    _params: Params | None = PrivateAttr(default=None)

    @property
    def params(self) -> dict[str, Any]:
        """The dataset's parameters as validated (``{}`` when it has none)."""
        if self._params is None:
            return dict(self.model_extra or {})
        return self._params.model_dump(mode="json")


class ComponentRef(BaseModel):
    """A component by name; every other key is one of the component's parameters."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    name: str
    label: Label | None = None
    # set by a sweep (suite/sweep.py): the entry it was expanded from, and the value
    # each axis took in this configuration
    sweep_of: Label | None = None
    swept: dict[str, Any] | None = None
    _params: Params | None = PrivateAttr(default=None)

    @property
    def key(self) -> str:
        """How results and file names refer to this entry."""
        return self.label or self.name

    @property
    def raw_params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def selected_by(self, names: list[str] | None) -> bool:
        """Whether a selector's ``names`` (None: all) take this entry: by its label, or by
        the entry a sweep made it from."""
        return names is None or self.key in names or (self.sweep_of is not None
                                                       and self.sweep_of in names)

    @property
    def params(self) -> Params:
        if self._params is None:
            raise RuntimeError("suite was not validated against a registry")
        return self._params


class AttackSelector(_Strict):
    """``only`` of an attack: the models (labels, or the entries swept from) it attacks."""

    models: Annotated[list[str], Field(min_length=1)]


class ExplainerSelector(_Strict):
    """``only`` of an explainer: the models, attacks (labels or swept entries) and ε
    whose images it explains; a key left out selects all."""

    models: Annotated[list[str], Field(min_length=1)] | None = None
    attacks: Annotated[list[str], Field(min_length=1)] | None = None
    eps: Annotated[list[Annotated[float, Field(ge=0.0)]], Field(min_length=1)] | None = None


def selects(names: list[str] | None, ref: ComponentRef) -> bool:
    """Whether a selector's ``names`` (None: all) take ``ref``, by label or swept entry."""
    return ref.selected_by(names)


class AttackRef(ComponentRef):
    # The upper bound depends on the attack's norm and the images' size: checked
    # against the registry (see validate.check_eps); L∞ radii stay within [0, 1].
    eps: Annotated[list[Annotated[float, Field(ge=0.0, allow_inf_nan=False)]],
                   Field(min_length=1)]
    test_size: Annotated[int, Field(gt=0)] | None = None
    only: AttackSelector | None = None

    @field_validator("eps")
    @classmethod
    def _sorted_unique(cls, eps: list[float]) -> list[float]:
        if len(set(eps)) != len(eps):
            raise ValueError("eps values must be distinct")
        return sorted(eps)


class ExplainerRef(ComponentRef):
    test_size: Annotated[int, Field(gt=0)] | None = None
    only: ExplainerSelector | None = None


class ProcedureRef(ComponentRef):
    """``train.procedure``: how each optimisation step computes its loss."""


#: the training procedure of a suite that names none: today's cross-entropy step
DEFAULT_PROCEDURE = "standard"


class ModelRef(ComponentRef):
    """A model; ``procedure`` trains this entry with its own procedure instead of
    ``train.procedure`` (so one suite can hold a model trained two ways, each entry
    with its own ``label``)."""

    procedure: ProcedureRef | None = None
    # keys of `train` this entry trains with instead of the suite's (a sweep of train)
    train: dict[str, Any] | None = None


#: (section of the suite, kind of component in the registry, model of one entry)
SECTIONS: tuple[tuple[str, str, type[BaseModel]], ...] = (
    ("dataset", "dataset", DatasetRef), ("models", "model", ModelRef),
    ("attacks", "attack", AttackRef), ("explainers", "explainer", ExplainerRef))


class RunsRange(_Strict):
    """``train.runs`` as a range: a sequential design (benchlab/sequential.py) trains
    ``min`` runs per model, then ``step`` more at a time, until every part of the claim
    is decided or ``max`` runs are reached."""

    min: Annotated[int, Field(ge=2, le=1000)]
    max: Annotated[int, Field(ge=2, le=1000)]
    step: Annotated[int, Field(ge=1, le=1000)]
    spending: Literal["obrien-fleming", "pocock"] = "obrien-fleming"

    @model_validator(mode="after")
    def _ordered(self) -> RunsRange:
        if self.max < self.min:
            raise LocatedError(("max",), f"expected max >= min ({self.min}), got {self.max}")
        return self


def _runs_kind(value: Any) -> str:
    """Which form of ``train.runs`` a value is (a mapping: a range), so that a problem
    is worded for that form alone."""
    return "<range>" if isinstance(value, dict | RunsRange) else "<count>"


class TrainSection(_Strict):
    # an int: that many runs per model; a range: as many as the claim needs
    runs: Annotated[
        Annotated[Annotated[int, Field(gt=0, le=1000)], Tag("<count>")]
        | Annotated[RunsRange, Tag("<range>")],
        Discriminator(_runs_kind)] = 1
    epochs: Annotated[int, Field(gt=0, le=1000)] = 14
    batch_size: Annotated[int, Field(gt=0)] = 64
    lr: Annotated[float, Field(gt=0)] = 0.01
    # constant: lr throughout; cyclic: from 0 up to lr over the first 2/5 of the steps,
    # then down to 0 at the last (Wong et al. 2020's schedule for fast adversarial training)
    lr_schedule: Literal["constant", "cyclic"] = "constant"
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    # the evaluations' batch (the test split after every epoch, the learning curve);
    # auto: the fastest on the device (benchlab.inference)
    test_batch_size: Annotated[int, Field(gt=0)] | Literal["auto"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 1
    # Learning curves: evaluate every N optimisation steps on the first eval_size
    # test images (null: the whole test split); eval_every null: off.
    eval_every: Annotated[int, Field(gt=0)] | None = None
    eval_size: Annotated[int, Field(gt=0)] | None = 1000
    # the training procedure (a registered component; null: the standard step)
    procedure: ProcedureRef | None = None

    @property
    def max_runs(self) -> int:
        """The most runs per model this suite can train."""
        return self.runs if isinstance(self.runs, int) else self.runs.max

    @property
    def first_runs(self) -> int:
        """The runs per model trained before the first look (all of them for an int)."""
        return self.runs if isinstance(self.runs, int) else self.runs.min

    @model_validator(mode="after")
    def _seeds_fit(self) -> TrainSection:
        if self.seed + self.max_runs - 1 > MAX_SEED:
            raise LocatedError(("seed",), f"with {self.max_runs} runs the last seed would be "
                               f"{self.seed + self.max_runs - 1}; expected seed + runs - 1 <= "
                               f"{MAX_SEED}")
        return self


class EvaluateSection(_Strict):
    test_size: Annotated[int, Field(gt=0)] | None = 1000
    explain_size: Annotated[int, Field(gt=0)] = 500
    count: Annotated[int, Field(gt=0, le=100)] = 10
    runs: Annotated[int, Field(gt=0)] | None = None
    batch_size: Annotated[int, Field(gt=0)] = 256


_Fraction = Annotated[float, Field(gt=0.0, le=1.0)]


class ReportSection(_Strict):
    thresholds: list[_Fraction] = list(REPORT_THRESHOLDS)
    alpha: Annotated[float, Field(gt=0.0, lt=1.0)] = REPORT_ALPHA
    # convergence on the learning curves (train.eval_every): steps to reach these
    # accuracies, and the mean accuracy over the first auc_epochs epochs
    step_thresholds: list[_Fraction] = list(REPORT_STEP_THRESHOLDS)
    auc_epochs: Annotated[float, Field(gt=0.0)] = REPORT_AUC_EPOCHS
    # final test accuracy equivalent within +- this many percentage points (TOST);
    # null: no equivalence test
    equivalence_margin: Annotated[float, Field(gt=0.0, le=100.0)] | None = \
        REPORT_EQUIVALENCE_MARGIN
    # robustness over runs: these [model, against] pairs (model labels), each its own
    # Holm family; null: every model against the first model trained the same way
    robustness_pairs: list[Annotated[list[Label], Field(min_length=2, max_length=2)]] | None \
        = None


class Suite(_Strict):
    name: Label
    description: str = ""
    dataset: DatasetRef
    models: Annotated[list[ModelRef], Field(min_length=1)]
    train: TrainSection = TrainSection()
    attacks: list[AttackRef] = []
    explainers: list[ExplainerRef] = []
    evaluate: EvaluateSection = EvaluateSection()
    report: ReportSection = ReportSection()

    @model_validator(mode="after")
    def _unique_keys(self) -> Suite:
        for section in ("models", "attacks", "explainers"):
            seen: dict[str, int] = {}
            for i, ref in enumerate(getattr(self, section)):
                if ref.key in seen:
                    raise LocatedError(
                        (section, i), f"'{ref.key}' is already used by {section}.{seen[ref.key]}; "
                        "give one of them a distinct 'label'")
                seen[ref.key] = i
        if self.explainers:
            self._explained_images_fill_the_grid()
        self._pairs_name_models()
        for i, ref in enumerate(self.models):
            self._train_of(ref, ("models", i, "train"))
        self._selectors_match()
        return self

    @property
    def swept(self) -> bool:
        """Whether a sweep made any of this suite's entries."""
        return any(ref.swept is not None for section in ("models", "attacks", "explainers")
                   for ref in getattr(self, section))

    def train_of(self, model: ModelRef) -> TrainSection:
        """How ``model`` trains: ``train``, with the entry's own ``train`` keys."""
        return self._train_of(model, ())

    def _train_of(self, model: ModelRef, where: tuple[Any, ...]) -> TrainSection:
        if not model.train:
            return self.train
        own = set(model.train) - set(TrainSection.model_fields)
        for key in sorted(own | ({"runs", "seed", "procedure"} & set(model.train))):
            raise LocatedError((*where, key), "expected a key of train other than runs, seed "
                               "and procedure (a model's runs and seeds are the suite's)")
        merged = {**self.train.model_dump(exclude={"procedure"}), **model.train}
        try:
            return TrainSection.model_validate({**merged, "procedure": self.train.procedure})
        except ValidationError as exc:
            loc, message = explain(exc.errors()[0], TrainSection)
            raise LocatedError((*where, *loc), message) from None

    def _selectors_match(self) -> None:
        """Every name and ε of an ``only`` selects something of this suite."""
        def check(names: list[str] | None, refs: list[ComponentRef], where: tuple[Any, ...],
                  what: str) -> None:
            keys = [r.key for r in refs]
            bases = list(dict.fromkeys(r.sweep_of for r in refs if r.sweep_of))
            for j, name in enumerate(names or []):
                if name not in keys and name not in bases:
                    # a sweep's entries by the entry they came from
                    plain = [r.key for r in refs if r.sweep_of is None]
                    known = ", ".join(list(dict.fromkeys(bases + plain))) or "none"
                    raise LocatedError((*where, j), f"'{name}' matches no {what} of this suite "
                                       f"(its {what}s: {known})")

        for i, attack in enumerate(self.attacks):
            if attack.only is not None:
                check(attack.only.models, self.models, ("attacks", i, "only", "models"), "model")
        for i, ex in enumerate(self.explainers):
            only = ex.only
            if only is None:
                continue
            where = ("explainers", i, "only")
            check(only.models, self.models, (*where, "models"), "model")
            if only.attacks is not None and not self.attacks:
                raise LocatedError((*where, "attacks"), "this suite has no attacks: its "
                                   "explainers run on clean images only")
            check(only.attacks, self.attacks, (*where, "attacks"), "attack")
            attacks = [a for a in self.attacks if selects(only.attacks, a)]
            for j, eps in enumerate(only.eps or []):
                if not any(eps in a.eps for a in attacks):
                    shown = ", ".join(f"{e:g}" for e in sorted({e for a in attacks
                                                                  for e in a.eps}))
                    raise LocatedError((*where, "eps", j), f"{eps:g} is not an ε of the "
                                       f"attacks it selects ({shown or 'none'})")
            models = [m for m in self.models if selects(only.models, m)]
            if attacks and not any(a.only is None or any(selects(a.only.models, m)
                                                         for m in models) for a in attacks):
                raise LocatedError(where, "selects no model that its attacks attack")

    def _pairs_name_models(self) -> None:
        keys = [m.key for m in self.models]
        for i, pair in enumerate(self.report.robustness_pairs or []):
            for j, key in enumerate(pair):
                if key not in keys:
                    raise LocatedError(("report", "robustness_pairs", i, j),
                                       f"expected a model of this suite ({', '.join(keys)}), "
                                       f"got '{key}'")
            if pair[0] == pair[1]:
                raise LocatedError(("report", "robustness_pairs", i),
                                   f"a model compared with itself: {pair}")

    def _explained_images_fill_the_grid(self) -> None:
        # the Grad-CAM grid shows evaluate.count images from every split it explains
        count = self.evaluate.count
        if self.evaluate.explain_size < count:
            raise LocatedError(("evaluate", "explain_size"),
                               f"must be at least evaluate.count ({count}): the Grad-CAM "
                               "grid takes its columns from the explained images")
        sized = [("attacks", i, a.test_size) for i, a in enumerate(self.attacks)]
        sized += [("explainers", i, e.test_size) for i, e in enumerate(self.explainers)]
        sized.append(("evaluate", None, self.evaluate.test_size))
        for section, i, size in sized:
            if size is not None and size < count:
                where = (section, "test_size") if i is None else (section, i, "test_size")
                raise LocatedError(where, f"must be at least evaluate.count ({count}) when "
                                   "explainers are used")

    def to_yaml(self) -> str:
        """The suite as YAML, with every component's parameters resolved (defaults included),
        so that a run directory says exactly what ran."""
        data = self.model_dump(mode="json", exclude_none=False)
        if self.dataset._params is not None:
            data["dataset"].update(self.dataset.params)
        for section in ("models", "attacks", "explainers"):
            for entry, ref in zip(data[section], getattr(self, section)):
                if ref._params is not None:
                    entry.update(ref._params.model_dump(mode="json"))
                for key in ("sweep_of", "swept", "only", "train"):
                    if entry.get(key, 0) is None:
                        entry.pop(key)  # as a suite without sweeps and selectors wrote it
                if section == "models" and entry.get("procedure") is None:
                    entry.pop("procedure", None)  # as the entry was written: none of its own
        procedures = [(data["train"], self.train.procedure)]
        procedures += [(entry, ref.procedure) for entry, ref in zip(data["models"], self.models)]
        for entry, procedure in procedures:
            if procedure is not None:
                for key in ("sweep_of", "swept"):
                    entry["procedure"].pop(key, None)  # a procedure is never swept
                if procedure._params is not None:
                    entry["procedure"].update(procedure._params.model_dump(mode="json"))
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

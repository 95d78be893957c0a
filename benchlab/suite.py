"""Suites: YAML files that declare what to benchmark, validated before anything runs.

A suite is checked in two passes. The structure (sections, keys, types, ranges) is
checked by the pydantic models below; then every component reference is looked up
in the registry and its extra keys are validated by that component's own parameter
model. Every problem becomes one :class:`Problem` that names the file, the line,
the YAML path and what was expected.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from benchlab.components import ParamError, Params
from benchlab.plugins import Registry

_LABEL = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# Names and labels become parts of file names (job ids, plots): 64 characters
# keep the longest job id well under the usual 255-byte limit of a file name.
MAX_LABEL = 64
Label = Annotated[str, Field(pattern=_LABEL, max_length=MAX_LABEL)]
MAX_SEED = 2**32 - 1  # every seed of a run must fit the generators that take it


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DatasetRef(_Strict):
    """Which dataset, and how many of its samples (the first N of each split)."""

    name: str
    train_size: Annotated[int, Field(gt=0)] | None = None
    test_size: Annotated[int, Field(gt=0)] | None = None


class ComponentRef(BaseModel):
    """A component by name; every other key is one of the component's parameters."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    name: str
    label: Label | None = None
    _params: Params | None = PrivateAttr(default=None)

    @property
    def key(self) -> str:
        """How results and file names refer to this entry."""
        return self.label or self.name

    @property
    def raw_params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def params(self) -> Params:
        if self._params is None:
            raise RuntimeError("suite was not validated against a registry")
        return self._params


class ModelRef(ComponentRef):
    pass


class AttackRef(ComponentRef):
    # The upper bound depends on the attack's norm and the images' size: checked
    # against the registry (see _check_eps); L∞ radii stay within [0, 1].
    eps: Annotated[list[Annotated[float, Field(ge=0.0, allow_inf_nan=False)]],
                   Field(min_length=1)]
    test_size: Annotated[int, Field(gt=0)] | None = None

    @field_validator("eps")
    @classmethod
    def _sorted_unique(cls, eps: list[float]) -> list[float]:
        if len(set(eps)) != len(eps):
            raise ValueError("eps values must be distinct")
        return sorted(eps)


class ExplainerRef(ComponentRef):
    test_size: Annotated[int, Field(gt=0)] | None = None


class TrainSection(_Strict):
    runs: Annotated[int, Field(gt=0, le=1000)] = 1
    epochs: Annotated[int, Field(gt=0, le=1000)] = 14
    batch_size: Annotated[int, Field(gt=0)] = 64
    lr: Annotated[float, Field(gt=0)] = 0.01
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    test_batch_size: Annotated[int, Field(gt=0)] = 1000
    precision: Literal["fp32", "bf16"] = "fp32"
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 1
    # Learning curves: evaluate every N optimisation steps on the first eval_size
    # test images (null: the whole test split); eval_every null: off.
    eval_every: Annotated[int, Field(gt=0)] | None = None
    eval_size: Annotated[int, Field(gt=0)] | None = 1000

    @model_validator(mode="after")
    def _seeds_fit(self) -> TrainSection:
        if self.seed + self.runs - 1 > MAX_SEED:
            raise _LocatedError(("seed",), f"with {self.runs} runs the last seed would be "
                                f"{self.seed + self.runs - 1}; expected seed + runs - 1 <= "
                                f"{MAX_SEED}")
        return self


class EvaluateSection(_Strict):
    test_size: Annotated[int, Field(gt=0)] | None = 1000
    explain_size: Annotated[int, Field(gt=0)] = 500
    count: Annotated[int, Field(gt=0, le=100)] = 10
    runs: Annotated[int, Field(gt=0)] | None = None
    batch_size: Annotated[int, Field(gt=0)] = 256


class ReportSection(_Strict):
    thresholds: list[Annotated[float, Field(gt=0.0, le=1.0)]] = [0.98, 0.99]
    alpha: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.05
    # convergence on the learning curves (train.eval_every): steps to reach these
    # accuracies, and the mean accuracy over the first auc_epochs epochs
    step_thresholds: list[Annotated[float, Field(gt=0.0, le=1.0)]] = [0.97, 0.98]
    auc_epochs: Annotated[float, Field(gt=0.0)] = 1.0
    # final test accuracy equivalent within +- this many percentage points (TOST);
    # null: no equivalence test
    equivalence_margin: Annotated[float, Field(gt=0.0, le=100.0)] | None = None


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
                    raise _LocatedError(
                        (section, i), f"'{ref.key}' is already used by {section}.{seen[ref.key]}; "
                        "give one of them a distinct 'label'")
                seen[ref.key] = i
        if self.explainers:
            count = self.evaluate.count
            if self.evaluate.explain_size < count:
                raise _LocatedError(("evaluate", "explain_size"),
                                    f"must be at least evaluate.count ({count}): the Grad-CAM "
                                    "grid takes its columns from the explained images")
            sized = [("attacks", i, a.test_size) for i, a in enumerate(self.attacks)]
            sized += [("explainers", i, e.test_size) for i, e in enumerate(self.explainers)]
            sized.append(("evaluate", None, self.evaluate.test_size))
            for section, i, size in sized:
                if size is not None and size < count:
                    where = (section, "test_size") if i is None else (section, i, "test_size")
                    raise _LocatedError(where, f"must be at least evaluate.count ({count}) when "
                                        "explainers are used")
        return self

    def to_yaml(self) -> str:
        """The suite as YAML, with every component's parameters resolved (defaults included),
        so that a run directory says exactly what ran."""
        data = self.model_dump(mode="json", exclude_none=False)
        for section in ("models", "attacks", "explainers"):
            for entry, ref in zip(data[section], getattr(self, section)):
                if ref._params is not None:
                    entry.update(ref._params.model_dump(mode="json"))
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------- problems


class _LocatedError(ValueError):
    """A check across fields that knows which entry it is about."""

    def __init__(self, loc: tuple[Any, ...], message: str):
        super().__init__(message)
        self.loc = loc


@dataclass(frozen=True)
class Problem:
    source: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class SuiteError(Exception):
    """A suite that cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# --------------------------------------------------------------------------- loading


def _line_index(text: str) -> dict[tuple[str, ...], int]:
    """Map each YAML path (keys and list indices as strings) to its 1-based line."""
    index: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError:
        return index

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        index.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                index[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, str(i)))

    if root is not None:
        walk(root, ())
    return index


# A suite is a short file; these bounds keep a hostile one (an alias bomb, a huge or
# endless file, deep nesting) from costing more than a fraction of a second.
MAX_SUITE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000  # nodes of the document once every alias is expanded
# libyaml's parser when present: a 1 MiB suite parses in milliseconds, not seconds
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_bounded(p: Path, source: str) -> str:
    try:
        with open(p, "rb") as fh:
            blob = fh.read(MAX_SUITE_BYTES + 1)
    except OSError as exc:
        raise SuiteError([Problem(source, "", f"cannot read the file: {exc.strerror or exc}")]
                         ) from None
    if len(blob) > MAX_SUITE_BYTES:
        raise SuiteError([Problem(source, "", f"larger than {MAX_SUITE_BYTES // 1024} KiB; "
                                  "expected a YAML suite file")])
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SuiteError([Problem(source, "", f"not UTF-8 text (byte {exc.start}); expected "
                                  "a YAML suite file")]) from None


def check_yaml_shape(text: str, source: str) -> None:
    """Refuse YAML that is too deep, expands too far through aliases or repeats a key.

    Works on the parser's event stream, without building the document: it keeps
    the expanded size of every anchored node, so an alias bomb is measured, not
    expanded. Raises :class:`SuiteError`, for YAML syntax errors too: the loader,
    which recurses once per level, only ever sees a document that passed.
    """
    # frame: [is_mapping, expanded size, anchor, children seen, {key: line}, label of child]
    stack: list[list[Any]] = []
    sizes: dict[str, int] = {}

    def fail(event: yaml.Event, message: str) -> None:
        path = ".".join(str(f[5]) for f in stack if f[5] is not None)
        raise SuiteError([Problem(source, path, message, event.start_mark.line + 1)])

    def add(event: yaml.Event, size: int) -> None:
        if size > MAX_NODES:
            fail(event, f"aliases expand to more than {MAX_NODES:,} values; expected a "
                 "suite without alias bombs")
        if stack:
            parent = stack[-1]
            parent[1] += size
            parent[3] += 1
            if parent[1] > MAX_NODES:
                fail(event, f"aliases expand to more than {MAX_NODES:,} values; expected a "
                     "suite without alias bombs")

    try:
        for event in yaml.parse(text, Loader=_LOADER):
            if stack and stack[-1][0] and stack[-1][3] % 2 == 0:  # a mapping key comes next
                key = event.value if isinstance(event, yaml.ScalarEvent) else None
                if key is not None:
                    seen = stack[-1][4]
                    if key in seen:
                        stack[-1][5] = key
                        fail(event, f"duplicate key '{key}' (also on line {seen[key]}); "
                             "expected each key once")
                    seen[key] = event.start_mark.line + 1
                stack[-1][5] = key
            elif stack and not stack[-1][0]:
                stack[-1][5] = stack[-1][3]
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if len(stack) >= MAX_DEPTH:
                    fail(event, f"nested deeper than {MAX_DEPTH} levels; expected a suite")
                stack.append([isinstance(event, yaml.MappingStartEvent), 1, event.anchor,
                              0, {}, None])
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                frame = stack.pop()
                if frame[2] is not None:
                    sizes[frame[2]] = frame[1]
                add(event, frame[1])
            elif isinstance(event, yaml.ScalarEvent):
                if event.anchor is not None:
                    sizes[event.anchor] = 1
                add(event, 1)
            elif isinstance(event, yaml.AliasEvent):
                add(event, sizes.get(event.anchor, 1))
    except yaml.YAMLError as exc:
        raise SuiteError([_yaml_problem(source, exc)]) from None


def _yaml_problem(source: str, exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return Problem(source, "", f"invalid YAML: {what}", line)


def read_suite_file(path: str | Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """Parse a suite file into a plain mapping (and a path -> line index)."""
    source = str(path)
    p = Path(path)
    if not p.exists():
        raise SuiteError([Problem(source, "", "no such file")])
    if p.is_dir():
        raise SuiteError([Problem(source, "", "is a directory; expected a YAML suite file")])
    text = _read_bounded(p, source)
    check_yaml_shape(text, source)
    try:
        data = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise SuiteError([_yaml_problem(source, exc)]) from None
    if data is None:
        raise SuiteError([Problem(source, "", "the file is empty; expected a mapping with "
                                  "at least 'name', 'dataset' and 'models'")])
    if not isinstance(data, dict):
        raise SuiteError([Problem(source, "", "expected a mapping at the top level, got "
                                  f"{_type_name(data)}")])
    return data, _line_index(text)


def apply_overrides(data: dict[str, Any], overrides: Iterable[str],
                    source: str = "--set") -> dict[str, Any]:
    """Apply ``PATH=VALUE`` overrides; VALUE is parsed as YAML, PATH is dotted."""
    data = copy.deepcopy(data)
    problems: list[Problem] = []
    for item in overrides:
        if "=" not in item:
            problems.append(Problem(source, item, "expected PATH=VALUE, e.g. train.runs=3"))
            continue
        path, _, raw = item.partition("=")
        path = path.strip()
        try:
            check_yaml_shape(raw, source)
        except SuiteError as exc:
            problems += [Problem(source, path, p.message) for p in exc.problems]
            continue
        try:
            value = yaml.load(raw, Loader=_LOADER)
        except yaml.YAMLError as exc:
            problems.append(Problem(source, path,
                                    f"value is not valid YAML: {exc.__class__.__name__}"))
            continue
        keys = path.split(".")
        if not path or any(k == "" for k in keys):
            problems.append(Problem(source, path, "empty key in the path"))
            continue
        node: Any = data
        try:
            for depth, key in enumerate(keys):
                last = depth == len(keys) - 1
                here = ".".join(keys[: depth + 1])
                if isinstance(node, list):
                    if not key.lstrip("-").isdigit():
                        raise _OverrideError(here, f"expected a list index, got '{key}'")
                    index = int(key)
                    if not -len(node) <= index < len(node):
                        raise _OverrideError(here, f"index {index} out of range "
                                             f"(the list has {len(node)} items)")
                    if last:
                        node[index] = value
                    else:
                        node = node[index]
                elif isinstance(node, dict):
                    if last:
                        node[key] = value
                    else:
                        if node.get(key) is None:
                            node[key] = {}
                        node = node[key]
                else:
                    raise _OverrideError(here, f"cannot set a key inside {_type_name(node)}")
        except _OverrideError as exc:
            problems.append(Problem(source, exc.path, exc.message))
    if problems:
        raise SuiteError(problems)
    return data


class _OverrideError(Exception):
    def __init__(self, path: str, message: str):
        self.path, self.message = path, message


def load_suite(path: str | Path, registry: Registry, overrides: Sequence[str] = ()) -> Suite:
    """Read, override and validate a suite file; raise :class:`SuiteError` on any problem."""
    data, lines = read_suite_file(path)
    data = apply_overrides(data, overrides)
    overridden = [tuple(item.partition("=")[0].strip().split(".")) for item in overrides]
    return validate_suite(data, registry, source=str(path), lines=lines, overridden=overridden)


def validate_suite(data: dict[str, Any], registry: Registry, *, source: str = "<suite>",
                   lines: dict[tuple[str, ...], int] | None = None,
                   overridden: Sequence[tuple[str, ...]] = ()) -> Suite:
    """Validate a suite's mapping; ``overridden`` are the paths that ``--set`` replaced."""
    lines = lines or {}

    def problem(loc: Sequence[Any], message: str) -> Problem:
        parts = tuple(str(p) for p in loc)
        if any(parts[:len(o)] == o for o in overridden):
            # the value came from the command line: the file's line holds something else
            return Problem(source, "--set " + ".".join(parts), message)
        line = None
        for n in range(len(parts), -1, -1):
            if parts[:n] in lines:
                line = lines[parts[:n]]
                break
        return Problem(source, ".".join(parts), message, line)

    # Structure and components are checked independently, so that one pass reports
    # every problem: a wrong type in `train` and a misspelled attack name alike.
    problems: list[Problem] = [problem(loc, message) for loc, message in _unwritable(data)]
    suite: Suite | None = None
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        problems += [problem(*_describe(err, data)) for err in exc.errors()]

    params: dict[tuple[str, int], Params] = {}
    for section, kind, ref_type in _SECTIONS:
        entries = [data.get(section)] if section == "dataset" else data.get(section)
        if not isinstance(entries, list):
            continue
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                continue  # the structural pass has reported it
            base: tuple[Any, ...] = (section,) if section == "dataset" else (section, i)
            if not registry.has(kind, entry["name"]):
                message = _unknown(kind, entry["name"], registry.names(kind))
                if registry.collisions or registry.failures or any(
                        entry["name"].startswith(p.prefix) for p in registry.available):
                    message = registry.missing_message(kind, entry["name"])
                problems.append(problem((*base, "name"), message))
                continue
            if section == "dataset":
                continue
            component = registry.get(kind, entry["name"])
            raw = {k: v for k, v in entry.items() if k not in ref_type.model_fields}
            try:
                params[(section, i)] = component.validate_params(raw)
            except ValidationError as exc:
                for err in exc.errors():
                    loc, message = _describe(err, raw, component.params,
                                             extra_known=list(ref_type.model_fields))
                    problems.append(problem((*base, *loc), message))
    if not problems and suite is not None:
        problems += [problem(loc, message)
                     for loc, message in _check_eps(suite, data, params, registry)]
    if not problems and suite is not None:
        problems += [problem(loc, message)
                     for loc, message in _check_against_models(suite, params, registry)]
    if problems or suite is None:
        problems.sort(key=lambda p: p.line or 0)
        raise SuiteError(problems)
    for section, _, _ in _SECTIONS[1:]:
        for i, ref in enumerate(getattr(suite, section)):
            ref._params = params[(section, i)]
    return suite


def _unwritable(data: Any, loc: tuple[Any, ...] = ()) -> Iterable[tuple[tuple[Any, ...], str]]:
    """Strings that cannot be written as UTF-8 (lone surrogates from YAML escapes)."""
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError as exc:
            yield loc, (f"holds {data[exc.start]!r} at character {exc.start}, a lone surrogate "
                        "that cannot be written to a file; expected text")
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _unwritable(key, (*loc, key))
            yield from _unwritable(value, (*loc, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _unwritable(value, (*loc, i))


def largest_radius(norm: str, shape: Sequence[int]) -> float:
    """The largest distance in ``norm`` between two images of ``shape`` with values in
    [0, 1]: a larger ε bounds nothing. L0 counts pixel positions (not channels)."""
    values = math.prod(shape)
    return {"linf": 1.0, "l2": math.sqrt(values), "l1": float(values),
            "l0": float(math.prod(shape[1:]))}[norm]


def _check_eps(suite: Suite, data: dict[str, Any], params: dict[tuple[str, int], Params],
               registry: Registry) -> Iterable[tuple[tuple[Any, ...], str]]:
    """Every ε within the largest distance the attack's norm allows on the dataset."""
    shape = registry.get("dataset", suite.dataset.name).obj.info.shape
    for i, ref in enumerate(suite.attacks):
        component = registry.get("attack", ref.name)
        try:
            threat = component.threat(params[("attacks", i)])
        except Exception as exc:  # noqa: BLE001 - a broken threat declaration is a problem
            yield ("attacks", i, "name"), f"{component.provenance}: {_one_line(exc)}"
            continue
        limit = largest_radius(threat.norm, shape)
        for j, eps in enumerate(data["attacks"][i]["eps"]):  # as written: ref.eps is sorted
            if float(eps) > limit:
                yield (("attacks", i, "eps", j),
                       f"expected a value <= {limit:g} for {ref.name!r} ({threat}): the "
                       f"largest {_NORM_NAMES[threat.norm]} distance between two "
                       f"{'x'.join(map(str, shape))} images with values in [0, 1]; got {eps:g}")


_NORM_NAMES = {"linf": "L∞", "l2": "L2", "l1": "L1", "l0": "L0"}


def _check_against_models(suite: Suite, params: dict[tuple[str, int], Params],
                          registry: Registry) -> Iterable[tuple[tuple[Any, ...], str]]:
    """Run the attacks' and explainers' ``check_model`` on every model they will get.

    Catches what would otherwise fail only after training (a Grad-CAM layer the
    model does not have, a class it cannot predict).
    """
    checks = [(section, j, check)
              for section, kind, _ in _SECTIONS[2:]
              for j, ref in enumerate(getattr(suite, section))
              if (check := registry.get(kind, ref.name).extra.get("check_model")) is not None]
    if not checks:
        return
    info = registry.get("dataset", suite.dataset.name).obj.info
    for i, ref in enumerate(suite.models):
        component = registry.get("model", ref.name)
        try:
            model = component.obj(info, params[("models", i)])
        except Exception as exc:  # noqa: BLE001 - reported as the model's problem
            yield ("models", i), f"{component.provenance} cannot build it: {_one_line(exc)}"
            continue
        for section, j, check in checks:
            try:
                check(model, info, params[(section, j)])
            except ParamError as exc:
                yield (section, j, exc.field), f"with model '{ref.key}': {exc}"
            except Exception as exc:  # noqa: BLE001 - a broken check is still a problem
                yield (section, j), f"with model '{ref.key}': {_one_line(exc)}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


_SECTIONS: tuple[tuple[str, str, type[BaseModel]], ...] = (
    ("dataset", "dataset", DatasetRef), ("models", "model", ModelRef),
    ("attacks", "attack", AttackRef), ("explainers", "explainer", ExplainerRef))


def _unknown(kind: str, name: Any, known: list[str]) -> str:
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'{hint} (installed: {', '.join(known) or 'none'})"


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _fields_at(model: type[BaseModel] | None, loc: Sequence[Any]) -> list[str]:
    """The keys accepted at ``loc`` (a path into ``model``'s structure)."""
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _inner_model(field.annotation)
    return list(model.model_fields) if model is not None else []


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _describe(err: dict[str, Any], data: Any, model: type[BaseModel] = Suite,
              extra_known: Sequence[str] = ()) -> tuple[tuple[Any, ...], str]:
    """Turn one pydantic error into (location, one-line message)."""
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    given = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        known = [k for k in _fields_at(model, loc[:-1]) if k not in ("_params",)]
        known = sorted(set(known) | set(extra_known)) if extra_known else known
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        listing = f" (expected one of: {', '.join(known)})" if known else ""
        return loc, f"unknown key '{loc[-1]}'{hint}{listing}"
    if kind == "missing":
        return loc, "required key is missing"
    if kind == "value_error":
        error = ctx.get("error")
        if isinstance(error, _LocatedError):
            return (*loc, *error.loc), str(error)
        return loc, str(error) if error is not None else err.get("msg", "")
    expected = _EXPECTED.get(kind)
    if expected is None:
        msg = err.get("msg", kind)
        expected = msg[0].lower() + msg[1:] if msg else kind
    else:
        expected = expected.format(**{k: _fmt(v) for k, v in ctx.items()})
    return loc, f"expected {expected}, got {_show(given)}"


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "greater_than": "a value > {gt}",
    "greater_than_equal": "a value >= {ge}",
    "less_than": "a value < {lt}",
    "less_than_equal": "a value <= {le}",
    "too_short": "at least {min_length} item(s)",
    "too_long": "at most {max_length} item(s)",
    "literal_error": "one of {expected}",
    "enum": "one of {expected}",
    "string_pattern_mismatch": "a name of letters, digits, '_', '-' and '.' (pattern {pattern})",
    "string_too_long": "at most {max_length} characters",
    "finite_number": "a finite number",
}


def _fmt(value: Any) -> str:
    return str(value)


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        text = _type_name(value)
    else:
        text = repr(value) if isinstance(value, str) else str(value).lower() \
            if isinstance(value, bool) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."

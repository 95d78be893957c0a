"""Validating a suite: the schema, then the registry, then the components themselves.

A suite's mapping is checked in passes. The structure (sections, keys, types,
ranges) and every component reference (its name in the registry, its extra keys
against the component's own parameter model) are checked side by side, so that
one run reports every such problem. Only a suite that passes both has its ε
values bounded by each attack's norm, and its attacks' and explainers'
``check_params`` run on every model they will get.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from benchlab.components import ParamError, Params
from benchlab.messages import NORM_LABELS, describe, unknown_name
from benchlab.plugins import Registry
from benchlab.suite.problems import Problem, SuiteError, explain
from benchlab.suite.reading import apply_overrides, overridden_paths, read_suite_file
from benchlab.suite.schema import SECTIONS, ProcedureRef, Suite, selects
from benchlab.suite.sweep import expand_sweeps

# where a check found a problem (a path into the suite's mapping), and what it is
Finding = tuple[tuple[Any, ...], str]


def load_suite(path: str | Path, registry: Registry, overrides: Sequence[str] = ()) -> Suite:
    """Read, override and validate a suite file; raise :class:`SuiteError` on any problem."""
    data, lines = read_suite_file(path)
    data = apply_overrides(data, overrides)
    return validate_suite(data, registry, source=str(path), lines=lines,
                          overridden=overridden_paths(overrides))


def validate_suite(data: dict[str, Any], registry: Registry, *, source: str = "<suite>",
                   lines: dict[tuple[str, ...], int] | None = None,
                   overridden: Sequence[tuple[str, ...]] = ()) -> Suite:
    """Validate a suite's mapping; ``overridden`` are the paths that ``--set`` replaced."""
    lines = lines or {}
    # sweeps first: every configuration they make is then checked like a written entry
    expansion = expand_sweeps(data)
    data = expansion.data

    def problem(loc: Sequence[Any], message: str) -> Problem:
        parts = tuple(str(p) for p in expansion.origin(tuple(loc)))
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
    findings: list[Finding] = [*_unwritable(data), *expansion.findings]
    suite: Suite | None = None
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        findings += [explain(err, Suite) for err in exc.errors()]
    params: dict[tuple[str, int], Params] = {}
    findings += _check_components(data, registry, params)
    procedures = _check_procedures(data, registry, findings)
    if not findings and suite is not None:
        findings += _check_eps(suite, data, params, registry)
    if not findings and suite is not None:
        findings += _check_against_models(suite, params, registry)
    if findings or suite is None:
        # a value of an axis wrong in one configuration is wrong in all: said once
        problems = list(dict.fromkeys(problem(loc, message) for loc, message in findings))
        problems.sort(key=lambda p: p.line or 0)
        raise SuiteError(problems)
    suite.dataset._params = params.get(("dataset", 0))
    for section, _, _ in SECTIONS[1:]:
        for i, ref in enumerate(getattr(suite, section)):
            ref._params = params[(section, i)]
    refs = {("train", "procedure"): suite.train.procedure}
    refs.update({("models", i, "procedure"): ref.procedure
                 for i, ref in enumerate(suite.models)})
    for where, ref in refs.items():
        if ref is not None:
            ref._params = procedures[where]
    return suite


def _check_procedures(data: dict[str, Any], registry: Registry,
                      findings: list[Finding]) -> dict[tuple[Any, ...], Params]:
    """``train.procedure`` and every model's own ``procedure``: registered procedures
    with valid parameters; their parameters, by where they are written."""
    found: dict[tuple[Any, ...], Params] = {}
    places: list[tuple[tuple[Any, ...], Any]] = []
    train = data.get("train")
    if isinstance(train, dict):
        places.append((("train", "procedure"), train.get("procedure")))
    models = data.get("models")
    if isinstance(models, list):
        places += [(("models", i, "procedure"), m.get("procedure"))
                   for i, m in enumerate(models) if isinstance(m, dict)]
    for base, entry in places:
        params = _check_procedure(base, entry, registry, findings)
        if params is not None:
            found[base] = params
    return found


def _check_procedure(base: tuple[Any, ...], entry: Any, registry: Registry,
                     findings: list[Finding]) -> Params | None:
    """One procedure entry: a registered procedure with valid parameters; its parameters."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        return None  # absent, or the structural pass has reported it
    name = entry["name"]
    if not registry.has("procedure", name):
        findings.append(((*base, "name"), registry.missing_message("procedure", name)))
        return None
    component = registry.get("procedure", name)
    raw = {k: v for k, v in entry.items() if k not in ProcedureRef.model_fields}
    try:
        return component.validate_params(raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc, message = explain(err, component.params,
                                   extra_known=list(ProcedureRef.model_fields))
            findings.append(((*base, *loc), message))
    return None


def _check_components(data: dict[str, Any], registry: Registry,
                      params: dict[tuple[str, int], Params]) -> list[Finding]:
    """Every component named in the registry, its parameters valid; fills ``params``.

    Works on the raw mapping, not the validated suite, so that it runs even when
    the structure has problems of its own.
    """
    findings: list[Finding] = []
    for section, kind, ref_type in SECTIONS:
        entries = [data.get(section)] if section == "dataset" else data.get(section)
        if not isinstance(entries, list):
            continue
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                continue  # the structural pass has reported it
            base: tuple[Any, ...] = (section,) if section == "dataset" else (section, i)
            if not registry.has(kind, entry["name"]):
                message = unknown_name(kind, entry["name"], registry.names(kind))
                if registry.collisions or registry.failures or any(
                        entry["name"].startswith(p.prefix) for p in registry.available):
                    # the registry knows why: a missing library, a collision, a failed plugin
                    message = registry.missing_message(kind, entry["name"])
                findings.append(((*base, "name"), message))
                continue
            component = registry.get(kind, entry["name"])
            raw = {k: v for k, v in entry.items() if k not in ref_type.model_fields}
            try:
                params[(section, 0 if section == "dataset" else i)] = \
                    component.validate_params(raw)
            except ValidationError as exc:
                for err in exc.errors():
                    loc, message = explain(err, component.params,
                                           extra_known=list(ref_type.model_fields))
                    findings.append(((*base, *loc), message))
    return findings


def _unwritable(data: Any, loc: tuple[Any, ...] = ()) -> Iterable[Finding]:
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
               registry: Registry) -> Iterable[Finding]:
    """Every ε within the largest distance the attack's norm allows on the dataset."""
    shape = registry.get("dataset", suite.dataset.name).obj.info.shape
    for i, ref in enumerate(suite.attacks):
        component = registry.get("attack", ref.name)
        try:
            threat = component.threat(params[("attacks", i)])
        except Exception as exc:  # noqa: BLE001 - a broken threat declaration is a problem
            yield ("attacks", i, "name"), f"{component.provenance}: {describe(exc)}"
            continue
        limit = largest_radius(threat.norm, shape)
        for j, eps in enumerate(data["attacks"][i]["eps"]):  # as written: ref.eps is sorted
            if float(eps) > limit:
                yield (("attacks", i, "eps", j),
                       f"expected a value <= {limit:g} for {ref.name!r} ({threat}): the "
                       f"largest {NORM_LABELS[threat.norm]} distance between two "
                       f"{'x'.join(map(str, shape))} images with values in [0, 1]; got {eps:g}")


def _check_against_models(suite: Suite, params: dict[tuple[str, int], Params],
                          registry: Registry) -> Iterable[Finding]:
    """Run the attacks' and explainers' ``check_params`` on every model they will get.

    Catches what would otherwise fail only after training (a Grad-CAM layer the
    model does not have, a class it cannot predict).
    """
    checks = [(section, j, check)
              for section, kind, _ in SECTIONS[2:]
              for j, ref in enumerate(getattr(suite, section))
              if (check := registry.get(kind, ref.name).extra.get("check_params")) is not None]
    if not checks:
        return
    info = registry.get("dataset", suite.dataset.name).obj.info
    for i, ref in enumerate(suite.models):
        component = registry.get("model", ref.name)
        try:
            model = component.obj(info, params[("models", i)])
        except Exception as exc:  # noqa: BLE001 - reported as the model's problem
            yield ("models", i), f"{component.provenance} cannot build it: {describe(exc)}"
            continue
        for section, j, check in checks:
            if not selects(getattr(getattr(suite, section)[j].only, "models", None), ref):
                continue  # its selector leaves this model out
            try:
                check(model, info, params[(section, j)])
            except ParamError as exc:
                yield (section, j, exc.field), f"with model '{ref.key}': {exc}"
            except Exception as exc:  # noqa: BLE001 - a broken check is still a problem
                yield (section, j), f"with model '{ref.key}': {describe(exc)}"

"""Sweeps: parameter grids in a suite, expanded into labelled entries before validation.

Any parameter of a ``models``, ``attacks`` or ``explainers`` entry, and any key of
``train`` but ``runs``, ``seed`` and ``procedure``, may hold an *axis* instead of
a value: ``{grid: [v1, v2, ...]}`` or ``{zip: [v1, v2, ...]}``. An entry with
axes becomes one entry per combination: the Cartesian product of its ``grid``
axes and of one axis made of all its ``zip`` axes taken side by side (they must
have the same length). An axis of ``train`` sweeps every model entry, each of
which then trains with its own ``train`` values; ``zip`` axes of ``train`` pair
with each other, not with a model's.

An expanded entry keeps its name and the entry's other keys, and gets a label
that says its values (``cnn-dropout1_0.1-lr_0.05``), ``sweep_of`` (the entry's
own label or name) and ``swept`` (each axis and the value it took, the
report's groups). A suite without axes goes through unchanged.

Nothing here knows the components: every expanded entry is then validated like
a hand-written one, and :func:`Expansion.origin` turns a problem's path in the
expanded mapping back into the line of the file where the value was written.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AXES", "Expansion", "expand_sweeps", "is_axis", "sweep_label_part"]

#: the keys of an axis: ``{grid: [...]}`` or ``{zip: [...]}``
AXES = ("grid", "zip")
#: keys of ``train`` that a sweep cannot take: runs are the seeds, a procedure an entry
NOT_SWEPT_TRAIN = ("runs", "seed", "procedure")
#: keys of a component entry that are not parameters (never swept)
NOT_SWEPT_ENTRY = ("name", "label", "only", "swept", "sweep_of", "procedure", "train", "eps")
SECTIONS = ("models", "attacks", "explainers")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")

Loc = tuple[Any, ...]


def is_axis(value: Any) -> bool:
    """Whether ``value`` is written as a sweep axis (a mapping of one key, grid or zip)."""
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in AXES


def sweep_label_part(key: str, value: Any) -> str:
    """How one swept value reads in a label: ``lr_0.05``, ``optimizer_adam``."""
    if isinstance(value, bool):
        shown = str(value).lower()
    elif isinstance(value, float):
        shown = f"{value:g}"
    elif value is None:
        shown = "null"
    else:
        shown = str(value)
    return f"{key}_{_UNSAFE.sub('_', shown).strip('_') or 'x'}"


@dataclass
class _Axis:
    key: str  # as the label and `swept` name it: "width", "train.lr"
    loc: Loc  # where its values are written: ("models", 0, "width", "grid")
    values: list[Any]
    zipped: bool


@dataclass
class Expansion:
    """A suite's mapping with its sweeps expanded, and where each expanded entry came from."""

    data: dict[str, Any]
    findings: list[tuple[Loc, str]] = field(default_factory=list)
    #: (section, index in the expanded list) -> (index as written, {param: loc of its value})
    origins: dict[tuple[str, int], tuple[int, dict[str, Loc]]] = field(default_factory=dict)
    #: whether the suite had any axis
    swept: bool = False

    def origin(self, loc: Loc) -> Loc:
        """The path in the file of what ``loc`` names in the expanded mapping."""
        if len(loc) < 2 or (loc[0], loc[1]) not in self.origins:
            return loc
        index, values = self.origins[(loc[0], loc[1])]
        rest = tuple(loc[2:])
        for depth in (2, 1):
            key = ".".join(str(p) for p in rest[:depth])
            if len(rest) >= depth and key in values:
                return values[key]
        return (loc[0], index, *rest)


def expand_sweeps(data: dict[str, Any]) -> Expansion:
    """Expand every axis of ``data`` (a suite's mapping, left as it is)."""
    out = Expansion(copy.deepcopy(data))
    train_axes = _train_axes(out)
    for section in SECTIONS:
        entries = out.data.get(section)
        if not isinstance(entries, list):
            continue
        expanded: list[Any] = []
        for i, entry in enumerate(entries):
            axes = _entry_axes(out, section, i, entry) if isinstance(entry, dict) else []
            extra = train_axes if section == "models" and isinstance(entry, dict) else []
            if not axes and not extra:
                out.origins[(section, len(expanded))] = (i, {})
                expanded.append(entry)
                continue
            out.swept = True
            for made, values in _combinations(out, section, i, entry, axes, extra):
                out.origins[(section, len(expanded))] = (i, values)
                expanded.append(made)
        out.data[section] = expanded
    _leftover_axes(out, out.data, ())
    return out


def _axis(out: Expansion, key: str, loc: Loc, raw: dict[str, Any]) -> _Axis | None:
    marker, values = next(iter(raw.items()))
    where = (*loc, marker)
    if not isinstance(values, list) or not values:
        out.findings.append((where, f"expected a non-empty list of values to sweep, got "
                                    f"{type(values).__name__}" if not isinstance(values, list)
                             else "expected a non-empty list of values to sweep, got []"))
        return None
    if len({repr(v) for v in values}) != len(values):
        out.findings.append((where, "expected distinct values: each one is a configuration"))
        return None
    return _Axis(key, where, values, marker == "zip")


def _train_axes(out: Expansion) -> list[_Axis]:
    train = out.data.get("train")
    if not isinstance(train, dict):
        return []
    axes = []
    for key in list(train):
        if not is_axis(train[key]):
            continue
        if key in NOT_SWEPT_TRAIN:
            why = {"runs": "the runs of each configuration are its seeds",
                   "seed": "the runs of each configuration are its seeds",
                   "procedure": "sweep a procedure's parameters in model entries of their own"}
            out.findings.append((("train", key), f"cannot be swept: {why[key]}"))
            train.pop(key)
            continue
        axis = _axis(out, f"train.{key}", ("train", key), train.pop(key))
        if axis is not None:
            axes.append(axis)
    _check_zips(out, axes)
    return axes


def _entry_axes(out: Expansion, section: str, i: int, entry: dict[str, Any]) -> list[_Axis]:
    axes = []
    for key in list(entry):
        if not is_axis(entry[key]):
            continue
        if key in NOT_SWEPT_ENTRY:
            why = ("eps is already a list of values" if key == "eps"
                   else "it is not one of the component's parameters")
            out.findings.append(((section, i, key), f"cannot be swept: {why}"))
            entry.pop(key)
            continue
        axis = _axis(out, key, (section, i, key), entry[key])
        if axis is None:
            entry.pop(key)  # reported: nothing more to say about it
        else:
            axes.append(axis)
    _check_zips(out, axes, entry)
    return axes


def _check_zips(out: Expansion, axes: list[_Axis], entry: dict[str, Any] | None = None
                ) -> None:
    """Zip axes of one entry (or of train) of one length; one that differs is reported
    and dropped (from ``entry`` too, so that nothing else is said about it)."""
    zipped = [a for a in axes if a.zipped]
    for axis in zipped[1:]:
        first = zipped[0]
        if len(axis.values) != len(first.values):
            out.findings.append((axis.loc, f"expected {len(first.values)} values, as many as "
                                 f"the zip of {first.key} has, got {len(axis.values)}"))
            axes.remove(axis)
            if entry is not None:
                entry.pop(axis.key, None)


def _product(axes: list[_Axis]) -> list[list[tuple[_Axis, int]]]:
    """Every combination: a list of (axis, index of its value)."""
    factors: list[list[list[tuple[_Axis, int]]]] = []
    for a in axes:
        if not a.zipped:
            factors.append([[(a, j)] for j in range(len(a.values))])
    zipped = [a for a in axes if a.zipped]
    if zipped:
        factors.append([[(a, j) for a in zipped] for j in range(len(zipped[0].values))])
    return [[pair for part in combo for pair in part] for combo in itertools.product(*factors)]


def _combinations(out: Expansion, section: str, i: int, entry: dict[str, Any],
                  axes: list[_Axis], train_axes: list[_Axis]):
    base = entry.get("label") or entry.get("name")
    base = base if isinstance(base, str) else f"{section}{i}"
    for own in _product(axes):
        for trained in _product(train_axes):
            made = {k: v for k, v in entry.items() if not any(a.key == k for a in axes)}
            swept: dict[str, Any] = {}
            values: dict[str, Loc] = {}
            parts = []
            for axis, j in own:
                made[axis.key] = axis.values[j]
                swept[axis.key] = axis.values[j]
                values[axis.key] = (*axis.loc, j)
                parts.append(sweep_label_part(axis.key, axis.values[j]))
            if trained:
                train = dict(made.get("train") or {}) if isinstance(made.get("train"),
                                                                     dict) else {}
                for axis, j in trained:
                    key = axis.key.removeprefix("train.")
                    train[key] = axis.values[j]
                    swept[axis.key] = axis.values[j]
                    values[f"train.{key}"] = (*axis.loc, j)
                    parts.append(sweep_label_part(key, axis.values[j]))
                made["train"] = train
            made["label"] = "-".join([base, *parts])
            made["sweep_of"] = base
            made["swept"] = swept
            yield made, values


def _leftover_axes(out: Expansion, node: Any, loc: Loc) -> None:
    """An axis anywhere else (the dataset, a procedure, report): said where it may go."""
    if isinstance(node, dict):
        if is_axis(node) and loc:
            out.findings.append((loc, "a sweep axis here is not expanded; axes go in the "
                                 "parameters of models, attacks and explainers entries "
                                 "and in train"))
            return
        for key, value in node.items():
            if not (len(loc) == 2 and loc[0] in SECTIONS and key == "swept"):
                _leftover_axes(out, value, (*loc, key))
    elif isinstance(node, list):
        for j, value in enumerate(node):
            _leftover_axes(out, value, (*loc, j))

"""From a suite file to a plain mapping: bounded YAML reading and ``--set`` overrides.

Nothing here knows what a suite holds; it only guarantees that what reaches
the schema is a mapping read from a reasonable file, with every ``--set``
applied, and it remembers the line each YAML path came from so that a problem
found later can name it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchlab.suite.problems import Problem, SuiteError, type_name

# A suite is a short file; these bounds keep a hostile one (an alias bomb, a huge or
# endless file, deep nesting) from costing more than a fraction of a second.
MAX_SUITE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000  # nodes of the document once every alias is expanded
# libyaml's parser when present: a 1 MiB suite parses in milliseconds, not seconds
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
                                  f"{type_name(data)}")])
    return data, _line_index(text)


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


@dataclass(slots=True)
class _Frame:
    """One open mapping or sequence while :func:`check_yaml_shape` walks the events."""

    is_mapping: bool
    anchor: str | None
    size: int = 1  # nodes once aliases are expanded, itself included
    children: int = 0  # events closed inside it: keys and values alike for a mapping
    keys: dict[Any, int] = field(default_factory=dict)  # key -> its line
    label: Any = None  # the key or index of the child being read, for the problem's path


def check_yaml_shape(text: str, source: str) -> None:
    """Refuse YAML that is too deep, expands too far through aliases or repeats a key.

    Works on the parser's event stream, without building the document: it keeps
    the expanded size of every anchored node, so an alias bomb is measured, not
    expanded. Raises :class:`SuiteError`, for YAML syntax errors too: the loader,
    which recurses once per level, only ever sees a document that passed.
    """
    stack: list[_Frame] = []
    sizes: dict[str, int] = {}

    def fail(event: yaml.Event, message: str) -> None:
        path = ".".join(str(f.label) for f in stack if f.label is not None)
        raise SuiteError([Problem(source, path, message, event.start_mark.line + 1)])

    def add(event: yaml.Event, size: int) -> None:
        if size > MAX_NODES:
            fail(event, f"aliases expand to more than {MAX_NODES:,} values; expected a "
                 "suite without alias bombs")
        if stack:
            parent = stack[-1]
            parent.size += size
            parent.children += 1
            if parent.size > MAX_NODES:
                fail(event, f"aliases expand to more than {MAX_NODES:,} values; expected a "
                     "suite without alias bombs")

    try:
        for event in yaml.parse(text, Loader=_LOADER):
            if stack and stack[-1].is_mapping and stack[-1].children % 2 == 0:
                # a mapping key comes next
                key = event.value if isinstance(event, yaml.ScalarEvent) else None
                if key is not None:
                    seen = stack[-1].keys
                    if key in seen:
                        stack[-1].label = key
                        fail(event, f"duplicate key '{key}' (also on line {seen[key]}); "
                             "expected each key once")
                    seen[key] = event.start_mark.line + 1
                stack[-1].label = key
            elif stack and not stack[-1].is_mapping:
                stack[-1].label = stack[-1].children
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if len(stack) >= MAX_DEPTH:
                    fail(event, f"nested deeper than {MAX_DEPTH} levels; expected a suite")
                stack.append(_Frame(isinstance(event, yaml.MappingStartEvent), event.anchor))
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                frame = stack.pop()
                if frame.anchor is not None:
                    sizes[frame.anchor] = frame.size
                add(event, frame.size)
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


# --------------------------------------------------------------------------- --set


def overridden_paths(overrides: Iterable[str]) -> list[tuple[str, ...]]:
    """The YAML paths that ``PATH=VALUE`` overrides replace, as tuples of keys."""
    return [tuple(item.partition("=")[0].strip().split(".")) for item in overrides]


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
        except ValueError:  # Python refuses to convert an integer of thousands of digits
            problems.append(Problem(source, path, f"value is a number of {len(raw.strip()):,} "
                                    "characters; expected a number a suite can hold"))
            continue
        keys = path.split(".")
        if not path or any(k == "" for k in keys):
            problems.append(Problem(source, path, "empty key in the path"))
            continue
        if len(keys) > MAX_DEPTH:
            problems.append(Problem(source, _shortened(path), f"the path has {len(keys):,} "
                                    f"parts; expected at most {MAX_DEPTH}"))
            continue
        try:
            _set_path(data, keys, value)
        except _OverrideError as exc:
            problems.append(Problem(source, exc.path, exc.message))
    if problems:
        raise SuiteError(problems)
    return data


_MAX_INDEX_DIGITS = 18  # any list index of a suite is far shorter


def _shortened(text: str, limit: int = 60) -> str:
    """A path or key as a one-line message shows it: its start and its end."""
    return text if len(text) <= limit else f"{text[:28]}...{text[-28:]}"


def _set_path(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """Put ``value`` at ``keys`` in ``data``, creating mappings on the way as needed."""
    node: Any = data
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        here = ".".join(keys[: depth + 1])
        if isinstance(node, list):
            if not key.lstrip("-").isdigit():
                raise _OverrideError(_shortened(here), f"expected a list index, got "
                                     f"'{_shortened(key)}'")
            if len(key) > _MAX_INDEX_DIGITS:
                raise _OverrideError(_shortened(here), f"index of {len(key):,} digits out of "
                                     f"range (the list has {len(node)} items)")
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
            raise _OverrideError(here, f"cannot set a key inside {type_name(node)}")


class _OverrideError(Exception):
    def __init__(self, path: str, message: str):
        self.path, self.message = path, message

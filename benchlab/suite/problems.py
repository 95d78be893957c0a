"""What is wrong with a suite, as one located line per problem.

A :class:`Problem` names the file, the line, the YAML path and what was
expected; a :class:`SuiteError` carries every problem found. :func:`explain`
turns one pydantic error into such a line: the key that is unknown (and the
one that was probably meant), the key that is missing, the value that is out
of range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from benchlab.messages import did_you_mean


class LocatedError(ValueError):
    """A check across fields that knows which entry it is about.

    Raised inside a model validator; pydantic reports it at the model's own
    location, and :func:`explain` appends ``loc`` to point at the entry.
    """

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


def type_name(value: Any) -> str:
    """What a YAML value is, in words: 'a mapping', 'nothing (null)'."""
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- pydantic errors


def explain(err: dict[str, Any], model: type[BaseModel],
            extra_known: Sequence[str] = ()) -> tuple[tuple[Any, ...], str]:
    """Turn one pydantic error of ``model`` into (location, one-line message).

    ``extra_known`` are keys accepted besides ``model``'s own (a component's
    parameters sit next to ``name`` and ``label``).
    """
    # the tag of a union's branch ("<range>") is no key of the suite
    loc = tuple(p for p in err.get("loc", ()) if not (isinstance(p, str) and p[:1] == "<"))
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        known = [k for k in _fields_at(model, loc[:-1]) if k not in ("_params",)]
        known = sorted(set(known) | set(extra_known)) if extra_known else known
        listing = f" (expected one of: {', '.join(known)})" if known else ""
        return loc, f"unknown key '{loc[-1]}'{did_you_mean(loc[-1], known)}{listing}"
    if kind == "missing":
        return loc, "required key is missing"
    if kind == "value_error":
        error = ctx.get("error")
        if isinstance(error, LocatedError):
            return (*loc, *error.loc), str(error)
        return loc, str(error) if error is not None else err.get("msg", "")
    expected = _EXPECTED.get(kind)
    if expected is None:
        msg = err.get("msg", kind)
        expected = msg[0].lower() + msg[1:] if msg else kind
    else:
        expected = expected.format(**{k: str(v) for k, v in ctx.items()})
    return loc, f"expected {expected}, got {_show(err.get('input'))}"


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
    """The model inside an annotation (``list[ModelRef]``, ``ReportSection | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


# pydantic's error type -> what the suite expected there, filled from the error's context
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


def _show(value: Any) -> str:
    """A value as the user wrote it, short: containers by their type, booleans as YAML."""
    if isinstance(value, (dict, list)):
        text = type_name(value)
    elif isinstance(value, str):
        text = repr(value)
    elif isinstance(value, bool):
        text = str(value).lower()
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."

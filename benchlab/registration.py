"""The keywords a plugin may pass to ``register`` beyond ``params`` and ``description``.

Each kind of component declares what it accepts, with the type it expects, so a
misspelt or misplaced keyword (``check_modle=``, ``layers=`` on an attack) fails
when the plugin registers, naming the plugin, instead of being kept and never
read. What a keyword means is documented in ``docs/plugins.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from benchlab.components import Kind, ThreatModel
from benchlab.messages import did_you_mean

__all__ = ["ALIASES", "KEYWORDS", "Keyword", "keyword_problem", "normalised"]


@dataclass(frozen=True)
class Keyword:
    """One accepted keyword: its name, what it must be (in words) and the check."""

    name: str
    expected: str
    accepts: Callable[[Any], bool]
    meaning: str


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_names(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and
            all(isinstance(v, str) and v for v in value))


def _is_passes(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool) and value >= 1) \
        or callable(value)


def _is_reason(value: Any) -> bool:
    return _is_text(value) or callable(value)


def _is_threat(value: Any) -> bool:
    return isinstance(value, ThreatModel) or callable(value)


_LIBRARY = Keyword("library", "the adapted library's name and version, as text", _is_text,
                   "an adapter's library, listed by `benchlab plugins`")
_CHECK_PARAMS = Keyword("check_params", "a function (model, info, params)", callable,
                        "checks parameters that depend on the model before anything trains")

#: older names still accepted: old -> new
ALIASES = {"check_model": "check_params"}

#: kind -> keyword name -> what it must be
KEYWORDS: dict[Kind, dict[str, Keyword]] = {
    "dataset": {k.name: k for k in (_LIBRARY,)},
    "model": {k.name: k for k in (
        _LIBRARY,
        Keyword("layers", "a list of module names", _is_names,
                "the module names explainers can address; the kit checks they exist"),
    )},
    "attack": {k.name: k for k in (
        _LIBRARY, _CHECK_PARAMS,
        Keyword("threat", "a benchlab.ThreatModel or a function (params) -> ThreatModel",
                _is_threat, "the norm the attack bounds, or that it is minimum-norm"),
        Keyword("targets", "a function (model, images, labels, params) -> classes", callable,
                "the classes a targeted attack aims at, so success means reaching them"),
        Keyword("randomised", "True, False or a function (params) -> bool",
                lambda v: isinstance(v, bool) or callable(v),
                "whether the attack draws random numbers (the kit's determinism check)"),
        Keyword("no_effect", "a reason, as text, or a function (params) -> reason or None",
                _is_reason, "why the attack may leave an undefended model's accuracy and "
                "loss as they were (the kit's check that an attack attacks is then "
                "skipped with this reason)"),
    )},
    "explainer": {k.name: k for k in (
        _LIBRARY, _CHECK_PARAMS,
        Keyword("layer_choices", "a function (model, images) -> layer names", callable,
                "the layers the explainer can be computed at"),
        Keyword("explained_layer", "a function (model, params) -> layer name", callable,
                "the layer the given parameters explain"),
    )},
    "procedure": {k.name: k for k in (
        _LIBRARY,
        Keyword("perturb", "a function (model, images, labels, generator, params) -> images",
                callable, "the inputs an adversarial procedure trains on (the kit's ε check)"),
        Keyword("passes", "an integer >= 1 or a function (params) -> int", _is_passes,
                "forward and backward passes per optimisation step (its cost)"),
    )},
    "sink": {k.name: k for k in (_LIBRARY,)},
}


def normalised(extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` with older keyword names replaced by their current ones."""
    return {ALIASES.get(name, name): value for name, value in extra.items()}


def keyword_problem(kind: Kind, extra: Mapping[str, Any]) -> str | None:
    """What is wrong with the keywords ``extra`` given to ``register`` for a ``kind``."""
    accepted = KEYWORDS[kind]
    for old, new in ALIASES.items():
        if old in extra and new in extra:
            return f"keywords '{old}' and '{new}' name the same thing; give '{new}' only"
    for name, value in extra.items():
        keyword = accepted.get(ALIASES.get(name, name))
        if keyword is None:
            known = ", ".join(sorted(accepted)) or "none"
            candidates = [*accepted, *(a for a, n in ALIASES.items() if n in accepted)]
            return (f"unknown keyword '{name}'{did_you_mean(name, candidates)} "
                    f"({kind}s accept: params, description, {known})")
        if not keyword.accepts(value):
            return f"keyword '{name}': expected {keyword.expected}, got {value!r}"
    return None

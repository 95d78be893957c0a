"""What the plugins that adapt other libraries (torchattacks, Captum, pytorch-grad-cam) share.

- :func:`params_from_signature` derives a component's parameter model from the
  constructor (or method) of the library's class, so every keyword the library
  takes is validated with its type and default, and an unknown key gets a
  "did you mean".
- :func:`library_call` runs a library's code on a model and puts back whatever
  the library changes that the component contract says must not change: module
  modes, ``requires_grad``, parameters' ``.grad``, hooks, the global random state.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from pydantic import Field, create_model

from benchlab.components import Params
from benchlab.modes import frozen_eval

__all__ = ["library_call", "params_from_signature", "settable_parameters"]

_SIMPLE = (bool, int, float, str)
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
               "_backward_pre_hooks", "_state_dict_hooks", "_load_state_dict_pre_hooks")


def _simple_annotation(annotation: Any) -> Any | None:
    """``annotation`` when YAML can express it (bool, int, float, str, their Optional,
    a Literal, a tuple of ints), else None."""
    if annotation in _SIMPLE:
        return annotation
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return annotation
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if inner and all(a in _SIMPLE for a in inner):
            return annotation
        return None
    if origin is tuple and args and all(a is int or a is Ellipsis for a in args):
        return annotation
    return None


def _from_default(default: Any) -> Any | None:
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    if isinstance(default, str):
        return str
    if isinstance(default, tuple) and default and all(isinstance(v, int) for v in default):
        return tuple[int, ...]
    return None


def settable_parameters(target: Callable[..., Any], *, skip: Iterable[str] = ()
                        ) -> tuple[dict[str, tuple[Any, Any]], list[str]]:
    """The keyword parameters of ``target`` a YAML suite can set, as name ->
    (type, default), and the names of those it cannot (callables, modules,
    tensors, required arguments without a usable type)."""
    skip = set(skip) | {"self"}
    settable: dict[str, tuple[Any, Any]] = {}
    unsettable: list[str] = []
    for p in inspect.signature(target).parameters.values():
        if p.name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = p.default
        annotation = None
        if p.annotation is not p.empty and not isinstance(p.annotation, str):
            annotation = _simple_annotation(p.annotation)
        if annotation is None and default is not p.empty:
            annotation = _from_default(default)
        if annotation is None or default is p.empty:
            unsettable.append(p.name)
            continue
        settable[p.name] = (annotation, default)
    return settable, unsettable


def params_from_signature(name: str, targets: Iterable[Callable[..., Any]], *,
                          skip: Iterable[str] = (),
                          override: Mapping[str, tuple[Any, Any, str]] | None = None,
                          doc: str = "") -> type[Params]:
    """A parameter model (a :class:`benchlab.Params` subclass, unknown keys rejected)
    with one field per keyword parameter of ``targets`` (a class's ``__init__``, a
    method), in order.

    Types come from the signature's annotations when YAML can express them,
    otherwise from the default's type (``steps=10`` gives an ``int``). ``skip``
    names parameters the adapter supplies itself (``model``, ``eps``, ...);
    ``override`` replaces or adds fields as name -> (type, default, description)
    where benchlab's conventions differ from the library's. Parameters a suite
    cannot express (callables, modules, tensors) are left at the library's default.
    """
    override = dict(override or {})
    fields: dict[str, Any] = {}
    for target in targets:
        settable, _ = settable_parameters(target, skip=skip)
        for key, (annotation, default) in settable.items():
            if key in fields or key in override:
                continue
            description = f"{getattr(target, '__qualname__', name)}: default {default!r}"
            fields[key] = (annotation, Field(default=default, description=description))
    for key, (annotation, default, description) in override.items():
        fields[key] = (annotation, Field(default=default, description=description))
    model = create_model(name, __base__=Params, **fields)
    model.__doc__ = doc or f"Parameters of {name}, derived from the library's signature."
    return model


@contextmanager
def library_call(model: torch.nn.Module, device: torch.device | None = None
                 ) -> Iterator[torch.nn.Module]:
    """Run a library's code on ``model``; afterwards the model is as it was.

    Inside the block the model is in eval mode with parameter gradients off
    (:func:`benchlab.frozen_eval`). On the way out, also on error: every
    parameter's ``.grad`` is put back (some libraries call ``backward()`` or
    ``model.zero_grad()``), hooks the library left on any module are removed, and
    the global random state is restored (some libraries call ``torch.manual_seed``).
    """
    grads = [(param, param.grad) for param in model.parameters()]
    hooks = {(module, attr): set(getattr(module, attr, {}).keys())
             for module in model.modules() for attr in _HOOK_DICTS}
    devices = [device.index or 0] if device is not None and device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), frozen_eval(model):
            yield model
    finally:
        for param, grad in grads:
            param.grad = grad
        for (module, attr), before in hooks.items():
            registered = getattr(module, attr, None)
            if registered is None:
                continue
            for key in [k for k in registered if k not in before]:
                del registered[key]

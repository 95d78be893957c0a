"""Plugin loading and the registry of components.

Plugins are modules advertised in the ``benchlab`` entry-point group; the
built-in ones are advertised by benchlab's own distribution in exactly the
same way. Environment variables:

``BENCHLAB_STRICT_PLUGINS=1``
    a plugin that fails to import or to register is an error instead of a warning.
``BENCHLAB_BLOCK_PLUGINS=a,b``
    entry-point names of plugins not to load at all.

Two plugins registering one name of one kind is a collision: the name is usable
by neither (a suite naming it is refused with both plugins and the command that
blocks one), everything else still works, and ``benchlab plugins`` shows it.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pluggy
from pydantic import BaseModel

from benchlab import hookspecs
from benchlab.components import KINDS, Component, Dataset, Kind, NoParams, Provenance
from benchlab.messages import describe
from benchlab.messages import unknown_name as unknown_name_message
from benchlab.registration import keyword_problem, normalised

ENTRY_POINT_GROUP = "benchlab"
OPTIONAL_GROUP = "benchlab.optional"
STRICT_ENV = "BENCHLAB_STRICT_PLUGINS"
BLOCK_ENV = "BENCHLAB_BLOCK_PLUGINS"

_HOOK_FOR_KIND: dict[Kind, str] = {
    "dataset": "register_datasets",
    "model": "register_models",
    "attack": "register_attacks",
    "explainer": "register_explainers",
    "procedure": "register_procedures",
    "sink": "register_sinks",
}
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")  # part of file names: keep it short


class PluginError(Exception):
    """A plugin broke a rule of the registry (duplicate name, bad registration, ...)."""


class MissingLibrary(ImportError):
    """Raised by a plugin module, when it is imported, if a library it adapts is absent.

    The plugin is then listed as available rather than failed, and a suite that
    names one of its components (``prefix`` + class name) is told how to install it.
    """

    def __init__(self, library: str, *, prefix: str, install: str) -> None:
        super().__init__(f"{library} is not installed; install it with: {install}")
        self.library, self.prefix, self.install = library, prefix, install


def require_library(module: str, *, library: str, prefix: str, install: str) -> Any:
    """Import ``module`` for a plugin that adapts it, or raise :class:`MissingLibrary`.

    Only the absence of ``module`` itself (or of its top-level package) counts as
    missing: a library that is installed but fails on import of one of *its*
    dependencies raises that error unchanged, so it is reported as a failed plugin
    with its real cause rather than as "not installed".
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name not in (module, module.partition(".")[0]):
            raise
        raise MissingLibrary(library, prefix=prefix, install=install) from None


@dataclass(frozen=True)
class AvailablePlugin:
    """A plugin that would register components once its library is installed."""

    plugin: str
    distribution: str
    version: str
    library: str
    prefix: str
    install: str


@dataclass(frozen=True)
class PluginFailure:
    plugin: str
    distribution: str
    error: str


@dataclass(frozen=True)
class Collision:
    kind: str
    name: str
    providers: tuple[Provenance, ...]

    def __str__(self) -> str:
        who = " and ".join(str(p) for p in self.providers)
        blocks = " or ".join(f"BENCHLAB_BLOCK_PLUGINS={p.plugin}" for p in self.providers)
        return (f"the {self.kind} '{self.name}' is registered by {who}; "
                f"set {blocks} to use the other")


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    components: dict[str, list[str]] = field(default_factory=dict)
    # "torchattacks 3.5.1" for a plugin that adapts a library
    libraries: list[str] = field(default_factory=list)
    # what an adapter plugin does not adapt, and why (its module's LEFT_OUT)
    left_out: dict[str, str] = field(default_factory=dict)


class Registry:
    """All components registered by the loaded plugins, by kind and name."""

    def __init__(self) -> None:
        self._components: dict[Kind, dict[str, Component]] = {kind: {} for kind in KINDS}
        self.plugins: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []
        self._collisions: dict[tuple[str, str], Collision] = {}
        self.available: list[AvailablePlugin] = []
        # optional plugins not imported yet: entry-point name -> (name, entry point, provenance)
        self._deferred: dict[str, tuple[str, Any, Provenance]] = {}
        self._strict = False

    # -- optional plugins, loaded on demand ---------------------------------------
    def load_all(self) -> None:
        """Import every optional plugin not imported yet (to list everything)."""
        self._load_deferred(list(self._deferred))

    def _load_for(self, name: str) -> None:
        """Import the optional plugin whose name prefixes ``name`` (``torchattacks.PGD``)."""
        self._load_deferred([p for p in self._deferred if str(name).startswith(p + ".")])

    def _load_deferred(self, names: list[str]) -> None:
        if names:
            batch = [self._deferred.pop(n) for n in names]
            _load(self, batch, self._strict)

    # -- registration --------------------------------------------------------
    def registrar(self, kind: Kind, provenance: Provenance):
        """The ``register`` callback handed to one plugin's hook for one kind."""

        def register(name: str, obj: Any, *, params: type[BaseModel] | None = None,
                     description: str = "", **extra: Any) -> None:
            problem = keyword_problem(kind, extra)
            if problem is not None:
                raise PluginError(f"plugin {provenance}: {kind} {name!r}: {problem}")
            self.add(Component(kind=kind, name=name, obj=obj, params=params or NoParams,
                               provenance=provenance, description=description,
                               extra=normalised(extra)))

        return register

    def add(self, component: Component) -> None:
        kind, name = component.kind, component.name
        who = component.provenance
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise PluginError(f"plugin {who}: invalid {kind} name {name!r} "
                              "(expected letters, digits, '_', '-', '.')")
        if not (isinstance(component.params, type) and issubclass(component.params, BaseModel)):
            raise PluginError(f"plugin {who}: {kind} {name!r}: params must be a pydantic "
                              f"model class, got {component.params!r}")
        if kind == "dataset":
            if not isinstance(component.obj, Dataset):
                raise PluginError(f"plugin {who}: dataset {name!r} does not implement "
                                  "benchlab.components.Dataset (info, load, fetch, files)")
        elif not callable(component.obj):
            raise PluginError(f"plugin {who}: {kind} {name!r} is not callable")
        info = self.plugins.setdefault(
            who.plugin, PluginInfo(who.plugin, who.distribution, who.version))
        info.components.setdefault(kind, []).append(name)
        library = component.extra.get("library")
        if library and library not in info.libraries:
            info.libraries.append(library)
        collision = self._collisions.get((kind, name))
        existing = self._components[kind].pop(name, None)
        if collision is not None or existing is not None:
            before = collision.providers if collision else (existing.provenance,)
            providers = tuple(sorted((*before, who), key=lambda p: p.plugin))
            self._collisions[(kind, name)] = Collision(kind, name, providers)
            return
        self._components[kind][name] = component

    @property
    def collisions(self) -> list[Collision]:
        """Names registered by more than one plugin: usable by none of them."""
        return list(self._collisions.values())

    # -- lookup --------------------------------------------------------------
    def names(self, kind: Kind) -> list[str]:
        self.load_all()
        return sorted(self._components[kind])

    def has(self, kind: Kind, name: str) -> bool:
        """Whether a ``kind`` called ``name`` is registered (importing only the
        optional plugin the name points to)."""
        self._load_for(name)
        return name in self._components[kind]

    def get(self, kind: Kind, name: str) -> Component:
        self._load_for(name)
        try:
            return self._components[kind][name]
        except KeyError:
            raise KeyError(self.missing_message(kind, name)) from None

    def missing_message(self, kind: Kind, name: str) -> str:
        """Why ``name`` is not a usable ``kind``: its library is missing (and how to
        install it), a collision, a failed plugin, or unknown."""
        self._load_for(name)
        for plugin in self.available:
            if str(name).startswith(plugin.prefix):
                return (f"{kind} '{name}' needs {plugin.library}, which is not installed; "
                        f"install it with: {plugin.install}")
        collision = self._collisions.get((kind, name))
        if collision is not None:
            return str(collision)
        for failure in self.failures:
            if failure.plugin == name or failure.distribution == name:
                return (f"unknown {kind} '{name}': plugin {failure.plugin} "
                        f"({failure.distribution}) failed to load: {failure.error}")
        message = unknown_name_message(kind, name, self.names(kind))
        if self.failures:
            failed = "; ".join(f"{f.plugin} ({f.distribution}): {f.error}" for f in self.failures)
            message += f"; plugins that failed to load: {failed}"
        return message

    def find(self, name: str) -> list[Component]:
        """Components of any kind called ``name``."""
        self._load_for(name)
        return [comps[name] for comps in self._components.values() if name in comps]

    def components(self, kind: Kind) -> list[Component]:
        return [self._components[kind][n] for n in self.names(kind)]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _blocked() -> set[str]:
    return {p.strip() for p in os.environ.get(BLOCK_ENV, "").split(",") if p.strip()}


def _plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("benchlab")
    pm.add_hookspecs(hookspecs)
    return pm


def build_registry(plugins: Iterable[tuple[str, object, Provenance]] = (),
                   *, entry_points: bool = True, strict: bool | None = None) -> Registry:
    """Load plugins and collect what they register.

    ``plugins`` adds (name, module-or-object, provenance) triples next to the
    ones found through entry points; tests and notebooks use it.

    Entry points of the ``benchlab.optional`` group are optional plugins: the
    module, and the library behind it, is imported only when a component whose
    name starts with the entry point's name and a dot (``torchattacks.PGD``) is
    looked up, or when every component is listed. So a run that uses none of its
    components does not pay for importing the library.
    """
    strict = _truthy(os.environ.get(STRICT_ENV)) if strict is None else strict
    registry = Registry()
    registry._strict = strict
    blocked = _blocked()
    candidates: list[tuple[str, Any, Provenance]] = []
    if entry_points:
        for group in (ENTRY_POINT_GROUP, OPTIONAL_GROUP):
            for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
                if ep.name in blocked:
                    continue
                dist = ep.dist.name if ep.dist else "?"
                version = ep.dist.version if ep.dist else "?"
                entry = (ep.name, ep, Provenance(ep.name, dist, version))
                if group == OPTIONAL_GROUP:
                    registry._deferred[ep.name] = entry
                else:
                    candidates.append(entry)
    candidates.extend((name, target, prov) for name, target, prov in plugins
                      if name not in blocked)
    _load(registry, candidates, strict)
    return registry


def _is_entry_point(target: Any) -> bool:
    """By class name too: a process may hold two EntryPoint classes (a Dask worker does)."""
    return isinstance(target, importlib.metadata.EntryPoint) or (
        type(target).__name__ == "EntryPoint" and callable(getattr(target, "load", None)))


def _load(registry: Registry, candidates: Iterable[tuple[str, Any, Provenance]],
          strict: bool) -> None:
    """Import ``candidates`` and call their hooks, adding what they register."""
    pm = _plugin_manager()
    loaded: list[tuple[str, Provenance]] = []

    def fail(name: str, dist: str, error: str, exc: BaseException | None = None) -> None:
        if strict:
            raise PluginError(f"plugin {name} ({dist}) failed: {error}") from exc
        registry.failures.append(PluginFailure(name, dist, error))

    for name, target, provenance in candidates:
        if _is_entry_point(target):
            try:
                target = target.load()
            except MissingLibrary as exc:
                registry.available.append(AvailablePlugin(
                    name, provenance.distribution, provenance.version, exc.library,
                    exc.prefix, exc.install))
                continue
            except BaseException as exc:  # noqa: BLE001 - one broken plugin must not stop the rest
                if isinstance(exc, KeyboardInterrupt):
                    raise
                fail(name, provenance.distribution, describe(exc), exc)
                continue
        if pm.get_plugin(name) is not None or any(p is target for p in pm.get_plugins()) \
                or name in registry.plugins:
            continue  # the same module advertised twice
        try:
            pm.register(target, name=name)
        except Exception as exc:
            fail(name, provenance.distribution, describe(exc), exc)
            continue
        loaded.append((name, provenance))
        left_out = getattr(target, "LEFT_OUT", None)
        if isinstance(left_out, dict) and left_out:
            registry.plugins.setdefault(
                name, PluginInfo(name, provenance.distribution, provenance.version)
            ).left_out.update({str(k): str(v) for k, v in left_out.items()})

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        bad = pm.get_name(exc.plugin) or "?"
        raise PluginError(f"plugin {bad}: {exc}") from None

    provenance_by_name = dict(loaded)
    for kind, hook_name in _HOOK_FOR_KIND.items():
        caller = getattr(pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            provenance = provenance_by_name[impl.plugin_name]
            try:
                impl.function(register=registry.registrar(kind, provenance))
            except PluginError:
                raise
            except Exception as exc:
                fail(provenance.plugin, provenance.distribution,
                     f"{hook_name}: {describe(exc)}", exc)
    for name, provenance in loaded:
        registry.plugins.setdefault(
            name, PluginInfo(name, provenance.distribution, provenance.version))
    if strict and registry.collisions:
        raise PluginError(str(registry.collisions[0]))


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of every installed plugin (built once per process)."""
    return build_registry()

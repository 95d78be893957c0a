"""The kit's machinery: a check, its result, and the selection of a component's checks.

A kind of component (``attacks``, ``explainers``, ``models``, ``datasets``)
lists its checks as :class:`CheckSpec` entries; :func:`select_checks` turns them
into :class:`Check` objects bound to one component's parameters, device and data
root. Two things decide how a selected check reports:

- what it needs (:class:`Requirement`): a capability read from what the
  component declared at registration. A component that lacks it has the check
  left out, reported as skipped with the reason, and never called;
- what the author expects (``expected_failures``, check name -> reason): a known
  limitation. Such a check that fails is an expected failure (pytest: xfail with
  the reason); one that passes is an unexpected pass, a failure, so that a stale
  declaration is noticed.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ValidationError

from benchlab.components import KINDS, Component, Kind
from benchlab.messages import describe, first_line, unknown_name
from benchlab.plugins import Registry, default_registry

__all__ = ["Check", "CheckFailure", "CheckResult", "CheckSpec", "Requirement", "Setup",
           "SkipCheck", "resolve", "resolve_any", "select_checks"]

Outcome = Literal["passed", "skipped", "xfailed", "failed"]


# -- results -----------------------------------------------------------------------

@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check, as in pytest: passed, skipped (with the reason), failed as
    expected (``xfailed``, with the declared reason), or failed."""

    name: str
    passed: bool
    message: str = ""
    skipped: bool = False
    traceback: str = ""  # of an exception the component raised
    xfailed: bool = False

    @property
    def failed(self) -> bool:
        return not (self.passed or self.skipped or self.xfailed)

    @property
    def outcome(self) -> Outcome:
        if self.passed:
            return "passed"
        if self.skipped:
            return "skipped"
        return "xfailed" if self.xfailed else "failed"


class CheckFailure(AssertionError):
    """A component broke the rule a check tests."""


class SkipCheck(Exception):
    """A check cannot run here (a missing file, nothing declared); not a failure."""


# -- what a check is given -----------------------------------------------------------

@dataclass(frozen=True)
class Setup:
    """What a check needs besides the component: its parameters, device and data root."""

    params: Mapping[str, Any] | None
    device: torch.device
    data_root: Path | None
    download: bool

    def validated_params(self, component: Component) -> Any:
        values = dict(self.params or {})
        try:
            return component.validate_params(values)
        except ValidationError as exc:
            required = [name for name, f in component.params.model_fields.items()
                        if f.is_required() and name not in values]
            hint = ""
            if required:
                hint = f" (no default for {', '.join(required)}: pass params)"
            raise CheckFailure(f"invalid parameters {values} for {component.kind} "
                               f"'{component.name}'{hint}: {_pydantic_errors(exc)}") from None

    def root(self) -> Path:
        if self.data_root is not None:
            return Path(self.data_root)
        from benchlab.data import data_root  # the data module only when data is read

        return data_root()


CheckFunction = Callable[[Component, Setup], None]


@dataclass(frozen=True)
class Requirement:
    """A capability a check needs, read from what the component declared.

    ``missing(component, setup)`` returns why the component lacks it, or None
    when it has it. It reads declarations only (it never calls the component),
    so the kit can select checks before running any.
    """

    name: str
    missing: Callable[[Component, Setup], str | None] = field(repr=False)


@dataclass(frozen=True)
class CheckSpec:
    """One entry of a kind's list of checks: its name, its test, what it needs."""

    name: str
    function: CheckFunction
    needs: tuple[Requirement, ...] = ()


# -- a check -------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """One named conformance check; call it with the component under test.

    ``check(component)`` raises :class:`CheckFailure` (an AssertionError) on a
    violation and calls ``pytest.skip`` when the check cannot run here (or
    ``pytest.xfail`` for an expected failure); ``check.run(component)`` returns a
    :class:`CheckResult` instead.
    """

    name: str
    kind: Kind
    function: CheckFunction = field(repr=False)
    setup: Setup = field(repr=False)
    needs: tuple[Requirement, ...] = ()
    expected_failure: str | None = None  # why the author expects it to fail

    @property
    def description(self) -> str:
        return first_line(self.function.__doc__ or "")

    def left_out_reason(self, component: Component) -> str | None:
        """Why the check does not apply to ``component`` (a capability it lacks), or None.

        A declaration that cannot be read (invalid parameters, say) leaves the
        check in: running it reports the problem.
        """
        for requirement in self.needs:
            try:
                reason = requirement.missing(component, self.setup)
            except Exception:  # noqa: BLE001 - the check itself reports what is wrong
                continue
            if reason:
                return reason
        return None

    def __call__(self, component: Component) -> None:
        import pytest

        self._refuse_another_kind(component)
        try:
            self._execute(component)
        except SkipCheck as skip:
            pytest.skip(str(skip))
        except Exception:
            if self.expected_failure is None:
                raise
            pytest.xfail(self.expected_failure)
        if self.expected_failure is not None:
            raise CheckFailure(self._unexpected_pass())

    def run(self, component: Component) -> CheckResult:
        """Run the check and report the outcome; exceptions become failures."""
        self._refuse_another_kind(component)
        try:
            self._execute(component)
        except SkipCheck as skip:
            return CheckResult(self.name, False, str(skip), skipped=True)
        except CheckFailure as exc:
            return self._failed(str(exc))
        except Exception as exc:  # noqa: BLE001 - a crashing component is a failed check
            return self._failed(f"raised {describe(exc)}", traceback.format_exc())
        if self.expected_failure is not None:
            return CheckResult(self.name, False, self._unexpected_pass())
        return CheckResult(self.name, True)

    def _failed(self, message: str, trace: str = "") -> CheckResult:
        if self.expected_failure is None:
            return CheckResult(self.name, False, message, traceback=trace)
        return CheckResult(self.name, False, f"expected to fail ({self.expected_failure}): "
                           f"{message}", traceback=trace, xfailed=True)

    def _unexpected_pass(self) -> str:
        return (f"unexpected pass: expected to fail ({self.expected_failure}), but it "
                f"passed; remove '{self.name}' from expected_failures")

    def _refuse_another_kind(self, component: Component) -> None:
        if component.kind != self.kind:
            raise TypeError(f"'{component.name}' is of kind '{component.kind}'; check "
                            f"'{self.name}' is for kind '{self.kind}'")

    def _execute(self, component: Component) -> None:
        reason = self.left_out_reason(component)
        if reason:
            raise SkipCheck(reason)
        devices = [self.setup.device] if self.setup.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), _one_thread():
            self.function(component, self.setup)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run on one CPU thread: the kit's tensors are tiny, and on a busy machine
    synchronising intra-op threads costs far more than the work (30x measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# -- finding the component and selecting its checks ------------------------------------

def resolve(registry: Registry, name: str, kind: Kind | None = None) -> Component:
    """The component called ``name`` (of ``kind`` when given).

    Raises LookupError with the registry's own account of a missing name (the
    closest registered name, a collision, a library to install), or, when
    ``name`` is registered under several kinds and ``kind`` is None, listing them.
    """
    if kind is not None:
        if kind not in KINDS:
            raise LookupError(f"unknown kind '{kind}'; expected one of {', '.join(KINDS)}")
        try:
            return registry.get(kind, name)
        except KeyError as exc:
            raise LookupError(exc.args[0]) from None
    found = registry.find(name)
    if len(found) == 1:
        return found[0]
    if found:
        kinds = ", ".join(c.kind for c in found)
        raise LookupError(f"'{name}' names several components ({kinds}); say which kind")
    # Not usable under any kind: the registry says why for a kind it knows of,
    # and only a name unknown everywhere is worded here, across kinds.
    clashing = [c.kind for c in registry.collisions if c.name == name]
    if clashing:
        raise LookupError(registry.missing_message(clashing[0], name))
    if any(name.startswith(plugin.prefix) for plugin in registry.available):
        raise LookupError(registry.missing_message("component", name))  # how to install it
    every = sorted({n for k in KINDS for n in registry.names(k)})
    raise LookupError(unknown_name("component", name, every))


def resolve_any(component: Component | str, registry: Registry | None,
                kind: Kind | None = None) -> Component:
    """``component`` itself, or the registered component of that name."""
    if isinstance(component, Component):
        return component
    return resolve(registry if registry is not None else default_registry(), component, kind)


def select_checks(kind: Kind, specs: tuple[CheckSpec, ...], component: Component | str, *,
                  params: Mapping[str, Any] | None, device: torch.device | str,
                  registry: Registry | None, data_root: Path | str | None = None,
                  download: bool = False,
                  expected_failures: Mapping[str, str] | None = None) -> Iterator[Check]:
    """The checks of ``kind`` for ``component``; a wrong name, kind or expected
    failure raises here, not on first use."""
    resolved = resolve_any(component, registry, kind)
    if resolved.kind != kind:
        raise TypeError(f"'{resolved.name}' is of kind '{resolved.kind}', not '{kind}'")
    expected = _expected_failures(kind, [spec.name for spec in specs], expected_failures)
    setup = Setup(dict(params) if params is not None else None, torch.device(device),
                  Path(data_root) if data_root is not None else None, download)
    return iter([Check(spec.name, kind, spec.function, setup, spec.needs,
                       expected.get(spec.name)) for spec in specs])


def _expected_failures(kind: Kind, known: list[str],
                       declared: Mapping[str, str] | None) -> dict[str, str]:
    """The declared expected failures, each a known check with a reason."""
    expected = dict(declared or {})
    for name, reason in expected.items():
        if name not in known:
            raise LookupError(unknown_name(f"{kind} check", name, known))
        if not (isinstance(reason, str) and reason.strip()):
            raise ValueError(f"expected failure '{name}' needs a reason (a non-empty "
                             f"string), got {reason!r}")
    return expected


def _pydantic_errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}"
                     for e in exc.errors())

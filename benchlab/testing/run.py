"""Running every check of a component: :func:`run_checks` (what ``benchlab check``
prints) and :func:`parametrize_with_checks` (one pytest test per check).

This module knows every kind's list of checks, so the kit's machinery in
:mod:`benchlab.testing.kit` need not: the kinds' modules build on the machinery,
and this module on them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from benchlab.components import Component, Kind
from benchlab.plugins import Registry
from benchlab.testing.attacks import CHECKS as ATTACK_CHECKS
from benchlab.testing.datasets import CHECKS as DATASET_CHECKS
from benchlab.testing.explainers import CHECKS as EXPLAINER_CHECKS
from benchlab.testing.kit import CheckResult, CheckSpec, resolve_any, select_checks
from benchlab.testing.models import CHECKS as MODEL_CHECKS
from benchlab.testing.procedures import CHECKS as PROCEDURE_CHECKS

if TYPE_CHECKING:
    import pytest

__all__ = ["CHECKS_BY_KIND", "ExpectedFailures", "Target", "parametrize_with_checks",
           "run_checks"]

CHECKS_BY_KIND: dict[Kind, tuple[CheckSpec, ...]] = {
    "attack": ATTACK_CHECKS,
    "explainer": EXPLAINER_CHECKS,
    "model": MODEL_CHECKS,
    "dataset": DATASET_CHECKS,
    "procedure": PROCEDURE_CHECKS,
    "sink": (),  # a sink talks to a service: tests/test_tracking.py shows how to test one
}

#: check name -> why it is expected to fail; for several components, a function
#: of the component giving that mapping (or None)
ExpectedFailures = (Mapping[str, str] | Callable[[Component], Mapping[str, str] | None]
                    | None)

Target = Component | str | tuple[Component | str, Mapping[str, Any]]


def run_checks(component: Component | str, device: torch.device | str = "cpu", *,
               params: Mapping[str, Any] | None = None, registry: Registry | None = None,
               data_root: Path | str | None = None, download: bool = False,
               expected_failures: Mapping[str, str] | None = None) -> list[CheckResult]:
    """Run every check for ``component``'s kind and return the outcomes in order.

    ``expected_failures`` maps the name of a check the component is known to
    fail to the reason: that check reports ``xfailed`` when it fails, and fails
    when it passes.
    """
    resolved = resolve_any(component, registry)
    checks = select_checks(resolved.kind, CHECKS_BY_KIND[resolved.kind], resolved,
                           params=params, device=device, registry=registry,
                           data_root=data_root, download=download,
                           expected_failures=expected_failures)
    return [check.run(resolved) for check in checks]


def parametrize_with_checks(components: Iterable[Target], *, device: torch.device | str = "cpu",
                            registry: Registry | None = None,
                            data_root: Path | str | None = None,
                            expected_failures: ExpectedFailures = None) -> pytest.MarkDecorator:
    """A ``pytest.mark.parametrize("component, check", ...)`` over every check of each component.

    Each entry is a component, a registered name, or a ``(component_or_name,
    params)`` pair. Test ids read ``NAME-CHECK`` (``pgd-eps_ball``), or
    ``NAME(k=v)-CHECK`` when params are given. A check that does not apply (the
    component lacks a capability it needs) is marked skipped with the reason.
    ``expected_failures`` is a mapping (check name -> reason) for every entry, or
    a function of the component giving one.
    """
    import pytest

    values, ids = [], []
    for target in components:
        params: Mapping[str, Any] | None = None
        if isinstance(target, tuple):
            target, params = target
        component = resolve_any(target, registry)
        label = component.name
        if params:
            label += "(" + ",".join(f"{k}={v}" for k, v in params.items()) + ")"
        expected = expected_failures(component) if callable(expected_failures) \
            else expected_failures
        for check in select_checks(component.kind, CHECKS_BY_KIND[component.kind], component,
                                   params=params, device=device, registry=registry,
                                   data_root=data_root, expected_failures=expected):
            reason = check.left_out_reason(component)
            if reason:
                values.append(pytest.param(component, check, marks=pytest.mark.skip(reason)))
            else:
                values.append((component, check))
            ids.append(f"{label}-{check.name}")
    return pytest.mark.parametrize(("component", "check"), values, ids=ids)

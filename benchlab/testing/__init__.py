"""Conformance kit: small named checks that a component meets its contract.

Plugin authors run the checks in their own test suite, one test per check::

    from benchlab.testing import parametrize_with_checks

    @parametrize_with_checks(["pgd"])
    def test_conformance(component, check):
        check(component)

``benchlab check NAME`` runs the same checks through :func:`run_checks`.

Attack and explainer checks run the component on a tiny deterministic CNN
(:func:`tiny_cnn`; the check that an attack attacks, on a small MLP,
:func:`attackable_mlp`) and a synthetic batch in [0, 1] (:func:`synthetic_batch`), so
no training, data or network is needed and each check takes milliseconds. Every
check runs inside :func:`torch.random.fork_rng`: seeding there does not leak
into the caller's random state.

Which module owns what:

- :mod:`~benchlab.testing.kit`: a check, its result, what it needs of a
  component, expected failures, and selecting a component's checks;
- :mod:`~benchlab.testing.fixtures`: the kit's model and synthetic data;
- :mod:`~benchlab.testing.expect`: the assertions the checks share;
- :mod:`~benchlab.testing.attacks`, :mod:`~benchlab.testing.explainers`,
  :mod:`~benchlab.testing.models`, :mod:`~benchlab.testing.datasets`,
  :mod:`~benchlab.testing.procedures`: each kind's
  checks and its ``check_<kind>`` entry point;
- :mod:`~benchlab.testing.run`: :func:`run_checks` and :func:`parametrize_with_checks`.
"""

from benchlab.testing.attacks import check_attack
from benchlab.testing.datasets import check_dataset
from benchlab.testing.explainers import check_explainer
from benchlab.testing.fixtures import attackable_mlp, synthetic_batch, tiny_cnn
from benchlab.testing.kit import Check, CheckFailure, CheckResult, resolve
from benchlab.testing.models import check_model
from benchlab.testing.procedures import check_procedure
from benchlab.testing.run import parametrize_with_checks, run_checks

__all__ = [
    "Check",
    "CheckFailure",
    "CheckResult",
    "attackable_mlp",
    "check_attack",
    "check_dataset",
    "check_explainer",
    "check_model",
    "check_procedure",
    "parametrize_with_checks",
    "resolve",
    "run_checks",
    "synthetic_batch",
    "tiny_cnn",
]

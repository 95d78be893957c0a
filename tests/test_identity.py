"""The model cache key covers every source file that decides a model's weights."""

from __future__ import annotations

import sys
import textwrap

import pytest

from benchlab import identity
from benchlab.components import Component, NoParams, Provenance
from benchlab.identity import TRAINING_CODE, code_closure, weights_code


@pytest.fixture
def plugin_package(tmp_path, monkeypatch):
    """A third-party model plugin: a model module importing a helper, a relative module,
    and a module only under TYPE_CHECKING."""
    pkg = tmp_path / "keypkg"
    pkg.mkdir()
    files = {
        "__init__.py": "",
        "model.py": """
            from typing import TYPE_CHECKING

            from keypkg import helpers
            from .layers import block

            if TYPE_CHECKING:
                from keypkg import typing_only

            def build(info, params):
                return helpers.wrap(block())
        """,
        "helpers.py": "def wrap(x):\n    return x\n",
        "layers.py": "def block():\n    return None\n",
        "typing_only.py": "X = 1\n",
        "unrelated.py": "Y = 2\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg
    for name in [m for m in sys.modules if m == "keypkg" or m.startswith("keypkg.")]:
        del sys.modules[name]


def _component(obj) -> Component:
    return Component("model", "m", obj, NoParams, Provenance("keypkg", "keypkg", "0.1"))


def _edit(path) -> None:
    path.write_text(path.read_text() + "# edited\n")


def test_a_module_the_model_imports_changes_the_key(plugin_package):
    from keypkg.model import build

    model = _component(build)
    before = weights_code(model)
    for name in ("unrelated.py", "typing_only.py"):  # not imported (or never at run time)
        _edit(plugin_package / name)
        assert weights_code(model) == before, name
    for name in ("helpers.py", "layers.py", "model.py"):
        _edit(plugin_package / name)
        after = weights_code(model)
        assert after != before, name
        before = after


def test_the_closure_follows_project_imports_only(plugin_package):
    from keypkg.model import build

    found = code_closure(("keypkg.model",), frozenset({"keypkg"}))
    assert list(found) == ["keypkg", "keypkg.helpers", "keypkg.layers", "keypkg.model"]
    assert weights_code(_component(build))["modules"] > len(found)  # benchlab's own too


@pytest.mark.parametrize("module", ["benchlab.execute.train", "benchlab.training", "benchlab.data",
                                    "benchlab_plugins.cnn", "benchlab.components"])
def test_editing_benchlab_code_that_decides_the_weights_changes_the_key(monkeypatch, module):
    """The train job function, the trainer, data loading and the model's own module
    (and what it imports) are all in the key: a change to any of their files changes it."""
    from benchlab.plugins import default_registry

    registry = default_registry()
    model, dataset = registry.get("model", "cnn"), registry.get("dataset", "mnist")
    before = weights_code(model, dataset)
    files = code_closure((*TRAINING_CODE, "benchlab_plugins.cnn"),
                         frozenset({"benchlab", "benchlab_plugins"}))
    assert module in files
    real = identity._file_sha256
    monkeypatch.setattr(identity, "_file_sha256",
                        lambda path: "edited" if path == files[module] else real(path))
    assert weights_code(model, dataset) != before


def test_report_code_is_not_part_of_the_key():
    files = code_closure((*TRAINING_CODE, "benchlab_plugins.cnn"),
                         frozenset({"benchlab", "benchlab_plugins"}))
    assert not any(name.startswith(("benchlab.report", "benchlab.cli", "benchlab.runner"))
                   for name in files)

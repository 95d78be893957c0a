"""Plugin loading: entry points, provenance, duplicates, broken and blocked plugins."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types

import pytest

import benchlab
from benchlab.components import Provenance
from benchlab.plugins import PluginError, build_registry


def _install_fake_distribution(tmp_path, monkeypatch, dist: str, modules: dict[str, str],
                               entry_points: dict[str, str]) -> None:
    """Make a distribution visible through real entry-point metadata on sys.path."""
    info = tmp_path / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[benchlab]\n{lines}\n")
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in modules:
        sys.modules.pop(name, None)


GOOD_PLUGIN = """
    import benchlab

    def attack(model, images, labels, eps, params):
        return images.expand(len(eps), *images.shape).clone()

    @benchlab.hookimpl
    def register_attacks(register):
        register("identity", attack, description="returns the input")
"""


def test_builtins_load_through_entry_points():
    registry = build_registry()
    for name in ("datasets", "cnn", "fgsm", "gradcam"):
        assert registry.plugins[name].distribution == "benchlab"
        assert registry.plugins[name].version == benchlab.__version__


def test_third_party_plugin_gets_its_provenance(tmp_path, monkeypatch):
    _install_fake_distribution(tmp_path, monkeypatch, "bl-extra", {"bl_extra": GOOD_PLUGIN},
                               {"extra": "bl_extra"})
    registry = build_registry()
    component = registry.get("attack", "identity")
    assert component.provenance == Provenance("extra", "bl-extra", "1.2.3")
    assert registry.plugins["extra"].components == {"attack": ["identity"]}


def test_a_plugin_that_fails_to_import_is_reported_and_skipped(tmp_path, monkeypatch):
    _install_fake_distribution(
        tmp_path, monkeypatch, "bl-broken",
        {"bl_broken": "raise ImportError('needs libfoo')", "bl_fine": GOOD_PLUGIN},
        {"broken": "bl_broken", "fine": "bl_fine"})
    registry = build_registry()
    assert "identity" in registry.names("attack")
    [failure] = [f for f in registry.failures if f.plugin == "broken"]
    assert failure.distribution == "bl-broken"
    assert "ImportError: needs libfoo" in failure.error


def test_strict_mode_makes_import_failures_fatal(tmp_path, monkeypatch):
    _install_fake_distribution(tmp_path, monkeypatch, "bl-broken",
                               {"bl_broken2": "1 / 0"}, {"broken": "bl_broken2"})
    monkeypatch.setenv("BENCHLAB_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="broken .*ZeroDivisionError"):
        build_registry()


def test_blocked_plugins_are_not_loaded(tmp_path, monkeypatch):
    _install_fake_distribution(tmp_path, monkeypatch, "bl-extra", {"bl_extra2": GOOD_PLUGIN},
                               {"extra": "bl_extra2"})
    monkeypatch.setenv("BENCHLAB_BLOCK_PLUGINS", "extra, fgsm")
    registry = build_registry()
    assert "identity" not in registry.names("attack")
    assert "fgsm" not in registry.plugins and "extra" not in registry.plugins
    assert "bl_extra2" not in sys.modules


def _plugin(**hooks) -> types.ModuleType:
    module = types.ModuleType("plugin_under_test")
    for name, function in hooks.items():
        setattr(module, name, benchlab.hookimpl(function))
    return module


def test_two_components_with_one_name_name_both_plugins():
    def reg(register):
        register("same", lambda *a: None)

    a = ("alpha", _plugin(register_attacks=reg), Provenance("alpha", "pkg-a", "1"))
    b = ("beta", _plugin(register_attacks=reg), Provenance("beta", "pkg-b", "2"))
    with pytest.raises(PluginError) as info:
        build_registry([a, b], entry_points=False)
    message = str(info.value)
    assert "attack 'same'" in message and "pkg-a 1" in message and "pkg-b 2" in message


def test_same_name_in_different_kinds_is_fine():
    def reg(register):
        register("same", lambda *a: None)

    plugin = _plugin(register_attacks=reg, register_explainers=reg)
    registry = build_registry([("p", plugin, Provenance("p", "d", "1"))], entry_points=False)
    assert registry.names("attack") == registry.names("explainer") == ["same"]


def test_misspelled_hook_is_an_error():
    plugin = _plugin(register_attack=lambda register: None)  # missing the final 's'
    with pytest.raises(PluginError, match="register_attack"):
        build_registry([("typo", plugin, Provenance("typo", "d", "1"))], entry_points=False)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda register: register("bad name!", lambda *a: None), "invalid attack name"),
        (lambda register: register("ok", lambda *a: None, params=dict), "params must be a pydantic model"),
        (lambda register: register("ok", 42), "is not callable"),
    ],
)
def test_bad_registrations_are_rejected(call, message):
    plugin = _plugin(register_attacks=call)
    with pytest.raises(PluginError, match=message):
        build_registry([("p", plugin, Provenance("p", "d", "1"))], entry_points=False)


def test_a_hook_that_raises_is_reported_not_fatal():
    def boom(register):
        raise RuntimeError("cannot reach GPU")

    ok = _plugin(register_attacks=lambda register: register("fine", lambda *a: None))
    registry = build_registry([("boom", _plugin(register_models=boom), Provenance("boom", "d", "1")),
                               ("ok", ok, Provenance("ok", "d", "1"))], entry_points=False)
    assert registry.names("attack") == ["fine"]
    assert "register_models: RuntimeError: cannot reach GPU" in registry.failures[0].error


def test_plugins_command_lists_builtins_as_json():
    out = subprocess.run([sys.executable, "-m", "benchlab.cli", "plugins", "--json"],
                         capture_output=True, text=True, check=True)
    listing = json.loads(out.stdout)
    names = {p["name"]: p for p in listing["plugins"]}
    assert {"datasets", "cnn", "fgsm", "gradcam"} <= set(names)
    assert names["cnn"]["distribution"] == "benchlab"

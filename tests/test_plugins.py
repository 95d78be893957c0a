"""Plugin loading: entry points, provenance, duplicates, broken and blocked plugins."""

from __future__ import annotations

import json
import re
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


def _colliding_plugins():
    def reg(register):
        register("same", lambda *a: None)

    def other(register):
        register("other", lambda *a: None)

    a = ("alpha", _plugin(register_attacks=reg), Provenance("alpha", "pkg-a", "1"))
    b = ("beta", _plugin(register_attacks=lambda register: (reg(register), other(register))),
         Provenance("beta", "pkg-b", "2"))
    return [a, b]


def test_a_name_collision_disables_that_name_only_and_names_both_plugins():
    registry = build_registry(_colliding_plugins(), entry_points=False)
    assert registry.names("attack") == ["other"]
    with pytest.raises(KeyError) as info:
        registry.get("attack", "same")
    message = info.value.args[0]
    assert message == ("the attack 'same' is registered by alpha (pkg-a 1) and beta (pkg-b 2); "
                       "set BENCHLAB_BLOCK_PLUGINS=alpha or BENCHLAB_BLOCK_PLUGINS=beta to use "
                       "the other")
    [collision] = registry.collisions
    assert (collision.kind, collision.name) == ("attack", "same")


def test_strict_mode_makes_a_collision_fatal():
    with pytest.raises(PluginError, match="attack 'same' is registered by alpha"):
        build_registry(_colliding_plugins(), entry_points=False, strict=True)


def test_plugins_check_and_unrelated_suites_still_work_with_a_collision(
        tmp_path, monkeypatch, capsys, isolated_cache):
    from benchlab import cli
    from tests.conftest import TOY_PROVENANCE, toy_plugin

    noise = ("evil", _plugin(register_attacks=lambda register: register("noise", lambda *a: None)),
             Provenance("evil", "evil-attacks", "6.6.6"))
    registry = build_registry([("toy", toy_plugin(), TOY_PROVENANCE), noise], entry_points=False)
    monkeypatch.setattr(cli, "_registry", lambda: registry)

    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert ("COLLISION: the attack 'noise' is registered by evil (evil-attacks 6.6.6) and toy "
            "(benchlab-tests 0); set BENCHLAB_BLOCK_PLUGINS=evil or BENCHLAB_BLOCK_PLUGINS=toy "
            "to use the other") in out
    assert cli.main(["plugins", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["collisions"][0]["plugins"] == ["evil", "toy"]

    assert cli.main(["check", "noise"]) == 2
    assert "registered by evil (evil-attacks 6.6.6) and toy" in capsys.readouterr().err
    assert cli.main(["check", "intensity"]) == 0

    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\ndataset: {name: toy}\nmodels: [{name: tiny}]\n"
                     "train: {epochs: 1}\nattacks: [{name: noise, eps: [0.1]}]\n")
    assert cli.main(["validate", str(suite)]) == 2
    err = capsys.readouterr().err
    assert f"{suite}:5: attacks.0.name: the attack 'noise' is registered by evil" in err
    suite.write_text("name: s\ndataset: {name: toy}\nmodels: [{name: tiny}]\ntrain: {epochs: 1}\n")
    assert cli.main(["run", str(suite), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0


def test_a_suite_naming_a_component_of_a_plugin_that_failed_to_load_says_so(
        tmp_path, monkeypatch, toy_registry):
    from benchlab.plugins import PluginFailure
    from benchlab.suite import SuiteError, load_suite

    toy_registry.failures.append(PluginFailure("pgd", "benchlab-pgd", "ModuleNotFoundError: No module named 'torchattacks'"))
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\ndataset: {name: toy}\nmodels: [{name: tiny}]\n"
                     "attacks: [{name: pgd, eps: [0.1]}]\n")
    with pytest.raises(SuiteError) as info:
        load_suite(suite, toy_registry)
    assert str(info.value) == (
        f"{suite}:4: attacks.0.name: unknown attack 'pgd': plugin pgd (benchlab-pgd) failed to "
        "load: ModuleNotFoundError: No module named 'torchattacks'")


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


@pytest.mark.parametrize(
    ("kind", "keywords", "message"),
    [
        ("attack", {"check_modle": print},
         "plugin p (d 1): attack 'x': unknown keyword 'check_modle'; did you mean 'check_model'?"),
        ("attack", {"check_parms": print}, "unknown keyword 'check_parms'; did you mean 'check_params'?"),
        ("attack", {"check_model": print, "check_params": print},
         "keywords 'check_model' and 'check_params' name the same thing"),
        ("attack", {"layers": ["conv1"]}, "unknown keyword 'layers'"),  # a model's keyword
        ("model", {"layers": "conv1"}, "keyword 'layers': expected a list of module names"),
        ("explainer", {"layer_choices": ["a"]}, "keyword 'layer_choices': expected a function"),
        ("dataset", {"targets": print}, "datasets accept: params, description, library"),
    ],
)
def test_registration_keywords_are_declared_per_kind(kind, keywords, message):
    def call(register):
        register("x", lambda *a: None, **keywords)

    plugin = _plugin(**{f"register_{kind}s": call})
    with pytest.raises(PluginError, match=re.escape(message)):
        build_registry([("p", plugin, Provenance("p", "d", "1"))], entry_points=False)


def test_the_older_keyword_name_is_kept_under_the_current_one():
    def call(register):
        register("x", lambda *a: None, check_model=print)

    registry = build_registry([("p", _plugin(register_attacks=call), Provenance("p", "d", "1"))],
                              entry_points=False)
    assert registry.get("attack", "x").extra == {"check_params": print}


def test_every_builtin_registration_keyword_is_declared():
    from benchlab.plugins import default_registry
    from benchlab.registration import KEYWORDS

    registry = default_registry()
    registry.load_all()
    for kind in KEYWORDS:
        for component in registry.components(kind):
            assert set(component.extra) <= set(KEYWORDS[kind]), component.name


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

"""examples/benchlab-pgd, loaded the way any third-party plugin is: through its
distribution's entry-point metadata, never by registering it by hand."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchlab.components import Provenance
from benchlab.plugins import build_registry, default_registry
from benchlab.testing import run_checks

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "benchlab-pgd"


def example_project() -> dict:
    """The [project] table of the example's pyproject.toml."""
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]


def write_dist_info(site: Path, project: dict) -> Path:
    """What pip leaves in site-packages for the metadata: METADATA and entry_points.txt."""
    name, version = project["name"], project["version"]
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = ["[benchlab]"] + [f"{key} = {value}"
                              for key, value in project["entry-points"]["benchlab"].items()]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return dist_info


def forget_module(name: str) -> None:
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


@pytest.fixture
def pgd_site(tmp_path, monkeypatch):
    """benchlab-pgd 0.1.0 as importlib.metadata sees it after an install: its
    dist-info on sys.path, and its sources importable."""
    site = tmp_path / "site"
    write_dist_info(site, example_project())
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    monkeypatch.syspath_prepend(str(site))
    forget_module("benchlab_pgd")
    yield site
    forget_module("benchlab_pgd")


def subprocess_env(*paths: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")])
    return env


# -- discovery -------------------------------------------------------------------------

def test_without_the_distribution_there_is_no_pgd():
    if "pgd" in build_registry().names("attack"):
        pytest.skip("benchlab-pgd is installed in this environment")
    assert "pgd" not in [ep.name for ep in importlib.metadata.entry_points(group="benchlab")]


def test_the_entry_point_is_found(pgd_site):
    (entry_point,) = [ep for ep in importlib.metadata.entry_points(group="benchlab")
                      if ep.name == "pgd"]
    assert entry_point.value == "benchlab_pgd"
    assert (entry_point.dist.name, entry_point.dist.version) == ("benchlab-pgd", "0.1.0")


def test_build_registry_lists_pgd_with_its_provenance(pgd_site):
    registry = build_registry()
    component = registry.get("attack", "pgd")
    assert component.provenance == Provenance("pgd", "benchlab-pgd", "0.1.0")
    assert str(component.provenance) == "pgd (benchlab-pgd 0.1.0)"
    assert registry.plugins["pgd"].components == {"attack": ["pgd"]}
    assert registry.failures == []
    import benchlab_pgd

    assert component.obj is benchlab_pgd.pgd
    assert component.params is benchlab_pgd.PGDParams
    assert component.description.startswith("projected gradient descent")


def test_blocking_the_plugin_hides_it(pgd_site, monkeypatch):
    monkeypatch.setenv("BENCHLAB_BLOCK_PLUGINS", "pgd")
    assert "pgd" not in build_registry().names("attack")


def test_params_model_defaults_and_rejects_unknown_keys(pgd_site):
    params = build_registry().get("attack", "pgd").params
    assert params().model_dump() == {"steps": 10, "alpha": None, "random_start": True,
                                     "batch_size": 256, "seed": None}
    with pytest.raises(ValueError, match="step"):
        params.model_validate({"step": 5})
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        params.model_validate({"steps": 0})


def test_pgd_passes_the_kit_with_and_without_random_start(pgd_site):
    component = build_registry().get("attack", "pgd")
    randomised = run_checks(component)
    assert [(r.name, r.message) for r in randomised if r.failed] == []
    assert [r.name for r in randomised if r.skipped] == ["batch_halves"]
    deterministic = run_checks(component, params={"random_start": False})
    assert all(r.passed for r in deterministic), deterministic


def test_cli_lists_and_checks_pgd(pgd_site, capsys):
    cli = pytest.importorskip("benchlab.cli")
    default_registry.cache_clear()
    try:
        assert cli.main(["plugins", "--json"]) == 0
        listing = json.loads(capsys.readouterr().out)
        (pgd,) = [p for p in listing["plugins"] if p["name"] == "pgd"]
        assert pgd == {"name": "pgd", "distribution": "benchlab-pgd", "version": "0.1.0",
                       "components": {"attack": ["pgd"]}}
        assert cli.main(["check", "pgd"]) == 0
        out = capsys.readouterr().out
        assert "attack pgd: eps_ball" in out and "FAIL" not in out
    finally:
        default_registry.cache_clear()


# -- a real pip install ----------------------------------------------------------------

def test_pip_install_into_a_target_directory(tmp_path):
    """pip builds the example with its own pyproject.toml; the installed copy is
    found by a fresh interpreter and passes the example's own test suite."""
    source = tmp_path / "benchlab-pgd"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    target = tmp_path / "target"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300)
    if install.returncode != 0 and "No module named pip" in install.stderr:
        pytest.skip("pip is not available")
    assert install.returncode == 0, install.stderr
    assert (target / "benchlab_pgd-0.1.0.dist-info" / "entry_points.txt").read_text().split() \
        == ["[benchlab]", "pgd", "=", "benchlab_pgd"]

    # One thread: the tensors are tiny, and idle threads only contend for the cores.
    env = subprocess_env(target, OMP_NUM_THREADS="1")
    probe = subprocess.run(
        [sys.executable, "-c", "from benchlab.plugins import build_registry; "
         "print(build_registry().get('attack', 'pgd').provenance)"],
        capture_output=True, text=True, env=env, timeout=300)
    assert probe.stdout.strip() == "pgd (benchlab-pgd 0.1.0)", probe.stderr

    shutil.rmtree(source / "src")  # the tests must run against the installed copy
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=source, capture_output=True, text=True, env=env, timeout=600)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]
    assert " passed" in tests.stdout


# -- a whole suite ---------------------------------------------------------------------

SUITE = """\
name: pgd_vs_fgsm
dataset: {name: mnist, train_size: 2000, test_size: 500}
models:
  - name: cnn
train: {runs: 1, epochs: 1, batch_size: 64, lr: 0.01}
attacks:
  - name: fgsm
    eps: [0.1, 0.2]
  - name: pgd
    eps: [0.1, 0.2]
    steps: 10
evaluate: {test_size: 200}
"""


@pytest.mark.slow
def test_a_suite_runs_pgd_beside_fgsm(pgd_site, tmp_path, mnist_root):
    pytest.importorskip("benchlab.runner", reason="benchlab.runner is not available yet")
    pytest.importorskip("benchlab.cli", reason="benchlab.cli is not available yet")
    suite = tmp_path / "pgd_vs_fgsm.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "run"
    env = subprocess_env(pgd_site, EXAMPLE / "src", BENCHLAB_CACHE=str(tmp_path / "cache"))
    run = subprocess.run(
        [sys.executable, "-m", "benchlab.cli", "run", str(suite), "--out", str(out),
         "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in ("suite.yaml", "environment.json", "results.csv", "summary.md"):
        assert (out / name).is_file(), name
    assert list(out.glob("*.png"))

    import pandas as pd

    results = pd.read_csv(out / "results.csv")
    accuracy = (results[results["metric"] == "accuracy"]
                .set_index(["attack", "eps"])["value"])
    for eps in (0.1, 0.2):
        # Ten projected steps from a random start find at least what one step finds
        # (up to 2 of the 200 images, for the randomness of the start).
        assert accuracy[("pgd", eps)] <= accuracy[("fgsm", eps)] + 0.01
    assert "pgd" in (out / "summary.md").read_text()
    environment = json.loads((out / "environment.json").read_text())
    assert environment["plugins"]["pgd"] == "benchlab-pgd 0.1.0"

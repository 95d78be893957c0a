"""The Python API: benchlab.run and benchlab.open, on the toy components (fast)."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import benchlab
from benchlab import progress
from benchlab.api import overrides
from benchlab.suite import SuiteError

TOY = """\
name: toy
dataset: {name: toy, train_size: 96, test_size: 64}
models: [{name: tiny}, {name: tiny, label: wide, width: 8}]
train: {runs: 1, epochs: 1, batch_size: 32}
attacks: [{name: noise, eps: [0.1, 0.2]}]
explainers: [{name: intensity}]
evaluate: {test_size: 32, explain_size: 16, count: 4}
"""


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("suite") / "toy.yaml"
    path.write_text(TOY)
    return path


@pytest.fixture
def finished(suite_file, toy_registry, isolated_cache, tmp_path):
    return benchlab.run(suite_file, set={"train.runs": 2}, out=tmp_path / "run", device="cpu",
                        registry=toy_registry)


def test_a_run_gives_its_results_summary_and_plots_as_objects(finished, tmp_path):
    assert finished.path == tmp_path / "run" and finished.failed == {}
    results = finished.results
    assert set(results["run"]) == {0, 1}  # the override reached the runner
    assert set(results.loc[results["metric"] == "accuracy", "eps"]) == {0.0, 0.1, 0.2}
    assert finished.suite["train"]["runs"] == 2
    summary = finished.summary
    assert summary.title == "toy" and summary.verdict
    assert all(isinstance(line, str) and line for line in summary.verdict)
    final = summary.section("Final test accuracy").tables[0]
    assert list(final["model"]) == ["tiny", "wide"] and (final["runs"] == 2).all()
    assert summary.tables and all(len(t.columns) > 1 for t in summary.tables.values())
    assert finished.plots and all(p.is_file() and p.suffix == ".png"
                                  for p in finished.plots.values())
    with pytest.raises(KeyError, match="unknown figure 'nope'"):
        finished.figure("nope")


def test_a_run_shows_its_verdict_and_main_figure_in_a_notebook(finished):
    shown = finished._repr_html_()
    assert "<b>toy</b>" in shown and "data:image/png;base64," in shown
    assert shown.count("<p>") == 1 + len(finished.summary.verdict)
    md = finished._repr_markdown_()
    first = next(iter(finished.plots.values()))
    assert md.startswith("**toy**") and f"]({first})" in md


def test_open_reads_the_same_run_back(finished):
    again = benchlab.open(finished.path)
    assert again.results.equals(finished.results)
    assert again.summary.verdict == finished.summary.verdict
    assert again.failed == {}
    comparison = again.compare(finished)
    assert set(comparison.table.loc[comparison.table["run"] == "B", "outcome"]) == {
        "identical values"}


def test_errors_are_exceptions_with_the_cli_lines(suite_file, toy_registry, isolated_cache,
                                                  tmp_path, finished):
    with pytest.raises(SuiteError) as info:
        benchlab.run(suite_file, set={"train.epoch": 3}, registry=toy_registry)
    (line,) = str(info.value).splitlines()  # the line benchlab validate prints
    assert line.startswith(f"{suite_file}: --set train.epoch: unknown key 'epoch'; did you "
                           "mean 'epochs'? (expected one of")
    with pytest.raises(ValueError, match=r"not empty \(it holds a benchlab run\)"):
        benchlab.run(suite_file, out=finished.path, registry=toy_registry)
    with pytest.raises(ValueError, match="device: expected 'auto', 'cpu' or 'cuda'"):
        benchlab.run(suite_file, device="tpu", registry=toy_registry)
    with pytest.raises(ValueError, match="does not exist; expected a benchlab run directory"):
        benchlab.open(tmp_path / "nothing")
    with pytest.raises(ValueError, match="set: train.seed: expected a value YAML can hold"):
        overrides({"train.seed": object()})


def test_overrides_are_the_cli_set_strings():
    assert overrides({"train.runs": 2, "models": [{"name": "cnn"}], "train.eval_every": None,
                      "train.precision": "bf16"}) == [
        "train.runs=2", 'models=[{"name": "cnn"}]', "train.eval_every=null",
        'train.precision="bf16"']
    assert overrides(["train.runs=2"]) == ["train.runs=2"] and overrides(None) == []


def test_import_benchlab_is_cheap():
    code = "import sys, benchlab; print(sorted(m for m in ('torch', 'pandas', 'benchlab.runner') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_progress_bar_shows_in_a_notebook_and_stays_as_it_was_elsewhere(monkeypatch):
    bar = progress.Progress("plain")
    assert bar.bar.disable  # pytest's stderr is no terminal: the per-job lines instead
    bar.close()

    class ZMQInteractiveShell:  # what a Jupyter kernel's shell is called
        pass

    fake = types.SimpleNamespace(get_ipython=lambda: ZMQInteractiveShell())
    monkeypatch.setitem(sys.modules, "IPython", fake)
    bar = progress.Progress("notebook")
    assert not bar.bar.disable
    bar.close()

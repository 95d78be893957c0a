"""The example notebook, executed in a real Jupyter kernel as a user would run it."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebook" / "benchlab.ipynb"


@pytest.fixture(scope="module")
def executed(mnist_root, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("BENCHLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("BENCHLAB_DATA", str(mnist_root))
    try:
        nb = nbformat.read(NOTEBOOK, as_version=4)
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOK.parent)}}
                                ).execute()
    finally:
        mp.undo()
    return [c for c in nb.cells if c.cell_type == "code"]


def _data(cell, kind: str) -> str:
    return "".join(o.get("data", {}).get(kind, "") for o in cell.outputs
                   if o.output_type in ("execute_result", "display_data"))


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.mark.slow
def test_the_run_shows_its_verdict_and_main_figure(executed):
    shown = _data(executed[0], "text/html")
    assert "<b>fgsm_gradcam</b>" in shown and "Per-epoch test accuracy" in shown
    assert '<img alt="test_accuracy"' in shown and "data:image/png;base64," in shown
    assert "fgsm_gradcam: 100%" in _text(executed[0])  # the progress bar, finished


@pytest.mark.slow
def test_results_summary_plots_and_comparison_are_objects(executed):
    by_eps = _data(executed[1], "text/plain")
    assert "0.1" in by_eps and "0.2" in by_eps and "count" in by_eps
    assert "Per-epoch test accuracy" in _data(executed[2], "text/plain")
    assert "'Robustness'" in _data(executed[3], "text/plain")
    assert "cnn" in _data(executed[4], "text/html")
    assert "'robustness'" in _data(executed[5], "text/plain")
    assert "image/png" in executed[6].outputs[0]["data"]
    compared = _data(executed[7], "text/markdown")
    assert "`train.precision` | fp32 | bf16" in compared and " pp [" in compared


@pytest.mark.slow
def test_a_bad_suite_raises_the_line_the_cli_prints(executed):
    (line,) = _text(executed[8]).strip().splitlines()
    assert line.startswith(str(NOTEBOOK.parents[2] / "suites" / "fgsm_gradcam.yaml"))
    assert (": --set train.epoch: unknown key 'epoch'; did you mean 'epochs'? (expected one "
            "of") in line and line.endswith("procedure)")

"""The command line as a user meets it: exit codes, one-line errors, real MNIST runs."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"epoch_time_s", "images_per_s", "attack_time_s", "explain_images_per_s"}

# Small enough for CI, real enough to mean something: real MNIST, real models.
SMALL = ["--set", "dataset.train_size=2000", "--set", "dataset.test_size=500",
         "--set", "train.epochs=1", "--set", "evaluate.test_size=300",
         "--set", "attacks.1.test_size=100", "--set", "attacks.1.steps=10",
         "--set", "evaluate.explain_size=100", "--set", "evaluate.count=5"]


def benchlab(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchlab.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, **(env or {})}, **kw)


@pytest.fixture
def cache_env(tmp_path):
    return {"BENCHLAB_CACHE": str(tmp_path / "cache")}


def test_shipped_suites_validate():
    for suite in sorted((ROOT / "suites").glob("*.yaml")):
        result = benchlab("validate", str(suite))
        assert result.returncode == 0, result.stderr
        assert "ok" in result.stdout


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("attacks.0.eps=[0.1, 1.5]", "attacks.0.eps.1: expected a value <= 1 for 'fgsm' (L∞ ball): "
         "the largest L∞ distance between two 1x28x28 images with values in [0, 1]; got 1.5"),
        ("attacks.0.name=fgms", "attacks.0.name: unknown attack 'fgms'; did you mean 'fgsm'?"),
        ("models.1.name=cnn_nb", "models.1.name: unknown model 'cnn_nb'; did you mean 'cnn_bn'?"),
        ("explainers.0.layer=3", "explainers.0.layer: expected a string, got 3"),
        ("train.epochs=0", "train.epochs: expected a value > 0, got 0"),
        ("train.epoch=3", "train.epoch: unknown key 'epoch'; did you mean 'epochs'?"),
        ("attacks.1.steps=-1", "attacks.1.steps:"),
    ],
)
def test_validate_rejects_bad_values_with_one_line_and_status_2(override, expected):
    result = benchlab("validate", "suites/fgsm_gradcam.yaml", "--set", override)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("suites/fgsm_gradcam.yaml:")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "the file is empty"),
        ("name: [oops\n", "invalid YAML"),
        ("name: x\ndataset: {name: mnist}\nmodels: [{name: cnn}]\nbogus: 1\n",
         "bogus: unknown key 'bogus'"),
    ],
)
def test_run_refuses_bad_files_before_doing_anything(tmp_path, content, expected):
    suite = tmp_path / "bad.yaml"
    suite.write_text(content)
    result = benchlab("run", str(suite), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_missing_suite_file():
    result = benchlab("run", "suites/nope.yaml")
    assert result.returncode == 2
    assert result.stderr.strip() == "suites/nope.yaml: no such file"


def test_report_of_a_directory_without_results():
    result = benchlab("report", "suites")
    assert result.returncode == 2 and "no results.csv" in result.stderr


def test_check_command_runs_the_kit_on_a_builtin():
    result = benchlab("check", "fgsm")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS  attack fgsm: eps_ball" in result.stdout
    result = benchlab("check", "fgsn")
    assert result.returncode == 2 and "fgsm" in result.stderr


def _measurements(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path / "results.csv")
    frame = frame[~frame["metric"].isin(TIMING)].drop(columns=["job"])
    return frame.sort_values(list(frame.columns[:-1]), na_position="first").reset_index(drop=True)


@pytest.fixture(scope="module")
def small_fgsm_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One complete small run of fgsm_gradcam.yaml from an empty model cache, shared by
    the tests that check it and the one that compares an interrupted run against it."""
    root = tmp_path_factory.mktemp("fgsm-run")
    out = root / "run"
    result = benchlab("run", "suites/fgsm_gradcam.yaml", *SMALL, "--out", str(out),
                      "--device", "cpu", env={"BENCHLAB_CACHE": str(root / "cache")},
                      timeout=900)
    return out, result


@pytest.mark.slow
def test_fgsm_gradcam_suite_on_real_mnist(small_fgsm_run):
    out, result = small_fgsm_run
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out)
    results = pd.read_csv(out / "results.csv")
    acc = results[results["metric"] == "accuracy"].groupby(["model", "attack", "eps"])["value"].mean()
    for model in ("cnn", "cnn_bn"):
        for attack in ("fgsm", "ifgsm"):
            curve = acc[model][attack]
            assert curve[0.0] > 0.8  # 1 epoch on 2,000 images already learns MNIST
            assert curve[0.3] < curve[0.1] < curve[0.0]
    for png in ("robustness.png", "attention.png", "grid_cnn_bn-ifgsm-gradcam.png"):
        assert (out / png).stat().st_size > 10_000
    summary = (out / "summary.md").read_text()
    assert "## Robustness" in summary and "## Attention under attack" in summary
    assert "### Attention shift by outcome" in summary and "model randomisation" in summary
    assert (out / "attention_outcome.png").stat().st_size > 10_000

    # every model x attack x explainer x eps, clean included, states its empty share over
    # all 100 explained images, and the faithfulness and sanity rows are there
    explained = results[results["explainer"].notna()].set_index(
        ["model", "attack", "explainer", "eps", "metric"])["value"]
    for model in ("cnn", "cnn_bn"):
        for attack in ("fgsm", "ifgsm"):
            for explainer in ("gradcam", "random"):
                for eps in (0.0, 0.1, 0.2, 0.3):
                    key = (model, attack, explainer, eps)
                    assert explained[(*key, "cam_empty_share.n")] == 100
                    assert 0 <= explained[(*key, "cam_empty_share")] <= 1
                    assert explained[(*key, "cam_similarity.n")] <= 100
                    assert explained[(*key, "deletion_auc.n")] == 100
                assert -1 <= explained[(model, attack, explainer, 0.0,
                                        "sanity_rank_correlation")] <= 1
            # the noise control never gives an empty map and never resembles the clean one
            assert explained[(model, attack, "random", 0.3, "cam_empty_share")] == 0
            assert abs(explained[(model, attack, "random", 0.3, "cam_similarity")]) < 0.05

    # report redraws from results.csv alone (into a copy: the run is shared)
    copy = out.parent / "redrawn"
    shutil.copytree(out, copy)
    (copy / "robustness.png").unlink()
    redo = benchlab("report", str(copy))
    assert redo.returncode == 0 and (copy / "robustness.png").exists()


@pytest.mark.slow
def test_ctrl_c_keeps_finished_jobs_and_resume_completes_them(tmp_path, cache_env,
                                                              small_fgsm_run):
    args = ["suites/fgsm_gradcam.yaml", *SMALL, "--device", "cpu"]
    reference, done = small_fgsm_run  # the same suite run whole, with its own model cache
    assert done.returncode == 0, done.stderr

    out = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "-m", "benchlab.cli", "run", *args, "--out", str(out)],
                            cwd=ROOT, env={**os.environ, **cache_env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # a shell running this test in the background ignores SIGINT, and
                            # children inherit that; a user's terminal does not
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "jobs").glob("*.json"))) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stdout.strip().splitlines()[-1] == str(out)
    kept = pd.read_csv(out / "results.csv")
    assert kept["job"].nunique() >= 3

    # the command it prints is the one that resumes, --set overrides included
    hint = stderr.strip().splitlines()[-1].split("Continue with: ")[1]
    assert hint == f"benchlab run --resume {out} --device cpu"
    resumed = benchlab(*shlex.split(hint)[1:], env=cache_env, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert "already done" in resumed.stderr
    pd.testing.assert_frame_equal(_measurements(out), _measurements(reference),
                                  check_exact=False, rtol=1e-4, atol=1e-6)

"""benchlab compare: two or more run directories side by side, on the committed
references and on small hand-made run directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchlab import stats
from benchlab.compare import CompareError, compare, read_run
from benchlab.compare_text import markdown, write

ROOT = Path(__file__).resolve().parents[1]
FP32 = ROOT / "results" / "reference" / "bn_vs_plain"
BF16 = ROOT / "results" / "reference" / "bn_vs_plain_bf16"
COLUMNS = "job,model,dataset,run,seed,epoch,step,attack,eps,explainer,metric,value"


def benchlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchlab.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env=dict(os.environ))


def _final_test_acc(run: Path, model: str) -> np.ndarray:
    rows = pd.read_csv(run / "results.csv")
    rows = rows[(rows["model"] == model) & (rows["metric"] == "test_acc")]
    return rows[rows["epoch"] == rows["epoch"].max()].sort_values("run")["value"].to_numpy()


@pytest.fixture(scope="module")
def fp32_bf16():
    return compare([FP32, BF16])


def test_fp32_against_bf16_gives_welch_intervals_holm_corrected(fp32_bf16):
    t = fp32_bf16.table
    b = t[t["run"] == "B"]
    assert len(b) == 12 and b["ci_low"].notna().all() and b["p_holm"].notna().all()
    assert fp32_bf16.tests == 12
    # the numbers are the statistics helpers' on the runs' final-epoch values
    row = b[(b["model"] == "cnn_bn") & (b["metric"] == "test_acc")].iloc[0]
    fp32, bf16 = _final_test_acc(FP32, "cnn_bn"), _final_test_acc(BF16, "cnn_bn")
    assert len(fp32) == len(bf16) == 3
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(stats.welch_ci(bf16, fp32))
    assert row["p"] == pytest.approx(stats.welch(bf16, fp32).p)
    assert row["diff"] == pytest.approx(bf16.mean() - fp32.mean())
    assert b["p_holm"].tolist() == pytest.approx(stats.holm(b["p"].tolist()))
    assert (b["p_holm"] >= b["p"]).all()


def test_fp32_against_bf16_names_the_one_suite_key_that_differs(fp32_bf16):
    assert fp32_bf16.suite_differences == {"train.precision": ["fp32", "bf16"]}
    assert "torch" not in fp32_bf16.environment_differences
    md = markdown(fp32_bf16)
    assert "| `train.precision` | fp32 | bf16 |" in md
    assert "the same torch (2.15.0+cu132), device (cpu) and CPU (AMD EPYC)" in md
    line = next(x for x in md.splitlines() if x.startswith("| cnn_bn | test_acc |"))
    assert "(n=3)" in line and " pp [" in line and "nan" not in md.lower()


def _run_dir(path: Path, rows: list[str], suite: dict | None = None,
             env: dict | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "results.csv").write_text(COLUMNS + "\n" + "\n".join(rows) + "\n")
    (path / "suite.yaml").write_text(yaml.safe_dump(suite or {"name": "toy", "train": {
        "runs": 1, "precision": "fp32"}}))
    (path / "environment.json").write_text(json.dumps(env or {
        "torch": "2.15.0", "device": "cpu", "cpu": "AMD EPYC"}))
    return path


def _train(run: int, acc: float, loss: float = 0.1, model: str = "tiny") -> list[str]:
    job = f"train-{model}-r{run:02d}"
    return [f"{job},{model},toy,{run},{run + 1},1,,,,,test_acc,0.5",  # not the last epoch
            f"{job},{model},toy,{run},{run + 1},2,,,,,test_acc,{acc}",
            f"{job},{model},toy,{run},{run + 1},2,,,,,test_loss,{loss}",
            f"{job},{model},toy,{run},{run + 1},2,10,,,,step_test_acc,0.9"]


def test_single_runs_are_flagged_in_words_without_a_test(tmp_path):
    a = _run_dir(tmp_path / "a", [*_train(0, 0.9, 0.2),
                                  "attack-tiny-noise-r00,tiny,toy,0,1,,,noise,0.1,,accuracy,0.4",
                                  "attack-tiny-noise-r00,tiny,toy,0,1,,,noise,0.1,,accuracy.n,32"])
    b = _run_dir(tmp_path / "b", _train(0, 0.8, 0.2),
                 suite={"name": "toy", "train": {"runs": 1, "precision": "bf16"}},
                 env={"torch": "2.14.1", "device": "cuda", "cpu": "Intel"})
    c = compare([a, b])
    t = c.table.set_index(["metric", "run"])
    assert set(t.index.get_level_values("metric")) == {"test_acc", "test_loss", "accuracy"}
    assert t.loc[("test_acc", "A"), "mean"] == 0.9  # the last epoch, not the first
    assert t.loc[("test_acc", "B"), "outcome"] == "differs (single run: no test)"
    assert t.loc[("test_loss", "B"), "outcome"] == "identical values"
    assert t.loc[("accuracy", "B"), "outcome"] == "only in the baseline"
    assert c.tests == 0 and t["p"].isna().all()
    assert c.suite_differences == {"train.precision": ["fp32", "bf16"]}
    assert list(c.environment_differences) == ["torch", "device", "cpu"]
    md = markdown(c)
    assert "no test (single run)" in md and "nan" not in md.lower()
    assert "| noise | 0.1 |" in md  # the attack and its ε have columns when there are some


def test_runs_without_spread_are_the_same_or_differ_in_every_run(tmp_path):
    a = _run_dir(tmp_path / "a", [*_train(0, 0.9), *_train(1, 0.9)])
    b = _run_dir(tmp_path / "b", [*_train(0, 0.9, loss=0.3), *_train(1, 0.9, loss=0.3),
                                  *_train(2, 0.9, loss=0.3)])
    t = compare([a, b]).table.set_index(["metric", "run"])
    assert t.loc[("test_acc", "B"), "outcome"] == "same in every run"
    c = _run_dir(tmp_path / "c", [*_train(0, 0.9), *_train(1, 0.9)])
    assert compare([a, c]).table.set_index(["metric", "run"]).loc[
        ("test_acc", "B"), "outcome"] == "identical values"
    assert t.loc[("test_loss", "B"), "outcome"] == "differs in every run"


def test_metric_patterns_keep_only_matching_metrics(tmp_path):
    c = compare([FP32, BF16], ["test_*"])
    assert set(c.table["metric"]) == {"test_acc", "test_loss"} and c.tests == 4
    with pytest.raises(CompareError, match="matches no metric"):
        compare([FP32, BF16], ["nothing*"])


def test_out_writes_the_markdown_and_a_tidy_csv(tmp_path, fp32_bf16):
    md, csv = write(fp32_bf16, tmp_path / "cmp")
    assert md.read_text() == markdown(fp32_bf16)
    table = pd.read_csv(csv)
    assert len(table) == 24 and set(table["run"]) == {"A", "B"}
    assert set(table["path"]) == {str(FP32), str(BF16)}
    # the same comparison as an offline page in the report's style: every section, every
    # metric row, nothing loaded from outside
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert page.startswith("<!doctype html>") and "Content-Security-Policy" in page
    assert '<h2>What differs</h2>' in page and '<h2>Metrics</h2>' in page
    assert "train.precision" in page
    rows = [line for line in markdown(fp32_bf16).splitlines() if line.startswith("| ")]
    assert page.count("<tr") >= len(rows)


@pytest.mark.parametrize(("make", "expected"), [
    (lambda p: p, "does not exist; expected a benchlab run directory"),
    (lambda p: (p.write_text("x"), p)[1], "is a file; expected a benchlab run directory"),
    (lambda p: (p.mkdir(), p)[1], "no results.csv there; not a finished benchlab run"),
    (lambda p: _damage(p, "results.csv", "a,b\n1,2\n"), "results.csv: damaged (no column"),
    (lambda p: _damage(p, "results.csv", b"\xff\xfe\x00garbage"), "results.csv: cannot be read"),
    (lambda p: _damage(p, "suite.yaml", "name: [unclosed"), "suite.yaml: damaged"),
    (lambda p: _damage(p, "environment.json", "{"), "environment.json: damaged"),
    (lambda p: _damage(p, "environment.json", "[1, 2]"), "expected a mapping, got list"),
])
def test_what_cannot_be_compared_is_one_line_naming_the_file(tmp_path, make, expected):
    bad = make(tmp_path / "run")
    with pytest.raises(CompareError) as info:
        read_run(bad)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert str(bad) in str(info.value)


def test_the_cli_says_what_cannot_be_compared_in_one_line_with_status_2(tmp_path):
    bad = _damage(tmp_path / "run", "suite.yaml", "name: [unclosed")
    result = benchlab("compare", str(FP32), str(bad))
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"benchlab: {bad / 'suite.yaml'}: damaged (")


def _damage(path: Path, name: str, content: str | bytes) -> Path:
    _run_dir(path, _train(0, 0.9))
    target = path / name
    target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    return path


def test_the_cli_prints_markdown_and_writes_files_only_with_out(tmp_path):
    result = benchlab("compare", str(FP32), str(BF16))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# Comparison of 2 runs") and " pp [" in result.stdout
    assert not list(tmp_path.iterdir())
    result = benchlab("compare", str(FP32), str(BF16), "--out", str(tmp_path / "c"))
    assert result.returncode == 0
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["compare.csv", "compare.html",
                                                                   "compare.md"]
    assert benchlab("compare", str(FP32)).returncode == 2

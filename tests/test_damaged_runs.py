"""Damaged run directories and caches are detected, named and redone; never reported as data."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from benchlab import cli, execute, metrics, runner
from benchlab.cache import ModelCache
from benchlab.store import COLUMNS, RunStore
from benchlab.suite import validate_suite

SUITE = {
    "name": "toy",
    "dataset": {"name": "toy", "train_size": 96, "test_size": 64},
    "models": [{"name": "tiny"}],
    "train": {"runs": 2, "epochs": 1, "batch_size": 32},
    "attacks": [{"name": "noise", "eps": [0.1]}],
    "explainers": [{"name": "intensity"}],
    "evaluate": {"test_size": 32, "explain_size": 16, "count": 4},
}
TIMING = {"epoch_time_s", "images_per_s", "attack_time_s", "explain_images_per_s"}


def _run(registry, out, cache, *, resume=False, **kw):
    logs = []
    outcome = runner.run_suite(validate_suite({**SUITE, **kw}, registry), registry, out,
                               device="cpu", resume=resume, cache=ModelCache(cache),
                               log=logs.append)
    return outcome, logs


def _values(out):
    frame = pd.read_csv(out / "results.csv", dtype={"attack": str, "explainer": str})
    frame = frame[~frame["metric"].isin(TIMING)]
    return frame.sort_values(["job", "metric", "eps"]).reset_index(drop=True)


@pytest.fixture
def finished(tmp_path, toy_registry):
    out = tmp_path / "run"
    outcome, _ = _run(toy_registry, out, tmp_path / "cache")
    assert not outcome.failed and len(outcome.ran) == 6
    return out, _values(out)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(("damage", "job"), [
    (lambda out: (out / "jobs" / "train-tiny-r01.csv").unlink(), "train-tiny-r01"),
    (lambda out: (out / "jobs" / "attack-tiny-r00-noise.csv").write_text(""), "attack-tiny-r00-noise"),
    (lambda out: (out / "jobs" / "explain-tiny-r00-noise-intensity.csv").write_text("garbage,\n1"), "explain-tiny-r00-noise-intensity"),
    (lambda out: _truncate(out / "artifacts" / "attack-tiny-r01-noise.pt"), "attack-tiny-r01-noise"),
    (lambda out: _truncate(out / "artifacts" / "explain-tiny-r01-noise-intensity.pt"), "explain-tiny-r01-noise-intensity"),
])
def test_resume_redoes_a_damaged_job_and_names_it(finished, tmp_path, toy_registry, damage, job):
    out, expected = finished
    damage(out)
    outcome, logs = _run(toy_registry, out, tmp_path / "cache", resume=True)
    assert job in outcome.ran and not outcome.failed and len(outcome.skipped) == 5
    [line] = [line for line in logs if line.startswith("damaged job")]
    assert line.startswith(f"damaged job {job}: {out}/") and line.endswith("; running it again")
    pd.testing.assert_frame_equal(_values(out), expected)


def test_report_names_a_damaged_job_leaves_it_out_and_does_not_abort(finished, capsys):
    out, expected = finished
    (out / "jobs" / "train-tiny-r01.csv").unlink()
    _truncate(out / "artifacts" / "explain-tiny-r00-noise-intensity.pt")
    assert cli.main(["report", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"damaged job train-tiny-r01: {out}/jobs/train-tiny-r01.csv is missing" in err
    assert "damaged job explain-tiny-r00-noise-intensity" in err
    assert f"benchlab run --resume {out}" in err
    left = _values(out)
    assert set(left["job"]) == set(expected["job"]) - {
        "train-tiny-r01", "explain-tiny-r00-noise-intensity"}


def test_an_edited_results_csv_is_rebuilt_from_the_job_files_by_report(finished):
    out, expected = finished
    results = out / "results.csv"
    results.write_text(results.read_text().replace("accuracy,", "accuracy,0.9999#", 1))
    assert cli.main(["report", str(out)]) == 0
    pd.testing.assert_frame_equal(_values(out), expected)


def test_a_damaged_cached_model_is_trained_again_not_used(finished, tmp_path, toy_registry,
                                                          caplog):
    out, expected = finished
    for weights in (tmp_path / "cache").glob("*/*/model.pt"):
        blob = bytearray(weights.read_bytes())
        blob[-40] ^= 0x01
        weights.write_bytes(bytes(blob))
    again = tmp_path / "again"
    outcome, _ = _run(toy_registry, again, tmp_path / "cache")
    assert not outcome.failed
    assert caplog.text.count("is damaged (model.pt does not match its SHA-256") == 2
    pd.testing.assert_frame_equal(_values(again), expected)


def test_a_foreign_state_dict_in_the_cache_is_a_miss_not_a_model_failure(
        finished, tmp_path, toy_registry):
    out, expected = finished
    cache = ModelCache(tmp_path / "cache")
    for entry in (tmp_path / "cache").glob("*/*"):
        metrics = json.loads((entry / "metrics.json").read_text())
        cache.path(entry.name).rename(entry.with_name(".old"))
        cache.save(entry.name, {"conv.weight": torch.zeros(3)}, metrics, {})
    again = tmp_path / "again"
    outcome, _ = _run(toy_registry, again, tmp_path / "cache")
    assert not outcome.failed
    pd.testing.assert_frame_equal(_values(again), expected)


def test_resume_retrains_a_finished_model_that_left_the_cache(tmp_path, toy_registry,
                                                              monkeypatch):
    out = tmp_path / "run"
    real = execute.attack

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(execute, "attack", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(toy_registry, out, tmp_path / "cache")
    monkeypatch.setattr(execute, "attack", real)
    for entry in (tmp_path / "cache").glob("*/*/digests.json"):
        entry.unlink()
    outcome, logs = _run(toy_registry, out, tmp_path / "cache", resume=True)
    assert not outcome.failed and "train-tiny-r00" in outcome.ran
    assert any("train-tiny-r00: its trained model is not in the model cache" in line
               for line in logs)


def test_an_internal_error_fails_its_job_only_and_keeps_a_traceback(tmp_path, toy_registry,
                                                                    monkeypatch, capsys):
    def broken_metric(*args, **kwargs):
        raise ZeroDivisionError("a bug in a metric")

    monkeypatch.setattr(metrics, "cam_similarity", broken_metric)
    out = tmp_path / "run"
    outcome, _ = _run(toy_registry, out, tmp_path / "cache")
    assert sorted(outcome.failed) == ["explain-tiny-r00-noise-intensity",
                                      "explain-tiny-r01-noise-intensity"]
    assert len(outcome.ran) == 4
    message = outcome.failed["explain-tiny-r00-noise-intensity"]
    log = out / "jobs" / "explain-tiny-r00-noise-intensity.log"
    assert message == "internal error: ZeroDivisionError: a bug in a metric"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "broken_metric" in text


def _broken_registry():
    from conftest import TOY_PROVENANCE, toy_plugin

    import benchlab
    from benchlab.components import Provenance
    from benchlab.plugins import build_registry

    def explode(model, images, labels, eps, params):
        raise RuntimeError("kaboom in the attack")

    plugin = type(toy_plugin())("broken")
    plugin.register_attacks = benchlab.hookimpl(
        lambda register: register("boom", explode))
    return build_registry([("toy", toy_plugin(), TOY_PROVENANCE),
                           ("broken", plugin, Provenance("broken", "broken-pkg", "9"))],
                          entry_points=False)


@pytest.mark.parametrize("how", ["flag", "env", "neither"])
def test_a_failed_job_names_its_traceback_file_and_debug_prints_it(
        tmp_path, monkeypatch, capsys, isolated_cache, how):
    registry = _broken_registry()
    monkeypatch.setattr(cli, "_registry", lambda: registry)
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\ndataset: {name: toy}\nmodels: [{name: tiny}]\n"
                     "train: {epochs: 1}\nattacks: [{name: boom, eps: [0.1]}]\n")
    args = ["run", str(suite), "--out", str(tmp_path / "out"), "--device", "cpu"]
    if how == "flag":
        args.append("--debug")
    if how == "env":
        monkeypatch.setenv("BENCHLAB_DEBUG", "1")
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    log = tmp_path / "out" / "jobs" / "attack-tiny-r00-boom.log"
    assert (f"attack-tiny-r00-boom: attack 'boom' from broken (broken-pkg 9): RuntimeError: "
            f"kaboom in the attack (traceback: {log})") in err
    assert "in explode" in log.read_text()
    assert ("in explode" in err) == (how != "neither")


def test_check_shows_the_traceback_of_a_failing_check(monkeypatch, capsys):
    registry = _broken_registry()
    monkeypatch.setattr(cli, "_registry", lambda: registry)
    assert cli.main(["check", "boom"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  attack boom" in out and "RuntimeError: kaboom in the attack" in out
    assert "Traceback (most recent call last)" in out and "in explode" in out


def test_writing_results_costs_the_job_not_the_run(tmp_path, toy_registry, monkeypatch):
    reads = []
    real = pd.read_csv
    monkeypatch.setattr(pd, "read_csv", lambda path, *a, **k: reads.append(path) or real(path, *a, **k))
    suite = {"train": {"runs": 6, "epochs": 1, "batch_size": 32}}
    outcome, _ = _run(toy_registry, tmp_path / "run", tmp_path / "cache", **suite)
    jobs = len(outcome.ran)
    assert jobs == 18  # 6 runs x (train, attack, explain)
    # one rebuild at the end reads each job's rows once; rebuilding after every job read
    # jobs * (jobs + 1) / 2 = 171 files
    assert len(reads) <= jobs
    frame = pd.read_csv(tmp_path / "run" / "results.csv")
    assert list(frame.columns) == COLUMNS and set(frame["job"]) == set(outcome.ran)
    assert len(pd.read_csv(tmp_path / "run" / "jobs.csv")) == jobs


def test_results_csv_holds_every_finished_job_while_the_run_goes_on(tmp_path, toy_registry,
                                                                     monkeypatch):
    seen = []
    real = RunStore.save_job

    def spy(self, record, rows):
        real(self, record, rows)
        seen.append((record.id, set(pd.read_csv(self.root / "results.csv")["job"])))

    monkeypatch.setattr(RunStore, "save_job", spy)
    _run(toy_registry, tmp_path / "run", tmp_path / "cache")
    finished = [job_id for job_id, _ in seen]
    for i, (_, in_results) in enumerate(seen):
        assert in_results == set(finished[: i + 1])

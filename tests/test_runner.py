"""The runner on synthetic components: results layout, resume, and untrusted plugins."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
import yaml
from conftest import toy_plugin

import benchlab
from benchlab import execute, runner, training
from benchlab.cache import ModelCache
from benchlab.components import Provenance
from benchlab.plugins import build_registry
from benchlab.report import render
from benchlab.store import COLUMNS, RunStore
from benchlab.suite import validate_suite

SUITE = {
    "name": "toy",
    "dataset": {"name": "toy", "train_size": 192, "test_size": 96},
    "models": [{"name": "tiny"}, {"name": "tiny", "label": "wide", "width": 6}],
    "train": {"runs": 2, "epochs": 2, "batch_size": 32, "lr": 0.05},
    "attacks": [{"name": "noise", "eps": [0.1, 0.3]}],
    "explainers": [{"name": "intensity"}],
    "evaluate": {"test_size": 64, "explain_size": 32, "count": 4},
}
TIMING = {"epoch_time_s", "images_per_s", "attack_time_s", "explain_images_per_s"}


def _suite(registry, **changes):
    data = json.loads(json.dumps(SUITE))
    data.update(changes)
    return validate_suite(data, registry)


def _run(registry, out, cache_dir, **kw):
    return runner.run_suite(_suite(registry, **kw), registry, out, device="cpu",
                            cache=ModelCache(cache_dir), log=lambda s: None)


def _measurements(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows without wall-clock metrics, in a canonical order."""
    keep = frame[~frame["metric"].isin(TIMING)].drop(columns=["job"])
    return keep.sort_values([c for c in COLUMNS if c not in ("job", "value")],
                            na_position="first").reset_index(drop=True)


def test_run_writes_the_documented_layout(tmp_path, toy_registry):
    out = tmp_path / "run"
    outcome = _run(toy_registry, out, tmp_path / "cache")
    assert not outcome.failed
    for name in ("suite.yaml", "environment.json", "results.csv", "jobs.csv"):
        assert (out / name).is_file(), name
    env = json.loads((out / "environment.json").read_text())
    assert env["seeds"] == [1, 2] and env["torch"] == torch.__version__
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == COLUMNS
    train = results[results["metric"] == "test_acc"]
    assert len(train) == 2 * 2 * 2  # models x runs x epochs
    assert set(results["model"]) == {"tiny", "wide"}
    attack = results[(results["metric"] == "accuracy")]
    assert sorted(set(attack["eps"])) == [0.0, 0.1, 0.3]
    assert set(results[results["explainer"].notna()]["metric"]) >= {
        "cam_similarity", "cam_background_share", "cam_intensity"}
    # the resolved suite round-trips
    again = validate_suite(yaml.safe_load((out / "suite.yaml").read_text()), toy_registry)
    assert again.to_yaml() == _suite(toy_registry).to_yaml()

    summary = render(out).read_text()
    assert "## Training" in summary and "Welch t-test" in summary
    assert "## Robustness" in summary and "## Attention under attack" in summary
    for png in ("test_accuracy.png", "train_accuracy.png", "robustness.png", "attention.png"):
        assert (out / png).stat().st_size > 1000, png
    assert list(out.glob("grid_*.png"))
    # attack artifacts keep only the images explainers read (32 of 64), nothing more
    saved = torch.load(out / "artifacts" / "attack-tiny-r00-noise.pt", weights_only=True)
    adversarial = saved["adversarial"]
    assert adversarial.shape == (2, 32, 1, 8, 8)
    assert adversarial.untyped_storage().nbytes() == adversarial.numel() * 4
    # a copied run without its artifacts still lists its grids
    import shutil

    shutil.rmtree(out / "artifacts")
    assert "grid_tiny-noise-intensity.png" in render(out).read_text()


def test_training_is_reproducible_and_cached(tmp_path, toy_registry):
    a = _run(toy_registry, tmp_path / "a", tmp_path / "cache-a")
    b = _run(toy_registry, tmp_path / "b", tmp_path / "cache-b")
    assert not a.failed and not b.failed
    ra, rb = (_measurements(pd.read_csv(p / "results.csv")) for p in (a.out_dir, b.out_dir))
    pd.testing.assert_frame_equal(ra, rb)
    # a third run with the first cache trains nothing: the checkpoints are reused
    calls = []
    original = training.train_runs
    training.train_runs = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        c = _run(toy_registry, tmp_path / "c", tmp_path / "cache-a")
    finally:
        training.train_runs = original
    assert not calls and not c.failed
    pd.testing.assert_frame_equal(ra, _measurements(pd.read_csv(c.out_dir / "results.csv")))
    # ... and says so: in the outcome, in jobs.csv, and in one line
    trains = [job for job in a.ran if job.startswith("train-")]
    assert trains and not a.reused and c.reused == trains
    jobs = pd.read_csv(c.out_dir / "jobs.csv").set_index("id")
    assert (jobs.loc[trains, "where"] == "model cache").all()
    assert jobs.drop(index=trains)["where"].str.startswith("local on ").all()
    logged: list[str] = []
    runner.run_suite(_suite(toy_registry), toy_registry, tmp_path / "d", device="cpu",
                     cache=ModelCache(tmp_path / "cache-a"), log=logged.append)
    (line,) = [m for m in logged if m.startswith("reused ")]
    assert line.startswith(f"reused {len(trains)} trained model(s) from the model cache "
                           f"{tmp_path / 'cache-a'} instead of training them (train-")


def test_interrupted_run_resumes_to_the_same_rows(tmp_path, toy_registry, monkeypatch):
    reference = _run(toy_registry, tmp_path / "ref", tmp_path / "cache-ref")
    expected = _measurements(pd.read_csv(reference.out_dir / "results.csv"))

    out = tmp_path / "interrupted"
    calls = {"n": 0}
    original = execute.attack

    def interrupt_second_attack(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(execute, "attack", interrupt_second_attack)
    with pytest.raises(KeyboardInterrupt):
        _run(toy_registry, out, tmp_path / "cache")
    kept = RunStore(out).finished_ok()
    assert any(j.startswith("train-") for j in kept) and len(kept) < 16
    partial = pd.read_csv(out / "results.csv")
    assert set(partial["job"]) == kept  # results.csv holds every finished job, nothing else

    monkeypatch.setattr(execute, "attack", original)
    outcome = runner.run_suite(_suite(toy_registry), toy_registry, out, device="cpu",
                               resume=True, cache=ModelCache(tmp_path / "cache"),
                               log=lambda s: None)
    assert set(outcome.skipped) == kept and not outcome.failed
    pd.testing.assert_frame_equal(_measurements(pd.read_csv(out / "results.csv")), expected)


def _registry_with(**broken):
    """The toy registry plus a plugin registering the given broken attacks/explainers."""
    import types

    module = types.ModuleType("broken_plugin")

    @benchlab.hookimpl
    def register_attacks(register):
        for name, fn in broken.items():
            if name.startswith("attack_"):
                register(name.removeprefix("attack_"), fn)

    @benchlab.hookimpl
    def register_explainers(register):
        for name, fn in broken.items():
            if name.startswith("explainer_"):
                register(name.removeprefix("explainer_"), fn)

    @benchlab.hookimpl
    def register_models(register):
        for name, fn in broken.items():
            if name.startswith("model_"):
                register(name.removeprefix("model_"), fn)

    module.register_attacks, module.register_explainers = register_attacks, register_explainers
    module.register_models = register_models
    return build_registry([("toy", toy_plugin(), Provenance("toy", "benchlab-tests", "0")),
                           ("broken", module, Provenance("broken", "broken-pkg", "9"))],
                          entry_points=False)


def _raise(*args):
    raise RuntimeError("kaboom")


def _outside_ball(model, images, labels, eps, params):
    return torch.stack([(images + 2 * e).clamp(0, 1) for e in eps])


def _nan_attack(model, images, labels, eps, params):
    out = torch.stack([images.clone() for _ in eps])
    out[0, 0, 0, 0, 0] = math.nan
    return out


def _nan_explainer(model, images, params):
    return torch.full(images.shape[:1] + images.shape[2:], math.nan)


@pytest.mark.parametrize(
    ("broken", "section", "message"),
    [
        ({"attack_raises": _raise}, "attacks", "RuntimeError: kaboom"),
        ({"attack_leaky": _outside_ball}, "attacks", "eps"),
        ({"attack_nan": _nan_attack}, "attacks", "finite"),
        ({"explainer_nan": _nan_explainer}, "explainers", "finite"),
    ],
)
def test_a_broken_component_fails_only_its_jobs(tmp_path, broken, section, message):
    registry = _registry_with(**broken)
    name = next(iter(broken)).split("_", 1)[1]
    extra = {"name": name, "eps": [0.1]} if section == "attacks" else {"name": name}
    suite = _suite(registry, **{section: [*SUITE[section], extra]},
                   models=[{"name": "tiny"}], train={"runs": 1, "epochs": 1})
    outcome = runner.run_suite(suite, registry, tmp_path / "out", device="cpu",
                               cache=ModelCache(tmp_path / "cache"), log=lambda s: None)
    assert outcome.failed, "the broken component should fail its jobs"
    assert all(name in job for job in outcome.failed)
    direct = {j: t for j, t in outcome.failed.items() if not t.startswith("not run:")}
    assert direct and all(message in t and "broken-pkg 9" in t for t in direct.values())
    jobs = pd.read_csv(tmp_path / "out" / "jobs.csv")
    assert (jobs[jobs["status"] == "ok"]["id"].str.contains(name)).sum() == 0
    healthy = jobs[~jobs["id"].str.contains(name)]
    assert (healthy["status"] == "ok").all() and len(healthy) >= 3
    summary = render(tmp_path / "out").read_text()
    assert "## Failures" in summary and name in summary


class _FailsInTraining(torch.nn.Module):
    """Builds, passes the suite's checks, then fails on its third training step."""

    def __init__(self, info):
        super().__init__()
        self.fc = torch.nn.Linear(math.prod(info.shape), info.num_classes)
        self.steps = 0

    def forward(self, x):
        if self.training and torch.is_grad_enabled():
            self.steps += 1
            if self.steps > 2:
                raise RuntimeError("kaboom in training")
        return self.fc(x.flatten(1))


def test_the_dependants_of_a_failure_at_the_end_of_a_run_are_recorded(tmp_path):
    """The explain job waits on an attack job that is not run because their model failed:
    it is recorded as not run too, though nothing is left running by then."""
    registry = _registry_with(model_failing=lambda info, params: _FailsInTraining(info))
    suite = _suite(registry, models=[{"name": "failing"}],
                   train={"runs": 1, "epochs": 1, "batch_size": 32, "lr": 0.05})
    outcome = runner.run_suite(suite, registry, tmp_path / "out", device="cpu",
                               cache=ModelCache(tmp_path / "cache"), log=lambda s: None)
    assert {job: message for job, message in outcome.failed.items()
            if not job.startswith("train-")} == {
        "attack-failing-r00-noise": "not run: train-failing-r00 failed",
        "explain-failing-r00-noise-intensity": "not run: train-failing-r00 failed"}
    jobs = pd.read_csv(tmp_path / "out" / "jobs.csv")
    assert set(jobs["id"]) == set(outcome.failed) and len(jobs) == 3


def test_runs_of_different_models_share_a_pack_and_a_failing_model_fails_alone(
        tmp_path, monkeypatch):
    from benchlab.executors.local import LocalExecutor

    registry = _registry_with(model_failing=lambda info, params: _FailsInTraining(info))
    monkeypatch.setattr(LocalExecutor, "pack_size", lambda self, job: 3)
    tasks = []
    original = execute.train_pack
    monkeypatch.setattr(execute, "train_pack",
                        lambda jobs, *a, **k: tasks.append([j.id for j in jobs])
                        or original(jobs, *a, **k))
    suite = _suite(registry, models=[{"name": "tiny"}, {"name": "failing"}],
                   train={"runs": 2, "epochs": 1, "batch_size": 32, "lr": 0.05})
    outcome = runner.run_suite(suite, registry, tmp_path / "out", device="cpu",
                               cache=ModelCache(tmp_path / "cache"), log=lambda s: None)
    # the first pack mixed the models; after its failure each model trained on its own
    assert tasks[0] == ["train-tiny-r00", "train-tiny-r01", "train-failing-r00"]
    assert sorted(map(sorted, tasks[1:])) == [["train-failing-r00"], ["train-failing-r01"],
                                              ["train-tiny-r00", "train-tiny-r01"]]
    jobs = pd.read_csv(tmp_path / "out" / "jobs.csv").set_index("id")
    assert (jobs.filter(like="-tiny-", axis=0)["status"] == "ok").all()
    failing = jobs.filter(like="-failing-", axis=0)
    assert (failing["status"] == "failed").all() and len(failing) >= 3
    message = jobs.loc["train-failing-r01", "message"]
    assert "model 'failing' from broken (broken-pkg 9)" in message and "kaboom in training" in message
    assert set(outcome.failed) == set(failing.index)
    # the healthy model's runs are exactly those trained without the failing neighbour
    alone = runner.run_suite(_suite(registry, models=[{"name": "tiny"}],
                                    train={"runs": 2, "epochs": 1, "batch_size": 32,
                                           "lr": 0.05}),
                             registry, tmp_path / "alone", device="cpu",
                             cache=ModelCache(tmp_path / "cache-alone"), log=lambda s: None)
    assert not alone.failed
    mixed = pd.read_csv(tmp_path / "out" / "results.csv")
    pd.testing.assert_frame_equal(
        _measurements(mixed[mixed["model"] == "tiny"].reset_index(drop=True)),
        _measurements(pd.read_csv(tmp_path / "alone" / "results.csv")))


# -- learning curves -----------------------------------------------------------------------

CURVES = {"runs": 2, "epochs": 2, "batch_size": 32, "lr": 0.05, "eval_every": 2,
          "eval_size": 32}


def test_learning_curves_are_tidy_rows_and_come_back_from_the_cache(tmp_path, toy_registry):
    first = _run(toy_registry, tmp_path / "a", tmp_path / "cache", train=CURVES,
                 attacks=[], explainers=[])
    assert not first.failed
    results = pd.read_csv(tmp_path / "a" / "results.csv")
    curve = results[results["metric"] == "step_test_acc"]
    # 192 images in batches of 32: 6 steps per epoch, 12 in all, evaluated at 0, 2, ..., 12
    for _, job in curve.groupby("job"):
        assert job["step"].tolist() == [0, 2, 4, 6, 8, 10, 12]
        assert job["epoch"].tolist() == pytest.approx([s / 6 for s in range(0, 13, 2)])
        assert job["value"].between(0, 1).all()
    assert len(curve) == 2 * 2 * 7  # models x runs x points
    assert set(results["metric"]) >= {"step_test_loss", "step_eval_time_s"}
    assert results[results["metric"] == "test_acc"]["step"].isna().all()
    # the per-epoch rows are those of the same suite without curves
    plain = _run(toy_registry, tmp_path / "b", tmp_path / "cache-b", attacks=[], explainers=[],
                 train={k: v for k, v in CURVES.items() if not k.startswith("eval")})
    pd.testing.assert_frame_equal(
        _measurements(results[results["step"].isna()]).reset_index(drop=True),
        _measurements(pd.read_csv(plain.out_dir / "results.csv")), check_dtype=False)
    # a second run with the same cache trains nothing and gets the same curves back
    calls = []
    original = training.train_runs
    training.train_runs = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        again = _run(toy_registry, tmp_path / "c", tmp_path / "cache", train=CURVES,
                     attacks=[], explainers=[])
    finally:
        training.train_runs = original
    assert not calls and not again.failed
    pd.testing.assert_frame_equal(_measurements(results),
                                  _measurements(pd.read_csv(again.out_dir / "results.csv")))
    summary = render(tmp_path / "a").read_text()
    assert "steps to 97%" in summary and "test_accuracy_steps.png" in summary


def test_cache_keys_change_only_when_curves_are_recorded(toy_registry):
    from benchlab.identity import model_identity
    from benchlab.jobs import expand

    def key(**train):
        job = expand(_suite(toy_registry, train={"runs": 1, **train}))[0]
        return model_identity(job, toy_registry)

    plain = key()
    # without a curve the identity holds exactly the keys it held before curves existed
    assert sorted(plain["train"]) == ["batch_size", "epochs", "lr", "momentum", "optimizer",
                                      "precision"]
    assert key(eval_size=500) == plain
    with_curve = key(eval_every=100)
    assert with_curve != plain and with_curve["train"]["eval_every"] == 100
    assert key(eval_every=100, eval_size=500) != with_curve

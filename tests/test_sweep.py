"""Sweeps, selectors (``only``) and dataset parameters: expansion, validation, cache
keys, the command line's count and bound, and a swept suite run on real MNIST."""

from __future__ import annotations

import hashlib
import json
import types
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import ToyDataset, quadrants, toy_plugin
from pydantic import Field
from torch import nn

import benchlab
from benchlab import runner
from benchlab.cache import ModelCache
from benchlab.cli import main
from benchlab.components import Provenance
from benchlab.execute.workspace import Workspace
from benchlab.identity import model_identity, model_key
from benchlab.jobs import expand
from benchlab.plugins import build_registry, default_registry
from benchlab.report import render
from benchlab.suite import SuiteError, load_suite, validate_suite

ROOT = Path(__file__).resolve().parent.parent
PROVENANCE = Provenance("sweeptest", "benchlab-tests", "0")


def _toy(**changes) -> dict:
    suite = {"name": "s", "dataset": {"name": "toy"}, "models": [{"name": "tiny"}],
             "train": {"runs": 2, "epochs": 1}}
    suite.update(changes)
    return suite


def _problems(data: dict, registry) -> list[str]:
    with pytest.raises(SuiteError) as info:
        validate_suite(data, registry, source="s.yaml")
    return [str(p) for p in info.value.problems]


# ----------------------------------------------------------------- suites without sweeps


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def test_committed_suites_expand_to_the_same_jobs_and_key_material_as_before_sweeps():
    """The digests in tests/data/reference_jobs.json were taken with the code before
    sweeps, selectors and dataset parameters existed: every job (as its dict) and every
    model's cache-key material except the code digest (which changes with any edit of
    the code that decides weights, by design) must be the same. One change since, on
    purpose: the committed suites' jobs say ``test_batch_size: auto``, the new default
    (their jobs digests were retaken then; their keys did not move)."""
    pytest.importorskip("torchattacks")
    pytest.importorskip("captum")
    reference = json.loads((ROOT / "tests" / "data" / "reference_jobs.json").read_text())
    registry = default_registry()
    assert len(reference) == 10
    for path, expected in reference.items():
        suite = load_suite(ROOT / path, registry)
        assert not suite.swept
        jobs = expand(suite, suite.train.max_runs)
        identities = {}
        for job in jobs:
            if job.kind == "train":
                identity = model_identity(job, registry)
                identity.pop("code")
                identities[job.id] = identity
        got = {"jobs": len(jobs), "jobs_digest": _digest([j.to_dict() for j in jobs]),
               "keys_digest": _digest(identities)}
        assert got == expected, path
        # the saved suite.yaml of such a suite has no key it did not have before
        assert "sweep_of" not in suite.to_yaml() and "only:" not in suite.to_yaml()


# ----------------------------------------------------------------- expansion


def test_a_grid_over_a_parameter_and_train_makes_labelled_configurations(toy_registry):
    suite = validate_suite(_toy(models=[{"name": "tiny", "width": {"grid": [2, 4]}}],
                                train={"runs": 2, "epochs": 1, "lr": {"grid": [0.01, 0.1]}}),
                           toy_registry)
    assert [m.key for m in suite.models] == ["tiny-width_2-lr_0.01", "tiny-width_2-lr_0.1",
                                             "tiny-width_4-lr_0.01", "tiny-width_4-lr_0.1"]
    assert suite.models[1].swept == {"width": 2, "train.lr": 0.1}
    assert suite.swept and all(m.sweep_of == "tiny" for m in suite.models)
    jobs = expand(suite)
    assert len(jobs) == 8
    by_id = {j.id: j for j in jobs}
    job = by_id["train-tiny-width_4-lr_0.1-r01"]
    assert (job.model.params, job.train.lr, job.seed) == ({"width": 4}, 0.1, 2)
    assert by_id["train-tiny-width_4-lr_0.01-r00"].train.lr == 0.01
    # the saved suite holds every configuration and validates back to the same jobs
    import yaml

    again = validate_suite(yaml.safe_load(suite.to_yaml()), toy_registry)
    assert [j.to_dict() for j in expand(again)] == [j.to_dict() for j in jobs]


def test_zip_pairs_values_instead_of_crossing_them(toy_registry):
    suite = validate_suite(_toy(train={"runs": 1, "epochs": {"zip": [1, 2, 3]},
                                       "lr": {"zip": [0.1, 0.05, 0.01]},
                                       "batch_size": {"grid": [8, 16]}}), toy_registry)
    pairs = sorted((m.swept["train.epochs"], m.swept["train.lr"]) for m in suite.models)
    assert len(suite.models) == 6 and set(pairs) == {(1, 0.1), (2, 0.05), (3, 0.01)}
    assert {j.train.epochs: j.train.lr for j in expand(suite)} == {1: 0.1, 2: 0.05, 3: 0.01}


def test_an_attack_swept_alone_leaves_the_models_trained_once(toy_registry):
    suite = validate_suite(_toy(attacks=[{"name": "noise", "eps": [0.1],
                                          "scale": {"grid": [0.5, 1.0, 2.0]}}]), toy_registry)
    jobs = expand(suite)
    assert [j.id for j in jobs if j.kind == "train"] == ["train-tiny-r00", "train-tiny-r01"]
    assert sum(j.kind == "attack" for j in jobs) == 6
    assert {j.attack.params["scale"] for j in jobs if j.attack} == {0.5, 1.0, 2.0}


def test_the_cache_key_sees_through_labels(toy_registry):
    swept = validate_suite(_toy(models=[{"name": "tiny", "width": {"grid": [4, 8]}}]),
                           toy_registry)
    plain = validate_suite(_toy(models=[{"name": "tiny", "width": 4, "label": "mine"}]),
                           toy_registry)
    key = {j.id: model_key(model_identity(j, toy_registry)) for j in expand(swept)}
    mine = {j.id: model_key(model_identity(j, toy_registry)) for j in expand(plain)}
    assert key["train-tiny-width_4-r00"] == mine["train-mine-r00"]
    assert key["train-tiny-width_8-r00"] != mine["train-mine-r00"]


# ----------------------------------------------------------------- validation


def test_every_value_of_every_axis_is_validated_and_located_in_the_file(tmp_path, toy_registry):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ndataset: {name: toy}\nmodels:\n  - name: tiny\n"
                    "    width: {grid: [2, wide]}\ntrain:\n  lr: {grid: [0.1, -1]}\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path, toy_registry)
    shown = [str(p) for p in info.value.problems]
    assert len(shown) == 2, shown  # each wrong value once, not once per configuration
    assert shown[0].startswith(f"{path}:5: models.0.width.grid.1: ")
    assert shown[1] == f"{path}:7: train.lr.grid.1: expected a value > 0.0, got -1"


def test_malformed_and_misplaced_axes_are_refused(toy_registry):
    shown = _problems(_toy(train={"seed": {"grid": [1, 2]}, "lr": {"grid": []},
                                  "epochs": {"zip": [1, 2]}, "batch_size": {"zip": [8]}},
                           report={"alpha": {"grid": [0.05, 0.01]}}), toy_registry)
    text = "\n".join(shown)
    assert "train.seed: cannot be swept: the runs of each configuration are its seeds" in text
    assert "train.lr.grid: expected a non-empty list of values to sweep, got []" in text
    assert ("train.batch_size.zip: expected 2 values, as many as the zip of train.epochs "
            "has, got 1") in text
    assert "report.alpha: a sweep axis here is not expanded" in text


def test_a_label_too_long_for_a_file_name_is_refused(toy_registry):
    shown = _problems(_toy(models=[{"name": "tiny", "label": "m" * 60,
                                    "width": {"grid": [2, 4]}}]), toy_registry)
    assert any("models.0" in s and "label" in s for s in shown), shown


# ----------------------------------------------------------------- selectors


def _selected(toy_registry, **only):
    return validate_suite(_toy(
        attacks=[{"name": "noise", "eps": [0.1, 0.2]},
                 {"name": "noise", "label": "strong", "eps": [0.3], "scale": 2.0}],
        explainers=[{"name": "intensity"},
                    {"name": "intensity", "label": "slow", "only": only}],
        evaluate={"count": 2, "explain_size": 4, "test_size": 8}), toy_registry)


def test_an_explainer_restricted_to_one_attack_gets_only_its_explain_jobs(toy_registry):
    suite = _selected(toy_registry, attacks=["noise"])
    ids = [j.id for j in expand(suite) if j.kind == "explain"]
    assert ids == ["explain-tiny-r00-noise-intensity", "explain-tiny-r00-noise-slow",
                   "explain-tiny-r00-strong-intensity",
                   "explain-tiny-r01-noise-intensity", "explain-tiny-r01-noise-slow",
                   "explain-tiny-r01-strong-intensity"]


def test_occlusion_restricted_to_fgsm_gets_only_fgsm_explain_jobs():
    pytest.importorskip("captum")
    registry = default_registry()
    data = {"name": "s", "dataset": {"name": "mnist"},
            "models": [{"name": "cnn"}, {"name": "cnn_bn"}], "train": {"runs": 3},
            "attacks": [{"name": "fgsm", "eps": [0.1, 0.3]},
                        {"name": "ifgsm", "eps": [0.1, 0.3], "steps": 10}],
            "explainers": [{"name": "gradcam"},
                           {"name": "captum.Occlusion", "only": {"attacks": ["fgsm"]}}]}
    jobs = expand(validate_suite(data, registry))
    slow = [j for j in jobs if j.kind == "explain" and j.explainer.key == "captum.Occlusion"]
    assert len(slow) == 2 * 3 and {j.attack.key for j in slow} == {"fgsm"}
    assert sum(j.kind == "explain" and j.explainer.key == "gradcam" for j in jobs) == 2 * 3 * 2


def test_selectors_by_model_and_eps(toy_registry):
    suite = validate_suite(_toy(
        models=[{"name": "tiny"}, {"name": "tiny", "label": "wide", "width": 8}],
        attacks=[{"name": "noise", "eps": [0.1, 0.2], "only": {"models": ["wide"]}}],
        explainers=[{"name": "intensity", "only": {"eps": [0.2]}}],
        evaluate={"count": 2, "explain_size": 4}), toy_registry)
    jobs = expand(suite, runs=1)
    assert [j.id for j in jobs] == ["train-tiny-r00", "train-wide-r00", "attack-wide-r00-noise",
                                    "explain-wide-r00-noise-intensity"]
    assert jobs[-1].eps == (0.2,)


def test_a_selector_that_matches_nothing_is_named(toy_registry):
    (shown,) = _problems(_toy(attacks=[{"name": "noise", "eps": [0.1],
                                        "only": {"models": ["tinny"]}}]), toy_registry)
    assert shown == ("s.yaml: attacks.0.only.models.0: 'tinny' matches no model of this "
                     "suite (its models: tiny)")
    (shown,) = _problems(_toy(attacks=[{"name": "noise", "eps": [0.1]}],
                              explainers=[{"name": "intensity", "only": {"eps": [0.3]}}],
                              evaluate={"count": 2, "explain_size": 4}), toy_registry)
    assert shown == ("s.yaml: explainers.0.only.eps.0: 0.3 is not an ε of the attacks it "
                     "selects (0.1)")
    (shown,) = _problems(_toy(explainers=[{"name": "intensity", "only": {"attacks": ["x"]}}],
                              evaluate={"count": 2, "explain_size": 4}), toy_registry)
    assert "explainers.0.only.attacks: this suite has no attacks" in shown


def test_a_selector_takes_a_swept_entry_by_the_name_it_was_written_with(toy_registry):
    suite = validate_suite(_toy(models=[{"name": "tiny", "width": {"grid": [2, 4]}},
                                        {"name": "tiny", "label": "other"}],
                                attacks=[{"name": "noise", "eps": [0.1],
                                          "only": {"models": ["tiny"]}}]), toy_registry)
    attacked = {j.model.key for j in expand(suite) if j.kind == "attack"}
    assert attacked == {"tiny-width_2", "tiny-width_4"}


def test_the_explain_job_reads_the_batches_of_its_own_eps():
    from benchlab.execute.explain import _batches_of

    job = types.SimpleNamespace(id="j", eps=(0.3,))
    assert _batches_of(job, torch.tensor([0.1, 0.2, 0.3])) == [2]
    with pytest.raises(Exception, match="no adversarial batch at eps 0.3"):
        _batches_of(job, torch.tensor([0.1]))


# ----------------------------------------------------------------- dataset parameters


class NoisyParams(benchlab.Params):
    seed: int = Field(0, ge=0)
    noise: int = Field(40, ge=0, le=255)


class NoisyQuadrants(ToyDataset):
    """The toy dataset, drawn with a seed and a noise level from the suite."""

    def load(self, split, root, params: NoisyParams):
        n = 256 if split == "train" else 128
        return quadrants(n, params.seed * 2 + (split != "train"), noise=params.noise)


@pytest.fixture
def noisy_registry():
    @benchlab.hookimpl
    def register_datasets(register):
        register("noisy", NoisyQuadrants(), params=NoisyParams)

    module = types.ModuleType("noisy_plugin")
    module.register_datasets = register_datasets
    return build_registry([("toy", toy_plugin(), PROVENANCE), ("noisy", module, PROVENANCE)],
                          entry_points=False)


def test_dataset_parameters_are_validated_loaded_and_keyed(tmp_path, noisy_registry):
    suite = validate_suite(_toy(dataset={"name": "noisy", "seed": 3}), noisy_registry)
    (job, _) = expand(suite)
    assert job.dataset.params == {"seed": 3, "noise": 40}
    other = validate_suite(_toy(dataset={"name": "noisy", "seed": 4}), noisy_registry)
    keys = [model_key(model_identity(expand(s)[0], noisy_registry)) for s in (suite, other)]
    assert keys[0] != keys[1]
    split = Workspace(noisy_registry, torch.device("cpu"), tmp_path).split(job.dataset, "train")
    assert torch.equal(split.images, quadrants(256, 6).images)
    assert "seed: 3" in suite.to_yaml()
    (shown,) = _problems(_toy(dataset={"name": "noisy", "noise": 300}), noisy_registry)
    assert shown.startswith("s.yaml: dataset.noise: expected a value <= 255")
    (shown,) = _problems(_toy(dataset={"name": "toy", "seed": 3}), noisy_registry)
    assert shown.startswith("s.yaml: dataset.seed: unknown key 'seed'")


def test_a_dataset_without_parameters_keeps_its_key_material(toy_registry):
    (job, _) = expand(validate_suite(_toy(), toy_registry))
    assert "params" not in model_identity(job, toy_registry)["dataset"]
    assert "params" not in job.to_dict()["dataset"]


# ----------------------------------------------------------------- command line


def _mnist_suite(tmp_path, values: int) -> Path:
    path = tmp_path / "big.yaml"
    grid = ", ".join(f"{0.05 * i:g}" for i in range(values))
    path.write_text(f"name: big\ndataset: {{name: mnist}}\nmodels:\n  - name: cnn\n"
                    f"    dropout1: {{grid: [{grid}]}}\ntrain:\n  runs: 2\n"
                    f"  lr: {{grid: [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]}}\n")
    return path


def test_validate_counts_the_jobs_and_bounds_large_sweeps(tmp_path, capsys):
    small = _mnist_suite(tmp_path, 2)
    assert main(["validate", str(small)]) == 0
    out = capsys.readouterr().out
    assert out == (f"{small}: ok (40 train jobs; sweeps: 20 model configurations over "
                   "dropout1, train.lr)\n")
    big = _mnist_suite(tmp_path, 11)
    assert main(["validate", str(big)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{big}: its sweeps expand to 220 jobs, more than 200; pass "
                   "--allow-large-sweep to run them all"]
    assert main(["validate", str(big), "--allow-large-sweep"]) == 0
    assert main(["run", str(big), "--out", str(tmp_path / "never")]) == 2
    assert not (tmp_path / "never").exists()


# ----------------------------------------------------------------- end to end on MNIST


class MLPParams(benchlab.Params):
    width: int = Field(16, ge=1, le=512)


def _mlp(info, params: MLPParams) -> nn.Module:
    c, h, w = info.shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, params.width), nn.ReLU(),
                         nn.Linear(params.width, info.num_classes))


def _mlp_plugin() -> types.ModuleType:
    @benchlab.hookimpl
    def register_models(register):
        register("mlp", _mlp, params=MLPParams)

    module = types.ModuleType("mlp_plugin")
    module.register_models = register_models
    return module


SWEEP_SUITE = {
    "name": "lr_width", "dataset": {"name": "mnist", "train_size": 512, "test_size": 200},
    "models": [{"name": "mlp", "width": {"grid": [8, 32]}}],
    "train": {"runs": 2, "epochs": 1, "batch_size": 64, "lr": {"grid": [0.02, 0.1]}},
    "attacks": [{"name": "fgsm", "eps": [0.1]}],
    "evaluate": {"test_size": 100}}


@pytest.mark.slow
def test_a_swept_suite_runs_is_reported_by_axis_and_reuses_models(tmp_path, mnist_root):
    registry = build_registry([("mlp", _mlp_plugin(), PROVENANCE)])
    suite = validate_suite(SWEEP_SUITE, registry)
    cache = ModelCache(tmp_path / "cache")
    first = runner.run_suite(suite, registry, tmp_path / "a", device="cpu", cache=cache,
                             log=lambda s: None)
    assert not first.failed, first.failed
    summary = render(tmp_path / "a").read_text()
    part = summary.split("## Sweeps")[1].split("\n## ")[0]
    assert "### model `mlp`: 4 configurations over width, train.lr" in part
    rows = [line for line in part.splitlines() if line.startswith("| 8 ") or
            line.startswith("| 32 ")]
    assert len(rows) == 4 and all(" | 2 | " in row for row in rows)  # 2 runs each
    results = pd.read_csv(tmp_path / "a" / "results.csv")
    final = results[(results["model"] == "mlp-width_32-lr_0.1")
                    & (results["metric"] == "test_acc")]["value"]
    assert len(final) == 2
    mean = final.mean() * 100
    assert f"| 32 | 0.1 | 2 | {mean:.2f} [" in part  # the table's headline is the runs' mean
    for axis in ("width", "train.lr"):
        assert (tmp_path / "a" / f"sweep_mlp_{axis}.png").stat().st_size > 1000
        assert f"(sweep_mlp_{axis}.png)" in part
    # a rerun trains nothing: every configuration's models come from the cache
    again = runner.run_suite(validate_suite(SWEEP_SUITE, registry), registry, tmp_path / "b",
                             device="cpu", cache=cache, log=lambda s: None)
    trains = sorted(j for j in first.ran if j.startswith("train-"))
    assert len(trains) == 8 and sorted(again.reused) == trains


# ----------------------------------------------------------------- the report's section


def _rows(model, attack=None, eps=None, values=(), metric="accuracy", epoch=None):
    return [{"job": "j", "model": model, "dataset": "toy", "run": run, "seed": run + 1,
             "epoch": epoch, "step": None, "attack": attack, "eps": eps, "explainer": None,
             "metric": metric, "value": value} for run, value in enumerate(values)]


def test_the_sweep_section_tables_an_attack_axis_and_says_when_there_is_one_run(tmp_path):
    from benchlab.report.sweep import section

    suite = {"attacks": [{"name": "noise", "label": f"noise-scale_{s}", "sweep_of": "noise",
                          "swept": {"scale": s}} for s in (1, 2)]}
    rows = (_rows("tiny", "noise-scale_1", 0.1, [0.8, 0.7]) + _rows("tiny", "noise-scale_2",
                                                                     0.1, [0.4]))
    md = "\n".join(section(pd.DataFrame(rows), tmp_path, suite))
    assert "### attack `noise` on `tiny`: 2 configurations over scale" in md
    assert "| 1 | 75.00 [" in md and "| 2 | 40.00 (one run: no interval) |" in md
    assert "nan" not in md
    assert (tmp_path / "sweep_noise-tiny_scale.png").stat().st_size > 1000
    assert section(pd.DataFrame(rows), tmp_path, {"attacks": [{"name": "noise"}]}) == []


def test_two_entries_of_one_model_in_one_run_train_it_once(tmp_path, mnist_root):
    """A swept configuration equal to a hand-written entry is one model: trained once,
    the other entry's jobs take it from the cache and get the same numbers."""
    registry = build_registry([("mlp", _mlp_plugin(), PROVENANCE)])
    suite = validate_suite({
        "name": "twins", "dataset": {"name": "mnist", "train_size": 256, "test_size": 100},
        "models": [{"name": "mlp", "width": {"grid": [8, 16]}},
                   {"name": "mlp", "label": "mine", "width": 8}],
        "train": {"runs": 2, "epochs": 1}}, registry)
    said: list[str] = []
    outcome = runner.run_suite(suite, registry, tmp_path / "run", device="cpu",
                               cache=ModelCache(tmp_path / "cache"), log=said.append)
    assert not outcome.failed, outcome.failed
    assert sorted(outcome.reused) == ["train-mine-r00", "train-mine-r01"]
    assert any(line.startswith("train-mine-r00: the same model as train-mlp-width_8-r00")
               for line in said), said
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    final = results[results["metric"] == "test_acc"].set_index(["model", "run"])["value"]
    for run in (0, 1):
        assert final[("mine", run)] == final[("mlp-width_8", run)]
    jobs = pd.read_csv(tmp_path / "run" / "jobs.csv").set_index("id")
    assert jobs.loc["train-mine-r00", "where"] == "model cache"


def test_models_from_the_cache_leave_whole_packs_to_the_others(toy_registry):
    """With run 0 cached, runs 1-4 train as two full packs of two, not [1], [2, 3], [4]."""
    from benchlab.scheduler import Scheduler

    suite = validate_suite(_toy(train={"runs": 5, "epochs": 1}), toy_registry)
    scheduler = Scheduler(expand(suite), set())
    asked: list[str] = []

    def needs_training(job) -> bool:
        asked.append(job.id)
        return job.run != 0

    packs = [[job.id for job in pack]
             for pack in scheduler.training_packs(lambda job: 2, needs_training)]
    assert asked == [f"train-tiny-r{r:02d}" for r in range(5)]
    assert packs == [["train-tiny-r01", "train-tiny-r02"], ["train-tiny-r03", "train-tiny-r04"]]

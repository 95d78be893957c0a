"""Sequential runs: train.runs as a range, looks, more runs, resume (toy components)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from benchlab import runner, verdict
from benchlab.cache import ModelCache
from benchlab.jobs import expand
from benchlab.looks import LOOKS_FILE, look
from benchlab.report import render
from benchlab.sequential import Design
from benchlab.suite import validate_suite

SUITE = {
    "name": "toy-seq",
    "dataset": {"name": "toy", "train_size": 64, "test_size": 64},
    "models": [{"name": "tiny"}, {"name": "tiny", "label": "wide", "width": 6}],
    "train": {"runs": {"min": 2, "max": 6, "step": 2}, "epochs": 1, "batch_size": 32,
              "lr": 0.002},
    # a margin no toy model can show: the final accuracy part stays undecided
    "report": {"equivalence_margin": 0.001},
}


def _suite(registry, **train):
    data = json.loads(json.dumps(SUITE))
    data["train"].update(train)
    return validate_suite(data, registry)


def _run(registry, out, cache, suite=None, resume=False, lines=None):
    return runner.run_suite(suite or _suite(registry), registry, out, device="cpu",
                            cache=ModelCache(cache), resume=resume,
                            log=(lines.append if lines is not None else lambda s: None))


def test_a_range_keeps_an_int_unchanged(toy_registry):
    fixed = validate_suite({**SUITE, "train": {**SUITE["train"], "runs": 2}}, toy_registry)
    ranged = _suite(toy_registry)
    assert [j.id for j in expand(fixed)] == [j.id for j in expand(ranged)]
    assert [j.to_dict() for j in expand(fixed)] == [j.to_dict() for j in expand(ranged)]
    assert len(expand(ranged, 6)) == 12 and ranged.train.max_runs == 6


def test_undecided_looks_add_runs_up_to_max(tmp_path, toy_registry):
    out, lines = tmp_path / "run", []
    outcome = _run(toy_registry, out, tmp_path / "cache", lines=lines)
    assert not outcome.failed
    looks = json.loads((out / LOOKS_FILE).read_text())
    assert [x["planned"] for x in looks["looks"]] == [2, 4, 6]
    assert looks["looks"][-1]["next"] is None
    part = looks["looks"][-1]["parts"][0]
    assert part["kind"] == "final accuracy" and part["decision"] in ("inconclusive",
                                                                     "different")
    jobs = pd.read_csv(out / "jobs.csv")
    assert len(jobs) == 12 and set(jobs["status"]) == {"ok"}
    assert any(line.startswith("adding runs 2-3") for line in lines)
    assert any(line.startswith("stopping:") for line in lines)
    summary = render(out).read_text()
    assert "Sequential design" in summary and "3 looks" in summary


def test_resume_continues_the_looks(tmp_path, toy_registry):
    out, cache = tmp_path / "run", tmp_path / "cache"
    stopped = _suite(toy_registry, runs={"min": 2, "max": 4, "step": 2})
    _run(toy_registry, out, cache, suite=stopped)
    first = json.loads((out / LOOKS_FILE).read_text())["looks"]
    assert [x["planned"] for x in first] == [2, 4]
    # the same design resumed: the looks are recomputed identically, nothing retrains
    outcome = _run(toy_registry, out, cache, suite=stopped, resume=True)
    assert not outcome.ran
    assert json.loads((out / LOOKS_FILE).read_text())["looks"] == first
    # a larger max: the run continues where it stopped, with runs 4 and 5 only
    outcome = _run(toy_registry, out, cache, resume=True)
    assert sorted(outcome.ran) == ["train-tiny-r04", "train-tiny-r05", "train-wide-r04",
                                   "train-wide-r05"]
    again = json.loads((out / LOOKS_FILE).read_text())["looks"]
    assert [x["planned"] for x in again] == [2, 4, 6]


def _results(n: int, gap: float, final_gap: float, seed: int = 0) -> pd.DataFrame:
    """results.csv rows of two models: learning curves (steps 0-400, 100 per epoch)
    where 'b' is ahead by ``gap``, and final test accuracies ``final_gap`` apart."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, shift, end in (("a", 0.0, 0.0), ("b", gap, final_gap)):
        for run in range(n):
            for step in range(0, 401, 50):
                value = min(0.999, 0.5 + step / 400 * 0.49 + shift * (step < 200)
                            + rng.normal(0, 0.002))
                rows.append({"model": model, "run": run, "seed": run + 1,
                             "metric": "step_test_acc", "value": value,
                             "epoch": step / 100, "step": step})
            rows.append({"model": model, "run": run, "seed": run + 1, "metric": "test_acc",
                         "value": 0.98 + end + rng.normal(0, 0.001), "epoch": 4,
                         "step": np.nan})
    return pd.DataFrame(rows)


def test_a_look_decides_clear_parts_and_stops():
    design = Design(4, 12, 4)
    settings = verdict.Settings(margin_pp=0.1)
    made = look(design, _results(4, 0.05, 0.02), settings, 4, [])
    decisions = {p["kind"]: p["decision"] for p in made["parts"]}
    assert decisions == {"convergence": "faster", "final accuracy": "different"}
    assert made["next"] is None and made["why"] == "every part of the claim is decided"


def test_an_undecided_part_asks_for_the_next_look_and_a_decided_one_stays():
    design = Design(4, 12, 4)
    settings = verdict.Settings(margin_pp=0.1)
    first = look(design, _results(4, 0.05, 0.0005), settings, 4, [])
    decisions = {p["kind"]: p["decision"] for p in first["parts"]}
    assert decisions["convergence"] == "faster" and first["next"] == 8
    assert decisions["final accuracy"] == "undecided"
    # at the next look, whatever the convergence data say, the part stays decided
    second = look(design, _results(8, 0.0, 0.0, seed=1), settings, 8, [first])
    kept = next(p for p in second["parts"] if p["kind"] == "convergence")
    assert kept == first["parts"][0] and kept["decided_at"] == 4


def test_curves_too_short_for_every_statistic_are_untestable_not_waited_for():
    results = _results(4, 0.05, 0.02)
    results = results[(results["step"].isna()) | (results["step"] == 0)]
    made = look(Design(4, 12, 4), results, verdict.Settings(margin_pp=0.1), 4, [])
    decisions = {p["kind"]: p["decision"] for p in made["parts"]}
    assert decisions == {"convergence": "untestable", "final accuracy": "different"}
    assert made["next"] is None


@pytest.mark.slow
def test_a_sequential_run_on_dask_submits_the_next_looks_runs(tmp_path):
    distributed = pytest.importorskip("distributed")
    from benchlab.executors.dask import DaskExecutor
    from benchlab.plugins import default_registry
    from benchlab.suite import load_suite

    suite = load_suite("suites/bn_vs_plain.yaml", default_registry(), [
        "dataset.train_size=256", "dataset.test_size=100", "train.epochs=1",
        "train.eval_every=null", "train.runs={min: 2, max: 4, step: 2}",
        "report.equivalence_margin=0.001"])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=50) as cluster:
        outcome = runner.run_suite(
            suite, default_registry(), tmp_path / "run", device="cpu",
            cache=ModelCache(tmp_path / "cache"), log=lambda s: None,
            executor=DaskExecutor.factory("cpu", scheduler=cluster.scheduler_address))
    assert not outcome.failed and len(outcome.ran) == 8
    looks = json.loads((tmp_path / "run" / LOOKS_FILE).read_text())["looks"]
    assert [x["planned"] for x in looks] == [2, 4]
    workers = {w.split(" ")[0] for w in pd.read_csv(tmp_path / "run" / "jobs.csv")["where"]}
    assert all(w.startswith("tcp://") for w in workers)


def test_the_one_sided_readings_of_a_sequential_run_name_the_look_that_showed_each():
    from benchlab.report.sequential import _one_sided
    name = "final accuracy: bn against plain"

    def at(planned, p_lower, p_upper, level):
        return {"planned": planned, "parts": [{"part": name, "margin": 0.001,
                                               "tost_p_lower": p_lower,
                                               "tost_p_upper": p_upper,
                                               "level_one_sided": level}]}

    # the upper side crosses its boundary at the second look only (0.004 < 0.005,
    # while 0.003 at the first look is above that look's 0.001); the lower never does
    looks = [at(8, 0.4, 0.003, 0.001), at(12, 0.3, 0.004, 0.005), at(16, None, None, 0.02)]
    text = _one_sided(name, looks)
    assert ("bn does not improve on plain by 0.1 pp or more (non-superiority): **shown** at "
            "the look at 12 runs per model") in text
    assert "(non-inferiority): **not shown** at any look" in text


def _attacked(accuracies: dict[str, list[float]], eps: float = 0.3) -> pd.DataFrame:
    """Results rows: per model, one accuracy per run under fgsm at ``eps``, and the
    clean accuracy (ε = 0, not part of a robustness comparison)."""
    rows = []
    for model, values in accuracies.items():
        for run, value in enumerate(values):
            for e, v in ((0.0, 0.99), (eps, value)):
                rows.append({"model": model, "run": run, "seed": run + 1, "epoch": np.nan,
                             "step": np.nan, "attack": "fgsm", "eps": e, "explainer": np.nan,
                             "metric": "accuracy", "value": v})
            rows.append({"model": model, "run": run, "seed": run + 1, "epoch": 1.0,
                         "step": np.nan, "attack": np.nan, "eps": np.nan,
                         "explainer": np.nan, "metric": "test_acc", "value": 0.99})
    return pd.DataFrame(rows)


def test_a_look_decides_robustness_parts_by_pair():
    design = Design(4, 12, 4)
    settings = verdict.Settings(margin_pp=None)
    pairs = [("bn", "plain")]
    clear = _attacked({"plain": [0.60, 0.61, 0.59, 0.60], "bn": [0.30, 0.31, 0.29, 0.32]})
    made = look(design, clear, settings, 4, [], pairs, pairs)
    (part,) = made["parts"]
    assert part["part"] == "robustness: bn against plain" and part["kind"] == "robustness"
    assert part["decision"] == "less robust" and part["decided_at"] == 4
    assert made["next"] is None and [c["eps"] for c in part["cells"]] == [0.3]
    # within a 2-point margin, every run close: equivalent at the first look
    close = _attacked({"plain": [0.600, 0.601, 0.599, 0.600], "bn": [0.601, 0.600, 0.600, 0.599]})
    made = look(design, close, verdict.Settings(margin_pp=2.0), 4, [], pairs, pairs)
    robust = [p for p in made["parts"] if p["kind"] == "robustness"]
    assert robust[0]["decision"] == "equivalent"
    # noisy: undecided, and the next look is asked for
    noisy = _attacked({"plain": [0.6, 0.3, 0.5, 0.4], "bn": [0.5, 0.2, 0.6, 0.45]})
    made = look(design, noisy, settings, 4, [], pairs, pairs)
    assert made["parts"][0]["decision"] == "undecided" and made["next"] == 8
    # a pair whose models were not both attacked has no robustness part
    made = look(design, clear, settings, 4, [], pairs, [("bn", "elsewhere")])
    assert [p["kind"] for p in made["parts"]] == []


def test_the_pairs_of_a_suite_follow_how_its_models_were_trained(toy_registry):
    from benchlab.looks import pairs_of
    data = json.loads(json.dumps(SUITE))
    suite = validate_suite(data, toy_registry)
    assert pairs_of(suite) == ([("wide", "tiny")], [("wide", "tiny")])
    data["report"]["robustness_pairs"] = [["tiny", "wide"]]
    assert pairs_of(validate_suite(data, toy_registry))[1] == [("tiny", "wide")]

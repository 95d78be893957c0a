"""Sequential runs: train.runs as a range, looks, more runs, resume (toy components)."""

from __future__ import annotations

import json

import pandas as pd

from benchlab import runner
from benchlab.cache import ModelCache
from benchlab.jobs import expand
from benchlab.looks import LOOKS_FILE
from benchlab.report import render
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

"""Job expansion: what a suite becomes, and that jobs travel as plain JSON."""

from __future__ import annotations

import json

from benchlab.jobs import Job, expand
from benchlab.suite import validate_suite

SUITE = {
    "name": "s", "dataset": {"name": "toy"},
    "models": [{"name": "tiny"}, {"name": "tiny", "label": "wide", "width": 6}],
    "train": {"runs": 3, "epochs": 1, "seed": 10},
    "attacks": [{"name": "noise", "eps": [0.2, 0.1]}],
    "explainers": [{"name": "intensity"}],
    "evaluate": {"runs": 2, "count": 4},
}


def test_expansion_counts_order_and_dependencies(toy_registry):
    jobs = expand(validate_suite(SUITE, toy_registry))
    kinds = [j.kind for j in jobs]
    assert kinds.count("train") == 6  # 2 models x 3 runs
    assert kinds.count("attack") == kinds.count("explain") == 4  # only the first 2 runs
    seen = set()
    for job in jobs:
        assert set(job.deps) <= seen, f"{job.id} runs before what it needs"
        seen.add(job.id)
    train = [j for j in jobs if j.kind == "train"]
    assert [j.seed for j in train[:3]] == [10, 11, 12]
    attack = next(j for j in jobs if j.kind == "attack")
    assert attack.eps == (0.1, 0.2)
    wide = next(j for j in jobs if j.model.key == "wide")
    assert wide.model.params == {"width": 6}


def test_jobs_round_trip_through_json(toy_registry):
    for job in expand(validate_suite(SUITE, toy_registry)):
        again = Job.from_dict(json.loads(json.dumps(job.to_dict())))
        assert again == job


def test_runs_of_one_training_configuration_share_a_pack_key(toy_registry):
    train = [j for j in expand(validate_suite(SUITE, toy_registry)) if j.kind == "train"]
    assert len({(j.model.key, j.seed) for j in train}) == len(train) > 2
    keys = {j.pack_key() for j in train}
    assert len(keys) == 1  # whatever the model and the seed
    other = validate_suite({**SUITE, "train": {**SUITE["train"], "lr": 0.5}}, toy_registry)
    assert {j.pack_key() for j in expand(other) if j.kind == "train"}.isdisjoint(keys)

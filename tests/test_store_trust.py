"""What a run directory and the model cache trust: files that pass their digest but do
not decode are damage, status files name nothing outside the run, and torch's page of
advice about a refused file stays off the screen."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchlab import cli, runner
from benchlab.cache import ModelCache
from benchlab.store import RunStore
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
ATTACK, EXPLAIN = "attack-tiny-r00-noise", "explain-tiny-r00-noise-intensity"


def _run(registry, out, cache, *, resume=False):
    logs = []
    outcome = runner.run_suite(validate_suite(SUITE, registry), registry, out, device="cpu",
                               resume=resume, cache=ModelCache(cache), log=logs.append)
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


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _malicious_pickle() -> bytes:
    """What torch.save writes for a function: loading it would call into ``os``."""
    return _saved({"adversarial": os.system})


def _forge(out: Path, job_id: str, name: str, blob: bytes) -> None:
    """Replace a job's file and the digest its status file keeps of it."""
    (out / name).write_bytes(blob)
    status = out / "jobs" / f"{job_id}.json"
    data = json.loads(status.read_text())
    data["digests"][name] = _sha256(blob)
    status.write_text(json.dumps(data))


@pytest.mark.parametrize("blob", [b"not a torch file", pickle.dumps({"a": 1}), _saved([1, 2]),
                                  _malicious_pickle()],
                         ids=["junk", "a-plain-pickle", "not-tensors", "malicious"])
def test_an_artifact_that_does_not_decode_is_redone_not_failed_forever(
        finished, tmp_path, toy_registry, blob):
    out, expected = finished
    _forge(out, ATTACK, f"artifacts/{ATTACK}.pt", blob)
    (out / "jobs" / f"{EXPLAIN}.json").unlink()  # the job that reads it is still to run
    outcome, logs = _run(toy_registry, out, tmp_path / "cache", resume=True)
    assert not outcome.failed, outcome.failed
    assert sorted(outcome.ran) == [ATTACK, EXPLAIN]
    [line] = [line for line in logs if line.startswith("damaged job")]
    assert line.startswith(f"damaged job {ATTACK}: {out}/artifacts/{ATTACK}.pt ")
    assert "\n" not in line
    pd.testing.assert_frame_equal(_values(out), expected)
    again, logs = _run(toy_registry, out, tmp_path / "cache", resume=True)
    assert not again.ran and not again.failed and len(again.skipped) == 6


def test_a_refused_artifact_is_one_line_on_screen_and_the_full_text_in_the_log(finished):
    out, _ = finished
    _forge(out, ATTACK, f"artifacts/{ATTACK}.pt", _malicious_pickle())
    store = RunStore(out)
    problem = store.damage(ATTACK)
    assert problem == (f"{out}/artifacts/{ATTACK}.pt cannot be decoded (UnpicklingError: not a "
                       "file of plain tensors (Trying to load unsupported GLOBAL posix.system "
                       "whose module posix is blocked))")
    with pytest.raises(ValueError) as info:
        store.load_artifact(ATTACK)
    assert str(info.value) == problem
    assert "Check the documentation of torch.load" in str(info.value.__cause__)


def test_a_refused_cache_entry_is_one_warning_line_and_the_run_log_has_the_text(
        finished, tmp_path, toy_registry, monkeypatch, capsys):
    """torch's refusal is five lines of advice; the screen gets one line per entry."""
    _, expected = finished
    cache = tmp_path / "cache"
    for entry in cache.glob("*/*"):
        blob = _malicious_pickle()
        (entry / "model.pt").write_bytes(blob)
        digests = json.loads((entry / "digests.json").read_text())
        digests["model.pt"] = _sha256(blob)
        (entry / "digests.json").write_text(json.dumps(digests))
    monkeypatch.setattr(cli, "_registry", lambda: toy_registry)
    monkeypatch.setenv("BENCHLAB_CACHE", str(cache))
    suite = tmp_path / "toy.yaml"
    suite.write_text(json.dumps(SUITE))
    again = tmp_path / "again"
    assert cli.main(["run", str(suite), "--out", str(again), "--device", "cpu"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.strip() and not line.startswith("done ")]
    warnings = [line for line in lines if "is damaged" in line]
    assert len(warnings) == 2 and lines == [*warnings, lines[-1]]
    for line in warnings:
        assert line.startswith(f"benchlab: model cache entry {cache}/")
        assert line.endswith("is damaged (cannot decode model.pt: UnpicklingError: not a file of "
                             "plain tensors (Trying to load unsupported GLOBAL posix.system whose "
                             "module posix is blocked)); training the model again")
    log = (again / "run.log").read_text()
    assert log.count("is damaged (cannot decode model.pt") == 2
    assert "Check the documentation of torch.load" in log  # the full text, for whoever asks
    pd.testing.assert_frame_equal(_values(again), expected)


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink"])
def test_a_status_file_naming_a_file_outside_the_run_is_damage(finished, tmp_path,
                                                               toy_registry, where):
    out, expected = finished
    secret = tmp_path / "secret.txt"
    secret.write_text("not the run's")
    name = {"absolute": str(secret), "dotdot": "../secret.txt",
            "symlink": "jobs/link.txt"}[where]
    if where == "symlink":
        (out / "jobs" / "link.txt").symlink_to(secret)
    status = out / "jobs" / f"{ATTACK}.json"
    data = json.loads(status.read_text())
    data["digests"][name] = _sha256(secret.read_bytes())  # the right digest, even
    status.write_text(json.dumps(data))
    assert RunStore(out).damage(ATTACK) == (
        f"{status} names {name!r}, which is not a file inside the run directory")
    outcome, logs = _run(toy_registry, out, tmp_path / "cache", resume=True)
    assert outcome.ran == [ATTACK] and not outcome.failed
    assert any(line.startswith(f"damaged job {ATTACK}: {status} names ") for line in logs)
    pd.testing.assert_frame_equal(_values(out), expected)


def test_a_link_that_stays_inside_the_run_is_followed(finished):
    out, _ = finished
    rows = out / "jobs" / f"{ATTACK}.csv"
    (out / "rows-copy.csv").write_bytes(rows.read_bytes())
    rows.unlink()
    rows.symlink_to(out / "rows-copy.csv")
    assert RunStore(out).damage(ATTACK) is None

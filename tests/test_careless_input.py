"""A careless user and a hostile machine: full disks, files for directories, closed pipes."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchlab import cli, files, store
from benchlab.report import render

ROOT = Path(__file__).resolve().parents[1]
TOY = """\
name: toy
dataset: {name: toy, train_size: 64, test_size: 32}
models: [{name: tiny}]
train: {epochs: 1, batch_size: 32}
attacks: [{name: noise, eps: [0.1]}]
evaluate: {test_size: 32}
"""


@pytest.fixture
def toy_cli(monkeypatch, toy_registry, isolated_cache, tmp_path):
    monkeypatch.setattr(cli, "_registry", lambda: toy_registry)
    suite = tmp_path / "toy.yaml"
    suite.write_text(TOY)
    return suite


def _lines(text: str) -> list[str]:
    # without a terminal the runner prints one progress line per finished job ("done ...")
    return [line for line in text.strip().splitlines()
            if line.strip() and not line.startswith("done ")]


def test_out_naming_a_file_is_one_line_and_status_2(toy_cli, tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("precious")
    assert cli.main(["run", str(toy_cli), "--out", str(target), "--device", "cpu"]) == 2
    assert _lines(capsys.readouterr().err) == [
        f"benchlab: --out {target}: is a file; expected a directory"]
    assert target.read_text() == "precious"


def test_a_full_disk_names_the_path_and_the_resume_command(toy_cli, tmp_path, capsys,
                                                           monkeypatch):
    real = files.atomic_write
    calls = []

    def full_after_a_while(path, chunks, **options):
        calls.append(path)
        if len(calls) > 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, chunks, **options)

    monkeypatch.setattr(files, "atomic_write", full_after_a_while)
    out = tmp_path / "out"
    assert cli.main(["run", str(toy_cli), "--out", str(out), "--device", "cpu"]) == 2
    [line] = _lines(capsys.readouterr().err)
    assert line.startswith(f"benchlab: No space left on device writing {out}")
    assert line.endswith(f"Free space, then continue with: benchlab run --resume {out} "
                         "--device cpu")


@pytest.mark.parametrize(("code", "text", "remedy"), [
    (errno.EROFS, "Read-only file system",
     "Make the file system writable (or copy the run directory to one that is)"),
    (errno.EDQUOT, "Disk quota exceeded", "Free space or raise the disk quota"),
    (errno.EACCES, "Permission denied", "Give yourself write permission there"),
], ids=["EROFS", "EDQUOT", "EACCES"])
def test_a_write_refused_for_another_reason_than_space_says_what_to_do(
        toy_cli, tmp_path, capsys, monkeypatch, code, text, remedy):
    real = files.atomic_write
    calls = []

    def refused_after_a_while(path, chunks, **options):
        calls.append(path)
        if len(calls) > 4:
            raise OSError(code, text, str(path))
        real(path, chunks, **options)

    monkeypatch.setattr(files, "atomic_write", refused_after_a_while)
    out = tmp_path / "out"
    assert cli.main(["run", str(toy_cli), "--out", str(out), "--device", "cpu"]) == 2
    [line] = _lines(capsys.readouterr().err)
    assert line.startswith(f"benchlab: {text} writing {out}")
    assert line.endswith(f"{remedy}, then continue with: benchlab run --resume {out} "
                         "--device cpu")
    assert "Free space" not in line or code == errno.EDQUOT


def test_a_closed_pipe_is_not_a_traceback():
    proc = subprocess.Popen([sys.executable, "-m", "benchlab.cli", "plugins"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head -0`: the reader is gone before the first line
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err


def test_a_set_error_points_at_the_option_not_at_a_file_line(toy_cli, capsys):
    assert cli.main(["validate", str(toy_cli), "--set", "train.epochs=0"]) == 2
    assert _lines(capsys.readouterr().err) == [
        f"{toy_cli}: --set train.epochs: expected a value > 0, got 0"]


def test_a_pipe_in_a_failure_message_does_not_break_the_table(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    pd.DataFrame(columns=store.COLUMNS).to_csv(out / "results.csv", index=False)
    pd.DataFrame([{"id": "attack-x", "kind": "attack", "status": "failed",
                   "message": "shape a|b\nsecond line", "seconds": 0.1}]).to_csv(
        out / "jobs.csv", index=False)
    summary = render(out).read_text().splitlines()
    [row] = [line for line in summary if line.startswith("| attack-x")]
    assert row == "| attack-x | shape a\\|b second line |"


def test_the_closing_line_counts_ran_ok_and_failed_jobs(toy_cli, tmp_path, capsys, monkeypatch):
    from conftest import ToyDataset

    def no_test_split(self, split, root):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ToyDataset, "load", no_test_split)
    out = tmp_path / "out"
    assert cli.main(["run", str(toy_cli), "--out", str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "ran 2 job(s): 0 ok, 2 failed; 0 already done" in err  # was "0 job(s) run"


def _run(suite, out, *extra):
    return cli.main(["run", str(suite), "--out", str(out), "--device", "cpu", *extra])


def test_resume_refuses_a_set_that_changes_finished_jobs(toy_cli, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(toy_cli, out) == 0
    before = (out / "results.csv").read_bytes()
    capsys.readouterr()
    status = cli.main(["run", "--resume", str(out), "--set", "train.epochs=2", "--device", "cpu"])
    assert status == 2
    [line] = _lines(capsys.readouterr().err)
    assert line.startswith(f"benchlab: --resume {out}: train.epochs is 1 in the saved suite, "
                           "2 now: that would change 2 finished job(s)")
    assert yaml.safe_load((out / "suite.yaml").read_text())["train"]["epochs"] == 1
    assert (out / "results.csv").read_bytes() == before


def test_resume_with_the_suite_file_compares_against_the_saved_suite(toy_cli, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(toy_cli, out) == 0
    toy_cli.write_text(TOY.replace("epochs: 1", "epochs: 2"))
    assert cli.main(["run", str(toy_cli), "--resume", str(out), "--device", "cpu"]) == 2
    assert "train.epochs is 1 in the saved suite, 2 now" in capsys.readouterr().err


def test_resume_may_add_jobs_and_says_so(toy_cli, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(toy_cli, out) == 0
    capsys.readouterr()
    assert cli.main(["run", "--resume", str(out), "--set", "models=[{name: tiny}, {name: tiny, label: wide, width: 6}]",
                     "--set", "report.alpha=0.01", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert f"resuming {out} with 2 job(s) the saved suite did not have (train-wide-r00, attack-wide-r00-noise)" in err
    assert "ran 2 job(s): 2 ok, 0 failed; 2 already done" in err
    jobs = pd.read_csv(out / "jobs.csv")
    assert sorted(jobs["id"]) == ["attack-tiny-r00-noise", "attack-wide-r00-noise",
                                  "train-tiny-r00", "train-wide-r00"]
    saved = yaml.safe_load((out / "suite.yaml").read_text())
    assert saved["report"]["alpha"] == 0.01 and len(saved["models"]) == 2


def test_out_refuses_a_directory_holding_another_run(toy_cli, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(toy_cli, out) == 0
    capsys.readouterr()
    other = tmp_path / "other.yaml"
    other.write_text(TOY.replace("name: toy\n", "name: other\n"))
    assert _run(other, out) == 2
    assert _lines(capsys.readouterr().err) == [
        f"benchlab: --out {out}: not empty (it holds a benchlab run); continue that run with "
        f"--resume {out}, or give a new or empty directory"]
    assert yaml.safe_load((out / "suite.yaml").read_text())["name"] == "toy"


def test_runs_started_in_the_same_second_get_their_own_directories(toy_cli, tmp_path,
                                                                   monkeypatch, capsys):
    from benchlab import runner

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "default_output_dir",
                        lambda suite, base=Path("results"): base / suite.name / "20260101T000000Z")
    assert cli.main(["run", str(toy_cli), "--device", "cpu"]) == 0
    assert cli.main(["run", str(toy_cli), "--device", "cpu"]) == 0
    first, second = _lines(capsys.readouterr().out)
    assert (first, second) == ("results/toy/20260101T000000Z", "results/toy/20260101T000000Z-2")


def test_a_failed_write_names_the_file_it_was_writing(tmp_path, monkeypatch):
    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() reports it

    monkeypatch.setattr(files.os, "fsync", disk_full)
    target = tmp_path / "jobs" / "x.csv"
    with pytest.raises(OSError) as info:
        files.atomic_write_bytes(target, b"rows")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert list(target.parent.iterdir()) == []  # no temporary file left behind


@pytest.mark.parametrize(("override", "message"), [
    (".".join(["train"] * 10_000) + "=1",
     "the path has 10,000 parts; expected at most 32"),
    ("train.runs=" + "9" * 5000,
     "train.runs: value is a number of 5,000 characters; expected a number a suite can hold"),
    ("models." + "9" * 5000 + ".width=3", "index of 5,000 digits out of range"),
])
def test_a_hostile_set_is_one_line_and_exit_2(toy_cli, capsys, override, message):
    assert cli.main(["validate", str(toy_cli), "--set", override]) == 2
    [line] = _lines(capsys.readouterr().err)
    assert message in line and len(line) < 300


def test_a_second_run_says_its_models_came_from_the_cache_and_does_not_count_them_as_run(
        toy_cli, tmp_path, capsys):
    assert _run(toy_cli, tmp_path / "first") == 0
    capsys.readouterr()
    assert _run(toy_cli, tmp_path / "second") == 0
    err = capsys.readouterr().err
    assert "reused 1 trained model(s) from the model cache" in err
    assert "ran 1 job(s): 1 ok, 0 failed; 1 trained model(s) reused from the model cache; " \
           "0 already done" in err

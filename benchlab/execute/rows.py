"""The rows a job writes to results.csv: one measurement each, named by where it was taken."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchlab.jobs import Job

_EPOCH_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "epoch_time_s",
                  "images_per_s")



def row(job: Job, metric: str, value: float, **where: Any) -> dict[str, Any]:
    """One measurement of ``job`` as a row of results.csv."""
    return {"job": job.id, "model": job.model.key, "dataset": job.dataset.name,
            "run": job.run, "seed": job.seed, "epoch": where.get("epoch"),
            "step": where.get("step"), "attack": where.get("attack"), "eps": where.get("eps"),
            "explainer": where.get("explainer"), "metric": metric, "value": float(value)}


_CURVE_METRICS = {"test_acc": "step_test_acc", "test_loss": "step_test_loss",
                  "eval_time_s": "step_eval_time_s",
                  # runs trained adversarially: accuracy under a short PGD at the procedure's ε
                  "robust_acc": "step_pgd_acc"}


def train_rows(job: Job, records: Sequence[dict[str, float]]) -> list[dict[str, Any]]:
    """The rows of a train job from its records: epoch records (as in the model
    cache), followed by learning-curve records (those with a ``step``)."""
    epochs, steps = split_records(records)
    rows = [row(job, m, record[m], epoch=int(record["epoch"]))
            for record in epochs for m in _EPOCH_METRICS]
    rows += [row(job, metric, record[field], epoch=record["epoch"], step=int(record["step"]))
             for record in steps for field, metric in _CURVE_METRICS.items() if field in record]
    return rows


def split_records(records: Sequence[dict[str, float]]
                  ) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """(epoch records, learning-curve records) of a train job's records."""
    return ([r for r in records if "step" not in r], [r for r in records if "step" in r])

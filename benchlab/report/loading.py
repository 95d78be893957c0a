"""What a report is drawn from: a run directory's results, its suite's report
settings, its jobs table and the explanation artifacts of its explain jobs.

A setting the run's ``suite.yaml`` leaves out (or a run without one) takes the
default of the suite schema's ``report`` section (:class:`benchlab.suite.ReportSection`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from benchlab import verdict
from benchlab.messages import describe
from benchlab.store import read_results
from benchlab.suite import ReportSection
from benchlab.tensors import UnreadableTensors, load_tensors

__all__ = ["DEFAULTS", "Run", "explain_artifacts", "failed_jobs", "load_run", "ordered"]

log = logging.getLogger("benchlab.report")

#: the report settings of a suite that sets none
DEFAULTS = ReportSection()


@dataclass(frozen=True)
class Run:
    """One run directory, read for its report."""

    out: Path
    results: pd.DataFrame
    title: str
    description: str
    thresholds: tuple[float, ...]  # test accuracies whose first epoch is tabled
    settings: verdict.Settings  # alpha, convergence and equivalence settings
    curve_images: str  # which test images the learning curves used, in words
    epoch_images: str  # which test images the per-epoch accuracy used, in words
    #: each model entry's training procedure in words ("standard", "fgsm_at, eps 0.3")
    procedures: dict[str, str] = field(default_factory=dict)
    #: report.robustness_pairs: (model, against) pairs; None: the default pairs
    robustness_pairs: list[tuple[str, str]] | None = None
    #: the run's suite.yaml as a mapping ({} without one)
    suite: dict = field(default_factory=dict)

    @property
    def alpha(self) -> float:
        return self.settings.alpha


def load_run(out: Path) -> Run:
    """``out``'s results and the report settings of the suite it ran."""
    out = Path(out)
    results = read_results(out)
    suite_file = out / "suite.yaml"
    suite: dict = (yaml.safe_load(suite_file.read_text()) or {}) if suite_file.exists() else {}
    report: dict = suite.get("report") or {}
    return Run(out=out, results=results, title=suite.get("name", out.name),
               description=suite.get("description", ""),
               thresholds=tuple(report.get("thresholds", DEFAULTS.thresholds)),
               settings=_settings(report),
               curve_images=_images(suite), epoch_images=_images(suite, curve=False),
               procedures=procedures(suite),
               robustness_pairs=[tuple(p) for p in report["robustness_pairs"]]
               if report.get("robustness_pairs") else None, suite=suite)


def procedures(suite: dict) -> dict[str, str]:
    """Model key -> how it was trained, in words: a procedure's name and its parameters
    as the run resolved them ("fgsm_at, eps 0.3, craft_mode train"); "standard" where
    the suite names none."""
    default = (suite.get("train") or {}).get("procedure")
    found = {}
    for entry in suite.get("models") or []:
        if not isinstance(entry, dict) or "name" not in entry:
            continue
        procedure = entry.get("procedure") or default
        found[entry.get("label") or entry["name"]] = _in_words(procedure)
    return found


def _in_words(procedure: dict | None) -> str:
    if not procedure:
        return "standard"
    shown = [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
             for k, v in procedure.items() if k not in ("name", "label") and v is not None]
    return ", ".join([str(procedure["name"]), *shown])


def _settings(report: dict) -> verdict.Settings:
    margin = report.get("equivalence_margin", DEFAULTS.equivalence_margin)
    return verdict.Settings(
        alpha=float(report.get("alpha", DEFAULTS.alpha)),
        step_thresholds=tuple(report.get("step_thresholds", DEFAULTS.step_thresholds)),
        auc_epochs=float(report.get("auc_epochs", DEFAULTS.auc_epochs)),
        margin_pp=float(margin) if margin is not None else None)


def _images(suite: dict, curve: bool = True) -> str:
    """Which test images the learning curves (or, ``curve=False``, the epochs) used."""
    train, dataset = suite.get("train") or {}, suite.get("dataset") or {}
    sizes = [dataset.get("test_size")] + ([train.get("eval_size")] if curve else [])
    sizes = [s for s in sizes if s is not None]
    return f"the first {min(sizes)} test images" if sizes else "the whole test split"


def ordered(values: pd.Series) -> list[str]:
    """The distinct names in ``values`` in the order the run recorded them."""
    return list(dict.fromkeys(v for v in values if isinstance(v, str)))


def failed_jobs(out: Path) -> tuple[pd.DataFrame, int] | None:
    """The failed rows of ``out``'s jobs table and how many jobs it lists (None
    without a jobs table)."""
    path = Path(out) / "jobs.csv"
    if not path.exists():
        return None
    jobs = pd.read_csv(path)
    return jobs[jobs["status"] == "failed"], len(jobs)


def explain_artifacts(out: Path) -> Iterator[tuple[str, dict]]:
    """(name, saved tensors) of every explain job of run 0, e.g. ``cnn-fgsm-gradcam``;
    a file that cannot be read is logged and skipped."""
    for path in sorted((Path(out) / "artifacts").glob("explain-*-r00-*.pt")):
        try:
            data = load_tensors(path.read_bytes(), str(path))
        except (OSError, UnreadableTensors) as exc:  # one damaged file must not stop the report
            why = str(exc) if isinstance(exc, UnreadableTensors) else describe(exc)
            log.warning("%s cannot be read (%s); its grid is left out", path, why)
            continue
        yield path.stem.removeprefix("explain-").replace("-r00", ""), data

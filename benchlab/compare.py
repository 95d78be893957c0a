"""``benchlab compare``: the same metrics of two or more finished runs side by side.

Each run directory gives one value per run (seed) of every measurement: the final
epoch of a train job's metrics, an attack job's or an explain job's numbers (their
``.n`` and interval companions, and the learning curves' step rows, are left out).
Every run is compared with the first (the baseline):

- where both have at least two runs, the difference of the means with its 95 %
  Welch interval and Welch's p-value (:mod:`benchlab.stats`), Holm-corrected over
  every test of the comparison;
- where either has a single run, whether the values differ, in words;
- what differs between the suites (dotted keys of each ``suite.yaml``) and between
  the machines (``environment.json``: torch, device, CPU, ...).

The result is data (:class:`Comparison`); :mod:`benchlab.compare_text` writes it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from benchlab import stats
from benchlab.messages import describe

__all__ = ["KEY", "CompareError", "Comparison", "RunData", "compare", "read_run"]

#: what names one measurement in every run directory
KEY = ["model", "attack", "eps", "explainer", "metric"]
#: companions of a measurement in results.csv, not measurements themselves
_COMPANIONS = (".n", ".ci_low", ".ci_high")
#: environment.json entries that say on what a run ran, in the order they are shown
ENVIRONMENT_KEYS = ("torch", "torchvision", "python", "benchlab", "device", "cpu",
                    "cpu_threads", "gpu", "platform", "git_commit")
_ALPHA = 0.05  # the suite schema's default report.alpha


class CompareError(ValueError):
    """A run directory that cannot be compared; the message is one line."""


@dataclass(frozen=True)
class RunData:
    """One run directory, read for a comparison."""

    path: Path
    label: str  # A, B, C, ...
    name: str  # the suite's name
    suite: dict[str, Any]  # suite.yaml as saved ({} when missing)
    environment: dict[str, Any]  # environment.json ({} when missing)
    values: pd.DataFrame  # KEY + run, seed, value: one row per measurement and run
    jobs: dict[str, int] = field(default_factory=dict)  # status -> how many jobs

    @property
    def runs(self) -> int:
        return int(self.values["run"].nunique()) if len(self.values) else 0


@dataclass(frozen=True)
class Comparison:
    runs: list[RunData]
    #: one row per measurement and run: KEY, run (label), n, mean, sd, and against the
    #: baseline: diff, ci_low, ci_high, p, p_holm, outcome (words)
    table: pd.DataFrame
    #: dotted suite key -> its value in each run (only the keys that differ)
    suite_differences: dict[str, list[Any]]
    #: environment entry -> its value in each run (only the entries that differ)
    environment_differences: dict[str, list[Any]]
    alpha: float
    tests: int  # the size of the Holm family

    @property
    def baseline(self) -> RunData:
        return self.runs[0]


def read_run(path: Path | str, label: str = "A") -> RunData:
    """``path``'s results, suite and environment; :class:`CompareError` if it is not
    a run directory or a file of it cannot be read."""
    path = Path(path)
    if not path.is_dir():
        raise CompareError(f"{path}: {'is a file' if path.exists() else 'does not exist'}; "
                           "expected a benchlab run directory")
    results_file = path / "results.csv"
    if not results_file.is_file():
        raise CompareError(f"{path}: no results.csv there; not a finished benchlab run "
                           "directory")
    from benchlab.store import read_results

    try:
        results = read_results(path)
    except KeyError as exc:  # a column it needs
        raise CompareError(f"{results_file}: damaged (no column {exc.args[0]}); redraw it "
                           f"with: benchlab report {path}") from None
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise CompareError(f"{results_file}: cannot be read ({describe(exc)})") from None
    missing = [c for c in [*KEY, "job", "run", "value"] if c not in results.columns]
    if missing:
        raise CompareError(f"{results_file}: damaged (no column {', '.join(missing)}); "
                           "redraw it with: benchlab report " + str(path))
    suite = _mapping(path / "suite.yaml", yaml.safe_load)
    return RunData(path=path, label=label, name=str(suite.get("name", path.name)),
                   suite=suite, environment=_mapping(path / "environment.json", json.loads),
                   values=per_run_values(results), jobs=_job_counts(path))


def _mapping(path: Path, parse) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = parse(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CompareError(f"{path}: damaged ({describe(exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CompareError(f"{path}: damaged (expected a mapping, got "
                           f"{type(data).__name__})")
    return data


def _job_counts(path: Path) -> dict[str, int]:
    try:
        jobs = pd.read_csv(path / "jobs.csv")
        return {str(k): int(v) for k, v in jobs["status"].value_counts().items()}
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return {}


def per_run_values(results: pd.DataFrame) -> pd.DataFrame:
    """One value per measurement and run: a train job's metrics at its last epoch,
    every other job's numbers as they are; companions and step rows left out."""
    rows = results[~results["metric"].astype(str).str.endswith(_COMPANIONS)]
    if "step" in rows:
        rows = rows[rows["step"].isna()]
    rows = rows[rows["value"].notna()]
    if "epoch" in rows and rows["epoch"].notna().any():
        trained = rows["epoch"].notna()
        last = rows[trained].groupby(["job", "metric"])["epoch"].transform("max")
        keep = pd.Series(True, index=rows.index)
        keep[trained] = rows.loc[trained, "epoch"] == last
        rows = rows[keep]
    frame = rows[[*KEY, "run", "seed", "value"]].copy() if "seed" in rows else (
        rows[[*KEY, "run", "value"]].assign(seed=np.nan))
    for column in ("model", "attack", "explainer", "metric"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), "")
    # eps as text ('' for none): a key that compares equal across runs, NaN never does
    frame["eps"] = [repr(float(e)) if pd.notna(e) else "" for e in frame["eps"]]
    return frame.drop_duplicates([*KEY, "run"], keep="last").reset_index(drop=True)


def compare(paths: list[Path | str], metrics: list[str] | None = None) -> Comparison:
    """Compare the runs in ``paths`` with the first; ``metrics``: glob patterns of the
    metric names to keep (default: all)."""
    if len(paths) < 2:
        raise CompareError("compare: give at least two run directories")
    runs = [read_run(p, _label(i)) for i, p in enumerate(paths)]
    if metrics:
        runs = [_only(r, metrics) for r in runs]
        if all(r.values.empty for r in runs):
            raise CompareError(f"--metric {' '.join(metrics)}: matches no metric of these "
                               "runs")
    alpha = float((runs[0].suite.get("report") or {}).get("alpha", _ALPHA))
    table = _table(runs)
    tested = table["p"].notna()
    table.loc[tested, "p_holm"] = stats.holm(table.loc[tested, "p"].tolist())
    table["outcome"] = [_outcome(row, alpha) for row in table.itertuples()]
    return Comparison(runs=runs, table=table,
                      suite_differences=_differences([_flat(r.suite, ("description",))
                                                      for r in runs]),
                      environment_differences=_differences([_environment(r.environment)
                                                            for r in runs]),
                      alpha=alpha, tests=int(tested.sum()))


def _label(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"R{i + 1}"


def _only(run: RunData, patterns: list[str]) -> RunData:
    keep = run.values["metric"].map(lambda m: any(fnmatchcase(m, p) for p in patterns))
    return RunData(run.path, run.label, run.name, run.suite, run.environment,
                   run.values[keep].reset_index(drop=True), run.jobs)


def _table(runs: list[RunData]) -> pd.DataFrame:
    """One row per measurement and run, in the order the runs recorded them."""
    keys = pd.concat([r.values[KEY] for r in runs]).drop_duplicates()
    groups = [{k: g["value"].to_numpy(float) for k, g in r.values.groupby(KEY, sort=False,
                                                                          dropna=False)}
              for r in runs]
    rows = []
    for key in keys.itertuples(index=False, name=None):
        base = groups[0].get(key)
        for run, found in zip(runs, groups):
            values = found.get(key)
            row = dict(zip(KEY, key), run=run.label, n=0 if values is None else len(values),
                       mean=math.nan, sd=math.nan, diff=math.nan, ci_low=math.nan,
                       ci_high=math.nan, p=math.nan, p_holm=math.nan, why="")
            if values is not None:
                with np.errstate(invalid="ignore"):  # an infinite value has no spread
                    row["mean"] = float(values.mean())
                    row["sd"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            if run is not runs[0]:
                row.update(_against(values, base))
            rows.append(row)
    return pd.DataFrame(rows)


def _against(values: np.ndarray | None, base: np.ndarray | None) -> dict[str, Any]:
    """This run's values against the baseline's: the difference, and its interval and
    p-value where both have two runs or more; ``why`` in words where they are missing."""
    if values is None or base is None:
        return {"why": "only in the baseline" if values is None else "not in the baseline"}
    with np.errstate(invalid="ignore"):  # inf - inf: no difference to state
        found: dict[str, Any] = {"diff": float(values.mean() - base.mean())}
    if len(values) == len(base) and np.array_equal(np.sort(values), np.sort(base)):
        found.update(diff=0.0, why="identical values")
        return found
    if len(values) < 2 or len(base) < 2:
        found["why"] = "single run"
        return found
    low, high = stats.welch_ci(values, base)
    found.update(ci_low=low, ci_high=high, p=stats.welch(values, base).p)
    return found


def _outcome(row, alpha: float) -> str:
    """The comparison of one measurement with the baseline, in words ('' for the
    baseline itself)."""
    if row.run == "A":
        return ""
    if row.why in ("only in the baseline", "not in the baseline"):
        return row.why
    if row.why == "identical values":
        return "identical values"
    if row.why == "single run":
        return "same value" if row.diff == 0 else "differs (single run: no test)"
    if row.ci_low == row.ci_high:  # neither side varies
        return "same in every run" if row.diff == 0 else "differs in every run"
    return (f"differs (Holm p < {alpha:g})" if row.p_holm < alpha
            else "no difference shown")


def _flat(data: Any, skip: tuple[str, ...] = (), prefix: str = "") -> dict[str, Any]:
    """Dotted key (list items by index, as ``--set`` writes them) -> value."""
    if isinstance(data, dict):
        found: dict[str, Any] = {}
        for k, v in data.items():
            if not prefix and k in skip:
                continue
            found.update(_flat(v, skip, f"{prefix}{k}."))
        return found or ({prefix[:-1]: {}} if prefix else {})
    if isinstance(data, list):
        found = {}
        for i, v in enumerate(data):
            found.update(_flat(v, skip, f"{prefix}{i}."))
        return found or {prefix[:-1]: []}
    return {prefix[:-1]: data}


def _environment(env: dict[str, Any]) -> dict[str, Any]:
    found = {k: env[k] for k in ENVIRONMENT_KEYS if k in env}
    for name, version in sorted((env.get("plugins") or {}).items()):
        found[f"plugin {name}"] = version
    return found


_MISSING = object()


def _differences(flat: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The keys whose value is not the same in every mapping ("(not set)" where one
    lacks it)."""
    keys = list(dict.fromkeys(k for f in flat for k in f))
    found = {}
    for key in keys:
        values = [f.get(key, _MISSING) for f in flat]
        if any(v != values[0] for v in values[1:]):
            found[key] = ["(not set)" if v is _MISSING else v for v in values]
    return found

"""A :class:`~benchlab.compare.Comparison` written out: Markdown for the terminal and
``compare.md``, the same as one offline page in the report's style (``compare.html``,
its tables sortable and filterable), the tidy table as ``compare.csv``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from benchlab.compare import KEY, Comparison, RunData
from benchlab.files import atomic_write_text
from benchlab.messages import squeeze

__all__ = ["html_page", "markdown", "write"]

DASH = "–"
#: metrics that are shares in [0, 1]: shown as percentages, differences in points
_SHARES = ("train_acc", "test_acc", "accuracy", "success_rate", "found_rate",
           "cam_background_share", "cam_empty_share", "step_test_acc", "step_pgd_acc")
#: what the suites and environments are summed up by when they agree
_HEADLINE_ENVIRONMENT = (("torch", "torch"), ("device", "device"), ("cpu", "CPU"))


def markdown(c: Comparison) -> str:
    """The comparison as Markdown: the runs, what differs between them, the metrics."""
    md = [f"# Comparison of {len(c.runs)} runs", "", _runs_table(c.runs), "",
          "## What differs", "", *_suites(c), "", *_environments(c), "", "## Metrics", "",
          _legend(c), "", _metrics_table(c)]
    return "\n".join(md).rstrip() + "\n"


def write(c: Comparison, out: Path) -> tuple[Path, Path]:
    """``out/compare.md``, ``out/compare.html`` and ``out/compare.csv``; the paths of the
    first and the last."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / "compare.md", out / "compare.csv"
    text = markdown(c)
    atomic_write_text(md, text)
    atomic_write_text(out / "compare.html", html_page(text))
    paths = {r.label: str(r.path) for r in c.runs}
    table = c.table.drop(columns="why").assign(path=c.table["run"].map(paths))
    atomic_write_text(csv, table.to_csv(index=False))
    return md, csv


def html_page(text: str) -> str:
    """The Markdown of a comparison as a page: its title, then one section per ``## ``
    heading (tables sortable and filterable, as in report.html)."""
    from benchlab.report.page import Markdown, Section, page

    title, *rest = text.split("\n", 1)
    sections, heading, lines = [], "", []
    for line in (rest[0] if rest else "").splitlines():
        if line.startswith("## "):
            if heading or any(x.strip() for x in lines):
                sections.append(Section(heading, [Markdown("\n".join(lines))]))
            heading, lines = line[3:].strip(), []
        else:
            lines.append(line)
    sections.append(Section(heading, [Markdown("\n".join(lines))]))
    return page(title.lstrip("# ").strip(), sections, subtitle="benchlab compare")


# --------------------------------------------------------------------------- the runs


def _runs_table(runs: list[RunData]) -> str:
    rows = []
    for r in runs:
        env = r.environment
        jobs = ", ".join(f"{n} {status}" for status, n in sorted(r.jobs.items()))
        rows.append({"": r.label, "run directory": f"`{r.path}`", "suite": r.name,
                     "runs": r.runs, "jobs": jobs or "(no jobs.csv)",
                     "torch": env.get("torch", "(not recorded)"),
                     "device": env.get("device", "(not recorded)"),
                     "CPU": env.get("cpu", "(not recorded)")})
    return _table(pd.DataFrame(rows))


def _suites(c: Comparison) -> list[str]:
    missing = [r.label for r in c.runs if not r.suite]
    lines = [f"Suites: no suite.yaml in {', '.join(missing)}; their settings are unknown."
             ] if missing else []
    if not c.suite_differences:
        return lines or ["Suites: the same settings (descriptions aside)."]
    lines.append(f"Suites: {len(c.suite_differences)} key(s) differ.")
    lines += ["", _table(_difference_frame(c.suite_differences, c.runs, "key"))]
    return lines


def _environments(c: Comparison) -> list[str]:
    missing = [r.label for r in c.runs if not r.environment]
    lines = [f"Environments: no environment.json in {', '.join(missing)}."] if missing else []
    same = [f"{words} ({c.baseline.environment[key]})" for key, words in _HEADLINE_ENVIRONMENT
            if key not in c.environment_differences and key in c.baseline.environment]
    n = len(c.environment_differences)
    differ = f"{n} entr{'y differs' if n == 1 else 'ies differ'}"
    if same:
        lines.append("Environments: the same " + _and(same) + (f"; {differ}:" if n else "."))
    elif n:
        lines.append(f"Environments: {differ}:")
    elif not missing:
        lines.append("Environments: the same.")
    if n:
        lines += ["", _table(_difference_frame(c.environment_differences, c.runs, "entry"))]
    return lines


def _difference_frame(found: dict[str, list[Any]], runs: list[RunData], what: str
                      ) -> pd.DataFrame:
    return pd.DataFrame([{what: f"`{key}`", **{r.label: _value(v) for r, v in zip(runs, values)}}
                         for key, values in found.items()])


def _value(v: Any) -> str:
    if v is None:
        return "null"
    return squeeze(v if isinstance(v, str) else repr(v), 80)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# --------------------------------------------------------------------------- the metrics


def _legend(c: Comparison) -> str:
    base = c.baseline.label
    family = (f"Holm-corrected over the {c.tests} test(s) of this table" if c.tests
              else "no test: no measurement has two runs or more on both sides")
    return (f"Each run: mean ± standard deviation over its runs (seeds), n runs; a train "
            f"job's metrics at its last epoch; shares in %, their differences in "
            f"percentage points (pp). X − {base}: the difference of the means with its 95 % "
            f"Welch interval (not adjusted) where both have two runs or more; p: Welch's "
            f"t-test, "
            f"{family}; α = {c.alpha:g} (the suite of {base}).")


def _metrics_table(c: Comparison) -> str:
    t = c.table
    if t.empty:
        return "_No measurement in these runs._\n"
    labels = [r.label for r in c.runs]
    others = labels[1:]
    rows = []
    for key, group in t.groupby(KEY, sort=False, dropna=False):
        by_run = {row.run: row for row in group.itertuples()}
        share = _is_share(str(key[-1]))
        row = {k: _key_cell(k, v) for k, v in zip(KEY, key)}
        for label in labels:
            row[label] = _cell(by_run[label], share)
        for label in others:
            r = by_run[label]
            row[f"{label} − {labels[0]}"] = _difference(r, share)
            if len(others) == 1:
                row["p (Holm)"] = _p(r)
                row[f"{label} vs {labels[0]}"] = r.outcome
            else:
                row[f"{label} vs {labels[0]}"] = (r.outcome + (f", p {_p(r)}" if
                                                               not math.isnan(r.p) else ""))
        rows.append(row)
    frame = pd.DataFrame(rows)
    empty = [k for k in ("attack", "eps", "explainer") if (frame[k] == "").all()]
    return _table(frame.drop(columns=empty).rename(columns={"eps": "ε"}))


def _is_share(metric: str) -> bool:
    return metric.split("[")[0] in _SHARES


def _key_cell(column: str, value: Any) -> str:
    return f"{float(value):g}" if column == "eps" and value else str(value)


def _cell(row, share: bool) -> str:
    if row.n == 0:
        return "(not measured)"
    scale, unit = (100.0, " %") if share else (1.0, "")
    text = _num(row.mean * scale, share)
    if row.n > 1:
        text += f" ± {_num(row.sd * scale, share)}"
    return f"{text}{unit} (n={row.n})"


def _difference(row, share: bool) -> str:
    if math.isnan(row.diff):
        return DASH + f" ({row.why})"
    scale, unit = (100.0, " pp") if share else (1.0, "")
    text = _num(row.diff * scale, share, sign=True) + unit
    if not math.isnan(row.ci_low):
        text += (f" [{_num(row.ci_low * scale, share, sign=True)}, "
                 f"{_num(row.ci_high * scale, share, sign=True)}]")
    elif row.why:
        text += f" (no interval: {row.why})"
    return text


def _p(row) -> str:
    if math.isnan(row.p):
        return f"no test ({row.why or 'no value'})"
    adjusted = row.p_holm
    return "< 0.001" if adjusted < 0.001 else f"{adjusted:.3f}"


def _num(x: float, share: bool, sign: bool = False) -> str:
    digits = ".2f" if share else (".0f" if abs(x) >= 1000 else ".4g")
    return format(x, ("+" if sign else "") + digits).replace("-", "−")


def _table(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for values in frame.itertuples(index=False, name=None):
        lines.append("| " + " | ".join(" ".join(str(v).split()).replace("|", "\\|")
                                       for v in values) + " |")
    return "\n".join(lines)

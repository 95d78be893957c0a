"""report.html: summary.md as one interactive, self-contained page, in the same order
(the verdict first), then what summary.md leaves to files: the environment, the suite
as run and every job with its status, where it ran, its time and, for a failed job,
its message and traceback.

Each figure of summary.md becomes its interactive figure (:mod:`.figures`) where there
is one, else (the explanation grids) the PNG itself, embedded; the page is put
together by :mod:`.page`.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pandas as pd

from benchlab.files import atomic_write_text
from benchlab.report.figures import figures
from benchlab.report.loading import Run
from benchlab.report.page import Figure, Html, Image, Markdown, Part, Section, Table, page

__all__ = ["render_html"]

_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<file>[^)\s]+)\)\s*$")
#: the columns of jobs.csv the page shows, in order, and their headings
_JOB_COLUMNS = {"id": "job", "kind": "kind", "status": "status", "where": "where",
                "seconds": "time (s)", "message": "message"}


def render_html(run: Run, summary: str) -> Path:
    """Write ``report.html`` beside summary.md (whose text is ``summary``); its path."""
    drawn = figures(run)
    title, sections = _sections(summary, run.out, drawn)
    sections += _run_sections(run.out)
    path = run.out / "report.html"
    atomic_write_text(path, page(title, sections,
                                 subtitle=f"benchlab report of {run.out.name}"))
    return path


def _sections(summary: str, out: Path, drawn: dict) -> tuple[str, list[Section]]:
    """The title of summary.md and its sections, split at each ``## `` heading."""
    lines = summary.splitlines()
    title = lines[0].removeprefix("# ").strip() if lines and lines[0].startswith("# ") else ""
    sections: list[Section] = []
    heading, body = "", []
    for line in lines[1:] if title else lines:
        if line.startswith("## "):
            if heading or any(s.strip() for s in body):
                sections.append(Section(heading, _parts(body, out, drawn)))
            heading, body = line[3:].strip(), []
        else:
            body.append(line)
    if heading or any(s.strip() for s in body):
        sections.append(Section(heading, _parts(body, out, drawn)))
    return title or out.name, sections


def _parts(lines: list[str], out: Path, drawn: dict) -> list[Part]:
    """Markdown between the figures; each figure interactive, or its PNG embedded."""
    parts: list[Part] = []
    text: list[str] = []
    for line in lines:
        match = _IMAGE.match(line.strip())
        if not match:
            text.append(line)
            continue
        if any(t.strip() for t in text):
            parts.append(Markdown("\n".join(text)))
        text = []
        name, alt = match["file"], match["alt"]
        if name in drawn:
            parts.append(Figure(drawn[name]))
        elif (out / name).is_file():
            parts.append(Image((out / name).read_bytes(), alt))
        else:
            parts.append(Markdown(f"_The figure {name} is not in the run directory._"))
    if any(t.strip() for t in text):
        parts.append(Markdown("\n".join(text)))
    return parts


def _run_sections(out: Path) -> list[Section]:
    """Environment, suite as run, jobs: what a reader checks before trusting the rest."""
    found = []
    env_file = out / "environment.json"
    if env_file.exists():
        try:
            env = json.loads(env_file.read_text())
        except (OSError, ValueError) as exc:
            found.append(Section("Environment", [Markdown(f"_environment.json cannot be "
                                                          f"read: {exc}_")]))
        else:
            rows = [{"what": k, "value": _shown(v)} for k, v in env.items()]
            found.append(Section("Environment", [Table(pd.DataFrame(rows))]))
    suite_file = out / "suite.yaml"
    if suite_file.exists():
        found.append(Section("Suite as run", [Html(
            f"<pre><code>{html.escape(suite_file.read_text())}</code></pre>")]))
    jobs_file = out / "jobs.csv"
    if jobs_file.exists():
        found.append(Section("Jobs", _jobs(out, pd.read_csv(jobs_file))))
    return found


def _shown(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def _jobs(out: Path, jobs: pd.DataFrame) -> list[Part]:
    shown = jobs[[c for c in _JOB_COLUMNS if c in jobs.columns]].rename(columns=_JOB_COLUMNS)
    shown = shown.astype(object).where(shown.notna(), "")
    if "where" in shown:  # runs before jobs recorded it, and models taken from the cache
        shown["where"] = [w if w != "" else "not recorded" for w in shown["where"]]
    counts = jobs["status"].value_counts() if "status" in jobs else pd.Series(dtype=int)
    said = ", ".join(f"{n} {status}" for status, n in counts.items())
    parts: list[Part] = [Markdown(f"{len(jobs)} job(s): {said}."), Table(shown)]
    failed = jobs[jobs["status"] == "failed"] if "status" in jobs else jobs.iloc[0:0]
    for job in failed.itertuples():
        log = out / "jobs" / f"{job.id}.log"
        trace = log.read_text() if log.is_file() else "(no traceback kept for this job)"
        parts.append(Html(f'<details class="traceback"><summary>{html.escape(str(job.id))}: '
                          f"{html.escape(str(job.message))}</summary><pre>"
                          f"{html.escape(trace)}</pre></details>"))
    return parts

"""report.html: summary.md as one self-contained page, in the same order, with the
figures interactive, plus the environment, the suite and the jobs (no browser here:
tests/test_browser_report.py opens the page in Chromium)."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from benchlab.report.html import render_html
from benchlab.report.loading import load_run
from benchlab.report.page import Figure, Image, Markdown, Section, Table, page

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "reference"


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(text: str) -> _Tags:
    tags = _Tags()
    tags.feed(text)
    return tags


def _copy(name: str, tmp_path: Path) -> Path:
    out = tmp_path / name
    shutil.copytree(REFERENCE / name, out, ignore=shutil.ignore_patterns("report.html"))
    return out


@pytest.fixture(scope="module")
def fgsm_page(tmp_path_factory) -> tuple[Path, str]:
    out = _copy("fgsm_gradcam", tmp_path_factory.mktemp("html"))
    path = render_html(load_run(out), (out / "summary.md").read_text())
    return out, path.read_text()


def test_the_page_loads_nothing_from_outside(fgsm_page):
    _, text = fgsm_page
    tags = _parse(text).tags
    for tag, attrs in tags:
        for attr in ("src", "href"):
            value = attrs.get(attr)
            if value is not None:
                assert value.startswith(("#", "data:")), f"<{tag} {attr}={value[:60]}>"
    assert not [t for t, a in tags if t == "link"]
    policy = [a["content"] for t, a in tags if t == "meta" and a.get("http-equiv")]
    assert policy and "default-src 'none'" in policy[0]
    assert sum(t == "script" and "type" not in a for t, a in tags) == 2  # plotly.js, page.js


def test_the_reference_page_is_under_5_mb(fgsm_page):
    out, text = fgsm_page
    assert (out / "report.html").stat().st_size < 5_000_000


def test_sections_follow_summary_md_with_the_verdict_first(fgsm_page):
    out, text = fgsm_page
    summary = (out / "summary.md").read_text()
    wanted = [line[3:].strip() for line in summary.splitlines() if line.startswith("## ")]
    found = re.findall(r"<h2>(.*?)</h2>", text)
    assert wanted[0] == "Verdict"
    assert found == [*wanted, "Environment", "Suite as run", "Jobs"]


def test_every_figure_is_interactive_or_embedded(fgsm_page):
    out, text = fgsm_page
    summary = (out / "summary.md").read_text()
    images = re.findall(r"^!\[[^\]]*\]\(([^)]+)\)$", summary, flags=re.M)
    interactive = text.count('<figure class="plot">')
    embedded = text.count('<figure class="image">')
    assert interactive + embedded == len(images)
    grids = [i for i in images if i.startswith("grid_")]
    assert embedded == len(grids) and interactive == len(images) - len(grids) >= 5


def test_every_table_row_of_summary_md_is_in_the_page(fgsm_page):
    out, text = fgsm_page
    summary = (out / "summary.md").read_text()
    md_rows = [line for line in summary.splitlines()
               if line.startswith("|") and not line.startswith("|---")]
    jobs = pd.read_csv(out / "jobs.csv")
    env_rows = len(pd.read_json(out / "environment.json", typ="series"))
    tags = [t for t, _ in _parse(text).tags]
    assert tags.count("tr") == len(md_rows) + len(jobs) + 1 + env_rows + 1
    # every mean keeps its interval and n as in the Markdown
    assert "99.04" in text and "n = " in summary and text.count("(1/1 runs)") >= 2


def test_the_environment_the_suite_and_where_each_job_ran(fgsm_page):
    out, text = fgsm_page
    words = " ".join(_parse(text).text)
    assert "2.14.1+cu130" in words and "Intel(R) Xeon(R) Processor" in words
    assert "FGSM and iterative FGSM" in words  # the suite's description, as run
    jobs = pd.read_csv(out / "jobs.csv")
    for job in jobs.itertuples():
        assert job.id in words
        assert (job.where if isinstance(job.where, str) else "not recorded") in words


def test_a_failed_job_shows_its_message_and_traceback(tmp_path):
    out = _copy("bn_vs_plain", tmp_path)
    jobs = pd.read_csv(out / "jobs.csv", dtype={"message": object})
    jobs.loc[0, ["status", "message"]] = ["failed", "RuntimeError: out of <memory>"]
    jobs.to_csv(out / "jobs.csv", index=False)
    (out / "jobs").mkdir(exist_ok=True)
    (out / "jobs" / f"{jobs.id[0]}.log").write_text(
        'Traceback (most recent call last):\n  File "x.py", line 3\nRuntimeError: <memory>\n')
    text = render_html(load_run(out), (out / "summary.md").read_text()).read_text()
    details = re.search(r'<details class="traceback">(.*?)</details>', text, flags=re.S)
    assert details, "no traceback block"
    assert jobs.id[0] in details[1] and "out of &lt;memory&gt;" in details[1]
    assert "File &quot;x.py&quot;, line 3" in details[1] or 'File "x.py", line 3' in details[1]


def test_page_builds_any_page_from_sections():
    import numpy as np

    fig = {"data": [{"type": "scatter", "x": np.array([1, 2, np.nan]), "y": [3, 4, 5]}],
           "layout": {"title": {"text": "a"}}}
    png = (REFERENCE / "fgsm_gradcam" / "robustness.png").read_bytes()
    text = page("A <comparison>", [
        Section("Numbers", [Markdown("**bold** and a table\n\n| a | b |\n|---|---|\n| 1 | 2 |"),
                            Table(pd.DataFrame({"model": ["x", "y"], "v": [1.5, None]}))]),
        Section("Pictures", [Figure(fig, "a line"), Image(png, "robustness")])])
    assert "<title>A &lt;comparison&gt;</title>" in text
    assert '<a href="#numbers">Numbers</a>' in text and '<section id="pictures">' in text
    assert "<strong>bold</strong>" in text and text.count("<table>") == 2
    assert "<td>–</td>" in text  # an absent value is a dash, never nan
    assert '"x":[1.0,2.0,null]' in text  # NaN is a gap of the line, not invalid JSON
    assert "NaN" not in re.sub(r"<script>.*?</script>", "", text, flags=re.S)

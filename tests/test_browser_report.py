"""report.html in a real headless Chromium with the network cut off: no console error,
every figure drawn with all its traces, hover, legend, zoom and the log switch work,
tables sort and filter, the verdict is there.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); without
them the tests are skipped, except under CI, where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from browser import binaries, open_page, start  # tests/browser.py

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "reference"

if binaries() is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser tests: chromium and chromedriver are "
                           "missing (.ci/run installs them with apt-get)")
    pytest.skip("no chromium and chromedriver on PATH (apt-get install chromium "
                "chromium-driver)", allow_module_level=True)
pytest.importorskip("selenium")


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """report.html of two reference runs: attacks, attention and grids; step curves."""
    from benchlab.report.html import render_html
    from benchlab.report.loading import load_run

    found = {}
    for name in ("fgsm_gradcam", "bn_vs_plain_steps"):
        out = tmp_path_factory.mktemp("browser") / name
        shutil.copytree(REFERENCE / name, out, ignore=shutil.ignore_patterns("report.*"))
        found[name] = render_html(load_run(out), (out / "summary.md").read_text())
    return found


@pytest.fixture(scope="module")
def chrome():
    browser = start()
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def console(chrome, pages) -> dict[str, list[dict]]:
    """Each page loaded once, offline: the console's messages while it loaded and drew."""
    return {name: open_page(chrome, path) for name, path in pages.items()}


def _show(chrome, pages, name: str) -> None:
    if not chrome.current_url.endswith(f"/{name}/report.html"):
        open_page(chrome, pages[name])


def test_no_console_errors(console):
    for name, messages in console.items():
        errors = [m for m in messages if m.get("level") == "SEVERE"]
        assert errors == [], f"{name}: {errors}"


def test_nothing_was_requested_from_a_network(chrome, pages, console):
    for name in pages:
        _show(chrome, pages, name)
        names = chrome.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        outside = [n for n in names if not n.startswith(("data:", "blob:", "file:"))]
        assert outside == [], f"{name}: {outside}"
    # and the browser truly reaches no network: a request from the page fails
    failed = chrome.execute_async_script(
        "const done = arguments[0]; const img = new Image();"
        "img.onload = () => done('loaded'); img.onerror = () => done('failed');"
        "img.src = 'https://pypi.org/static/images/logo-small.svg';")
    assert failed == "failed"


def test_every_figure_is_drawn_with_all_its_traces(chrome, pages, console):
    for name in pages:
        _show(chrome, pages, name)
        drawn = chrome.execute_script("""
            return Array.from(document.querySelectorAll('figure.plot')).map(f => {
              const gd = f.querySelector('.plotly-figure');
              const spec = JSON.parse(f.querySelector('script.figure-data').textContent);
              return [spec.data.length, gd.data ? gd.data.length : -1,
                      gd.querySelectorAll('.scatterlayer .trace, .barlayer .trace').length,
                      gd.querySelectorAll('.scatterlayer path.js-line, .point').length];
            });""")
        assert len(drawn) >= (5 if name == "fgsm_gradcam" else 3), name
        for wanted, plotted, groups, marks in drawn:
            assert wanted > 0 and plotted == wanted and groups == wanted and marks > 0, drawn


def test_the_explanation_grids_are_shown(chrome, pages, console):
    _show(chrome, pages, "fgsm_gradcam")
    sizes = chrome.execute_script("return Array.from(document.querySelectorAll("
                                  "'figure.image img')).map(i => i.naturalWidth)")
    assert len(sizes) == 8 and min(sizes) > 100


def test_the_verdict_comes_first(chrome, pages, console):
    _show(chrome, pages, "fgsm_gradcam")
    summary = (pages["fgsm_gradcam"].parent / "summary.md").read_text()
    first = summary.split("## Verdict", 1)[1].split("\n- ", 1)[1].split("\n")[0]
    wanted = re.sub(r"[*`]", "", first)[:60]
    headed = chrome.execute_script(
        "return Array.from(document.querySelectorAll('main h2')).map(h => h.textContent)")
    assert headed[0] == "Verdict"
    verdict = chrome.execute_script("return document.getElementById('verdict').innerText")
    assert wanted in " ".join(verdict.split())


def _figure(chrome, title: str) -> str:
    """A script expression for the figure whose title starts with ``title``."""
    found = chrome.execute_script(
        "return Array.from(document.querySelectorAll('.plotly-figure')).findIndex("
        "d => d.layout.title.text.startsWith(arguments[0]))", title)
    assert found >= 0, f"no figure titled {title!r}"
    return f"document.querySelectorAll('.plotly-figure')[{found}]"


def test_hover_names_the_value_n_and_interval(chrome, pages, console):
    _show(chrome, pages, "fgsm_gradcam")
    gd = _figure(chrome, "Accuracy under attack")
    text = chrome.execute_script(f"""
        const gd = {gd};
        Plotly.Fx.hover(gd, [{{curveNumber: 0, pointNumber: 1}}]);
        return Array.from(gd.querySelectorAll('.hovertext')).map(e => e.textContent).join(' ');
    """)
    assert "n = 1 runs" in text and "interval" in text and "%" in text, text


def test_legend_click_hides_and_shows_a_series(chrome, pages, console):
    from selenium.webdriver.support.ui import WebDriverWait

    _show(chrome, pages, "fgsm_gradcam")
    gd = _figure(chrome, "Test accuracy")
    toggle = chrome.execute_script(f"return {gd}.querySelector('.legend .traces .legendtoggle')")
    visible = f"return {gd}.data.map(t => t.visible)"
    toggle.click()  # plotly waits a double-click's time before it acts on a click
    WebDriverWait(chrome, 5).until(lambda c: "legendonly" in c.execute_script(visible))
    assert chrome.execute_script(visible).count("legendonly") == 2  # the line and its band
    time.sleep(0.5)
    toggle.click()
    WebDriverWait(chrome, 5).until(lambda c: "legendonly" not in c.execute_script(visible))


def test_log_switch_and_zoom_of_the_step_curves(chrome, pages, console):
    from selenium.webdriver.common.action_chains import ActionChains

    _show(chrome, pages, "bn_vs_plain_steps")
    gd = _figure(chrome, "Test accuracy during training")
    assert chrome.execute_script(f"return {gd}.layout.xaxis.type") == "log"
    buttons = chrome.execute_script(f"return Array.from({gd}.querySelectorAll("
                                    "'.updatemenu-button'))")
    labels = [b.text for b in buttons]
    buttons[labels.index("x linear")].click()
    assert chrome.execute_script(f"return {gd}.layout.xaxis.type") == "linear"
    before = chrome.execute_script(f"return {gd}.layout.xaxis.range.slice()")
    drag = chrome.execute_script(f"return {gd}.querySelector('.nsewdrag')")
    ActionChains(chrome).move_to_element_with_offset(drag, -150, 0).click_and_hold() \
        .move_by_offset(120, 0).release().perform()
    after = chrome.execute_script(f"return {gd}.layout.xaxis.range.slice()")
    assert after[1] - after[0] < (before[1] - before[0]) / 2, (before, after)
    buttons[labels.index("x log")].click()
    assert chrome.execute_script(f"return {gd}.layout.xaxis.type") == "log"


def _robustness_table(chrome):
    index = chrome.execute_script(
        "return Array.from(document.querySelectorAll('main table')).findIndex(t => "
        "Array.from(t.tHead.rows[0].cells).some(c => c.textContent === 'accuracy (%)'))")
    assert index >= 0
    return f"document.querySelectorAll('main table')[{index}]"


def _column(chrome, table: str, name: str) -> list[str]:
    return chrome.execute_script(f"""
        const t = {table};
        const k = Array.from(t.tHead.rows[0].cells).findIndex(c => c.textContent === arguments[0]);
        return Array.from(t.tBodies[0].rows).filter(r => !r.classList.contains('filtered-out'))
                    .map(r => r.cells[k].textContent);""", name)


def test_a_table_sorts_by_a_click_on_its_header(chrome, pages, console):
    _show(chrome, pages, "fgsm_gradcam")
    table = _robustness_table(chrome)
    header = chrome.execute_script(f"return Array.from({table}.tHead.rows[0].cells).find("
                                   "c => c.textContent === 'accuracy (%)')")
    unsorted = [float(v.split()[0]) for v in _column(chrome, table, "accuracy (%)")]
    header.click()
    ascending = [float(v.split()[0]) for v in _column(chrome, table, "accuracy (%)")]
    assert ascending == sorted(unsorted) and ascending != unsorted
    header.click()
    assert [float(v.split()[0]) for v in _column(chrome, table, "accuracy (%)")] \
        == sorted(unsorted, reverse=True)


def test_a_table_filters_by_model_and_by_text(chrome, pages, console):
    from selenium.webdriver.support.ui import Select

    _show(chrome, pages, "fgsm_gradcam")
    table = _robustness_table(chrome)
    total = len(_column(chrome, table, "model"))
    select = chrome.execute_script(f"return {table}.parentNode.querySelector("
                                   "'select[aria-label=\"show only one model\"]')")
    Select(select).select_by_value("cnn_bn")
    models = _column(chrome, table, "model")
    assert set(models) == {"cnn_bn"} and 0 < len(models) < total
    box = chrome.execute_script(f"return {table}.parentNode.querySelector('input')")
    box.send_keys("ifgsm")
    assert set(_column(chrome, table, "attack")) == {"ifgsm"}
    assert len(_column(chrome, table, "model")) < len(models)
    count = chrome.execute_script(f"return {table}.parentNode.querySelector('.count').textContent")
    assert count == f"{len(_column(chrome, table, 'model'))} of {total} rows"


def test_the_figure_data_is_what_the_page_holds(pages):
    """The figures are drawn from the run's own numbers (the JSON the browser reads)."""
    text = pages["fgsm_gradcam"].read_text()
    specs = [json.loads(s) for s in re.findall(
        r'<script type="application/json" class="figure-data">(.*?)</script>', text)]
    test_acc = next(s for s in specs if s["layout"]["title"]["text"].startswith("Test accuracy"))
    line = next(t for t in test_acc["data"] if t.get("name") == "cnn_bn")
    assert round(line["y"][-1], 2) == 99.04  # the final test accuracy of summary.md's table

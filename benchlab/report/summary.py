"""summary.md: the title, the verdict, then every section in turn, drawn from a run
directory's files alone (:mod:`benchlab.report.loading`).

``benchlab report DIR`` calls :func:`render` and can therefore redraw everything of
a finished or interrupted run without running any job.
"""

from __future__ import annotations

from pathlib import Path

from benchlab.files import atomic_write_text
from benchlab.report.attention import section as attention_section
from benchlab.report.epochs import section as training_section
from benchlab.report.explanation_grids import section as grids_section
from benchlab.report.failures import section as failures_section
from benchlab.report.html import render_html
from benchlab.report.loading import load_run, ordered
from benchlab.report.overfitting import section as overfitting_section
from benchlab.report.robustness import section as robustness_section
from benchlab.report.sequential import lines as sequential_lines
from benchlab.report.sweep import section as sweep_section

__all__ = ["render"]


def render(out: Path) -> Path:
    """Write summary.md, report.html and the plots of the run in ``out``; return the
    summary's path."""
    run = load_run(out)
    out, results = run.out, run.results
    md = [f"# {run.title}", ""]
    if run.description:
        md += [run.description.strip(), ""]
    claims, training_md = training_section(results, out, run.thresholds, run.settings,
                                           run.curve_images, run.epoch_images,
                                           run.procedures)
    robustness_md, robust_claims = robustness_section(results, out, run.settings,
                                                      run.procedures, run.robustness_pairs)
    overfitting_claims, overfitting_md = overfitting_section(results, out, run.procedures,
                                                             run.curve_images)
    md += _verdict([*sequential_lines(out), *claims, *overfitting_claims, *robust_claims],
                   run.alpha)
    md += failures_section(out)
    md += sweep_section(results, out, run.suite)
    md += training_md
    md += overfitting_md
    md += robustness_md
    md += attention_section(results, out, alpha=run.alpha)
    explainers = ordered(results["explainer"].dropna()) if "explainer" in results else []
    md += grids_section(out, explainers)
    if len(md) <= 3:
        md += ["_No finished jobs yet._", ""]
    path = out / "summary.md"
    text = "\n".join(md).rstrip() + "\n"
    atomic_write_text(path, text)
    render_html(run, text)
    return path


def _verdict(claims: list[str], alpha: float) -> list[str]:
    """The "Verdict" section: the claim's parts that the training sections tested."""
    if not claims:
        return []
    return ["## Verdict", "", f"Each part of the claim tested on its own (α = {alpha:g}; "
            "the methods are described in benchlab's docs/statistics.md).", "", *claims, ""]

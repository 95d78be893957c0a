"""A run's report: summary.md, its tables (CSV) and plots, drawn from the run
directory's files alone, so ``benchlab report DIR`` can redraw a finished or
interrupted run without running any job.

Who owns what:

- :mod:`.summary` -- :func:`render`: summary.md, the verdict at its top, then the
  sections in order;
- :mod:`.loading` -- reading a run directory: results, the suite's report settings
  (defaults from the suite schema), the jobs table, explanation artifacts;
- sections of summary.md: :mod:`.failures` ("Failures"), :mod:`.epochs` ("Training":
  per-epoch accuracy), :mod:`.convergence` (learning curves, steps to each threshold),
  :mod:`.welch` (per-epoch Welch tests and their verdict sentence),
  :mod:`.robustness` ("Robustness"), :mod:`.attention` ("Attention under attack",
  built from :mod:`.attention_estimates` and :mod:`.attention_sentences`),
  :mod:`.explanation_grids` ("Explanation grids");
- :mod:`.html` -- report.html: summary.md as an interactive page, with the figures of
  :mod:`.figures`, the environment, the suite and the jobs; :mod:`.page` -- any
  self-contained page (sections of Markdown, tables, figures, images);
- :mod:`.markdown` -- tables and number formats; :mod:`.plots` -- the figures of the
  sections; :mod:`.grid` -- the clean-versus-adversarial explanation grid figure (also
  used by explain jobs to pick its images).
"""

from benchlab.report.epochs import epoch_statistics
from benchlab.report.summary import render

__all__ = ["epoch_statistics", "render"]

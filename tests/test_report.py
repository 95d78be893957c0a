"""The plain-language verdict of the per-epoch Welch tests."""

from __future__ import annotations

from benchlab.report import _welch_sentence


def verdict(significant, better, epochs=(1, 2, 3, 4, 5)):
    return _welch_sentence("cnn_bn", "cnn", list(epochs), significant, better, 0.05, False)


def test_an_early_lead_without_a_final_difference_does_not_claim_equal_accuracy():
    text = verdict([1, 2], [True, True])
    assert "epoch(s) 1–2 of 1–5" in text and "ahead at 1–2" in text
    assert "Holm-corrected" in text
    assert "does not show equal accuracy" in text and "support" not in text


def test_a_significant_final_difference_rejects_same_final_accuracy():
    text = verdict([1, 5], [True, False])
    assert "behind at 5" in text and "do not support" in text


def test_no_significant_epoch():
    text = verdict([], [])
    assert "does not differ significantly" in text and "not evidence of equal accuracy" in text


def test_a_single_run_cannot_be_tested():
    text = _welch_sentence("cnn_bn", "cnn", [1, 2], [], [], 0.05, True)
    assert "at least two runs" in text


def test_step_curves_of_a_run_shorter_than_one_interval_still_plot(tmp_path):
    """500 images at batch 64 is 8 steps: with eval_every=100 only step 0 is recorded,
    and a log-scaled axis of nothing but step 0 made matplotlib refuse the whole report."""
    import pandas as pd

    from benchlab.report import _plot_step_curves

    curves = pd.DataFrame({"model": ["a", "a", "b", "b"], "run": [0, 1, 0, 1],
                           "step": [0, 0, 0, 0], "value": [0.10, 0.12, 0.10, 0.11]})
    path = _plot_step_curves(curves, ["a", "b"], (0.97,), "the first 100 test images",
                             tmp_path / "steps.png")
    assert path.stat().st_size > 0

"""The plain-language verdict of the per-epoch Welch tests."""

from __future__ import annotations

from benchlab.report import _welch_sentence


def verdict(significant, better, epochs=(1, 2, 3, 4, 5)):
    return _welch_sentence("cnn_bn", "cnn", list(epochs), significant, better, 0.05, False)


def test_early_lead_and_same_final_accuracy_support_the_claim():
    text = verdict([1, 2], [True, True])
    assert "epoch(s) 1–2 of 1–5" in text and "ahead at 1–2" in text
    assert 'support "faster convergence, same final accuracy"' in text


def test_a_significant_final_difference_rejects_same_final_accuracy():
    text = verdict([1, 5], [True, False])
    assert "behind at 5" in text and "do not support" in text


def test_no_significant_epoch():
    assert "does not differ significantly" in verdict([], [])


def test_a_single_run_cannot_be_tested():
    text = _welch_sentence("cnn_bn", "cnn", [1, 2], [], [], 0.05, True)
    assert "at least two runs" in text

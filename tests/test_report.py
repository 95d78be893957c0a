"""The plain-language verdict of the per-epoch Welch tests."""

from __future__ import annotations

from benchlab.report.welch import sentence as _welch_sentence


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


def test_one_epoch_is_named_as_the_only_one():
    behind = verdict([1], [False], epochs=(1,))
    assert behind.startswith("**Verdict:** cnn_bn is behind cnn at epoch 1, the only one "
                             "(Holm-corrected p < 0.05). ")
    assert "do not support" in behind and "1–1" not in behind
    same = verdict([], [], epochs=(1,))
    assert "at epoch 1, the only one." in same and "1–1" not in same


def test_a_single_run_cannot_be_tested():
    text = _welch_sentence("cnn_bn", "cnn", [1, 2], [], [], 0.05, True)
    assert "at least two runs" in text


def test_step_curves_of_a_run_shorter_than_one_interval_still_plot(tmp_path):
    """500 images at batch 64 is 8 steps: with eval_every=100 only step 0 is recorded,
    and a log-scaled axis of nothing but step 0 made matplotlib refuse the whole report."""
    import pandas as pd

    from benchlab.report.plots import plot_step_curves as _plot_step_curves

    curves = pd.DataFrame({"model": ["a", "a", "b", "b"], "run": [0, 1, 0, 1],
                           "step": [0, 0, 0, 0], "value": [0.10, 0.12, 0.10, 0.11]})
    path = _plot_step_curves(curves, ["a", "b"], (0.97,), "the first 100 test images",
                             tmp_path / "steps.png")
    assert path.stat().st_size > 0


def _attack_rows(accuracy_at_0_3, run=0, with_n=True):
    rows = []
    for eps, acc, success, eligible in [(0.0, 0.99, None, None),
                                        (0.3, accuracy_at_0_3, 0.5, 990)]:
        where = {"job": f"attack-cnn-r{run:02d}-fgsm", "model": "cnn", "dataset": "mnist",
                 "run": run, "seed": run + 1, "epoch": None, "step": None, "attack": "fgsm",
                 "eps": eps, "explainer": None}
        rows.append({**where, "metric": "accuracy", "value": acc})
        if with_n:
            rows.append({**where, "metric": "accuracy.n", "value": 1000.0})
        if success is not None:
            rows.append({**where, "metric": "success_rate", "value": success})
            if with_n:
                rows.append({**where, "metric": "success_rate.n", "value": float(eligible)})
    return rows


def test_robustness_shares_carry_their_n_and_a_wilson_interval(tmp_path):
    import pandas as pd
    import scipy.stats

    from benchlab.report.robustness import section as _robustness_section

    md = "\n".join(_robustness_section(pd.DataFrame(_attack_rows(0.25)), tmp_path)[0])
    wilson = scipy.stats.binomtest(250, 1000).proportion_ci(method="wilson")
    assert (f"| cnn | standard | fgsm | L∞ ball | 0.3 | 1 | 1000 | 25.00 "
            f"[{100 * wilson.low:.2f}, {100 * wilson.high:.2f}] |") in md
    success = scipy.stats.binomtest(495, 990).proportion_ci(method="wilson")
    assert f"50.00 [{100 * success.low:.2f}, {100 * success.high:.2f}]" in md
    assert "over its n images with a 95% Wilson interval" in md
    assert "One trained model of cnn: its intervals are over the test images" in md

    # several runs: the mean with a t interval over runs (cut to [0, 100] for two runs)
    three = pd.DataFrame(_attack_rows(0.25) + _attack_rows(0.35, run=1)
                         + _attack_rows(0.30, run=2))
    md = "\n".join(_robustness_section(three, tmp_path)[0])
    half = scipy.stats.t.ppf(0.975, 2) * 0.05 / 3 ** 0.5
    assert f"| 0.3 | 3 | 1000 | 30.00 [{100 * (0.3 - half):.2f}, {100 * (0.3 + half):.2f}] |" in md
    assert "One trained model" not in md
    two = pd.DataFrame(_attack_rows(0.25) + _attack_rows(0.35, run=1))
    assert "| 0.3 | 2 | 1000 | 30.00 [0.00, 93.53] |" in \
        "\n".join(_robustness_section(two, tmp_path)[0])
    # results written before the counts: the value alone
    old = pd.DataFrame(_attack_rows(0.25, with_n=False))
    assert "| 0.3 | 1 | – | 25.00 |" in "\n".join(_robustness_section(old, tmp_path)[0])

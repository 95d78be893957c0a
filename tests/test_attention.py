"""What an explain job measures, and how the report states it, on cases worked by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import scipy.stats
import torch
from torch import nn

from benchlab import attention, stats
from benchlab.metrics import Estimate, cam_similarity
from benchlab.report import attention as attention_report
from benchlab.report import attention_sentences as attention_report_sentences
from benchlab.report.markdown import table as _md_table


class Constant(nn.Module):
    """Two classes, always 75% for class 0: deletion and insertion are both 0.75."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([math.log(3.0), 0.0]).expand(len(x), 2)


def m(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(2, 2)


# Four images; image 2's clean map is empty, image 3's map at eps 0.2 is empty.
CLEAN = torch.stack([m(1, 0, 0, 0), m(0, 1, 0, 0), m(0, 0, 0, 0), m(0, 0, 1, 0)])
AT_01 = torch.stack([m(1, 0, 0, 0), m(1, 0, 0, 0), m(1, 0, 0, 0), m(0, 0, 1, 0)])
AT_02 = torch.stack([m(0, 1, 0, 0), m(0, 1, 1, 1), m(1, 0, 0, 0), m(0, 0, 0, 0)])
# the clean digit: bright at pixels 0 and 1, dark (background) at 2 and 3
IMAGES = torch.tensor([0.9, 0.9, 0.0, 0.0]).view(1, 1, 2, 2).expand(4, 1, 2, 2)


def measured() -> dict[tuple[str, float | None], float]:
    explained = attention.Explained(
        eps=[0.0, 0.1, 0.2], maps=[CLEAN, AT_01, AT_02],
        predictions=[torch.tensor([0, 0, 0, 0]), torch.tensor([1, 0, 0, 0]),
                     torch.tensor([1, 1, 0, 0])], seconds=0.0)
    rows = attention.measure(Constant(), IMAGES, [IMAGES] * 3, explained, klass=None, seed=0,
                             batch_size=2, randomised_maps=CLEAN.flip(-1), steps=4)
    out = {(r.metric, r.eps): r.value for r in rows}
    assert len(out) == len(rows)  # one row per metric and eps
    return out


def test_empty_share_counts_every_image_and_the_means_use_the_common_population() -> None:
    out = measured()
    assert out[("cam_empty_share", 0.0)] == 0.25 and out[("cam_empty_share.n", 0.0)] == 4
    assert out[("cam_empty_share", 0.1)] == 0.0
    assert out[("cam_empty_share", 0.2)] == 0.25
    # images 0 and 1 are non-empty at every eps: the common population, n = 2 throughout
    for eps in (0.0, 0.1, 0.2):
        assert out[("cam_similarity.n", eps)] == 2
    r = cam_similarity(CLEAN[:2], AT_02[:2])
    assert out[("cam_similarity", 0.2)] == pytest.approx(r.mean().item())
    # background share at 0.2: image 0 all on bright pixel 1 -> 0; image 1: 2 of 3 -> 2/3
    assert out[("cam_background_share", 0.2)] == pytest.approx(1 / 3)
    assert out[("cam_background_share[change]", 0.2)] == pytest.approx(1 / 3)  # clean: 0
    assert out[("cam_intensity", 0.2)] == pytest.approx((0.25 + 0.75) / 2)
    assert not any(math.isnan(v) for (name, _), v in out.items()
                   if name.split(".")[0] in attention.ATTENTION_METRICS)


def test_flipped_and_held_split_the_common_population() -> None:
    out = measured()
    # eps 0.1: image 0 flipped, image 1 held; eps 0.2: both flipped, none held
    assert out[("cam_similarity[flipped].n", 0.1)] == 1
    assert out[("cam_similarity[held].n", 0.1)] == 1
    assert out[("cam_similarity[flipped]", 0.1)] == pytest.approx(1.0)
    assert out[("cam_similarity[flipped].n", 0.2)] == 2
    assert out[("cam_similarity[held].n", 0.2)] == 0
    assert math.isnan(out[("cam_similarity[held]", 0.2)])  # no image: undefined, n says why
    assert out[("cam_similarity[flipped-held].n", 0.2)] == 2
    assert math.isnan(out[("cam_similarity[flipped-held]", 0.2)])


def test_faithfulness_over_all_images_and_the_sanity_check() -> None:
    out = measured()
    # each map is scored for the class it explains, the prediction on its own image:
    # p = 0.75 for class 0 and 0.25 for class 1, whatever is deleted
    for eps, expected in ((0.0, 0.75), (0.1, (0.25 + 3 * 0.75) / 4), (0.2, 0.5)):
        assert out[("deletion_auc", eps)] == pytest.approx(expected)
        assert out[("insertion_auc", eps)] == pytest.approx(expected)
        assert out[("deletion_auc.n", eps)] == 4
    # flipped maps: image 0 [1,0,0,0] vs [0,1,0,0], ranks [4,2,2,2] vs [2,4,2,2]: r = -1/3
    # image 1 likewise -1/3, image 3 [0,0,1,0] vs [0,0,0,1]: -1/3; image 2 is constant
    assert out[("sanity_rank_correlation", 0.0)] == pytest.approx(-1 / 3)
    assert out[("sanity_rank_correlation.n", 0.0)] == 3
    assert ("sanity_rank_correlation", 0.1) not in out


def test_layer_rows_name_the_used_layer_and_every_offered_one() -> None:
    maps = {"a": [CLEAN, AT_01], "b": [AT_01, AT_01]}
    rows = attention.layer_rows(["a", "b"], "b", maps.__getitem__, [0.0, 0.1])
    values = {(r.metric, r.eps): r.value for r in rows}
    assert values[("explained_layer[b]", None)] == 1.0
    assert values[("cam_empty_share[layer=a]", 0.0)] == 0.25
    assert values[("cam_empty_share[layer=a]", 0.1)] == 0.0
    assert values[("cam_empty_share[layer=b].n", 0.1)] == 4


# -- the report ------------------------------------------------------------------

def results(change: Estimate, runs: int = 1, shift: float = 0.0,
            extra: tuple[attention.Measurement, ...] = (), held_n: int = 50) -> pd.DataFrame:
    rows = []
    for run in range(runs):
        measured_rows = [*extra,
            *attention.estimate_rows("cam_empty_share", Estimate(0.4, 0.36, 0.44, 500), 0.0),
            *attention.estimate_rows("cam_empty_share", Estimate(0.1, 0.08, 0.13, 500), 0.3),
            *attention.estimate_rows("cam_similarity", Estimate(1.0, 1.0, 1.0, 250), 0.0),
            *attention.estimate_rows("cam_similarity", Estimate(0.3 + run * shift, 0.25, 0.35,
                                                                250), 0.3),
            *attention.estimate_rows("cam_background_share[change]", change, 0.3),
            *attention.estimate_rows("cam_similarity[flipped]", Estimate(0.2, 0.1, 0.3, 200), 0.3),
            *attention.estimate_rows("cam_similarity[held]", Estimate(0.6, 0.5, 0.7, held_n),
                                     0.3),
            *attention.estimate_rows("cam_similarity[flipped-held]",
                                     Estimate(-0.4, -0.55, -0.25, 250), 0.3),
            attention.Measurement("explained_layer[conv2]", 1.0, None),
        ]
        rows += [{"job": f"explain-r{run}", "model": "cnn", "dataset": "mnist", "run": run,
                  "seed": run + 1, "epoch": None, "step": None, "attack": "fgsm", "eps": r.eps,
                  "explainer": "gradcam", "metric": r.metric, "value": r.value}
                 for r in measured_rows]
    return pd.DataFrame(rows)


def test_sentences_state_a_change_only_when_its_interval_excludes_zero(tmp_path) -> None:
    md = "\n".join(attention_report.section(
        results(Estimate(0.05, 0.02, 0.08, 250)), tmp_path, _md_table))
    assert "gradcam at `conv2`:** empty maps 40.0% [36.0, 44.0] of 500 clean images" in md
    assert "On the 250 images with a non-empty map at every ε" in md
    # a family of two changes: the background share's and flipped - held
    p_background = 2 * scipy.stats.norm.sf(0.05 / (0.06 / (2 * 1.959964)))
    p_flip = 2 * scipy.stats.norm.sf(0.4 / (0.3 / (2 * 1.959964)))
    assert p_flip < p_background
    holm_background = max(2 * p_flip, p_background)
    assert f"background share rises (+0.050 [0.020, 0.080], n = 250, Holm p = " \
           f"{holm_background:.2g})" in md
    assert "over the 2 changes these sentences test" in md
    assert "attention moves more where the attack succeeds" in md
    assert "(n = 200) against 0.600 [0.500, 0.700] (n = 50)" in md
    assert (tmp_path / "attention.png").stat().st_size > 10_000
    assert (tmp_path / "attention_outcome.png").exists()
    assert not (tmp_path / "attention_sanity.png").exists()  # no sanity rows: no plot

    md = "\n".join(attention_report.section(
        results(Estimate(0.05, -0.01, 0.11, 250)), tmp_path, _md_table))
    assert "background share shows no resolved change (+0.050 [-0.010, 0.110], n = 250, " \
           "Holm p = 0.1" in md
    assert "rises" not in md


def test_a_change_whose_interval_excludes_zero_is_not_stated_if_holm_rejects_it(
        tmp_path) -> None:
    # each change alone: p = 0.040 (interval excludes 0); three tested together, Holm
    # multiplies the second smallest by 2: 0.080
    half = 1.959964 * 0.03 / 2.053749  # z = 2.0537 <=> p = 0.040
    change = Estimate(0.03, 0.03 - half, 0.03 + half, 250)
    intensity = attention.estimate_rows("cam_intensity[change]", change, 0.3)
    md = "\n".join(attention_report.section(results(change, extra=tuple(intensity)),
                                             tmp_path, _md_table))
    assert change.low > 0
    assert "over the 3 changes these sentences test" in md
    assert "background share shows no resolved change (+0.030 [0.001, 0.059], n = 250, " \
           "Holm p = 0.08)" in md
    assert "mean intensity shows no resolved change" in md
    assert "rises" not in md and "falls" not in md
    assert "attention moves more where the attack succeeds" in md  # p ~ 1e-7: survives


def test_flipped_and_held_are_compared_only_with_enough_of_each(tmp_path) -> None:
    md = "\n".join(attention_report.section(
        results(Estimate(0.05, 0.02, 0.08, 250), held_n=attention_report.MIN_GROUP - 1),
        tmp_path, _md_table))
    assert "Flipped against held" not in md and "attention moves" not in md
    assert ("At ε = 0.3 the prediction flipped for 200 and held for 9 of them, and no ε has "
            "at least 10 of each: too few to compare") in md
    assert "over the 1 changes these sentences test" in md  # the split left the family

    # at a smaller eps both groups are large enough: the comparison is made there
    earlier = (*attention.estimate_rows("cam_similarity[flipped]", Estimate(0.3, 0.2, 0.4, 20),
                                        0.1),
               *attention.estimate_rows("cam_similarity[held]", Estimate(0.7, 0.6, 0.8, 230),
                                        0.1),
               *attention.estimate_rows("cam_similarity[flipped-held]",
                                        Estimate(-0.4, -0.55, -0.25, 250), 0.1))
    md = "\n".join(attention_report.section(
        results(Estimate(0.05, 0.02, 0.08, 250), held_n=3, extra=earlier), tmp_path, _md_table))
    assert ("Flipped against held predictions at ε = 0.1 (the largest ε with at least 10 of "
            "each): similarity 0.300 [0.200, 0.400] (n = 20) against 0.700 [0.600, 0.800] "
            "(n = 230)") in md
    assert "attention moves more where the attack succeeds" in md


def test_several_runs_combine_with_a_t_interval_over_runs(tmp_path) -> None:
    table = attention_report.estimates(results(Estimate(0.05, 0.02, 0.08, 250), runs=3,
                                               shift=0.1))
    sim = table[(table["base"] == "cam_similarity") & (table["qualifier"] == "")
                & (table["eps"] == 0.3)].iloc[0]
    # runs give 0.3, 0.4, 0.5: mean 0.4, sd 0.1, t(0.975, 2) = 4.303
    assert sim["value"] == pytest.approx(0.4)
    assert sim["high"] - sim["value"] == pytest.approx(4.3027 * 0.1 / math.sqrt(3), rel=1e-4)
    assert sim["n"] == 750 and sim["runs"] == 3
    md = "\n".join(attention_report.section(
        results(Estimate(0.05, 0.02, 0.08, 250), runs=3, shift=0.1), tmp_path, _md_table))
    assert "means over 3 runs with 95% t intervals over runs" in md
    assert "one trained model" not in md


def test_several_runs_read_their_p_values_off_the_t_distribution(tmp_path) -> None:
    # similarity at eps 0.3 over 3 runs: 0.3, 0.4, 0.5; a t test with 2 df, not a z test
    table = attention_report.estimates(results(Estimate(0.05, 0.02, 0.08, 250), runs=3,
                                               shift=0.1))
    sim = table[(table["base"] == "cam_similarity") & (table["qualifier"] == "")
                & (table["eps"] == 0.3)].iloc[0]
    assert sim["df"] == 2
    p = stats.p_from_interval(sim["value"], sim["low"], sim["high"], df=sim["df"])
    assert p == pytest.approx(scipy.stats.ttest_1samp([0.3, 0.4, 0.5], 0.0).pvalue, rel=1e-9)
    family = attention_report_sentences.Family([sim], alpha=0.05)
    assert family.p(sim) == pytest.approx(p)


def test_a_share_over_runs_stays_within_zero_and_one() -> None:
    rows = []
    for run, share in enumerate([0.0, 0.0, 0.0, 0.0, 0.02]):
        for r in attention.estimate_rows("cam_empty_share", Estimate(share, 0.0, 0.05, 500),
                                         0.3):
            rows.append({"model": "m", "attack": "fgsm", "explainer": "gradcam", "run": run,
                         "eps": r.eps, "metric": r.metric, "value": r.value})
    share = attention_report.estimates(pd.DataFrame(rows)).iloc[0]
    assert share["value"] == pytest.approx(0.004)
    assert share["low"] == 0.0 and 0.004 < share["high"] < 1.0


def test_one_run_says_its_intervals_rest_on_one_trained_model(tmp_path) -> None:
    md = "\n".join(attention_report.section(
        results(Estimate(0.05, 0.02, 0.08, 250), runs=1), tmp_path, _md_table))
    assert "95% bootstrap intervals over images; this rests on one trained model" in md
    assert "--set train.runs=N" in md


def test_the_randomisation_check_is_tabled_and_plotted(tmp_path) -> None:
    sanity = tuple(attention.estimate_rows("sanity_rank_correlation",
                                           Estimate(0.25, 0.2, 0.3, 480), 0.0))
    md = "\n".join(attention_report.section(
        results(Estimate(0.05, 0.02, 0.08, 250), extra=sanity), tmp_path, _md_table))
    assert "![model-randomisation check](attention_sanity.png)" in md
    assert "| cnn | gradcam | 480 | 0.250 [0.200, 0.300] |" in md
    assert (tmp_path / "attention_sanity.png").stat().st_size > 5_000

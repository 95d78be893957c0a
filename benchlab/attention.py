"""What an explain job measures: attention under attack, stated with its population.

:func:`measure` explains the clean images and the adversarial images at every
epsilon of one model and attack, and returns one :class:`Measurement` per number.
Every mean comes with the number of images behind it and a 95% confidence
interval over images (``<metric>.n``, ``<metric>.ci_low``, ``<metric>.ci_high``).

Metric names (``eps`` 0 is the clean images):

``cam_empty_share``
    share of all explained images whose map is empty (all zero), Wilson interval.
``cam_similarity``, ``cam_background_share``, ``cam_intensity``
    on the *common population*: the images whose clean map and whose map at every
    epsilon of the attack are non-empty (:func:`benchlab.metrics.common_population`).
    The same images at every epsilon, so a trend is a change of the maps.
``<metric>[change]``
    mean per-image change from the clean map (paired), background share and
    intensity, common population, eps > 0.
``<metric>[flipped]``, ``<metric>[held]``, ``<metric>[flipped-held]``
    the common population split by whether the attack changed the prediction
    (adversarial prediction differs from the clean one), and the difference of the
    two means (groups resampled separately), eps > 0.
``deletion_auc``, ``insertion_auc``
    faithfulness of the maps to the class they explain (the explainer's ``klass``,
    else the model's prediction on that image), over all explained images; an
    empty map ranks pixels at random (:func:`benchlab.metrics.deletion_insertion`).
``sanity_rank_correlation``
    model-randomisation check (Adebayo et al., 2018), clean images: Spearman
    correlation between the maps of the trained model and of the same architecture
    with freshly drawn weights (each explaining its own prediction), over the images
    where both maps are non-constant. Low is good: the maps depend on what was learnt.
``cam_empty_share[layer=NAME]``
    for explainers that offer layers: the empty share at every layer they can use;
    ``explained_layer[NAME]`` (value 1) names the layer the other rows come from.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from benchlab import metrics
from benchlab.metrics import Estimate

# Steps of the deletion/insertion curves: on 28x28 images 49 pixels per step, which
# resolves an MNIST digit (about 150 bright pixels) in three to four steps.
FAITHFULNESS_STEPS = 16
ATTENTION_METRICS = ("cam_similarity", "cam_background_share", "cam_intensity")

Explain = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Measurement:
    metric: str
    value: float
    eps: float | None


@dataclass
class Explained:
    """The maps an explain job made, with what the grid figure needs."""

    eps: list[float]
    maps: list[torch.Tensor]  # one (N, H, W) batch per eps, clean first
    predictions: list[torch.Tensor]
    seconds: float  # time spent in the explainer on the clean and adversarial batches


def estimate_rows(metric: str, estimate: Estimate, eps: float | None) -> list[Measurement]:
    """The four rows of one estimate: value, n, interval."""
    return [Measurement(metric, estimate.value, eps),
            Measurement(f"{metric}.n", float(estimate.n), eps),
            Measurement(f"{metric}.ci_low", estimate.low, eps),
            Measurement(f"{metric}.ci_high", estimate.high, eps)]


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(chunk).argmax(dim=1) for chunk in images.split(batch_size)])


def explain_all(model: torch.nn.Module, explain: Explain, batches: Sequence[torch.Tensor],
                eps: Sequence[float], batch_size: int,
                check: Callable[[torch.Tensor, torch.Tensor], None] = lambda x, m: None
                ) -> Explained:
    """Maps and predictions of the clean batch and of each adversarial batch."""
    maps, seconds = [], 0.0
    for batch in batches:
        started = time.perf_counter()
        cam = explain(model, batch)
        seconds += time.perf_counter() - started
        check(batch, cam)
        maps.append(cam)
    return Explained(list(eps), maps, [predict(model, b, batch_size) for b in batches], seconds)


def measure(model: torch.nn.Module, images: torch.Tensor, batches: Sequence[torch.Tensor],
            explained: Explained, *, klass: int | None, seed: int,
            batch_size: int, randomised_maps: torch.Tensor | None = None,
            steps: int = FAITHFULNESS_STEPS) -> list[Measurement]:
    """All attention, faithfulness and sanity measurements of one explain job.

    ``images`` are the clean images (``batches[0]``), ``batches`` the clean and the
    adversarial batches in the order of ``explained.eps``. ``randomised_maps`` are
    the explainer's maps of the clean images on a randomised copy of the model
    (:func:`randomised_maps_of`); None skips the sanity check.
    """
    rows: list[Measurement] = []
    clean_map, clean_pred = explained.maps[0], explained.predictions[0]
    adversarial = torch.stack(explained.maps[1:]) if len(explained.maps) > 1 \
        else clean_map.new_zeros((0, *clean_map.shape))
    common = metrics.common_population(clean_map, adversarial)
    per_image = [{
        "cam_similarity": metrics.cam_similarity(clean_map, cam),
        "cam_background_share": metrics.background_share(cam, images),
        "cam_intensity": metrics.cam_intensity(cam.float()),
    } for cam in explained.maps]
    generator = torch.Generator().manual_seed(seed)
    for i, (e, cam, pred) in enumerate(zip(explained.eps, explained.maps,
                                           explained.predictions)):
        rows += estimate_rows("cam_empty_share", metrics.share_ci(metrics.empty_maps(cam)), e)
        for name in ATTENTION_METRICS:
            rows += estimate_rows(name, metrics.mean_ci(per_image[i][name][common], seed=seed), e)
        if i > 0:
            flipped = pred != clean_pred
            for name in ("cam_background_share", "cam_intensity"):
                change = per_image[i][name][common] - per_image[0][name][common]
                rows += estimate_rows(f"{name}[change]", metrics.mean_ci(change, seed=seed), e)
            for name in ATTENTION_METRICS:
                values = per_image[i][name]
                moved, kept = values[common & flipped], values[common & ~flipped]
                rows += estimate_rows(f"{name}[flipped]", metrics.mean_ci(moved, seed=seed), e)
                rows += estimate_rows(f"{name}[held]", metrics.mean_ci(kept, seed=seed), e)
                rows += estimate_rows(f"{name}[flipped-held]",
                                      metrics.difference_ci(moved, kept, seed=seed), e)
        classes = pred if klass is None else torch.full_like(pred, klass)
        deletion, insertion = metrics.deletion_insertion(
            model, batches[i], cam, classes, steps=steps, batch_size=batch_size,
            generator=generator)
        rows += estimate_rows("deletion_auc", metrics.mean_ci(deletion, seed=seed), e)
        rows += estimate_rows("insertion_auc", metrics.mean_ci(insertion, seed=seed), e)
    if randomised_maps is not None:
        r = metrics.rank_correlation(clean_map, randomised_maps)
        rows += estimate_rows("sanity_rank_correlation",
                              metrics.mean_ci(r[~r.isnan()], seed=seed), 0.0)
    return rows


def randomised_maps_of(model: torch.nn.Module, explain: Explain, images: torch.Tensor,
                       seed: int) -> torch.Tensor:
    """The explainer's maps of ``images`` on ``model`` with freshly drawn weights."""
    return explain(randomised_copy(model, seed).eval(), images)


def layer_rows(layers: Sequence[str], used: str,
               maps_at: Callable[[str], Sequence[torch.Tensor]],
               eps: Sequence[float]) -> list[Measurement]:
    """Empty-map share at every layer an explainer offers (``maps_at(layer)``: one
    batch of maps per eps), and which layer the job's other rows come from."""
    rows = [Measurement(f"explained_layer[{used}]", 1.0, None)]
    for layer in layers:
        for e, cam in zip(eps, maps_at(layer)):
            rows += estimate_rows(f"cam_empty_share[layer={layer}]",
                                  metrics.share_ci(metrics.empty_maps(cam)), e)
    return rows


def randomised_copy(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of ``model`` whose weights are drawn afresh, as at construction.

    The model-randomisation sanity check (Adebayo et al., 2018) explains the trained
    model and this copy: a map that survives the loss of everything learnt does not
    explain the model. Every module's own ``reset_parameters`` draws its weights
    (BatchNorm also forgets its running statistics) from a generator seeded with
    ``seed``; the caller's global RNG state is left as it was. A parameter held by a
    module without ``reset_parameters`` would keep its trained value: that is an error.
    """
    clone = copy.deepcopy(model)
    kept = [f"{name}.{p_name}" if name else p_name
            for name, module in clone.named_modules()
            if not callable(getattr(module, "reset_parameters", None))
            for p_name, _ in module.named_parameters(recurse=False)]
    if kept:
        raise ValueError(f"cannot randomise {', '.join(kept)}: its module has no "
                         "reset_parameters to draw it afresh")
    devices = [p.device.index or 0 for p in clone.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return clone

"""Numerics of a robustness report: pure functions on tensors.

Robustness per epsilon (:func:`accuracy`, :func:`attack_success_rate`,
:func:`mean_perturbation_norms`); how the attention of a model moves between clean
and adversarial maps (:func:`cam_similarity`, :func:`background_share`,
:func:`cam_intensity`), which images those are defined on (:func:`empty_maps`,
:func:`common_population`); whether a map is faithful to the model
(:func:`deletion_insertion`) and depends on its weights at all
(:func:`rank_correlation`, for the model-randomisation check); and the
uncertainty of a mean over images (:func:`mean_ci`, :func:`difference_ci`,
:func:`share_ci`).

Predictions may be given as logits (a floating tensor, classes on the last
dimension) or as class indices (an integer tensor). Leading dimensions before the
image dimension are kept, so the adversarial batches of several epsilons,
shape (E, N, ...), are scored in one call.

Undefined values are NaN rather than an arbitrary number: the success rate when
no image was classified correctly, the correlation of a constant map, the
background share of a map without any mass. A mean over images is never taken
over whatever happens to be defined: the caller picks a population
(:func:`common_population`) and the estimators here refuse NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as _stats

__all__ = [
    "Estimate",
    "accuracy",
    "attack_success_rate",
    "attackable",
    "background_share",
    "cam_intensity",
    "cam_similarity",
    "common_population",
    "deletion_insertion",
    "difference_ci",
    "empty_maps",
    "mean_ci",
    "mean_perturbation_norms",
    "predictions",
    "rank_correlation",
    "share_ci",
]


def predictions(logits_or_preds: torch.Tensor) -> torch.Tensor:
    """Class indices: the argmax over the last dimension of logits, or the indices as given."""
    if logits_or_preds.is_floating_point():
        return logits_or_preds.argmax(dim=-1)
    return logits_or_preds


def accuracy(logits_or_preds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of correct predictions over the last image dimension: (..., N) -> (...)."""
    correct = predictions(logits_or_preds) == labels
    return correct.float().mean(dim=-1)


def attackable(clean_pred: torch.Tensor, labels: torch.Tensor,
               targets: torch.Tensor | None = None) -> torch.Tensor:
    """The images an attack's success rate is taken over (bool, (N,)): correctly
    classified and, for a targeted attack, not already labelled as their target."""
    eligible = predictions(clean_pred) == labels
    return eligible if targets is None else eligible & (labels != targets)


def attack_success_rate(clean_pred: torch.Tensor, adv_pred: torch.Tensor, labels: torch.Tensor,
                        targets: torch.Tensor | None = None) -> torch.Tensor:
    """Share of the initially correct images that the attack gets past.

    Untargeted (``targets`` is None): the adversarial prediction is wrong.
    Targeted: the adversarial prediction is the target; images whose label already
    is their target are left out, since there is nothing to attack.

    Images the model misclassifies before the attack do not count: they say nothing
    about the attack. ``adv_pred`` may carry leading dimensions (E, N, ...); the
    result has shape (E,). NaN when no image counts.
    """
    adv = predictions(adv_pred)
    eligible = attackable(clean_pred, labels, targets)
    success = adv != labels if targets is None else adv == targets
    hits = (success & eligible).float().sum(dim=-1)
    return hits / eligible.float().sum(dim=-1)


def mean_perturbation_norms(images: torch.Tensor,
                       adversarial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean L-infinity and mean L2 norm of ``adversarial - images``.

    The norms are taken per image over its last three dimensions (C, H, W) and then
    averaged over the images; ``adversarial`` may have leading dimensions (E, N, C, H, W),
    which the result keeps.
    """
    delta = (adversarial - images).flatten(start_dim=-3)
    linf = delta.abs().amax(dim=-1)
    l2 = delta.square().sum(dim=-1).sqrt()
    return linf.mean(dim=-1), l2.mean(dim=-1)


def cam_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per image of two map batches (N, H, W) -> (N,).

    1 means the attention kept its shape (up to scale), 0 no linear relation, -1 an
    inverted map. The correlation of a constant map is undefined: NaN, so that a mean
    over images skips it instead of counting it as "no relation".
    """
    a64 = a.flatten(start_dim=-2).double()
    b64 = b.flatten(start_dim=-2).double()
    constant = _is_constant(a64) | _is_constant(b64)
    da = a64 - a64.mean(dim=-1, keepdim=True)
    db = b64 - b64.mean(dim=-1, keepdim=True)
    denominator = (da.square().sum(dim=-1) * db.square().sum(dim=-1)).sqrt()
    r = (da * db).sum(dim=-1) / torch.where(constant, torch.ones_like(denominator), denominator)
    r = r.clamp(-1.0, 1.0).masked_fill(constant, float("nan"))
    dtype = torch.promote_types(a.dtype, b.dtype)
    return r.to(dtype if dtype.is_floating_point else torch.get_default_dtype())


def _is_constant(flat: torch.Tensor) -> torch.Tensor:
    # Exact comparison: the centred sum of squares of a constant map need not round to 0.
    return flat.amax(dim=-1) == flat.amin(dim=-1)


def background_share(cam: torch.Tensor, images: torch.Tensor,
                     threshold: float = 0.1) -> torch.Tensor:
    """Share of each map's mass (N, H, W) that lies on background pixels -> (N,).

    A pixel is background when the clean image is dark there: every channel below
    ``threshold`` on the [0, 1] scale (MNIST digits are bright strokes on black).
    The stroke share is one minus this. Always pass the clean images, also for maps of
    adversarial images, so both are measured against the same digit. NaN for an
    all-zero map.
    """
    if images.dim() == cam.dim() + 1:  # (N, C, H, W): dark in every channel
        images = images.amax(dim=-3)
    background = (images < threshold).to(cam.dtype)
    mass = cam.flatten(start_dim=-2).sum(dim=-1)
    on_background = (cam * background).flatten(start_dim=-2).sum(dim=-1)
    return on_background / mass


def cam_intensity(cam: torch.Tensor) -> torch.Tensor:
    """Mean value of each map (N, H, W) -> (N,).

    For maps scaled to [0, 1] per image this is how widely the attention is
    spread; an all-zero map (no positive evidence for the class) scores 0.
    """
    return cam.flatten(start_dim=-2).mean(dim=-1)


# -- populations ---------------------------------------------------------------

def empty_maps(cam: torch.Tensor) -> torch.Tensor:
    """Which maps (..., H, W) are empty: no pixel above zero -> bool (...).

    Grad-CAM gives an all-zero map when the weighted sum of the feature maps has no
    positive value anywhere (no evidence for the class at that layer) or is
    constant; similarity and background share are undefined for such a map.
    """
    return cam.flatten(start_dim=-2).amax(dim=-1) <= 0


def common_population(clean: torch.Tensor, adversarial: torch.Tensor) -> torch.Tensor:
    """The images every attention metric of one model and attack is defined on -> (N,) bool.

    ``clean`` (N, H, W) and ``adversarial`` (E, N, H, W), one batch per epsilon. An
    image belongs when its clean map and its adversarial map at *every* epsilon are
    non-empty (more precisely non-constant: a constant map has no shape to correlate,
    and an empty map is constant), so that the means at all epsilons are taken over
    the same images and a change with epsilon is a change of the maps, not of who is
    averaged.
    """
    keep = ~_is_constant(clean.flatten(start_dim=-2))
    if adversarial.numel():
        keep = keep & ~_is_constant(adversarial.flatten(start_dim=-2)).any(dim=0)
    return keep


# -- faithfulness and sanity ---------------------------------------------------

@torch.no_grad()
def deletion_insertion(model: torch.nn.Module, images: torch.Tensor, maps: torch.Tensor,
                       classes: torch.Tensor, *, steps: int = 16, baseline: float = 0.0,
                       batch_size: int = 256,
                       generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion and insertion scores of maps (Petsiuk et al., 2018) -> two (N,) tensors.

    Pixels are ranked by map value, most attributed first. Deletion replaces the
    top ``k / steps`` share of them by ``baseline`` (0: MNIST's black background)
    for k = 0..steps; insertion starts from an all-``baseline`` image and reveals
    the same pixels. Each curve is the softmax probability of ``classes`` (the class
    each map explains); the score is its area over the share of pixels in [0, 1]
    (trapezoidal). A faithful map gives a low deletion and a high insertion score.

    Equal map values are ranked in a random order drawn from ``generator``, so an
    all-zero map ranks its pixels at random: it scores like a random map, which is
    all it says. The model runs ``steps + 1`` times per curve on every image, in
    batches of ``batch_size``.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    n, pixels = maps.shape[0], maps.shape[-2] * maps.shape[-1]
    ranks = _pixel_ranks(maps.flatten(start_dim=1), generator).view(n, 1, *maps.shape[-2:])
    counts = [round(k * pixels / steps) for k in range(steps + 1)]
    blank = torch.full_like(images, baseline)
    curves = []
    for keep_original_top in (False, True):  # deletion, insertion
        scores = []
        for count in counts:
            top = ranks < count
            if keep_original_top:
                batch = torch.where(top, images, blank)
            else:
                batch = torch.where(top, blank, images)
            scores.append(_class_probability(model, batch, classes, batch_size))
        curves.append(torch.stack(scores, dim=1))
    return tuple(torch.trapezoid(c, dx=1.0 / steps, dim=1) for c in curves)  # type: ignore


def _pixel_ranks(values: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Rank (0 = largest) of each pixel of (N, P) values, ties in a random order."""
    shuffle = torch.rand(values.shape, generator=generator, device="cpu").argsort(dim=1)
    shuffle = shuffle.to(values.device)
    shuffled = values.gather(1, shuffle)
    order = shuffle.gather(1, (-shuffled).argsort(dim=1, stable=True))
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(values.shape[1], device=values.device)
                   .expand_as(order).contiguous())
    return ranks


def _class_probability(model: torch.nn.Module, images: torch.Tensor, classes: torch.Tensor,
                       batch_size: int) -> torch.Tensor:
    out = []
    for chunk, chunk_classes in zip(images.split(batch_size), classes.split(batch_size)):
        probs = model(chunk).float().softmax(dim=1)
        out.append(probs.gather(1, chunk_classes.view(-1, 1)).squeeze(1))
    return torch.cat(out)


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per image of two map batches (N, H, W) -> (N,).

    The similarity measure of the model-randomisation check (Adebayo et al., 2018):
    maps of a trained model against maps of the same architecture with random
    weights. Ties share their average rank (``scipy.stats.rankdata``); a constant
    map has no ranking: NaN.
    """
    ranks = [torch.from_numpy(_stats.rankdata(m.flatten(start_dim=1).double().cpu().numpy(),
                                              axis=1)).view(m.shape) for m in (a, b)]
    # The ranks of a constant map are constant too, which cam_similarity turns into NaN.
    return cam_similarity(ranks[0], ranks[1]).float()


# -- uncertainty ---------------------------------------------------------------

@dataclass(frozen=True)
class Estimate:
    """A mean (or share) over ``n`` images and its confidence interval [low, high]."""

    value: float
    low: float
    high: float
    n: int


CONFIDENCE = 0.95
RESAMPLES = 2000


def _values(x: torch.Tensor | np.ndarray) -> np.ndarray:
    values = np.asarray(x.detach().cpu().double() if isinstance(x, torch.Tensor) else x,
                        dtype=float).ravel()
    if np.isnan(values).any():
        raise ValueError(f"{int(np.isnan(values).sum())} undefined (NaN) value(s): choose the "
                         "population the mean is taken over before estimating it")
    return values


def mean_ci(values: torch.Tensor | np.ndarray, *, seed: int = 0,
            confidence: float = CONFIDENCE, resamples: int = RESAMPLES) -> Estimate:
    """Mean over images with a percentile-bootstrap confidence interval.

    ``scipy.stats.bootstrap`` resamples the images; NaN values are an error (pick
    the population first). With fewer than two images the interval is NaN, with
    none the mean is too.
    """
    x = _values(values)
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    if x.size == 1 or np.all(x == x[0]):
        low = high = float(x[0]) if x.size > 1 else float("nan")
        return Estimate(float(x.mean()), low, high, int(x.size))
    result = _stats.bootstrap((x,), np.mean, confidence_level=confidence,
                              n_resamples=resamples, method="percentile",
                              random_state=np.random.default_rng(seed), vectorized=True)
    ci = result.confidence_interval
    return Estimate(float(x.mean()), float(ci.low), float(ci.high), int(x.size))


def difference_ci(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, *,
                  seed: int = 0, confidence: float = CONFIDENCE,
                  resamples: int = RESAMPLES) -> Estimate:
    """mean(a) - mean(b) of two independent groups of images, bootstrap CI (n = both).

    Each group is resampled on its own (``scipy.stats.bootstrap``, unpaired). NaN
    interval when either group has fewer than two images.
    """
    x, y = _values(a), _values(b)
    n = int(x.size + y.size)
    if x.size == 0 or y.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), n)
    diff = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return Estimate(diff, float("nan"), float("nan"), n)

    def statistic(p: np.ndarray, q: np.ndarray, axis: int = -1) -> np.ndarray:
        return p.mean(axis=axis) - q.mean(axis=axis)

    result = _stats.bootstrap((x, y), statistic, confidence_level=confidence,
                              n_resamples=resamples, method="percentile",
                              random_state=np.random.default_rng(seed), vectorized=True)
    ci = result.confidence_interval
    return Estimate(diff, float(ci.low), float(ci.high), n)


def share_ci(hits: torch.Tensor | np.ndarray, *, confidence: float = CONFIDENCE) -> Estimate:
    """Share of True among boolean per-image flags, with a Wilson score interval.

    Wilson rather than a bootstrap: a share of 0 over 500 images still gets an upper
    bound above 0 (``scipy.stats.binomtest(...).proportion_ci``).
    """
    flags = np.asarray(hits.cpu() if isinstance(hits, torch.Tensor) else hits, dtype=bool).ravel()
    n, k = int(flags.size), int(flags.sum())
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    ci = _stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Estimate(k / n, float(ci.low), float(ci.high), n)

"""Numerics of a robustness report: pure functions on tensors.

Robustness per epsilon (:func:`accuracy`, :func:`attack_success_rate`,
:func:`perturbation_norms`) and how the attention of a model moves between clean
and adversarial Grad-CAM maps (:func:`cam_similarity`, :func:`background_share`,
:func:`cam_intensity`).

Predictions may be given as logits (a floating tensor, classes on the last
dimension) or as class indices (an integer tensor). Leading dimensions before the
image dimension are kept, so the adversarial batches of several epsilons,
shape (E, N, ...), are scored in one call.

Undefined values are NaN rather than an arbitrary number, so that a mean over
images can leave them out explicitly (``torch.nanmean``): the success rate when no
image was classified correctly, the correlation of a constant map, the background
share of a map without any mass.
"""

from __future__ import annotations

import torch

__all__ = [
    "accuracy",
    "attack_success_rate",
    "background_share",
    "cam_intensity",
    "cam_similarity",
    "perturbation_norms",
    "predictions",
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
    clean = predictions(clean_pred)
    adv = predictions(adv_pred)
    eligible = clean == labels
    if targets is None:
        success = adv != labels
    else:
        eligible = eligible & (labels != targets)
        success = adv == targets
    hits = (success & eligible).float().sum(dim=-1)
    return hits / eligible.float().sum(dim=-1)


def perturbation_norms(images: torch.Tensor,
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

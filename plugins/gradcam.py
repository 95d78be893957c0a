"""Grad-CAM (Selvaraju et al., 2017) as a batched explainer.

For a feature layer with activations ``A`` (N, K, h, w) and a class ``c``::

    w_k = mean over (i, j) of d logit_c / d A_k[i, j]
    cam = ReLU(sum_k w_k A_k)

upsampled bilinearly to the input size and scaled to [0, 1] per image by its
own minimum and maximum, so its brightest pixel is 1. A constant map (no pixel
stands out; in particular no positive evidence at all) gives zeros, never NaN.

``layer`` names a module as in ``model.named_modules()``; by default it is the
last ``Conv2d`` or ``BatchNorm2d`` in that order (``bn2`` for ``cnn_bn``, ``conv2``
for ``cnn``). :func:`layer_choices` lists every layer a model offers (including
rectified maps such as ``relu2``), so a study can report how each behaves.
``klass`` is the class to explain; by default each image's predicted
class. Like Captum's ``LayerGradCam``, one forward and one backward pass serve a
whole batch (the gradient of the sum of the selected logits, which in eval mode
is each image's own gradient), and the forward hook lives only for the call.

The layer's output is detached inside the hook and fed on as a new leaf, so the
backward pass stops at the layer: the layers before it are never differentiated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

import benchlab
from benchlab import Params
from benchlab.guards import check_explainer_input
from benchlab.modes import frozen_eval
from benchlab.plugins import unknown_name_message

# Images per forward/backward pass: on a 2-core CPU with cnn_bn,
# benchmarks/bench_attacks.py measured batch 64 about 2x faster per image than 256.
DEFAULT_BATCH_SIZE = 64

FEATURE_LAYER_TYPES = (torch.nn.Conv2d, torch.nn.BatchNorm2d)
# Layers worth offering besides those: rectified feature maps (e.g. the CNNs' relu2).
CHOICE_LAYER_TYPES = (*FEATURE_LAYER_TYPES, torch.nn.ReLU)


class GradCAMParams(Params):
    """Parameters of ``gradcam``."""

    layer: str | None = Field(
        default=None,
        description="module name from model.named_modules(); default the last Conv2d/BatchNorm2d")
    klass: int | None = Field(
        default=None, ge=0, description="class to explain; default the model's prediction")
    batch_size: int = Field(
        default=DEFAULT_BATCH_SIZE, ge=1, description="images per forward/backward pass")


# -- layers --------------------------------------------------------------------

def feature_layers(model: torch.nn.Module) -> list[str]:
    """Names of the ``Conv2d`` and ``BatchNorm2d`` modules, in ``named_modules()`` order."""
    return [name for name, module in model.named_modules()
            if isinstance(module, FEATURE_LAYER_TYPES)]


def default_layer(model: torch.nn.Module) -> str:
    """The last ``Conv2d`` or ``BatchNorm2d`` module: the last feature map before the head."""
    names = feature_layers(model)
    if not names:
        raise ValueError("the model has no Conv2d or BatchNorm2d module; "
                         "name a layer producing (N, K, H, W) feature maps")
    return names[-1]


def resolve_layer(model: torch.nn.Module, name: str | None) -> tuple[str, torch.nn.Module]:
    """The module called ``name`` (the default layer when None)."""
    name = default_layer(model) if name is None else name
    modules = dict(model.named_modules())
    if name == "" or name not in modules:
        known = [n for n, m in modules.items() if isinstance(m, CHOICE_LAYER_TYPES)] \
            or [n for n in modules if n]
        raise ValueError(unknown_name_message("layer", name, known))
    return name, modules[name]


def layer_choices(model: torch.nn.Module, images: torch.Tensor) -> list[str]:
    """The ``Conv2d``, ``BatchNorm2d`` and ``ReLU`` modules Grad-CAM can use on ``images``.

    A candidate counts when one forward pass of ``images`` (a small batch is enough)
    calls it exactly once with a (N, K, H, W) output; e.g. a ReLU module after a
    linear layer does not. In ``named_modules()`` order.
    """
    candidates = {name: module for name, module in model.named_modules()
                  if name and isinstance(module, CHOICE_LAYER_TYPES)}
    calls: dict[str, list[int]] = {name: [] for name in candidates}

    def recorder(name: str):
        def record(module: torch.nn.Module, inputs: object, output: object) -> None:
            calls[name].append(output.dim() if isinstance(output, torch.Tensor) else -1)
        return record

    handles = [module.register_forward_hook(recorder(name))
               for name, module in candidates.items()]
    try:
        with frozen_eval(model), torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return [name for name, dims in calls.items() if dims == [4]]


def explained_layer(model: torch.nn.Module, params: GradCAMParams) -> str:
    """The layer ``params`` make Grad-CAM use on ``model`` (resolving the default)."""
    return resolve_layer(model, params.layer)[0]


# -- numerics ------------------------------------------------------------------

def gradcam_map(activations: torch.Tensor, gradients: torch.Tensor,
                size: tuple[int, int]) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) from a layer's activations and logit gradients (N, K, h, w).

    The ReLU comes before the upsampling, as in the paper: negative evidence is
    dropped at the layer's own resolution and does not blur into positive pixels.
    """
    weights = gradients.mean(dim=(-2, -1), keepdim=True)
    cam = (weights * activations).sum(dim=1, keepdim=True).relu()
    if tuple(cam.shape[-2:]) != tuple(size):
        cam = F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)
    return normalize_maps(cam.squeeze(1))


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Each map (N, H, W) scaled to [0, 1] by its own minimum and maximum.

    A constant map (no location stands out, e.g. all zero after the ReLU) gives
    zeros rather than a division by zero.
    """
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    tiny = torch.finfo(maps.dtype).tiny
    return torch.where(span > 0, (maps - low) / span.clamp_min(tiny), torch.zeros_like(maps))


# -- component -----------------------------------------------------------------

def _explain_batch(model: torch.nn.Module, layer_name: str, layer: torch.nn.Module,
                   images: torch.Tensor, klass: int | None) -> torch.Tensor:
    captured: list[torch.Tensor] = []

    def keep_activations(module: torch.nn.Module, inputs: object, output: object) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise ValueError(f"layer '{layer_name}' outputs {shape}; Grad-CAM needs a "
                             "feature map of shape (N, K, H, W)")
        if captured:
            raise ValueError(f"layer '{layer_name}' runs more than once per forward pass; "
                             "name a module that is called once")
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        # A clone, so an in-place op downstream (ReLU(inplace=True)) cannot alter the leaf.
        return leaf.clone()

    handle = layer.register_forward_hook(keep_activations)
    try:
        with torch.enable_grad():
            logits = model(images)
            if not captured:
                raise ValueError(f"layer '{layer_name}' is not used by the model's forward pass")
            if klass is None:
                classes = logits.argmax(dim=1)
            elif klass < logits.shape[1]:
                classes = torch.full_like(logits[:, 0], klass, dtype=torch.long)
            else:
                raise ValueError(f"klass {klass} is out of range for a model with "
                                 f"{logits.shape[1]} classes")
            score = logits.gather(1, classes.unsqueeze(1)).sum()
            (gradients,) = torch.autograd.grad(score, captured[0], allow_unused=True)
    finally:
        handle.remove()
    if gradients is None:
        raise ValueError(f"the model's output does not depend on layer '{layer_name}'")
    return gradcam_map(captured[0].detach(), gradients, tuple(images.shape[-2:]))


def gradcam(model: torch.nn.Module, images: torch.Tensor, params: GradCAMParams) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) in [0, 1] for ``images`` (N, C, H, W) in [0, 1]."""
    check_explainer_input(images)
    layer_name, layer = resolve_layer(model, params.layer)
    out = images.new_zeros(images.shape[0], *images.shape[-2:])
    with frozen_eval(model):
        for start in range(0, images.shape[0], params.batch_size):
            chunk = slice(start, start + params.batch_size)
            out[chunk] = _explain_batch(model, layer_name, layer, images[chunk].detach(),
                                        params.klass)
    return out


def check_params(model: torch.nn.Module, info: benchlab.DatasetInfo,
                params: GradCAMParams) -> None:
    """Refuse, at validation, a layer the model lacks or a class it cannot predict."""
    try:
        resolve_layer(model, params.layer)
    except ValueError as exc:
        raise benchlab.ParamError("layer", str(exc)) from None
    if params.klass is not None and params.klass >= info.num_classes:
        raise benchlab.ParamError("klass", f"expected a class below {info.num_classes} "
                                  f"(the dataset's classes), got {params.klass}")


@benchlab.hookimpl
def register_explainers(register):
    register("gradcam", gradcam, params=GradCAMParams, check_params=check_params,
             layer_choices=layer_choices, explained_layer=explained_layer,
             description="Grad-CAM (Selvaraju et al., 2017) on a named conv/BN/ReLU layer")

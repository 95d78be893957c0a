"""Captum (Kokhlikyan et al., 2020) attribution methods as benchlab explainers: ``captum.<Class>``.

Installed with ``pip install "benchlab[captum]"``. Attribution methods of
``captum.attr`` that explain an image classifier's prediction are registered
under the library's import name and the class name (``captum.IntegratedGradients``,
``captum.Saliency``, ``captum.LayerGradCam``, ...); :data:`LEFT_OUT` lists the
others and why.

Parameters are those of the class's constructor and of its ``attribute``
method, validated with their types and defaults, with these conventions:

- the explained class is each image's predicted class, or ``klass`` when set;
- ``baselines`` (and ``layer_baselines``) is a constant image, a number in
  [0, 1]; the library's default, None, means zeros (a black image);
- perturbation methods (FeatureAblation, ShapleyValueSampling, Lime,
  KernelShap) perturb square ``superpixel`` × ``superpixel`` patches (all
  channels together) rather than single pixels: 49 features on MNIST instead
  of 784;
- Occlusion's ``sliding_window_shapes`` defaults to (C, 4, 4) and ``strides``
  to 2;
- layer methods take ``layer`` as ``gradcam`` does (a name from
  ``model.named_modules()``; default the last Conv2d or BatchNorm2d);
- ``batch_size`` (benchlab's): images per ``attribute`` call, default 64.

Attributions become one map per image in [0, 1]:

- input attributions (N, C, H, W): ``sign="absolute"`` (the default) takes
  the absolute value, ``"positive"`` keeps the positive part; then the
  channels are summed;
- layer attributions (N, K, h, w): the channels are summed, then
  ``sign="positive"`` (the default, as Grad-CAM's ReLU) or ``"absolute"``,
  then bilinear upsampling to the input's size, as ``gradcam`` does;
- finally each map is scaled by its own minimum and maximum (a constant map
  gives zeros).

So ``captum.LayerGradCam`` with its defaults computes benchlab's ``gradcam``.

GuidedBackprop, Deconvolution, DeepLift and LRP change the backward pass of
``nn.ReLU`` modules; a model that applies ``torch.nn.functional.relu`` (as the
built-in CNNs do) gets plain gradients through those ReLUs.

The library's calls run inside :func:`benchlab.adapters.library_call`, which
restores modes, ``requires_grad``, ``.grad`` and hooks afterwards.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F

import benchlab
from benchlab.adapters import library_call, params_from_signature
from benchlab.components import Params
from benchlab.guards import check_explainer_input
from benchlab.plugins import require_library
from benchlab_plugins.gradcam import normalize_maps, resolve_layer

require_library("captum.attr", library="captum", prefix="captum.",
                install='pip install "benchlab[captum]"')
import captum  # noqa: E402 - after the check that captum is installed
import captum.attr  # noqa: E402

LIBRARY = f"captum {captum.__version__}"
PREFIX = "captum."
DEFAULT_BATCH_SIZE = 64

INPUT_METHODS = ("IntegratedGradients", "Saliency", "InputXGradient", "GuidedBackprop",
                 "Deconvolution", "DeepLift", "FeatureAblation", "Occlusion",
                 "ShapleyValueSampling", "Lime", "KernelShap", "LRP", "GuidedGradCam")
LAYER_METHODS = ("LayerGradCam", "LayerConductance", "LayerActivation",
                 "LayerGradientXActivation", "LayerIntegratedGradients", "LayerDeepLift",
                 "LayerFeatureAblation", "InternalInfluence", "LayerLRP")
_NEEDS_LAYER = set(LAYER_METHODS) | {"GuidedGradCam"}
_SUPERPIXEL = {"FeatureAblation", "ShapleyValueSampling", "Lime", "KernelShap"}

_BASELINE_DISTRIBUTION = "needs a distribution of baseline images, which a suite cannot give yet"
LEFT_OUT: dict[str, str] = {
    "captum.GradientShap": _BASELINE_DISTRIBUTION,
    "captum.DeepLiftShap": _BASELINE_DISTRIBUTION,
    "captum.LayerGradientShap": _BASELINE_DISTRIBUTION,
    "captum.LayerDeepLiftShap": _BASELINE_DISTRIBUTION,
    "captum.FeaturePermutation": "permutes features across the batch: an image's map depends "
                                 "on the other images",
    "captum.LayerFeaturePermutation": "permutes features across the batch: an image's map "
                                      "depends on the other images",
    "captum.ShapleyValues": "exact Shapley values: exponential in the number of features",
    "captum.NoiseTunnel": "wraps another method object, which a suite cannot name yet",
    "captum.LimeBase": "needs user-written sampling and similarity functions",
    "captum.DataLoaderAttribution": "attributes over a data loader, not a batch of images",
    **{f"captum.{name}": "explains one neuron, which a suite cannot select yet" for name in (
        "NeuronConductance", "NeuronFeatureAblation", "NeuronGradient",
        "NeuronIntegratedGradients", "NeuronDeepLift", "NeuronDeepLiftShap",
        "NeuronGradientShap", "NeuronDeconvolution", "NeuronGuidedBackprop")},
    **{f"captum.{name}": "attributes text generation, not image classification" for name in (
        "LLMAttribution", "LLMGradientAttribution", "RemoteLLMAttribution")},
}
# Arguments the adapter supplies, or that a suite cannot express.
_SUPPLIED = ("forward_func", "model", "layer", "device_ids", "inputs", "target",
             "additional_forward_args", "return_convergence_delta", "custom_attribution_func",
             "grad_kwargs", "show_progress", "verbose", "feature_mask", "layer_mask",
             "return_input_shape", "interpretable_model", "similarity_func", "perturb_func")


def attribution_classes() -> dict[str, type]:
    """Every concrete attribution class that ``captum.attr`` exports, by name."""
    base = captum.attr.Attribution
    abstract = {"Attribution", "GradientAttribution", "PerturbationAttribution",
                "LayerAttribution", "NeuronAttribution"}
    return {name: getattr(captum.attr, name) for name in captum.attr.__all__
            if inspect.isclass(getattr(captum.attr, name, None))
            and issubclass(getattr(captum.attr, name), base) and name not in abstract}


for _name in attribution_classes():
    if _name not in INPUT_METHODS and _name not in LAYER_METHODS:
        LEFT_OUT.setdefault(f"{PREFIX}{_name}", f"not classified for {LIBRARY} yet")


def _params_model(name: str, cls: type) -> type[Params]:
    layer_method = name in LAYER_METHODS
    attribute = inspect.signature(cls.attribute).parameters
    override: dict[str, tuple[Any, Any, str]] = {
        "klass": (int | None, None, "class to explain; default each image's prediction"),
        "batch_size": (int, DEFAULT_BATCH_SIZE, "images per attribute() call"),
        "sign": (Literal["absolute", "positive"], "positive" if layer_method else "absolute",
                 "absolute value or positive part of the attributions"),
    }
    if name in _NEEDS_LAYER:
        override["layer"] = (str | None, None, "module name from model.named_modules(); "
                             "default the last Conv2d/BatchNorm2d")
    for key in ("baselines", "layer_baselines"):
        if key in attribute:
            override[key] = (float | None, None, "constant baseline image; default 0 (black)")
    if name in _SUPERPIXEL:
        override["superpixel"] = (int, 4, "side of the square patches perturbed together")
    if name == "Occlusion":
        override["sliding_window_shapes"] = (tuple[int, ...] | None, None,
                                             "occluding patch (C, h, w); default (C, 4, 4)")
        override["strides"] = (int | None, None, "step of the patch; default 2")
    return params_from_signature(
        f"{name}Params", [cls.__init__, cls.attribute], skip=_SUPPLIED, override=override,
        doc=f"Parameters of captum.{name} (benchlab conventions in "
            "benchlab_plugins.captum_adapter).")


def _superpixels(images: torch.Tensor, side: int) -> torch.Tensor:
    """Feature mask (1, 1, H, W): one feature per side x side patch, all channels together."""
    height, width = images.shape[-2:]
    rows = torch.arange(height, device=images.device) // side
    cols = torch.arange(width, device=images.device) // side
    per_row = (width + side - 1) // side
    return (rows[:, None] * per_row + cols[None, :]).view(1, 1, height, width)


def _to_maps(attributions: Any, images: torch.Tensor, sign: str, layer_method: bool,
             name: str) -> torch.Tensor:
    if isinstance(attributions, (tuple, list)):
        attributions = attributions[0]
    if not isinstance(attributions, torch.Tensor) or attributions.dim() != 4:
        shape = tuple(attributions.shape) if isinstance(attributions, torch.Tensor) else "?"
        raise ValueError(f"captum.{name} returned attributions of shape {shape}; one map per "
                         "image needs (N, C, H, W): name a convolutional layer")
    attributions = attributions.detach().float()
    if layer_method:
        summed = attributions.sum(dim=1, keepdim=True)
        summed = summed.abs() if sign == "absolute" else summed.relu()
        if tuple(summed.shape[-2:]) != tuple(images.shape[-2:]):
            summed = F.interpolate(summed, size=tuple(images.shape[-2:]), mode="bilinear",
                                   align_corners=False)
        maps = summed.squeeze(1)
    else:
        signed = attributions.abs() if sign == "absolute" else attributions.relu()
        maps = signed.sum(dim=1)
    return normalize_maps(maps).to(images.dtype)


def _call_kwargs(name: str, cls: type, params: Params, chunk: torch.Tensor) -> dict[str, Any]:
    accepted = inspect.signature(cls.attribute).parameters
    values = params.model_dump()
    kwargs = {k: v for k, v in values.items() if k in accepted}
    if name in _SUPERPIXEL:
        kwargs["feature_mask"] = _superpixels(chunk, params.superpixel)
    if name == "Occlusion":
        kwargs["sliding_window_shapes"] = tuple(params.sliding_window_shapes or
                                                (chunk.shape[1], 4, 4))
        kwargs["strides"] = params.strides or 2
    return kwargs


def make_explainer(name: str, cls: type) -> Callable[..., torch.Tensor]:
    layer_method = name in LAYER_METHODS
    init_keys = set(inspect.signature(cls.__init__).parameters)
    takes_target = "target" in inspect.signature(cls.attribute).parameters

    def explain(model: torch.nn.Module, images: torch.Tensor, params: Params) -> torch.Tensor:
        """Maps (N, H, W) in [0, 1] for ``images`` (N, C, H, W) in [0, 1]."""
        check_explainer_input(images)
        out = images.new_zeros(images.shape[0], *images.shape[-2:])
        values = params.model_dump()
        with library_call(model, images.device) as frozen:
            args: list[Any] = [frozen]
            if name in _NEEDS_LAYER:
                args.append(resolve_layer(frozen, params.layer)[1])
            init = {k: v for k, v in values.items() if k in init_keys and k not in _SUPPLIED}
            method = cls(*args, **init)
            for start in range(0, images.shape[0], params.batch_size):
                chunk = images[start:start + params.batch_size].detach().clone()
                kwargs = _call_kwargs(name, cls, params, chunk)
                if takes_target:
                    if params.klass is None:
                        with torch.no_grad():
                            kwargs["target"] = frozen(chunk).argmax(dim=1)
                    else:
                        kwargs["target"] = params.klass
                with torch.enable_grad(), warnings.catch_warnings():
                    # Lime's advice to explain one image at a time; benchlab batches.
                    warnings.filterwarnings("ignore", module="captum")
                    attributions = method.attribute(chunk.requires_grad_(True), **kwargs)
                out[start:start + chunk.shape[0]] = _to_maps(attributions, chunk, params.sign,
                                                             layer_method, name)
        return out

    explain.__name__ = explain.__qualname__ = f"captum_{name}"
    return explain


def _description(cls: type) -> str:
    text = (inspect.getdoc(cls) or "").strip()
    first = text.split(". ")[0].splitlines()[0] if text else cls.__name__
    return first.strip()


@benchlab.hookimpl
def register_explainers(register):
    classes = attribution_classes()
    for name in (*INPUT_METHODS, *LAYER_METHODS):
        if name in classes:
            cls = classes[name]
            register(f"{PREFIX}{name}", make_explainer(name, cls),
                     params=_params_model(name, cls), library=LIBRARY,
                     description=_description(cls))

"""pytorch-grad-cam (Gildenblat et al.) class activation maps as benchlab explainers:
``pytorch_grad_cam.<Class>``.

Installed with ``pip install "benchlab[grad-cam]"`` (the distribution is
``grad-cam``; its import name, and so the prefix, is ``pytorch_grad_cam``).
Every CAM method of the library that explains an image classifier is registered
(``pytorch_grad_cam.GradCAMPlusPlus``, ``pytorch_grad_cam.ScoreCAM``,
``pytorch_grad_cam.HiResCAM``, ...); :data:`LEFT_OUT` lists the others and why.

Parameters are those of the class's constructor, plus the call's
``aug_smooth`` and ``eigen_smooth``, validated with their types and defaults,
and benchlab's:

- ``layer``: the target layer, as for ``gradcam`` (a name from
  ``model.named_modules()``; default the last Conv2d or BatchNorm2d);
- ``klass``: the class to explain; default each image's prediction;
- ``batch_size``: images per call of the library, default 64.

The library computes its maps itself: ReLU, per-image min-max scaling, and
OpenCV's bilinear resize to the input's size. benchlab then scales each map
once more by its own minimum and maximum, as for every explainer (the library
divides by ``max + 1e-7``, so a map's brightest pixel is just below 1).

The library's calls run inside :func:`benchlab.adapters.library_call`: the
library calls ``model.zero_grad()``, which would drop the ``.grad`` of the
model's parameters, and puts the model in eval mode for good; both are undone.
Its progress bars and printed warnings are silenced. The input gets ``requires_grad`` so that the
library's backward pass works on a model whose parameters are frozen.
"""

from __future__ import annotations

import contextlib
import inspect
import io
from collections.abc import Callable
from typing import Any

import torch

import benchlab
from benchlab.adapters import library_call, params_from_signature
from benchlab.components import Params
from benchlab.guards import check_explainer_input
from benchlab.plugins import require_library
from benchlab_plugins.gradcam import normalize_maps, resolve_layer

pytorch_grad_cam = require_library("pytorch_grad_cam", library="pytorch-grad-cam",
                                   prefix="pytorch_grad_cam.",
                                   install='pip install "benchlab[grad-cam]"')
from pytorch_grad_cam.base_cam import BaseCAM  # noqa: E402 - after the check above
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

try:
    from importlib.metadata import version as _version

    LIBRARY = f"grad-cam {_version('grad-cam')}"
except Exception:  # noqa: BLE001 - installed without metadata (a source tree)
    LIBRARY = "grad-cam (version unknown)"
PREFIX = "pytorch_grad_cam."
DEFAULT_BATCH_SIZE = 64

LEFT_OUT: dict[str, str] = {
    "pytorch_grad_cam.SESS": "its windows, cut from the input inside the library, carry no "
                             "gradient when the model's parameters are frozen, as benchlab "
                             "runs explainers",
    "pytorch_grad_cam.SegEigenCAM": "explains segmentation outputs, not a classifier's logits",
    "pytorch_grad_cam.DeepFeatureFactorization": "returns concepts shared by a batch, not "
                                                 "one map per image",
    "pytorch_grad_cam.GuidedBackpropReLUModel": "one image at a time, and an input gradient "
                                                "rather than a CAM (captum.GuidedBackprop "
                                                "covers it)",
}
_SUPPLIED = ("model", "target_layers", "target_layer", "reshape_transform", "ablation_layer",
             "base_method", "computation_on_concepts", "device")


def cam_classes() -> dict[str, type]:
    """Every CAM class that ``pytorch_grad_cam`` exports, by name."""
    found = {name: obj for name, obj in vars(pytorch_grad_cam).items()
             if inspect.isclass(obj) and issubclass(obj, BaseCAM) and obj is not BaseCAM}
    others = ("FinerCAM", "RefineCAM", "SESS", "DeepFeatureFactorization",
              "GuidedBackpropReLUModel")
    found.update({name: getattr(pytorch_grad_cam, name) for name in others
                  if hasattr(pytorch_grad_cam, name)})
    return found


def _adapted(name: str) -> bool:
    return f"{PREFIX}{name}" not in LEFT_OUT


def _params_model(name: str, cls: type) -> type[Params]:
    override: dict[str, tuple[Any, Any, str]] = {
        "layer": (str | None, None, "module name from model.named_modules(); default the "
                  "last Conv2d/BatchNorm2d"),
        "klass": (int | None, None, "class to explain; default each image's prediction"),
        "batch_size": (int, DEFAULT_BATCH_SIZE, "images per call of the library"),
    }
    return params_from_signature(
        f"{name}Params", [cls.__init__, _call_signature(cls)],
        skip=(*_SUPPLIED, "input_tensor", "targets"), override=override,
        doc=f"Parameters of pytorch_grad_cam.{name} (benchlab conventions in "
            "benchlab_plugins.grad_cam_adapter).")


def _call_signature(cls: type) -> Callable[..., Any]:
    """What a call of a CAM object accepts: ``__call__``, or ``forward`` where
    ``__call__`` only passes ``*args, **kwargs`` on (FinerCAM, RefineCAM, SESS)."""
    call = cls.__call__
    kinds = {p.kind for p in inspect.signature(call).parameters.values()}
    if kinds <= {inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.VAR_POSITIONAL,
                 inspect.Parameter.VAR_KEYWORD} and len(inspect.signature(call).parameters) <= 3:
        return cls.forward
    return call


def make_explainer(name: str, cls: type) -> Callable[..., torch.Tensor]:
    init_keys = set(inspect.signature(cls.__init__).parameters) - set(_SUPPLIED)
    call_keys = set(inspect.signature(_call_signature(cls)).parameters) - {
        "self", "input_tensor", "targets"}

    def explain(model: torch.nn.Module, images: torch.Tensor, params: Params) -> torch.Tensor:
        """Maps (N, H, W) in [0, 1] for ``images`` (N, C, H, W) in [0, 1]."""
        check_explainer_input(images)
        out = images.new_zeros(images.shape[0], *images.shape[-2:])
        values = params.model_dump()
        init = {k: v for k, v in values.items() if k in init_keys}
        call = {k: v for k, v in values.items() if k in call_keys}
        quiet = io.StringIO()
        with library_call(model, images.device) as frozen, \
                contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
            layer = resolve_layer(frozen, params.layer)[1]
            cam = cls(model=frozen, target_layers=[layer], **init)
            # Not `with cam:`: the library's __exit__ swallows an IndexError.
            try:
                for start in range(0, images.shape[0], params.batch_size):
                    chunk = images[start:start + params.batch_size].detach().clone()
                    targets = None
                    if params.klass is not None:
                        targets = [ClassifierOutputTarget(params.klass)] * chunk.shape[0]
                    maps = cam(chunk.requires_grad_(True), targets, **call)
                    maps = torch.as_tensor(maps, device=images.device).float()
                    out[start:start + chunk.shape[0]] = normalize_maps(maps).to(images.dtype)
            finally:
                _release(cam)
        return out

    explain.__name__ = explain.__qualname__ = f"pytorch_grad_cam_{name}"
    return explain


def _release(cam: Any) -> None:
    """Remove the library's hooks (wrapper methods keep them on their base method)."""
    for holder in (cam, getattr(cam, "base_cam", None), getattr(cam, "cam", None)):
        handles = getattr(holder, "activations_and_grads", None)
        if handles is not None:
            handles.release()


def _description(cls: type) -> str:
    text = (inspect.getdoc(cls) or "").strip()
    return text.splitlines()[0].strip() if text else f"{cls.__name__} (pytorch-grad-cam)"


@benchlab.hookimpl
def register_explainers(register):
    for name, cls in sorted(cam_classes().items()):
        if _adapted(name):
            register(f"{PREFIX}{name}", make_explainer(name, cls),
                     params=_params_model(name, cls), library=LIBRARY,
                     description=_description(cls))

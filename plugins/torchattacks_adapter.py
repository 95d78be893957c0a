"""torchattacks (Kim, 2020) attacks as benchlab attacks: ``torchattacks.<Class>``.

Installed with ``pip install "benchlab[torchattacks]"``. Every attack class of the
library that fits benchlab's attack contract is registered under the library's
import name and the class name (``torchattacks.PGD``, ``torchattacks.AutoAttack``,
``torchattacks.CW``, ...); :data:`LEFT_OUT` lists the others and why.

Parameters are those of the class's constructor, validated with its types and
defaults, with these conventions where the library's defaults are tuned for
CIFAR-10 at ε = 8/255 and do not fit a list of ε on MNIST:

- ``eps`` comes from the suite's ε list: one attack object per ε, so one call
  evaluates every ε.
- ``alpha`` (the step size), when not given, is ``2.5 · ε / steps``, so the
  iterate can cross the whole ball (2ε) from any start, as in Madry et al.
  (2018); the library's fixed 2/255 never reaches ε = 0.3 in 10 steps. FFGSM,
  which has no steps, uses ``1.25 · ε`` (Wong et al., 2020). An ``alpha`` given
  in the suite is used as is, for every ε.
- ``seed`` (APGD, APGDT, FAB, Square, AutoAttack), when not given, is drawn
  from torch's global generator, which the runner seeds per job: a run is
  reproducible, and AutoAttack does not fall back on the clock.
- ``n_classes`` is read from the model's output; ``verbose`` is always off.
- ``batch_size`` (benchlab's): images per call of the library, default 256.

Threat models: attacks with an ε are bounded by an L∞ ball, PGDL2 and PGDRSL2
by an L2 ball, and APGD, APGDT, Square and AutoAttack by the ball of their
``norm`` parameter ("Linf" or "L2"). CW and DeepFool (L2), EADL1 and EADEN (L1),
JSMA and SparseFool (L0) and FAB (the norm of its ``norm`` parameter) are
minimum-norm attacks: they return one batch, and benchlab derives the accuracy
at every ε from the norm each image needed. FAB runs with ``eps`` at the largest
possible norm, so that the library keeps every perturbation it finds.

Only untargeted attacks: the library's targeted modes are not exposed.

DeepFool as the library implements it returns, for many images, a perturbation
that reaches the decision boundary without crossing it: its overshoot is applied
to each step and each step is clipped to [0, 1], so the last step can fall short.
On the conformance kit's MLP it moves all 8 images and flips 3
(``tests/test_adapters.py``); the kit's ``attacks`` check fails it. benchlab
counts an image as broken only where the model's prediction on the returned
image differs from its label, so these images count as not broken and the
robustness table shows how many there were (``not flipped``); but they have a
norm and stay correctly classified at every ε, so the attack's accuracy-versus-ε
curve is too optimistic: it says how far the library's DeepFool gets, not how
robust the model is. Whether such an image flips is down to float rounding, so
it can differ between executors. Prefer FAB or CW for a minimum L2.

The library's calls run inside :func:`benchlab.adapters.library_call`: CW,
DeepFool and FAB call ``backward()``, which would leave ``.grad`` on the model's
parameters, torchattacks puts a model back with ``model.train()`` (which loses
the mode of a submodule in eval mode), and APGD, FAB and Square reseed torch's
global generator; all of this is undone after each call.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import torch
from pydantic import Field

import benchlab
from benchlab.adapters import library_call, params_from_signature
from benchlab.components import Params, ThreatModel
from benchlab.plugins import require_library

torchattacks = require_library("torchattacks", library="torchattacks",
                               prefix="torchattacks.",
                               install='pip install "benchlab[torchattacks]"')

LIBRARY = f"torchattacks {torchattacks.__version__}"
PREFIX = "torchattacks."
DEFAULT_BATCH_SIZE = 256

# Class -> the norm of its ball; "norm" when the norm is a parameter.
BOUNDED: dict[str, str] = {
    **{name: "linf" for name in (
        "FGSM", "BIM", "RFGSM", "PGD", "EOTPGD", "FFGSM", "TPGD", "MIFGSM", "UPGD",
        "DIFGSM", "Jitter", "NIFGSM", "SINIFGSM", "VMIFGSM", "VNIFGSM", "SPSA",
        "PGDRS")},
    "PGDL2": "l2", "PGDRSL2": "l2",
    "APGD": "norm", "APGDT": "norm", "Square": "norm", "AutoAttack": "norm",
}
MINIMUM_NORM: dict[str, str] = {
    "CW": "l2", "DeepFool": "l2", "EADL1": "l1", "EADEN": "l1", "JSMA": "l0",
    "SparseFool": "l0", "FAB": "norm",
}
LEFT_OUT: dict[str, str] = {
    "torchattacks.VANILA": "returns its input: not an attack",
    "torchattacks.GN": "Gaussian noise: bounded by no ε-ball and minimises no norm",
    "torchattacks.OnePixel": "a budget in pixels, not an ε-ball, and not minimum-norm",
    "torchattacks.Pixle": "a budget in pixels, not an ε-ball, and not minimum-norm",
    "torchattacks.MultiAttack": "combines attack objects; list the attacks in the suite",
    "torchattacks.LGV": "needs a training loader to train surrogate models",
    **{f"torchattacks.{name}": "hard-codes 3-channel (RGB) kernels: fails on grayscale "
                               "images such as MNIST" for name in ("TIFGSM", "PIFGSM", "PIFGSMPP")},
}
_NORM_PARAM = {"Linf": "linf", "L2": "l2"}
# Parameters the adapter supplies itself.
_SUPPLIED = ("model", "eps", "n_classes", "verbose")
# Library defaults that are ints but mean real numbers.
_FLOATS = {"c", "kappa", "lr", "theta", "gamma", "overshoot", "lam", "beta", "eta",
           "alpha_max", "rho", "decay", "std", "noise_sd", "delta", "momentum",
           "amplification", "prob", "project_factor", "scale", "resize_rate",
           "diversity_prob", "initial_const"}


def attack_classes() -> dict[str, type]:
    """Every public attack class of torchattacks, by class name."""
    return {name: obj for name, obj in vars(torchattacks).items()
            if inspect.isclass(obj) and issubclass(obj, torchattacks.attack.Attack)
            and obj is not torchattacks.attack.Attack}


for _name in attack_classes():
    if _name not in BOUNDED and _name not in MINIMUM_NORM:
        LEFT_OUT.setdefault(f"{PREFIX}{_name}", f"not classified for {LIBRARY} yet")


def _params_model(name: str, cls: type) -> type[Params]:
    signature = inspect.signature(cls.__init__)
    override: dict[str, tuple[Any, Any, str]] = {}
    for key, p in signature.parameters.items():
        if key in _FLOATS and isinstance(p.default, (int, float)) \
                and not isinstance(p.default, bool):
            override[key] = (float, float(p.default), f"{name}: default {p.default!r}")
    if "alpha" in signature.parameters:
        rule = "2.5 * eps / steps" if "steps" in signature.parameters else "1.25 * eps"
        override["alpha"] = (Annotated[float, Field(gt=0.0)] | None, None,
                             f"step size on the [0, 1] scale; default {rule}")
    if "seed" in signature.parameters:
        override["seed"] = (int | None, None,
                            "random seed; default drawn from torch's global generator")
    if "norm" in signature.parameters:
        override["norm"] = (Literal["Linf", "L2"], signature.parameters["norm"].default,
                            "the norm of the ball (Linf or L2)")
    override["batch_size"] = (int, DEFAULT_BATCH_SIZE, "images per call of the library")
    model = params_from_signature(f"{name}Params", [cls.__init__], skip=_SUPPLIED,
                                  override=override,
                                  doc=f"Parameters of torchattacks.{name} (benchlab conventions "
                                      "in benchlab_plugins.torchattacks_adapter).")
    return model


def _threat(name: str) -> ThreatModel | Callable[[Any], ThreatModel]:
    minimum = name in MINIMUM_NORM
    norm = MINIMUM_NORM[name] if minimum else BOUNDED[name]
    if norm == "norm":
        return lambda params: ThreatModel(_NORM_PARAM[params.norm], minimum)
    return ThreatModel(norm, minimum)


def _num_classes(model: torch.nn.Module, images: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(images[:1]).shape[-1])


def _library_kwargs(name: str, cls: type, params: Params, eps: float | None,
                    num_classes: int) -> dict[str, Any]:
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in params.model_dump().items() if k in accepted}
    if eps is not None:
        kwargs["eps"] = eps
        if "alpha" in accepted and kwargs.get("alpha") is None:
            steps = kwargs.get("steps")
            kwargs["alpha"] = 2.5 * eps / steps if steps else 1.25 * eps
    if "seed" in accepted and kwargs.get("seed") is None:
        kwargs["seed"] = int(torch.randint(0, 2**31 - 1, ()).item())
    if "n_classes" in accepted:
        kwargs["n_classes"] = num_classes
    if "verbose" in accepted:
        kwargs["verbose"] = False
    return kwargs


def _largest_norm(norm: str, images: torch.Tensor) -> float:
    """The largest norm a perturbation inside [0, 1] can have."""
    pixels = images[0].numel()
    return {"Linf": 1.0, "L2": math.sqrt(pixels), "L1": float(pixels)}[norm]


def _apply(attack: Any, images: torch.Tensor, labels: torch.Tensor,
           batch_size: int) -> torch.Tensor:
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].detach().clone()
        y = labels[start:start + batch_size].detach().clone()
        out.append(attack(x, y).detach().to(images.dtype))
    return torch.cat(out) if out else images.detach().clone()


def make_bounded(name: str, cls: type) -> Callable[..., torch.Tensor]:
    def attack(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
               eps: Sequence[float], params: Params) -> torch.Tensor:
        """One adversarial batch per ε: (len(eps), *images.shape)."""
        labels = labels.to(images.device)
        out = images.detach().unsqueeze(0).repeat(len(eps), *([1] * images.dim()))
        if images.shape[0] == 0:
            return out
        with library_call(model, images.device) as frozen:
            classes = _num_classes(frozen, images)
            for i, e in enumerate(eps):
                if e <= 0:
                    continue
                kwargs = _library_kwargs(name, cls, params, float(e), classes)
                out[i] = _apply(cls(frozen, **kwargs), images, labels, params.batch_size)
        return out

    attack.__name__ = attack.__qualname__ = f"torchattacks_{name}"
    return attack


def make_minimum_norm(name: str, cls: type) -> Callable[..., torch.Tensor]:
    def attack(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
               eps: Sequence[float], params: Params) -> torch.Tensor:
        """One adversarial batch, shaped like ``images``; ``eps`` is not used."""
        labels = labels.to(images.device)
        if images.shape[0] == 0:
            return images.detach().clone()
        with library_call(model, images.device) as frozen:
            kwargs = _library_kwargs(name, cls, params, None, _num_classes(frozen, images))
            if "eps" in inspect.signature(cls.__init__).parameters:
                kwargs["eps"] = _largest_norm(params.norm, images)
            return _apply(cls(frozen, **kwargs), images, labels, params.batch_size)

    attack.__name__ = attack.__qualname__ = f"torchattacks_{name}"
    return attack


def _description(cls: type) -> str:
    first = (inspect.getdoc(cls) or "").strip().splitlines()
    return first[0].strip() if first else cls.__name__


@benchlab.hookimpl
def register_attacks(register):
    for name, cls in sorted(attack_classes().items()):
        if f"{PREFIX}{name}" in LEFT_OUT:
            continue
        make = make_minimum_norm if name in MINIMUM_NORM else make_bounded
        register(f"{PREFIX}{name}", make(name, cls), params=_params_model(name, cls),
                 threat=_threat(name), library=LIBRARY, description=_description(cls))

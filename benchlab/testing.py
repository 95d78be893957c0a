"""Conformance kit: small named checks that a component meets its contract.

Plugin authors run the checks in their own test suite, one test per check::

    from benchlab.testing import parametrize_with_checks

    @parametrize_with_checks(["pgd"])
    def test_conformance(component, check):
        check(component)

``benchlab check NAME`` runs the same checks through :func:`run_checks`.

Attack and explainer checks run the component on a tiny deterministic CNN
(:func:`tiny_cnn`) and a synthetic batch in [0, 1] (:func:`synthetic_batch`), so
no training, data or network is needed and each check takes milliseconds. Every
check runs inside :func:`torch.random.fork_rng`: seeding there does not leak
into the caller's random state.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from benchlab import guards
from benchlab.components import KINDS, Component, DatasetInfo, DatasetSplit, FileStatus, Kind
from benchlab.plugins import Registry, default_registry, unknown_name_message
from benchlab.threat import perturbation_norms, within_budget

if TYPE_CHECKING:
    import pytest

__all__ = [
    "Check",
    "CheckFailure",
    "CheckResult",
    "check_attack",
    "check_dataset",
    "check_explainer",
    "check_model",
    "parametrize_with_checks",
    "resolve",
    "run_checks",
    "synthetic_batch",
    "tiny_cnn",
]

KIT_SEED = 0
ATTACK_EPS = (0.03, 0.1, 0.3)
# Pixel tolerance of the ε-ball and [0, 1] checks; the run-time guards use the same.
ATOL = 1e-5
# Largest allowed gap between results that should be identical: recomputing the
# same thing (same seed, a batch and its halves) may differ by rounding only.
REPEAT_ATOL = 1e-6
# How far a dataset's declared per-channel mean/std may be from its test split's.
MEAN_STD_ATOL = 0.02
MEAN_STD_SAMPLES = 10_000

SYNTHETIC_INFO = DatasetInfo(name="synthetic", num_classes=5, shape=(3, 32, 32),
                             mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3))
MNIST_SHAPED_INFO = DatasetInfo(name="mnist-shaped", num_classes=10, shape=(1, 28, 28),
                                mean=(0.1307,), std=(0.3081,))


# -- results -----------------------------------------------------------------------

@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check, as in pytest: passed, skipped (with the reason), or failed."""

    name: str
    passed: bool
    message: str = ""
    skipped: bool = False
    traceback: str = ""  # of an exception the component raised

    @property
    def failed(self) -> bool:
        return not (self.passed or self.skipped)


class CheckFailure(AssertionError):
    """A component broke the rule a check tests."""


class _Skip(Exception):
    """A check cannot run here (a missing file, nothing declared); not a failure."""


# -- the kit's model and data --------------------------------------------------------

class _TinyCNN(nn.Module):
    """conv -> BatchNorm -> ReLU -> average pool -> linear: every layer kind attacks meet."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(4 * 4 * 4, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(images)))
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny_cnn(channels: int = 1, num_classes: int = 10, *, seed: int = KIT_SEED,
             device: torch.device | str = "cpu") -> nn.Module:
    """A small CNN (``conv``, ``bn``, ``pool``, ``fc``) in eval mode, the same for the same seed.

    Its BatchNorm statistics are set away from their (0, 1) defaults, so that a
    component that switches the model to train mode changes its outputs and buffers.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _TinyCNN(channels, num_classes)
        with torch.no_grad():
            model.bn.running_mean.uniform_(-0.2, 0.2)
            model.bn.running_var.uniform_(0.5, 1.5)
    return model.to(device).eval()


def synthetic_batch(n: int = 8, shape: tuple[int, int, int] = (1, 16, 16),
                    num_classes: int = 10, *, seed: int = KIT_SEED,
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Float images (n, *shape) in [0, 1] and int64 labels (n,), the same for the same seed.

    The top rows are exactly 0 and the bottom rows exactly 1, like the background
    and strokes of MNIST, so an attack that does not clamp to [0, 1] is caught.
    """
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((n, *shape), generator=generator)
    images[..., :3, :] = 0.0
    images[..., -2:, :] = 1.0
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    return images.to(device), labels.to(device)


# -- checks --------------------------------------------------------------------------

@dataclass(frozen=True)
class _Setup:
    """What a check needs besides the component: its parameters, device and data root."""

    params: Mapping[str, Any] | None
    device: torch.device
    data_root: Path | None
    download: bool

    def validated_params(self, component: Component) -> Any:
        values = dict(self.params or {})
        try:
            return component.validate_params(values)
        except ValidationError as exc:
            required = [name for name, f in component.params.model_fields.items()
                        if f.is_required() and name not in values]
            hint = ""
            if required:
                hint = f" (no default for {', '.join(required)}: pass params)"
            raise CheckFailure(f"invalid parameters {values} for {component.kind} "
                               f"'{component.name}'{hint}: {_pydantic_errors(exc)}") from None

    def root(self) -> Path:
        if self.data_root is not None:
            return Path(self.data_root)
        from benchlab.data import data_root

        return data_root()


CheckFunction = Callable[[Component, _Setup], None]


@dataclass(frozen=True)
class Check:
    """One named conformance check; call it with the component under test.

    ``check(component)`` raises :class:`CheckFailure` (an AssertionError) on a
    violation and calls ``pytest.skip`` when the check cannot run here;
    ``check.run(component)`` returns a :class:`CheckResult` instead.
    """

    name: str
    kind: Kind
    function: CheckFunction = field(repr=False)
    setup: _Setup = field(repr=False)

    @property
    def description(self) -> str:
        return _first_line(self.function.__doc__ or "")

    def __call__(self, component: Component) -> None:
        try:
            self._execute(component)
        except _Skip as skip:
            import pytest

            pytest.skip(str(skip))

    def run(self, component: Component) -> CheckResult:
        """Run the check and report the outcome; exceptions become failures."""
        try:
            self._execute(component)
        except _Skip as skip:
            return CheckResult(self.name, False, str(skip), skipped=True)
        except CheckFailure as exc:
            return CheckResult(self.name, False, str(exc))
        except Exception as exc:  # noqa: BLE001 - a crashing component is a failed check
            return CheckResult(self.name, False, f"raised {_describe(exc)}",
                               traceback=traceback.format_exc())
        return CheckResult(self.name, True)

    def _execute(self, component: Component) -> None:
        if component.kind != self.kind:
            raise TypeError(f"'{component.name}' is of kind '{component.kind}'; check "
                            f"'{self.name}' is for kind '{self.kind}'")
        devices = [self.setup.device] if self.setup.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), _one_thread():
            self.function(component, self.setup)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run on one CPU thread: the kit's tensors are tiny, and on a busy machine
    synchronising intra-op threads costs far more than the work (30x measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# -- attacks -------------------------------------------------------------------------
# Every call gets a fresh model and fresh tensors, so that a component that breaks
# one rule (say, writes to its input) fails that rule's check and no other.

Inputs = tuple[nn.Module, torch.Tensor, torch.Tensor]


def _fresh(setup: _Setup, part: slice = slice(None)) -> Inputs:
    """The kit's model, and (a slice of) its images and labels, as new objects."""
    images, labels = synthetic_batch(device=setup.device)
    return tiny_cnn(device=setup.device), images[part].clone(), labels[part].clone()


def _attack(component: Component, setup: _Setup, eps: Sequence[float] = ATTACK_EPS, *,
            inputs: Inputs | None = None, part: slice = slice(None),
            seed: int = KIT_SEED) -> torch.Tensor:
    """The attack's output on ``inputs`` (default: fresh ones) after torch.manual_seed(seed)."""
    params = setup.validated_params(component)
    model, images, labels = inputs if inputs is not None else _fresh(setup, part)
    torch.manual_seed(seed)
    output = component.obj(model, images, labels, list(eps), params)
    threat = component.threat(params)
    if not threat.minimum_norm:
        return output
    # One batch with no ε to respect: checked as the batches per ε derived from it.
    _expect_tensor(output, tuple(images.shape), images, "minimum-norm attack output")
    _expect_finite(output, "minimum-norm attack output")
    clean = synthetic_batch(device=setup.device)[0][part]
    return within_budget(clean, output, perturbation_norms(clean, output, threat.norm), eps)


def _clean(setup: _Setup) -> torch.Tensor:
    return synthetic_batch(device=setup.device)[0]


def _attack_output_shape(component: Component, setup: _Setup) -> None:
    """The output has shape (len(eps), *images.shape) and the input's dtype and device."""
    images = _clean(setup)
    _expect_tensor(_attack(component, setup), (len(ATTACK_EPS), *images.shape), images,
                   "attack output")


def _attack_finite(component: Component, setup: _Setup) -> None:
    """The output has no NaN or Inf."""
    _expect_finite(_attack(component, setup), "attack output")


def _attack_eps_ball(component: Component, setup: _Setup) -> None:
    """Each eps's batch lies in [0, 1] and in the ball of radius eps of the attack's
    norm (the run-time guard); a minimum-norm attack's batch lies in [0, 1]."""
    norm = component.threat(setup.validated_params(component)).norm
    _guard(guards.check_adversarial, _clean(setup), _attack(component, setup), ATTACK_EPS,
           atol=ATOL, norm=norm)


def _attack_input_unchanged(component: Component, setup: _Setup) -> None:
    """The images and labels passed in are not modified in place."""
    inputs = _fresh(setup)
    before = inputs[1].clone(), inputs[2].clone()
    _attack(component, setup, inputs=inputs)
    _expect_unchanged(before, inputs[1:], ("images", "labels"))


def _attack_model_restored(component: Component, setup: _Setup) -> None:
    """Module modes, requires_grad, .grad, parameters and buffers are as they were."""
    for frozen in (False, True):
        inputs = _fresh(setup)
        inputs[0].requires_grad_(not frozen)
        before = _ModelState.of(inputs[0])
        _attack(component, setup, inputs=inputs)
        before.expect_same(inputs[0], "with parameters " + ("frozen" if frozen else "trainable"))


def _attack_eps_zero(component: Component, setup: _Setup) -> None:
    """eps = 0 returns the input unchanged."""
    images = _clean(setup)
    adv = _attack(component, setup, (0.0, ATTACK_EPS[-1]))
    _expect_tensor(adv, (2, *images.shape), images, "attack output")
    gap = _max_gap(adv[0], images)
    if not gap <= REPEAT_ATOL:
        raise CheckFailure(f"with eps = 0 the output differs from the input by up to {gap:.3g}")


def _attack_batch_halves(component: Component, setup: _Setup) -> None:
    """A batch gives the same result as its two halves attacked separately."""
    images = _clean(setup)
    whole = _attack(component, setup)
    _expect_tensor(whole, (len(ATTACK_EPS), *images.shape), images, "attack output")
    seed_gap = _max_gap(whole, _attack(component, setup, seed=KIT_SEED + 1))
    if seed_gap > REPEAT_ATOL:
        raise _Skip(f"not applicable: the output depends on the random seed (seeds {KIT_SEED} "
                    f"and {KIT_SEED + 1} differ by up to {seed_gap:.3g}), and a randomised "
                    "attack's result for an image depends on the rest of its batch")
    half = images.shape[0] // 2
    parts = [_attack(component, setup, part=part)
             for part in (slice(0, half), slice(half, None))]
    for part in parts:
        _expect_tensor(part, (len(ATTACK_EPS), half, *images.shape[1:]), images,
                       "attack output of a half batch")
    gap = _max_gap(whole, torch.cat(parts, dim=1))
    if not gap <= REPEAT_ATOL:
        raise CheckFailure(f"attacking the batch in two halves changes the result by up to "
                           f"{gap:.3g}: an image's result must not depend on the rest of "
                           "its batch")


def _attack_seeded(component: Component, setup: _Setup) -> None:
    """Two calls after torch.manual_seed(0) give the same result."""
    images = _clean(setup)
    first, second = _attack(component, setup), _attack(component, setup)
    _expect_tensor(first, (len(ATTACK_EPS), *images.shape), images, "attack output")
    gap = _max_gap(first, second)
    if not gap <= REPEAT_ATOL:
        raise CheckFailure(f"two calls after torch.manual_seed({KIT_SEED}) differ by up to "
                           f"{gap:.3g}: draw random numbers from torch's global generator "
                           "or from a seeded torch.Generator")


# -- explainers ----------------------------------------------------------------------

def _explain(component: Component, setup: _Setup,
             inputs: tuple[nn.Module, torch.Tensor] | None = None) -> torch.Tensor:
    """The explainer's maps for ``inputs`` (default: a fresh model and batch)."""
    params = setup.validated_params(component)
    model, images = inputs if inputs is not None else _fresh(setup)[:2]
    torch.manual_seed(KIT_SEED)
    return component.obj(model, images, params)


def _explainer_output_shape(component: Component, setup: _Setup) -> None:
    """The maps have shape (N, H, W), a floating-point dtype and the input's device."""
    images = _clean(setup)
    maps = _explain(component, setup)
    n, _, height, width = images.shape
    _expect_tensor(maps, (n, height, width), images, "explanation maps", same_dtype=False)
    if not maps.is_floating_point():
        raise CheckFailure(f"explanation maps have dtype {maps.dtype}, expected floating point")


def _explainer_finite(component: Component, setup: _Setup) -> None:
    """The maps have no NaN or Inf."""
    _expect_finite(_explain(component, setup), "explanation maps")


def _explainer_in_range(component: Component, setup: _Setup) -> None:
    """The maps lie in [0, 1] (the run-time guard)."""
    _guard(guards.check_explanation, _clean(setup), _explain(component, setup), atol=ATOL)


def _explainer_no_hooks_left(component: Component, setup: _Setup) -> None:
    """No forward, forward-pre or backward hook is left on any module or parameter."""
    model, images, _ = _fresh(setup)
    before = _hook_counts(model)
    _explain(component, setup, (model, images))
    after = _hook_counts(model)
    left = {where: after[where] - before.get(where, 0) for where in after
            if after[where] > before.get(where, 0)}
    if left:
        listing = ", ".join(f"{n} {where}" for where, n in sorted(left.items()))
        raise CheckFailure(f"hooks left behind: {listing}; remove each handle when done "
                           "(handle.remove() in a finally block)")


def _explainer_model_restored(component: Component, setup: _Setup) -> None:
    """Module modes, requires_grad, .grad, parameters and buffers are as they were."""
    for frozen in (False, True):
        model, images, _ = _fresh(setup)
        model.requires_grad_(not frozen)
        before = _ModelState.of(model)
        _explain(component, setup, (model, images))
        before.expect_same(model, "with parameters " + ("frozen" if frozen else "trainable"))


def _explainer_input_unchanged(component: Component, setup: _Setup) -> None:
    """The images passed in are not modified in place."""
    model, images, _ = _fresh(setup)
    before = images.clone()
    _explain(component, setup, (model, images))
    _expect_unchanged((before,), (images,), ("images",))


# -- models --------------------------------------------------------------------------

def _build(component: Component, setup: _Setup, info: DatasetInfo,
           seed: int = KIT_SEED) -> nn.Module:
    params = setup.validated_params(component)
    torch.manual_seed(seed)
    model = component.obj(info, params)
    if not isinstance(model, nn.Module):
        raise CheckFailure(f"build returned {type(model).__name__}, expected a torch.nn.Module")
    return model.to(setup.device).eval()


def _model_images(info: DatasetInfo, setup: _Setup, n: int = 4) -> torch.Tensor:
    return synthetic_batch(n, info.shape, info.num_classes, device=setup.device)[0]


def _model_logits(component: Component, setup: _Setup) -> None:
    """Logits of shape (N, num_classes), finite, for a 3x32x32 and a 1x28x28 dataset."""
    for info in (SYNTHETIC_INFO, MNIST_SHAPED_INFO):
        where = f"for {info.num_classes} classes of shape {info.shape}"
        try:
            model = _build(component, setup, info)
            images = _model_images(info, setup)
            with torch.no_grad():
                logits = model(images)
        except CheckFailure:
            raise
        except Exception as exc:
            raise CheckFailure(f"{where}: raised {_describe(exc)}") from exc
        try:
            guards.check_logits(logits, images.shape[0], info.num_classes)
        except guards.ComponentError as exc:
            raise CheckFailure(f"{where}: {exc}") from None


def _model_trainable(component: Component, setup: _Setup) -> None:
    """The model has parameters that require grad, and the loss's gradient reaches them."""
    model = _build(component, setup, MNIST_SHAPED_INFO).train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise CheckFailure("the model has no parameters that require grad")
    images, labels = synthetic_batch(4, MNIST_SHAPED_INFO.shape, 10, device=setup.device)
    loss = F.cross_entropy(model(images), labels)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    if all(g is None or not bool(g.any()) for g in grads):
        raise CheckFailure("the loss's gradient is zero for every parameter")


def _model_named_layers(component: Component, setup: _Setup) -> None:
    """The layers the component declares (register(..., layers=[...])) exist by name."""
    declared = list(component.extra.get("layers", ()))
    if not declared:
        raise _Skip("the component declares no layers (register(..., layers=[...]))")
    names = {name for name, _ in _build(component, setup, MNIST_SHAPED_INFO).named_modules()}
    missing = [name for name in declared if name not in names]
    if missing:
        known = ", ".join(sorted(n for n in names if n)) or "none"
        raise CheckFailure(f"declared layers missing from named_modules(): "
                           f"{', '.join(missing)}; the model has: {known}")


def _model_eval_deterministic(component: Component, setup: _Setup) -> None:
    """In eval mode, the same input gives the same logits twice."""
    model = _build(component, setup, MNIST_SHAPED_INFO)
    images = _model_images(MNIST_SHAPED_INFO, setup)
    with torch.no_grad():
        gap = _max_gap(model(images.clone()), model(images.clone()))
    if not gap <= REPEAT_ATOL:
        raise CheckFailure(f"two forward passes in eval mode differ by up to {gap:.3g} "
                           "(is dropout or noise active in eval mode?)")


def _model_state_dict_roundtrip(component: Component, setup: _Setup) -> None:
    """A model built with another seed, loaded with this one's state_dict, gives the same logits."""
    source = _build(component, setup, MNIST_SHAPED_INFO, seed=KIT_SEED)
    target = _build(component, setup, MNIST_SHAPED_INFO, seed=KIT_SEED + 1)
    target.load_state_dict(source.state_dict())
    images = _model_images(MNIST_SHAPED_INFO, setup)
    outputs = []
    for model in (source, target):
        torch.manual_seed(KIT_SEED)  # only the state may differ, not the random numbers
        with torch.no_grad():
            outputs.append(model(images.clone()))
    gap = _max_gap(*outputs)
    if not gap <= REPEAT_ATOL:
        raise CheckFailure(f"after load_state_dict the logits differ by up to {gap:.3g}: some "
                           "state that affects the output is not in state_dict()")


def _model_input_unchanged(component: Component, setup: _Setup) -> None:
    """The forward pass does not modify its input (normalise out of place)."""
    model = _build(component, setup, MNIST_SHAPED_INFO)
    images = _model_images(MNIST_SHAPED_INFO, setup)
    before = images.clone()
    with torch.no_grad():
        model(images)
    _expect_unchanged((before,), (images,), ("images",))


# -- datasets ------------------------------------------------------------------------

def _dataset_info(component: Component, setup: _Setup) -> None:
    """info: num_classes >= 2, shape (C, H, W), mean and std of length C in [0, 1], std > 0."""
    info = component.obj.info
    problems = []
    if not isinstance(info, DatasetInfo):
        raise CheckFailure(f"info is a {type(info).__name__}, expected a DatasetInfo")
    if not (isinstance(info.num_classes, int) and info.num_classes >= 2):
        problems.append(f"num_classes is {info.num_classes!r}, expected an int >= 2")
    shape = tuple(info.shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        problems.append(f"shape is {info.shape!r}, expected three positive ints (C, H, W)")
    channels = shape[0] if shape else 0
    for name, values in (("mean", info.mean), ("std", info.std)):
        if len(values) != channels:
            problems.append(f"{name} has {len(values)} values, expected one per channel "
                            f"({channels})")
        elif not all(0.0 <= float(v) <= 1.0 for v in values):
            problems.append(f"{name} {tuple(values)} is not on the [0, 1] pixel scale")
    if any(float(s) <= 0 for s in info.std):
        problems.append(f"std {tuple(info.std)} has a value <= 0")
    if info.classes and len(info.classes) != info.num_classes:
        problems.append(f"{len(info.classes)} class names for {info.num_classes} classes")
    if problems:
        raise CheckFailure("; ".join(problems))


def _dataset_files(component: Component, setup: _Setup) -> None:
    """files(root) lists FileStatus entries without downloading anything."""
    statuses = component.obj.files(setup.root())
    if not isinstance(statuses, list) or not all(isinstance(s, FileStatus) for s in statuses):
        raise CheckFailure(f"files(root) returned {statuses!r}, expected a list of FileStatus")
    wrong = [s.path for s in statuses if s.verified and not s.present]
    if wrong:
        raise CheckFailure(f"files marked verified but not present: {wrong}")


def _load_test_split(component: Component, setup: _Setup) -> DatasetSplit:
    root = setup.root()
    if not setup.download:
        missing = [s.path.name for s in component.obj.files(root) if not s.verified]
        if missing:
            raise _Skip(f"files absent or unverified in {root} ({', '.join(missing)}); "
                        f"run `benchlab data fetch {component.name}` first")
    split = component.obj.load("test", root)
    if not isinstance(split, DatasetSplit):
        raise CheckFailure(f"load('test') returned {type(split).__name__}, "
                           "expected a DatasetSplit")
    return split


def _dataset_test_split(component: Component, setup: _Setup) -> None:
    """load('test'): uint8 images (N, C, H, W) of info.shape, int64 labels in [0, num_classes)."""
    info = component.obj.info
    split = _load_test_split(component, setup)
    images, labels = split.images, split.labels
    if len(split) == 0:
        raise CheckFailure("the test split is empty")
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != tuple(info.shape):
        raise CheckFailure(f"images are {images.dtype} {tuple(images.shape)}, expected "
                           f"torch.uint8 (N, {', '.join(map(str, info.shape))})")
    if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
        raise CheckFailure(f"labels are {labels.dtype} {tuple(labels.shape)}, "
                           f"expected torch.int64 ({images.shape[0]},)")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= info.num_classes:
        raise CheckFailure(f"labels span [{low}, {high}], outside [0, {info.num_classes})")


def _dataset_mean_std(component: Component, setup: _Setup) -> None:
    """The declared mean and std are within 0.02 of the test split's, per channel."""
    info = component.obj.info
    images = _load_test_split(component, setup).images[:MEAN_STD_SAMPLES]
    pixels = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255.0
    measured = {"mean": pixels.mean(dim=1).tolist(), "std": pixels.std(dim=1).tolist()}
    declared = {"mean": info.mean, "std": info.std}
    problems = []
    for stat in ("mean", "std"):
        if len(declared[stat]) != len(measured[stat]):
            raise CheckFailure(f"{stat} has {len(declared[stat])} values for "
                               f"{len(measured[stat])} channels")
        gaps = [abs(float(d) - m) for d, m in zip(declared[stat], measured[stat], strict=True)]
        if max(gaps) > MEAN_STD_ATOL:
            problems.append(f"declared {stat} {tuple(declared[stat])} but the test split has "
                            f"({', '.join(f'{v:.4f}' for v in measured[stat])})")
    if problems:
        raise CheckFailure("; ".join(problems) + f" (tolerance {MEAN_STD_ATOL})")


_CHECKS: dict[Kind, tuple[tuple[str, CheckFunction], ...]] = {
    "attack": (
        ("output_shape", _attack_output_shape),
        ("finite", _attack_finite),
        ("eps_ball", _attack_eps_ball),
        ("input_unchanged", _attack_input_unchanged),
        ("model_restored", _attack_model_restored),
        ("eps_zero", _attack_eps_zero),
        ("batch_halves", _attack_batch_halves),
        ("seeded", _attack_seeded),
    ),
    "explainer": (
        ("output_shape", _explainer_output_shape),
        ("finite", _explainer_finite),
        ("in_range", _explainer_in_range),
        ("no_hooks_left", _explainer_no_hooks_left),
        ("model_restored", _explainer_model_restored),
        ("input_unchanged", _explainer_input_unchanged),
    ),
    "model": (
        ("logits", _model_logits),
        ("trainable", _model_trainable),
        ("named_layers", _model_named_layers),
        ("eval_deterministic", _model_eval_deterministic),
        ("state_dict_roundtrip", _model_state_dict_roundtrip),
        ("input_unchanged", _model_input_unchanged),
    ),
    "dataset": (
        ("info", _dataset_info),
        ("files", _dataset_files),
        ("test_split", _dataset_test_split),
        ("mean_std", _dataset_mean_std),
    ),
}


# -- public entry points --------------------------------------------------------------

def resolve(registry: Registry, name: str, kind: Kind | None = None) -> Component:
    """The component called ``name`` (of ``kind`` when given).

    Raises LookupError naming the closest registered name, or, when ``name`` is
    registered under several kinds and ``kind`` is None, listing those kinds.
    """
    if kind is not None:
        if kind not in KINDS:
            raise LookupError(f"unknown kind '{kind}'; expected one of {', '.join(KINDS)}")
        try:
            return registry.get(kind, name)
        except KeyError as exc:
            raise LookupError(exc.args[0]) from None
    found = registry.find(name)
    if len(found) == 1:
        return found[0]
    if found:
        kinds = ", ".join(c.kind for c in found)
        raise LookupError(f"'{name}' names several components ({kinds}); say which kind")
    clashes = [c for c in getattr(registry, "collisions", ()) if c.name == name
               and (kind is None or c.kind == kind)]
    if clashes:
        raise LookupError(str(clashes[0]))
    every = sorted({n for k in KINDS for n in registry.names(k)})
    if any(name.startswith(plugin.prefix) for plugin in getattr(registry, "available", ())):
        raise LookupError(registry.missing_message("component", name))  # how to install it
    raise LookupError(unknown_name_message("component", name, every))


def _checks(kind: Kind, component: Component | str, *, params: Mapping[str, Any] | None,
            device: torch.device | str, registry: Registry | None,
            data_root: Path | str | None = None, download: bool = False) -> Iterator[Check]:
    """The checks of ``kind``; a wrong name or kind raises here, not on first use."""
    resolved = _resolve_any(component, registry, kind)
    if resolved.kind != kind:
        raise TypeError(f"'{resolved.name}' is of kind '{resolved.kind}', not '{kind}'")
    setup = _Setup(dict(params) if params is not None else None, torch.device(device),
                   Path(data_root) if data_root is not None else None, download)
    return iter([Check(name, kind, function, setup) for name, function in _CHECKS[kind]])


def check_attack(component: Component | str, *, params: Mapping[str, Any] | None = None,
                 device: torch.device | str = "cpu",
                 registry: Registry | None = None) -> Iterator[Check]:
    """The checks for an attack; run each as ``check(component)``.

    ``params`` are the values to validate with the component's parameter model
    (needed only when some field has no default).
    """
    return _checks("attack", component, params=params, device=device, registry=registry)


def check_explainer(component: Component | str, *, params: Mapping[str, Any] | None = None,
                    device: torch.device | str = "cpu",
                    registry: Registry | None = None) -> Iterator[Check]:
    """The checks for an explainer; run each as ``check(component)``."""
    return _checks("explainer", component, params=params, device=device, registry=registry)


def check_model(component: Component | str, *, params: Mapping[str, Any] | None = None,
                device: torch.device | str = "cpu",
                registry: Registry | None = None) -> Iterator[Check]:
    """The checks for a model builder; run each as ``check(component)``."""
    return _checks("model", component, params=params, device=device, registry=registry)


def check_dataset(component: Component | str, *, params: Mapping[str, Any] | None = None,
                  data_root: Path | str | None = None, download: bool = False,
                  registry: Registry | None = None) -> Iterator[Check]:
    """The checks for a dataset; run each as ``check(component)``.

    Checks that read the data look in ``data_root`` (default
    :func:`benchlab.data.data_root`) and skip when the files are not there,
    unless ``download`` allows the dataset to fetch them.
    """
    return _checks("dataset", component, params=params, device="cpu", registry=registry,
                   data_root=data_root, download=download)


def run_checks(component: Component | str, device: torch.device | str = "cpu", *,
               params: Mapping[str, Any] | None = None, registry: Registry | None = None,
               data_root: Path | str | None = None,
               download: bool = False) -> list[CheckResult]:
    """Run every check for ``component``'s kind and return the outcomes in order."""
    resolved = _resolve_any(component, registry)
    checks = _checks(resolved.kind, resolved, params=params, device=device, registry=registry,
                     data_root=data_root, download=download)
    return [check.run(resolved) for check in checks]


Target = Component | str | tuple[Component | str, Mapping[str, Any]]


def parametrize_with_checks(components: Iterable[Target], *, device: torch.device | str = "cpu",
                            registry: Registry | None = None,
                            data_root: Path | str | None = None) -> pytest.MarkDecorator:
    """A ``pytest.mark.parametrize("component, check", ...)`` over every check of each component.

    Each entry is a component, a registered name, or a ``(component_or_name,
    params)`` pair. Test ids read ``NAME-CHECK`` (``pgd-eps_ball``), or
    ``NAME(k=v)-CHECK`` when params are given.
    """
    import pytest

    values, ids = [], []
    for target in components:
        params: Mapping[str, Any] | None = None
        if isinstance(target, tuple):
            target, params = target
        component = _resolve_any(target, registry)
        label = component.name
        if params:
            label += "(" + ",".join(f"{k}={v}" for k, v in params.items()) + ")"
        for check in _checks(component.kind, component, params=params, device=device,
                             registry=registry, data_root=data_root):
            values.append((component, check))
            ids.append(f"{label}-{check.name}")
    return pytest.mark.parametrize(("component", "check"), values, ids=ids)


# -- helpers -------------------------------------------------------------------------

def _resolve_any(component: Component | str, registry: Registry | None,
                 kind: Kind | None = None) -> Component:
    if isinstance(component, Component):
        return component
    return resolve(registry if registry is not None else default_registry(), component, kind)


def _guard(check: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    try:
        check(*args, **kwargs)
    except guards.ComponentError as exc:
        raise CheckFailure(str(exc)) from None


def _expect_tensor(value: object, shape: tuple[int, ...], like: torch.Tensor, what: str,
                   *, same_dtype: bool = True) -> None:
    if not isinstance(value, torch.Tensor):
        raise CheckFailure(f"{what} is a {type(value).__name__}, expected a torch.Tensor")
    problems = []
    if tuple(value.shape) != tuple(shape):
        problems.append(f"shape {tuple(value.shape)}, expected {tuple(shape)}")
    if same_dtype and value.dtype != like.dtype:
        problems.append(f"dtype {value.dtype}, expected {like.dtype}")
    if value.device != like.device:
        problems.append(f"device {value.device}, expected {like.device}")
    if problems:
        raise CheckFailure(f"{what} has " + "; ".join(problems))


def _expect_finite(value: object, what: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise CheckFailure(f"{what} is a {type(value).__name__}, expected a torch.Tensor")
    bad = int((~torch.isfinite(value)).sum())
    if bad:
        nan = int(torch.isnan(value).sum())
        raise CheckFailure(f"{what} has {bad} non-finite values ({nan} NaN, {bad - nan} Inf)")


def _expect_unchanged(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor],
                      names: Sequence[str]) -> None:
    changed = [name for name, b, a in zip(names, before, after, strict=True)
               if not torch.equal(b, a)]
    if changed:
        raise CheckFailure(f"modified its input in place: {', '.join(changed)}; "
                           "work on a copy (x.clone(), or out-of-place ops)")


def _max_gap(a: object, b: object) -> float:
    """Largest absolute difference; inf when the shapes differ or where only one is NaN."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    diff = (a.double() - b.double()).abs()
    both_nan = torch.isnan(a) & torch.isnan(b)
    return float(diff.masked_fill(both_nan, 0.0).nan_to_num(nan=float("inf")).max())


@dataclass(frozen=True)
class _ModelState:
    """What a component must leave as it found it on the model it was given."""

    modes: dict[str, bool]
    requires_grad: dict[str, bool]
    has_grad: dict[str, bool]
    tensors: dict[str, torch.Tensor]

    @classmethod
    def of(cls, model: nn.Module) -> _ModelState:
        return cls(
            modes={name or "<root>": m.training for name, m in model.named_modules()},
            requires_grad={name: p.requires_grad for name, p in model.named_parameters()},
            has_grad={name: p.grad is not None for name, p in model.named_parameters()},
            tensors={name: t.detach().clone() for name, t in model.state_dict().items()},
        )

    def expect_same(self, model: nn.Module, when: str) -> None:
        now = _ModelState.of(model)
        problems = []
        modes = _differing(self.modes, now.modes)
        if modes:
            problems.append(f"train/eval mode changed on {modes}")
        grads = _differing(self.requires_grad, now.requires_grad)
        if grads:
            problems.append(f"requires_grad changed on {grads}")
        left = _differing(self.has_grad, now.has_grad)
        if left:
            problems.append(f".grad left on {left} (use torch.autograd.grad)")
        changed = sorted(name for name, t in self.tensors.items()
                         if name not in now.tensors or not torch.equal(t, now.tensors[name]))
        if changed:
            problems.append(f"parameters or buffers changed: {_listing(changed)}")
        if problems:
            raise CheckFailure(f"{when}: " + "; ".join(problems))


def _differing(before: Mapping[str, bool], after: Mapping[str, bool]) -> str:
    return _listing(sorted(k for k in before if before[k] != after.get(k)))


def _listing(names: Sequence[str], limit: int = 4) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


_MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                 "_backward_pre_hooks")


def _hook_counts(model: nn.Module) -> dict[str, int]:
    """Hooks registered on ``model``'s modules and parameters, and global module hooks."""
    counts: dict[str, int] = {}
    for attribute in _MODULE_HOOKS:
        label = attribute.strip("_").replace("_", " ")
        counts[label] = sum(len(getattr(m, attribute, None) or {}) for m in model.modules())
        global_hooks = getattr(nn.modules.module, "_global" + attribute, None) or {}
        counts[f"global {label}"] = len(global_hooks)
    counts["parameter hooks"] = sum(len(p._backward_hooks or {}) for p in model.parameters())
    return counts


def _pydantic_errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}"
                     for e in exc.errors())


def _describe(exc: BaseException) -> str:
    text = _first_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


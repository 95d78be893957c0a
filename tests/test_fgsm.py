"""FGSM and iterative FGSM against gradients computed by hand on linear models."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from benchlab.modes import frozen_eval
from benchlab.plugins import default_registry
from benchlab.testing import parametrize_with_checks
from benchlab_plugins.fgsm import (
    FGSMParams,
    IFGSMParams,
    attack_targets,
    choose_targets,
    fgsm,
    fgsm_step,
    ifgsm,
    input_gradient,
    project_linf,
)

# f(x) = W vec(x) + b on a 1x2x2 image. For two classes the cross-entropy gradient is
# W^T (softmax(z) - onehot(y)) = p_other * (W_other - W_y), so its sign is
# sign(W_1 - W_0) for label 0 and the opposite for label 1, whatever the softmax is.
# Pixel 2 has zero weight in both rows, so its gradient is exactly 0 (a column with
# equal non-zero weights would leave a rounding residue of p_0 + p_1 - 1).
W_BINARY = torch.tensor([[1.0, -1.0, 0.0, 2.0],
                         [-1.0, 1.0, 0.0, 0.5]])  # W_1 - W_0 = [-2, 2, 0, -1.5]
SIGN_LABEL_0 = torch.tensor([-1.0, 1.0, 0.0, -1.0]).view(1, 2, 2)


class Linear2x2(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.fc = nn.Linear(4, weight.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            self.fc.bias.copy_(torch.zeros(weight.shape[0]) if bias is None else bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def closed_form_gradient(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor,
                         classes: torch.Tensor) -> torch.Tensor:
    """d CE(Wx + b, c) / dx = W^T (softmax(Wx + b) - onehot(c)), per image."""
    flat = x.flatten(1)
    p = torch.softmax(flat @ weight.T + bias, dim=1)
    onehot = torch.nn.functional.one_hot(classes, weight.shape[0]).to(p.dtype)
    return ((p - onehot) @ weight).view_as(x)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.tensor([[[[0.05, 0.5], [0.3, 0.97]]],
                         [[[0.6, 0.0], [1.0, 0.45]]]])


def test_fgsm_matches_hand_computed_binary(images: torch.Tensor) -> None:
    model = Linear2x2(W_BINARY)
    labels = torch.tensor([0, 1])
    out = fgsm(model, images, labels, [0.1], FGSMParams())
    expected = torch.stack([
        torch.tensor([[[0.0, 0.6], [0.3, 0.87]]]),   # x0 + 0.1 * [-1, 1, 0, -1], clamped
        torch.tensor([[[0.7, 0.0], [1.0, 0.55]]]),   # x1 + 0.1 * [1, -1, 0, 1], clamped
    ]).unsqueeze(0)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out[0, 0], (images[0] + 0.1 * SIGN_LABEL_0).clamp(0, 1))


def test_fgsm_matches_closed_form_gradient_for_each_eps() -> None:
    torch.manual_seed(0)
    weight, bias = torch.randn(3, 4), torch.randn(3)
    x = torch.rand(5, 1, 2, 2)
    labels = torch.tensor([0, 1, 2, 0, 1])
    eps = [0.0, 0.05, 0.2]
    out = fgsm(Linear2x2(weight, bias), x, labels, eps, FGSMParams())
    sign = closed_form_gradient(weight, bias, x, labels).sign()
    assert out.shape == (3, *x.shape)
    for i, e in enumerate(eps):
        torch.testing.assert_close(out[i], (x + e * sign).clamp(0, 1))


def test_targeted_fgsm_descends_the_target_loss_and_raises_its_logit() -> None:
    torch.manual_seed(1)
    weight, bias = torch.randn(3, 4), torch.randn(3)
    model = Linear2x2(weight, bias)
    x = torch.rand(6, 1, 2, 2) * 0.6 + 0.2  # away from the [0, 1] bounds
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    targets = torch.tensor([1, 2, 0, 0, 2, 1])  # (label + 1) % 3
    out = fgsm(model, x, labels, [0.1], FGSMParams(targeted=True))[0]
    sign = closed_form_gradient(weight, bias, x, targets).sign()
    torch.testing.assert_close(out, x - 0.1 * sign)
    with torch.no_grad():
        before = torch.log_softmax(model(x), 1).gather(1, targets[:, None])
        after = torch.log_softmax(model(out), 1).gather(1, targets[:, None])
    assert bool((after > before).all())


def test_explicit_target_class() -> None:
    torch.manual_seed(2)
    weight, bias = torch.randn(4, 4), torch.randn(4)
    x = torch.rand(3, 1, 2, 2) * 0.6 + 0.2
    labels = torch.tensor([0, 1, 2])
    out = fgsm(Linear2x2(weight, bias), x, labels, [0.05],
               FGSMParams(targeted=True, target_class=3))[0]
    sign = closed_form_gradient(weight, bias, x, torch.full((3,), 3)).sign()
    torch.testing.assert_close(out, x - 0.05 * sign)


def test_choose_targets() -> None:
    labels = torch.tensor([0, 4, 9])
    assert choose_targets(labels, 10).tolist() == [1, 5, 0]
    assert choose_targets(labels, 10, target_class=7).tolist() == [7, 7, 7]
    with pytest.raises(ValueError, match="out of range"):
        choose_targets(labels, 10, target_class=10)


def test_attack_targets_reports_what_the_attack_aims_at(images: torch.Tensor) -> None:
    model = Linear2x2(torch.randn(3, 4))
    labels = torch.tensor([2, 0])
    assert attack_targets(model, images, labels, FGSMParams()) is None
    assert attack_targets(model, images, labels, FGSMParams(targeted=True)).tolist() == [0, 1]
    with pytest.raises(ValueError, match="out of range"):
        fgsm(model, images, labels, [0.1], FGSMParams(targeted=True, target_class=3))


def test_target_class_without_targeted_is_rejected() -> None:
    with pytest.raises(ValidationError, match="targeted"):
        FGSMParams(target_class=1)


def test_pure_step_and_projection() -> None:
    x = torch.tensor([0.0, 0.5, 0.95, 0.3])
    grad = torch.tensor([-2.0, 0.0, 3.0, 1e-30])
    torch.testing.assert_close(fgsm_step(x, grad, 0.1), torch.tensor([0.0, 0.5, 1.0, 0.4]))
    torch.testing.assert_close(fgsm_step(x, grad, 0.1, targeted=True),
                               torch.tensor([0.1, 0.5, 0.85, 0.2]))
    adv = torch.tensor([0.4, 0.1, 1.3, 0.25])
    torch.testing.assert_close(project_linf(adv, x, 0.2), torch.tensor([0.2, 0.3, 1.0, 0.25]))


def test_input_gradient_matches_closed_form() -> None:
    torch.manual_seed(3)
    weight, bias = torch.randn(3, 4), torch.randn(3)
    x = torch.rand(4, 1, 2, 2)
    labels = torch.tensor([2, 0, 1, 1])
    grad = input_gradient(Linear2x2(weight, bias), x, labels)
    torch.testing.assert_close(grad, closed_form_gradient(weight, bias, x, labels))


def test_ifgsm_one_full_step_equals_fgsm() -> None:
    torch.manual_seed(4)
    model = Linear2x2(torch.randn(3, 4), torch.randn(3))
    x = torch.rand(7, 1, 2, 2)
    labels = torch.randint(0, 3, (7,))
    for eps in (0.03, 0.3):
        expected = fgsm(model, x, labels, [eps], FGSMParams())
        got = ifgsm(model, x, labels, [eps], IFGSMParams(steps=1, alpha=eps))
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_ifgsm_on_binary_model_walks_to_the_fgsm_point(images: torch.Tensor) -> None:
    # The sign of the binary gradient never changes, so eps / steps per step adds up
    # to one full FGSM step.
    model = Linear2x2(W_BINARY)
    labels = torch.tensor([0, 1])
    got = ifgsm(model, images, labels, [0.1, 0.2], IFGSMParams(steps=4))
    expected = fgsm(model, images, labels, [0.1, 0.2], FGSMParams())
    torch.testing.assert_close(got, expected)


def test_ifgsm_stays_in_the_ball_and_the_unit_box() -> None:
    torch.manual_seed(5)
    model = tiny_mlp()
    x = torch.rand(12, 1, 4, 4)
    labels = torch.randint(0, 3, (12,))
    eps = [0.0, 0.02, 0.1, 0.5]
    out = ifgsm(model, x, labels, eps, IFGSMParams(steps=6, alpha=0.07, batch_size=5))
    for i, e in enumerate(eps):
        assert float((out[i] - x).abs().max()) <= e + 1e-6
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float((out[3] - x).abs().max()) > 0.1  # it does move


def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 3))


def trained_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small MLP fitted to separable synthetic data (a few hundred full-batch steps)."""
    torch.manual_seed(6)
    centres = torch.rand(3, 1, 4, 4)
    labels = torch.arange(60) % 3
    x = (centres[labels] + 0.15 * torch.randn(60, 1, 4, 4)).clamp(0, 1)
    model = tiny_mlp()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x), labels).backward()
        optimiser.step()
    return model, x, labels


def test_ifgsm_is_at_least_as_strong_as_fgsm() -> None:
    model, x, labels = trained_mlp()
    with torch.no_grad():
        clean_correct = model(x).argmax(1) == labels
    assert float(clean_correct.float().mean()) > 0.9
    eps = [0.05, 0.1, 0.2]
    one = fgsm(model, x, labels, eps, FGSMParams())
    many = ifgsm(model, x, labels, eps, IFGSMParams(steps=10, alpha=0.25 * max(eps)))
    with torch.no_grad():
        fooled_one = (model(one.flatten(0, 1)).argmax(1).view(3, -1) != labels) & clean_correct
        fooled_many = (model(many.flatten(0, 1)).argmax(1).view(3, -1) != labels) & clean_correct
    assert (fooled_many.sum(1) >= fooled_one.sum(1)).all()
    assert int(fooled_many.sum()) > 0


@pytest.mark.parametrize("attack, params", [(fgsm, FGSMParams()), (ifgsm, IFGSMParams(steps=3))])
def test_zero_eps_returns_the_input_and_input_is_untouched(attack, params) -> None:
    torch.manual_seed(7)
    model = tiny_mlp()
    x = torch.rand(5, 1, 4, 4)
    copy = x.clone()
    out = attack(model, x, torch.randint(0, 3, (5,)), [0.0, 0.1, 0.0], params)
    assert torch.equal(x, copy)
    assert torch.equal(out[0], x) and torch.equal(out[2], x)
    assert not torch.equal(out[1], x)
    assert out.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("attack, params", [
    (fgsm, FGSMParams(batch_size=3)),
    (ifgsm, IFGSMParams(steps=4, alpha=0.03, batch_size=3)),
    (fgsm, FGSMParams(targeted=True)),
])
def test_a_batch_equals_its_two_halves(attack, params) -> None:
    torch.manual_seed(8)
    model = Linear2x2(torch.randn(3, 4), torch.randn(3))
    x = torch.rand(8, 1, 2, 2)
    labels = torch.randint(0, 3, (8,))
    eps = [0.05, 0.1]
    whole = attack(model, x, labels, eps, params)
    halves = torch.cat([attack(model, x[:4], labels[:4], eps, params),
                        attack(model, x[4:], labels[4:], eps, params)], dim=1)
    torch.testing.assert_close(whole, halves, rtol=0, atol=0)


class Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


@pytest.mark.parametrize("attack, params", [(fgsm, FGSMParams()), (ifgsm, IFGSMParams(steps=2))])
def test_mode_and_requires_grad_are_restored(attack, params) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Dropout(0.5), nn.Linear(3, 3))
    model.train()
    model[2].eval()  # a mixed state must come back exactly as it was
    model[3].weight.requires_grad_(False)
    before_modes = [m.training for m in model.modules()]
    before_grads = [p.requires_grad for p in model.parameters()]
    seen: list[tuple[bool, bool]] = []
    model.register_forward_hook(
        lambda m, i, o: seen.append((m.training, any(p.requires_grad for p in m.parameters()))))
    attack(model, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), [0.1], params)
    assert seen and all(state == (False, False) for state in seen)
    assert [m.training for m in model.modules()] == before_modes
    assert [p.requires_grad for p in model.parameters()] == before_grads
    assert all(p.grad is None for p in model.parameters())


def test_mode_and_requires_grad_are_restored_when_the_model_raises() -> None:
    model = Exploding().train()
    with pytest.raises(RuntimeError, match="boom"):
        fgsm(model, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), [0.1], FGSMParams())
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(RuntimeError, match="boom"), frozen_eval(model):
        model(torch.rand(1, 4))
    assert all(m.training for m in model.modules())


def test_works_under_no_grad_and_rejects_bad_input(images: torch.Tensor) -> None:
    model = Linear2x2(W_BINARY)
    with torch.no_grad():
        out = fgsm(model, images, torch.tensor([0, 1]), [0.1], FGSMParams())
    torch.testing.assert_close(out[0, 0], (images[0] + 0.1 * SIGN_LABEL_0).clamp(0, 1))
    with pytest.raises(ValueError, match="eps"):
        fgsm(model, images, torch.tensor([0, 1]), [1.5], FGSMParams())
    with pytest.raises(ValueError, match="labels"):
        fgsm(model, images, torch.tensor([0]), [0.1], FGSMParams())


def test_empty_inputs() -> None:
    model = Linear2x2(W_BINARY)
    x = torch.rand(3, 1, 2, 2)
    assert fgsm(model, x, torch.tensor([0, 1, 0]), [], FGSMParams()).shape == (0, 3, 1, 2, 2)
    empty = torch.rand(0, 1, 2, 2)
    assert ifgsm(model, empty, torch.zeros(0, dtype=torch.long), [0.1],
                 IFGSMParams(targeted=True)).shape == (1, 0, 1, 2, 2)


def test_registered_through_the_entry_point() -> None:
    registry = default_registry()
    for name, function, params in (("fgsm", fgsm, FGSMParams), ("ifgsm", ifgsm, IFGSMParams)):
        component = registry.get("attack", name)
        assert component.obj is function and component.params is params
        assert component.extra["targets"] is attack_targets
    assert IFGSMParams().steps == 100 and IFGSMParams().alpha is None


@parametrize_with_checks(["fgsm", ("fgsm", {"targeted": True}), ("ifgsm", {"steps": 3}),
                          ("ifgsm", {"steps": 3, "targeted": True, "target_class": 2})])
def test_conformance(component, check) -> None:
    check(component)

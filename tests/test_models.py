"""The cnn and cnn_bn model plugins."""

from __future__ import annotations

import pydantic
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import benchlab_plugins.cnn as cnn_plugin
from benchlab.components import DatasetInfo, Provenance
from benchlab.plugins import build_registry
from benchlab_plugins.cnn import CNNParams, build_cnn, build_cnn_bn

MNIST = DatasetInfo("mnist", 10, (1, 28, 28), (0.1307,), (0.3081,))
BUILDERS = {"cnn": build_cnn, "cnn_bn": build_cnn_bn}


def make(name: str, info: DatasetInfo = MNIST, seed: int = 0, **params: float) -> nn.Module:
    torch.manual_seed(seed)
    return BUILDERS[name](info, CNNParams(**params))


def images(n: int, shape=(1, 28, 28), seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def reference_forward(model: nn.Module, x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """The original architecture written out layer by layer, in eval mode."""
    x = model.conv1((x - mean) / std)
    x = F.relu(model.bn1(x) if hasattr(model, "bn1") else x)
    x = model.conv2(x)
    x = F.relu(model.bn2(x) if hasattr(model, "bn2") else x)
    x = torch.flatten(F.max_pool2d(x, 2), 1)
    return model.fc2(F.relu(model.fc1(x)))


def test_both_models_are_registered_by_the_plugin():
    registry = build_registry([("cnn", cnn_plugin, Provenance("cnn", "benchlab", "0"))],
                              entry_points=False)
    assert registry.names("model") == ["cnn", "cnn_bn"]
    component = registry.get("model", "cnn_bn")
    # cnn_bn adds bn_eval (what BatchNorm normalises with in eval mode) to cnn's dropouts
    assert issubclass(component.params, CNNParams) and "bn_eval" in component.params.model_fields
    assert registry.get("model", "cnn").params is CNNParams
    model = component.obj(MNIST, component.validate_params({}))
    assert isinstance(model.bn2, nn.BatchNorm2d)


@pytest.mark.parametrize("name", ["cnn", "cnn_bn"])
def test_logits_have_one_column_per_class(name):
    model = make(name).eval()
    assert model(images(5)).shape == (5, 10)


@pytest.mark.parametrize("name", ["cnn", "cnn_bn"])
def test_layer_sizes_follow_the_dataset_shape(name):
    info = DatasetInfo("rgb", 7, (3, 20, 16), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    model = make(name, info).eval()
    assert model.conv1.in_channels == 3
    assert model.fc1.in_features == 64 * 8 * 6  # (20 - 4) / 2, (16 - 4) / 2
    assert model(images(2, info.shape)).shape == (2, 7)


def test_mnist_architecture_is_the_original():
    model = make("cnn_bn")
    assert (model.conv1.in_channels, model.conv1.out_channels) == (1, 32)
    assert (model.conv2.in_channels, model.conv2.out_channels) == (32, 64)
    assert model.conv1.kernel_size == model.conv2.kernel_size == (3, 3)
    assert (model.fc1.in_features, model.fc1.out_features) == (9216, 128)
    assert (model.fc2.in_features, model.fc2.out_features) == (128, 10)
    assert (model.dropout1.p, model.dropout2.p) == (0.25, 0.5)
    assert sum(p.numel() for p in model.parameters()) == (
        32 * 9 + 32 + 64 * 32 * 9 + 64 + 9216 * 128 + 128 + 128 * 10 + 10 + 2 * (32 + 64))


def test_batchnorm_layers_only_in_cnn_bn():
    with_bn, without = make("cnn_bn"), make("cnn")
    assert isinstance(with_bn.bn1, nn.BatchNorm2d) and with_bn.bn1.num_features == 32
    assert isinstance(with_bn.bn2, nn.BatchNorm2d) and with_bn.bn2.num_features == 64
    assert not hasattr(without, "bn1") and not hasattr(without, "bn2")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in without.modules())


@pytest.mark.parametrize("name", ["cnn", "cnn_bn"])
def test_named_layers_are_modules_in_forward_order(name):
    model = make(name)
    called = []
    for layer in ("conv1", "bn1", "conv2", "bn2", "dropout1", "fc1", "dropout2", "fc2"):
        if hasattr(model, layer):
            getattr(model, layer).register_forward_hook(lambda *_, n=layer: called.append(n))
    model(images(2))
    expected = ["conv1", "bn1", "conv2", "bn2", "dropout1", "fc1", "dropout2", "fc2"]
    assert called == [n for n in expected if hasattr(model, n)]


@pytest.mark.parametrize("name", ["cnn", "cnn_bn"])
def test_model_normalises_its_input_with_the_dataset_statistics(name):
    model = make(name).eval()
    if name == "cnn_bn":  # non-trivial running statistics, so eval-mode BN does something
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn2.running_var.uniform_(0.5, 2.0)
    x = images(4)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_forward(model, x, 0.1307, 0.3081))
        # and it is not a no-op: the same weights without normalisation differ
        assert not torch.allclose(model(x), reference_forward(model, x, 0.0, 1.0), atol=1e-3)


def test_normalisation_is_not_part_of_the_weights():
    model = make("cnn_bn")
    assert not {"mean", "std"} & set(model.state_dict())
    other = DatasetInfo("other", 10, (1, 28, 28), (0.5,), (0.25,))
    make("cnn_bn", other).load_state_dict(model.state_dict())  # strict: same keys


@pytest.mark.parametrize("name", ["cnn", "cnn_bn"])
def test_eval_mode_is_deterministic_and_train_mode_uses_dropout(name):
    model = make(name)
    x = images(8)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
        model.train()
        assert not torch.equal(model(x), model(x))


def test_dropout_rates_are_parameters_and_validated():
    model = make("cnn", dropout1=0.1, dropout2=0.0)
    assert (model.dropout1.p, model.dropout2.p) == (0.1, 0.0)
    for bad in ({"dropout1": 1.0}, {"dropout2": -0.1}, {"dropout3": 0.5}):
        with pytest.raises(pydantic.ValidationError):
            CNNParams(**bad)


def test_same_seed_same_initial_weights():
    a, b = make("cnn_bn", seed=3), make("cnn_bn", seed=3)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_flatten_hands_a_channels_last_map_its_gradient_channels_last():
    x = torch.randn(3, 8, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    weights = torch.randn(3, 200)
    (cnn_plugin._flatten(x) * weights).sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x.grad, weights.view(3, 8, 5, 5), rtol=0, atol=0)
    assert torch.equal(cnn_plugin._flatten(x), torch.flatten(x.detach(), 1))


def test_channels_last_model_computes_what_the_plain_model_does():
    plain = make("cnn_bn").eval()
    fast = make("cnn_bn").eval().to(memory_format=torch.channels_last)
    x = images(4).requires_grad_()
    x_fast = x.detach().clone().requires_grad_()
    torch.testing.assert_close(fast(x_fast), plain(x))
    plain(x).sum().backward()
    fast(x_fast).sum().backward()
    torch.testing.assert_close(x_fast.grad, x.grad)
    torch.testing.assert_close(fast.conv2.weight.grad, plain.conv2.weight.grad)


def test_model_works_under_vmap_and_func_grad():
    model = make("cnn").eval()
    x = images(3)

    def loss(sample: torch.Tensor) -> torch.Tensor:
        return model(sample.unsqueeze(0)).logsumexp(dim=1).sum()

    per_sample = torch.func.vmap(torch.func.grad(loss))(x)
    x.requires_grad_()
    model(x).logsumexp(dim=1).sum().backward()
    torch.testing.assert_close(per_sample, x.grad)


def test_mismatched_statistics_are_rejected():
    with pytest.raises(ValueError, match="per channel"):
        build_cnn(DatasetInfo("bad", 10, (3, 28, 28), (0.5,), (0.5,)), CNNParams())


# -- named rectified layers ----------------------------------------------------

STATE_KEYS = {
    "cnn": ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
            "fc1.bias", "fc2.weight", "fc2.bias"],
    "cnn_bn": ["conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias", "bn1.running_mean",
               "bn1.running_var", "bn1.num_batches_tracked", "conv2.weight", "conv2.bias",
               "bn2.weight", "bn2.bias", "bn2.running_mean", "bn2.running_var",
               "bn2.num_batches_tracked", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"],
}


class FunctionalReLU(nn.Module):
    """The same weights applied with F.relu, as the CNN did before relu1/relu2 existed."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reference_forward(self.inner, x, 0.1307, 0.3081)


@pytest.mark.parametrize("name", ["cnn", "cnn_bn"])
def test_relu_layers_add_no_weights_and_leave_conv2_bn2_maps_unchanged(name):
    from benchlab_plugins.gradcam import GradCAMParams, default_layer, gradcam, layer_choices

    model = make(name, seed=3).eval()
    if name == "cnn_bn":  # running statistics of a trained model, not the identity
        with torch.no_grad():
            for bn in (model.bn1, model.bn2):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 1.5)
    assert list(model.state_dict()) == STATE_KEYS[name]
    assert isinstance(model.relu1, nn.ReLU) and isinstance(model.relu2, nn.ReLU)
    x = images(6, seed=4)
    torch.testing.assert_close(model(x), reference_forward(model, x, 0.1307, 0.3081),
                               rtol=0, atol=0)
    layer = "bn2" if name == "cnn_bn" else "conv2"
    assert default_layer(model) == layer  # the default did not move to relu2
    old = FunctionalReLU(model).eval()
    assert torch.equal(gradcam(model, x, GradCAMParams(layer=layer)),
                       gradcam(old, x, GradCAMParams(layer=f"inner.{layer}")))
    expected = ["conv1", "bn1", "relu1", "conv2", "bn2", "relu2"] if name == "cnn_bn" \
        else ["conv1", "relu1", "conv2", "relu2"]
    assert layer_choices(model, x[:2]) == expected
    relu2 = gradcam(model, x, GradCAMParams(layer="relu2"))
    assert relu2.shape == (6, 28, 28)
    assert not torch.equal(relu2, gradcam(model, x, GradCAMParams(layer=layer)))

"""benchlab's own attacks and Grad-CAM against the libraries people know (regression tests).

- ``fgsm`` equals ``torchattacks.FGSM`` at batch 64;
- ``ifgsm`` equals ``torchattacks.BIM`` with α = ε / steps at a power-of-two batch (BIM
  takes the gradient of the batch-mean loss, ``ifgsm`` of the sum; dividing by a power
  of two is exact, so the signs agree), and on a trained model given the same step;
- ``gradcam`` equals Captum's ``LayerGradCam`` followed by ReLU, bilinear upsampling and
  min-max scaling (Pearson r >= 0.9999 per image on real MNIST, with a CNN trained for a
  few steps so that its maps mean something).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchlab.data import data_root
from benchlab.plugins import default_registry
from benchlab.testing import tiny_cnn
from benchlab_plugins.fgsm import FGSMParams, IFGSMParams, fgsm, ifgsm
from benchlab_plugins.gradcam import GradCAMParams, gradcam, normalize_maps

torchattacks = pytest.importorskip("torchattacks")
captum_attr = pytest.importorskip("captum.attr")

EPS = (0.05, 0.1, 0.3)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):  # tests/conftest.py
    yield


def _batch(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_fgsm_equals_torchattacks_fgsm_at_batch_64():
    model = tiny_cnn()
    images, labels = _batch()
    ours = fgsm(model, images, labels, EPS, FGSMParams(batch_size=64))
    for i, eps in enumerate(EPS):
        theirs = torchattacks.FGSM(model, eps=eps)(images, labels)
        assert torch.equal(ours[i], theirs), eps


def test_ifgsm_equals_torchattacks_bim_with_alpha_eps_over_steps():
    model = tiny_cnn()
    images, labels = _batch()
    steps = 10
    ours = ifgsm(model, images, labels, EPS, IFGSMParams(steps=steps, batch_size=64))
    for i, eps in enumerate(EPS):
        theirs = torchattacks.BIM(model, eps=eps, alpha=eps / steps, steps=steps)(images, labels)
        assert (ours[i] - theirs).abs().max() <= 1e-6, eps


def _trained_cnn_bn_on_mnist(steps: int = 20) -> tuple[torch.nn.Module, torch.Tensor]:
    registry = default_registry()
    mnist = registry.get("dataset", "mnist").obj
    train = mnist.load("train", data_root()).head(steps * 64)
    test = mnist.load("test", data_root()).head(64)
    component = registry.get("model", "cnn_bn")
    torch.manual_seed(0)
    model = component.obj(mnist.info, component.validate_params({}))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for start in range(0, len(train), 64):
        x = train.images[start:start + 64].float() / 255
        loss = F.cross_entropy(model(x), train.labels[start:start + 64])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), test.floats()


@pytest.mark.slow
def test_gradcam_equals_captum_layer_gradcam_on_real_mnist():
    model, images = _trained_cnn_bn_on_mnist()
    ours = gradcam(model, images, GradCAMParams(layer="bn2"))
    with torch.no_grad():
        target = model(images).argmax(dim=1)
    layer_cam = captum_attr.LayerGradCam(model, model.bn2)
    cam = layer_cam.attribute(images.clone().requires_grad_(True), target=target).relu()
    upsampled = captum_attr.LayerAttribution.interpolate(cam, (28, 28), "bilinear")
    theirs = normalize_maps(upsampled.squeeze(1).detach())

    flat_a, flat_b = ours.flatten(1), theirs.flatten(1)
    varying = (flat_a.std(dim=1) > 0) & (flat_b.std(dim=1) > 0)
    assert varying.sum() >= 48  # most maps have structure to compare
    a = flat_a[varying] - flat_a[varying].mean(dim=1, keepdim=True)
    b = flat_b[varying] - flat_b[varying].mean(dim=1, keepdim=True)
    r = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))
    assert r.min() >= 0.9999, r.min()
    assert torch.equal(flat_a[~varying], flat_b[~varying])  # constant maps: zeros in both


def test_ifgsm_equals_bim_on_a_trained_model_given_the_same_step():
    """On a trained model, pixel for pixel, when both take the same float32 step: by
    default ifgsm's α is float32(ε) / steps (0.030000001 for ε = 0.3 and 10 steps), one
    ulp above BIM's float32(0.3 / 10), and an ulp is enough to move an image now and then
    (1 of 200 here, by up to 0.18)."""
    model, _ = _trained_cnn_bn_on_mnist()
    mnist = default_registry().get("dataset", "mnist").obj
    test = mnist.load("test", data_root()).head(200)
    images, labels = test.floats(), test.labels
    eps, steps = 0.3, 10
    theirs = torchattacks.BIM(model, eps=eps, alpha=eps / steps, steps=steps)(images, labels)
    same_step = ifgsm(model, images, labels, (eps,),
                      IFGSMParams(steps=steps, alpha=eps / steps, batch_size=200))[0]
    assert torch.equal(same_step, theirs)
    assert (torch.tensor(eps) / steps).item() != torch.tensor(eps / steps).item()

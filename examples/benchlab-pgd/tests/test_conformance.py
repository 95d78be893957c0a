"""benchlab's conformance checks, plus tests of what is specific to PGD.

Run after installing the package (``pip install -e .``): the checks find ``pgd``
through its entry point, exactly as benchlab will.
"""

import torch
import torch.nn.functional as F
from benchlab.testing import parametrize_with_checks, synthetic_batch, tiny_cnn

from benchlab_pgd import PGDParams, pgd


# Without a random start PGD is deterministic, so the batch-splitting check runs too.
@parametrize_with_checks(["pgd", ("pgd", {"random_start": False})])
def test_conformance(component, check):
    check(component)


def test_one_full_step_without_random_start_is_fgsm():
    model = tiny_cnn()
    images, labels = synthetic_batch()
    images_leaf = images.clone().requires_grad_(True)
    loss = F.cross_entropy(model(images_leaf), labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, images_leaf)
    expected = (images + 0.1 * grad.sign()).clamp(0, 1)

    params = PGDParams(steps=1, alpha=0.1, random_start=False)
    adv = pgd(model, images, labels, [0.1], params)

    torch.testing.assert_close(adv[0], expected, rtol=0, atol=1e-6)


def test_seed_param_fixes_the_start_whatever_the_global_seed():
    model = tiny_cnn()
    images, labels = synthetic_batch()
    params = PGDParams(steps=2, seed=7)
    torch.manual_seed(1)
    first = pgd(model, images, labels, [0.1], params)
    torch.manual_seed(2)
    second = pgd(model, images, labels, [0.1], params)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_batch_size_does_not_change_the_result():
    model = tiny_cnn()
    images, labels = synthetic_batch()
    torch.manual_seed(0)
    whole = pgd(model, images, labels, [0.1, 0.3], PGDParams(steps=3))
    torch.manual_seed(0)
    chunked = pgd(model, images, labels, [0.1, 0.3], PGDParams(steps=3, batch_size=3))
    torch.testing.assert_close(whole, chunked, rtol=0, atol=1e-6)


def test_the_loss_grows_with_eps_and_with_steps():
    model = tiny_cnn()
    images, labels = synthetic_batch(64)

    def loss(x):
        return F.cross_entropy(model(x), labels).item()

    torch.manual_seed(0)
    one_step = pgd(model, images, labels, [0.05, 0.1], PGDParams(steps=1))
    torch.manual_seed(0)
    many_steps = pgd(model, images, labels, [0.05, 0.1], PGDParams(steps=20))
    assert loss(images) < loss(one_step[0]) < loss(one_step[1])
    assert loss(one_step[0]) <= loss(many_steps[0])
    assert loss(one_step[1]) <= loss(many_steps[1])

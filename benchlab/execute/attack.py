"""The attack job: one attack at its list of epsilons on one trained model -> rows, and the
adversarial images the explain jobs will read."""

from __future__ import annotations

import time
from typing import Any

import torch

from benchlab import inference, metrics, threat
from benchlab.execute.rows import row
from benchlab.execute.workspace import JobResult, StateDict, Workspace, blame, predict, seeded
from benchlab.jobs import Job


def attack(job: Job, ws: Workspace, state: StateDict, keep: int = 0) -> JobResult:
    """Attack the trained model ``state`` at every eps of ``job``.

    The product holds the first ``keep`` adversarial images per eps (what explain
    jobs read), or is None when ``keep`` is 0.
    """
    assert job.attack is not None
    started_job = time.perf_counter()
    component = ws.registry.get("attack", job.attack.name)
    params = component.params.model_validate(job.attack.params)
    split = ws.split(job.dataset, "test", job.evaluation.test_size)
    images, labels = split.floats(ws.device), split.labels.to(ws.device)
    batch = job.evaluation.batch_size
    model = ws.trained_model(job, state, images[:batch])
    # predictions at the device's fastest batch, unless the model's depend on the batch
    batch = inference.batch_size("auto", model, ws.device, fallback=batch)
    clean_pred, _ = predict(model, images, batch)
    eps = list(job.eps)

    started = time.perf_counter()
    with blame("attack", job.attack.key, component), seeded(job.seed, ws.device):
        output = threat.attack(component, model, images, labels, eps, params)
    seconds = time.perf_counter() - started
    adversarial = output.adversarial

    # A targeted attack says which classes it aimed at, so success means reaching them.
    aimed_at = component.extra.get("targets")
    targets = aimed_at(model, images, labels, params) if aimed_at is not None else None
    # Each share comes with the number of images it is taken over (``<metric>.n``).
    eligible = metrics.attackable(clean_pred, labels, targets)
    rows = [row(job, "accuracy", metrics.accuracy(clean_pred, labels), attack=job.attack.key,
                eps=0.0),
            row(job, "accuracy.n", float(len(labels)), attack=job.attack.key, eps=0.0)]
    for i, e in enumerate(eps):
        adv_pred, _ = predict(model, adversarial[i], batch)
        where = dict(attack=job.attack.key, eps=e)
        rows += [
            row(job, "accuracy", metrics.accuracy(adv_pred, labels), **where),
            row(job, "accuracy.n", float(len(labels)), **where),
            row(job, "success_rate",
                metrics.attack_success_rate(clean_pred, adv_pred, labels, targets), **where),
            row(job, "success_rate.n", float(eligible.sum()), **where),
            *norm_rows(job, images, adversarial[i], output.threat.minimum_norm,
                       (clean_pred == labels) & (adv_pred != labels), where),
        ]
    # A minimum-norm attack makes one batch, not one per eps.
    made = len(labels) * (1 if output.threat.minimum_norm else len(eps))
    rows += [
        row(job, "attack_time_s", seconds, attack=job.attack.key),
        row(job, "images_per_s", made / max(seconds, 1e-9), attack=job.attack.key),
        *threat_rows(job, output, clean_pred, labels, model, batch),
    ]
    product = None
    if keep:
        # clone: a slice would carry (and save) the whole underlying storage
        product = {"eps": torch.tensor(eps), "adversarial": adversarial[:, :keep].cpu().clone()}
    if output.norms is not None:
        product = {**(product or {}), "norms": output.norms.cpu()}
    return JobResult(job.id, rows, product, seconds=time.perf_counter() - started_job,
                     where=ws.where())


def norm_rows(job: Job, images: torch.Tensor, adversarial: torch.Tensor, minimum_norm: bool,
              broken: torch.Tensor, where: dict[str, Any]) -> list[dict[str, Any]]:
    """Mean L∞ and L2 of the perturbations at one ε, each with the number of images it
    is taken over (``linf.n``, ``l2.n``): every image for an attack bounded by a ball;
    for a minimum-norm attack only the images it broke within ε (the others are
    their clean images at this ε, and would count as 0), NaN when there are none."""
    if minimum_norm:
        images, adversarial = images[broken], adversarial[broken]
    n = float(len(images))
    if not len(images):
        linf = l2 = float("nan")
    else:
        linf, l2 = (float(v) for v in metrics.mean_perturbation_norms(images, adversarial))
    return [row(job, "linf", linf, **where), row(job, "linf.n", n, **where),
            row(job, "l2", l2, **where), row(job, "l2.n", n, **where)]


def threat_rows(job: Job, output: threat.AttackOutput, clean_pred: torch.Tensor,
                labels: torch.Tensor, model: torch.nn.Module, batch: int
                ) -> list[dict[str, Any]]:
    """What the attack bounds (``norm_p``: p of its norm, inf for L∞;
    ``minimum_norm``: 1 or 0) and, for a minimum-norm attack, the perturbations it
    found: ``found_rate`` (share of the correctly classified images it got past,
    with ``attacked`` of them), ``median_norm`` of those successful
    perturbations (NaN when there are none) and ``not_flipped``: the correctly
    classified images it returned changed whose prediction did not change, of
    ``not_flipped.n`` returned changed."""
    assert job.attack is not None
    where = dict(attack=job.attack.key)
    p = {"linf": float("inf"), "l2": 2.0, "l1": 1.0, "l0": 0.0}[output.threat.norm]
    rows = [row(job, "norm_p", p, **where),
            row(job, "minimum_norm", float(output.threat.minimum_norm), **where)]
    if output.norms is None:
        return rows
    # The widest batch holds every adversarial the attack found within the suite's
    # largest eps; the norms say which of all found ones succeeded.
    # benchlab decides success itself: an image is broken only where the model's
    # prediction on the returned image differs from its label.
    found, _ = predict(model, output.found, batch)
    correct = clean_pred == labels
    success = correct & (found != labels)
    changed = output.norms > 1e-5  # returned changed: the attack reports it found one
    norms = output.norms[success]
    median = norms.median().item() if norms.numel() else float("nan")
    rows += [row(job, "attacked", float(correct.sum()), **where),
             row(job, "found_rate", float(success.sum()) / max(int(correct.sum()), 1)
                 if int(correct.sum()) else float("nan"), **where),
             row(job, "median_norm", median, **where),
             # returned changed, yet the model still predicts the label
             row(job, "not_flipped", float((correct & changed & ~success).sum()), **where),
             row(job, "not_flipped.n", float((correct & changed).sum()), **where)]
    return rows

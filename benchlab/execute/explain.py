"""The explain job: one explainer on the clean and the attacked images of one attack job ->
rows, and the data of its grid figure."""

from __future__ import annotations

import time
from typing import Any

import torch

from benchlab import attention, guards
from benchlab.execute.rows import row
from benchlab.execute.workspace import JobResult, StateDict, Workspace, blame, predict, seeded
from benchlab.jobs import Job


def explain(job: Job, ws: Workspace, state: StateDict,
            adversarial: dict[str, torch.Tensor] | None = None) -> JobResult:
    """Explain clean images and, for a job with an attack, the attack's ``adversarial``."""
    assert job.explainer is not None
    started_job = time.perf_counter()
    component = ws.registry.get("explainer", job.explainer.name)
    params = component.params.model_validate(job.explainer.params)
    size = job.evaluation.explain_size
    split = ws.split(job.dataset, "test", size)
    images, labels = split.floats(ws.device), split.labels.to(ws.device)
    model = ws.trained_model(job, state, images[: job.evaluation.batch_size])
    eps: list[float] = [0.0]
    batches = [images]
    if job.attack is not None:
        if adversarial is None:
            raise guards.ComponentError(f"explain job {job.id}: no adversarial images given")
        # The job's own values: the product's float32 copy would write 0.10000000149
        # where the attack's rows say 0.1.
        at = _batches_of(job, adversarial["eps"])
        eps += [float(e) for e in job.eps]
        batches += list(adversarial["adversarial"][at, : len(labels)].to(ws.device))

    batch_size = job.evaluation.batch_size

    def run(net: torch.nn.Module, batch: torch.Tensor, p: Any = params) -> torch.Tensor:
        return component.obj(net, batch, p)

    where = dict(attack=job.attack.key if job.attack else None, explainer=job.explainer.key)
    offered = component.extra.get("layer_choices")
    used_of = component.extra.get("explained_layer")
    at_layers: dict[str, list[torch.Tensor]] = {}
    # Only the explainer's own calls are blamed on it; a failure in the metrics
    # below is benchlab's own (an internal error).
    with blame("explainer", job.explainer.key, component), seeded(job.seed, ws.device):
        explained = attention.explain_all(model, run, batches, eps, batch_size,
                                          check=guards.check_explanation)
        randomised = attention.randomised_maps_of(model, run, images, job.seed)
        guards.check_explanation(images, randomised)
        used = None
        if offered is not None and used_of is not None and "layer" in type(params).model_fields:
            used = used_of(model, params)
            for layer in offered(model, images[:2]):
                at = params.model_copy(update={"layer": layer})
                at_layers[layer] = [run(model, batch, at) for batch in batches]
    measured = attention.measure(model, images, batches, explained,
                                 klass=getattr(params, "klass", None), seed=job.seed,
                                 batch_size=batch_size, randomised_maps=randomised)
    if used is not None:
        measured += attention.layer_rows(list(at_layers), used, at_layers.__getitem__, eps)
    maps = explained.maps
    rows = [row(job, m.metric, m.value, eps=m.eps, **where) for m in measured]
    rows.append(row(job, "explain_images_per_s",
                    len(labels) * len(batches) / max(explained.seconds, 1e-9), **where))

    from benchlab.report.grid import pick_distinct_digits

    picks = pick_distinct_digits(labels.cpu(), job.evaluation.count).to(ws.device)
    grid_images = torch.stack([b[picks, 0] for b in batches]).cpu()
    grid_maps = torch.stack([m[picks] for m in maps]).cpu()
    preds, confs = zip(*(predict(model, b[picks], len(picks)) for b in batches))
    grid = {"eps": torch.tensor(eps), "images": grid_images, "maps": grid_maps,
            "preds": torch.stack(preds).cpu(), "confidences": torch.stack(confs).cpu(),
            "labels": labels[picks].cpu()}
    return JobResult(job.id, rows, grid, seconds=time.perf_counter() - started_job,
                     where=ws.where())


def _batches_of(job: Job, attacked: torch.Tensor) -> list[int]:
    """Which of the attack's batches (one per ε it ran, float32) are the job's ε: all of
    them, or those its explainer's ``only.eps`` kept."""
    ran = [float(e) for e in attacked]
    at = []
    for e in job.eps:
        found = [i for i, r in enumerate(ran) if abs(r - e) <= 1e-6 * max(1.0, e)]
        if not found:
            raise guards.ComponentError(f"explain job {job.id}: no adversarial batch at eps "
                                        f"{e:g} (the attack ran "
                                        f"{', '.join(f'{r:g}' for r in ran)})")
        at.append(found[0])
    return at

"""The hooks a benchlab plugin may implement.

Every hook receives a ``register`` callback. Call it once per component::

    @benchlab.hookimpl
    def register_attacks(register):
        register("fgsm", fgsm, params=FGSMParams)

The host checks each entry as it is registered and records which plugin
(distribution name and version) provided it.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("benchlab")


@hookspec
def register_datasets(register):
    """Register datasets: ``register(name, dataset, params=None)``.

    ``dataset`` is a :class:`benchlab.components.Dataset`.
    """


@hookspec
def register_models(register):
    """Register models: ``register(name, build, params=Params)``.

    ``build(info: DatasetInfo, params) -> torch.nn.Module`` returns a module that
    takes images in [0, 1] of shape (N, C, H, W) and returns logits (N, classes).
    """


@hookspec
def register_attacks(register):
    """Register attacks: ``register(name, attack, params=Params)``.

    ``attack(model, images, labels, eps, params) -> Tensor`` of shape
    (len(eps), *images.shape): one adversarial batch per epsilon.
    """


@hookspec
def register_explainers(register):
    """Register explainers: ``register(name, explain, params=Params)``.

    ``explain(model, images, params) -> Tensor`` of shape (N, H, W) in [0, 1].
    """


@hookspec
def register_procedures(register):
    """Register training procedures: ``register(name, procedure, params=Params)``.

    ``procedure(model, images, labels, generator, params) -> (loss, logits)``: the
    loss of one optimisation step on a batch of images in [0, 1] (float) and their
    labels, and the logits of the batch the loss was computed on (for the training
    accuracy). ``generator`` is the run's seeded generator, on the model's device:
    every random draw of the procedure comes from it. The trainer calls the
    procedure under the run's autocast, then backpropagates the loss and steps the
    optimiser; the procedure must not touch the optimiser. A procedure with a
    keyword parameter ``progress`` is also given the fraction of the run's
    optimisation steps done before this one (0 at the first step), for a schedule
    such as an ε warm-up.
    """


@hookspec
def register_sinks(register):
    """Register result sinks (experiment trackers): ``register(name, open, params=Params)``.

    ``open(params, state) -> Sink`` opens the sink for one run (``benchlab run
    --track NAME``); the sink's ``start``, ``record`` and ``end`` are then called as
    the run starts, as each job is recorded and as it ends. ``state`` keeps what
    the sink needs to reattach on ``--resume``. See :mod:`benchlab.sinks`.
    """

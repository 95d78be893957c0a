"""Training procedures: the built-ins' defaults and checks, the suite key, the model cache
key, training with a procedure alone and in packs, and cnn_bn's bn_eval."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from benchlab import identity, training
from benchlab.components import DatasetSplit
from benchlab.execute.train import bind_procedure, step_loss
from benchlab.execute.workspace import Workspace
from benchlab.jobs import expand
from benchlab.plugins import default_registry
from benchlab.suite import SuiteError, validate_suite
from benchlab.testing import parametrize_with_checks, tiny_cnn
from benchlab_plugins.adversarial_training import (
    FGSMATParams,
    PGDATParams,
    TRADESParams,
    fgsm_perturb,
    pgd_perturb,
)
from benchlab_plugins.cnn import BatchStatisticsNorm, CNNBNParams, build_cnn_bn

# The key of SUITE's model with the code digest held fixed, computed with the code
# before training procedures existed: naming no procedure, or the standard one,
# must keep it.
KEY_BEFORE_PROCEDURES = "fb6178a665dadbe29c4c234f"
MNIST_INFO = default_registry().get("dataset", "mnist").obj.info
SUITE = {"name": "pin", "dataset": {"name": "mnist", "train_size": 100, "test_size": 50},
         "models": [{"name": "cnn_bn"}], "train": {"epochs": 1}}


def _suite(**train):
    return {**SUITE, "train": {**SUITE["train"], **train}}


def _key(data, monkeypatch) -> str:
    registry = default_registry()
    job = expand(validate_suite(data, registry))[0]
    monkeypatch.setattr(identity, "weights_code", lambda *a, **k: {"fixed": 1})
    return identity.model_key(identity.model_identity(job, registry))


def test_defaults_are_the_papers_mnist_settings():
    fgsm = FGSMATParams()
    assert (fgsm.eps, fgsm.step_size, fgsm.craft_mode) == (0.3, pytest.approx(0.375), "train")
    assert FGSMATParams(alpha=0.1).step_size == 0.1
    pgd = PGDATParams()
    assert (pgd.eps, pgd.steps, pgd.alpha, pgd.random_start) == (0.3, 40, 0.01, True)
    trades = TRADESParams()
    assert (trades.eps, trades.steps, trades.alpha, trades.beta, trades.craft_mode) == \
        (0.3, 40, 0.01, 1.0, "eval")


@parametrize_with_checks(["standard", "fgsm_at", ("pgd_at", {"steps": 3}),
                          ("trades", {"steps": 3})])
def test_built_in_procedures_conform(component, check):
    check(component)


def test_the_standard_step_keeps_todays_cache_key(monkeypatch):
    assert _key(SUITE, monkeypatch) == KEY_BEFORE_PROCEDURES
    assert _key(_suite(procedure={"name": "standard"}), monkeypatch) == KEY_BEFORE_PROCEDURES


def test_an_adversarial_procedure_and_its_parameters_change_the_key(monkeypatch):
    keys = {_key(_suite(procedure=p), monkeypatch) for p in (
        {"name": "fgsm_at"}, {"name": "fgsm_at", "eps": 0.1}, {"name": "pgd_at"})}
    assert len(keys) == 3 and KEY_BEFORE_PROCEDURES not in keys


def test_the_procedures_code_is_part_of_the_key():
    registry = default_registry()
    model, dataset = registry.get("model", "cnn_bn"), registry.get("dataset", "mnist")
    plain = identity.weights_code(model, dataset)
    adversarial = identity.weights_code(model, dataset, registry.get("procedure", "fgsm_at"))
    assert adversarial["modules"] > plain["modules"]
    assert adversarial["sources"] != plain["sources"]


@pytest.mark.parametrize(("procedure", "message"), [
    ({"name": "fgsm_att"}, "train.procedure.name: unknown procedure 'fgsm_att'; "
                           "did you mean 'fgsm_at'?"),
    ({"name": "fgsm_at", "eps": 3}, "train.procedure.eps: expected a value <= 1"),
    ({"name": "pgd_at", "stpes": 3}, "train.procedure.stpes: unknown key 'stpes'; "
                                     "did you mean 'steps'?"),
])
def test_a_bad_procedure_is_one_line_naming_the_key(procedure, message):
    with pytest.raises(SuiteError) as raised:
        validate_suite(_suite(procedure=procedure), default_registry())
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def _split(n: int, seed: int) -> DatasetSplit:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 16, 16), generator=generator, dtype=torch.uint8)
    return DatasetSplit(images, torch.randint(0, 10, (n,), generator=generator))


def _train(procedure, seeds=(1,), pack=1):
    config = training.TrainConfig(epochs=1, batch_size=16)
    return training.train_runs(lambda: tiny_cnn(), _split(48, 0), _split(16, 1), config,
                               list(seeds), pack=pack, threads=1, procedure=procedure)


def _procedure(data):
    job = expand(validate_suite(data, default_registry()))[0]
    return step_loss(job, Workspace(default_registry(), torch.device("cpu"), Path("unused")))


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_standard_procedure_trains_the_same_weights():
    assert _procedure(SUITE) is None
    named = _procedure(_suite(procedure={"name": "standard"}))
    assert _same(_train(None)[0].state_dict, _train(named)[0].state_dict)


def test_adversarial_runs_are_reproducible_alone_and_in_a_pack():
    fgsm = _procedure(_suite(procedure={"name": "fgsm_at", "eps": 0.3}))
    alone = _train(fgsm, seeds=(1, 2), pack=1)
    packed = _train(fgsm, seeds=(1, 2), pack=2)
    assert all(_same(a.state_dict, b.state_dict) for a, b in zip(alone, packed))
    assert not _same(alone[0].state_dict, _train(None)[0].state_dict)


def test_crafting_under_bf16_autocast_stays_in_the_ball():
    model = tiny_cnn().train()
    images = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        crafted = fgsm_perturb(model, images, labels, torch.Generator().manual_seed(0),
                               FGSMATParams(eps=0.1))
    assert crafted.dtype == torch.float32
    assert (crafted - images).abs().max() <= 0.1 + 1e-6


# -- the ε warm-up ------------------------------------------------------------------------

@pytest.mark.parametrize(("perturb", "params"), [
    (fgsm_perturb, FGSMATParams(eps=0.3, eps_warmup=0.5)),
    (pgd_perturb, PGDATParams(eps=0.3, eps_warmup=0.5, steps=5, alpha=0.1)),
], ids=["fgsm_at", "pgd_at"])
def test_a_warmup_grows_the_radius_linearly_then_holds_it(perturb, params):
    model = tiny_cnn().train()
    images = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.4 + 0.3
    labels = torch.arange(8) % 10

    def reach(progress):
        crafted = perturb(model, images, labels, torch.Generator().manual_seed(1), params,
                          progress)
        return (crafted - images).abs().max().item()

    assert reach(0.0) == 0.0  # the first step trains on the clean batch
    assert reach(0.25) == pytest.approx(0.15, abs=1e-6)  # half way up: half the radius
    assert reach(0.5) == pytest.approx(0.3, abs=1e-6)
    assert reach(0.9) == pytest.approx(0.3, abs=1e-6)
    assert reach(1.0) == reach(0.9)  # called without progress: the full radius


def test_no_warmup_keeps_the_parameters_and_the_cache_key(monkeypatch):
    assert "eps_warmup" not in FGSMATParams().model_dump(mode="json")
    assert FGSMATParams(eps_warmup=0.2).model_dump(mode="json")["eps_warmup"] == 0.2
    plain = _key(_suite(procedure={"name": "fgsm_at"}), monkeypatch)
    assert _key(_suite(procedure={"name": "fgsm_at", "eps_warmup": 0}), monkeypatch) == plain
    assert _key(_suite(procedure={"name": "fgsm_at", "eps_warmup": 0.2}), monkeypatch) != plain


def test_the_trainer_tells_a_procedure_the_fraction_of_steps_done():
    seen = []

    def recorder(model, images, labels, generator, params, progress):
        seen.append(progress)
        logits = model(images)
        return F.cross_entropy(logits, labels), logits

    def no_schedule(model, images, labels, generator, params):
        logits = model(images)
        return F.cross_entropy(logits, labels), logits

    config = training.TrainConfig(epochs=2, batch_size=16)
    for procedure in (recorder, no_schedule):  # a procedure without the keyword: not given it
        bound = bind_procedure(type("Component", (), {"obj": staticmethod(procedure)}), None)
        training.train_runs(lambda: tiny_cnn(), _split(48, 0), _split(16, 1), config, [1],
                            threads=1, procedure=bound)
    assert seen == pytest.approx([step / 6 for step in range(6)])  # 3 steps an epoch


def test_a_warmup_run_trains_differently_and_reproducibly():
    warm = _procedure(_suite(procedure={"name": "fgsm_at", "eps": 0.3, "eps_warmup": 0.5}))
    cold = _procedure(_suite(procedure={"name": "fgsm_at", "eps": 0.3}))
    first, again = _train(warm), _train(warm)
    assert _same(first[0].state_dict, again[0].state_dict)
    assert not _same(first[0].state_dict, _train(cold)[0].state_dict)


# -- cnn_bn's bn_eval --------------------------------------------------------------------

def test_default_bn_eval_keeps_todays_model_and_parameters():
    model = build_cnn_bn(MNIST_INFO, CNNBNParams())
    assert type(model.bn1) is torch.nn.BatchNorm2d and type(model.bn2) is torch.nn.BatchNorm2d
    assert CNNBNParams().model_dump(mode="json") == {"dropout1": 0.25, "dropout2": 0.5}
    assert CNNBNParams(bn_eval="batch").model_dump(mode="json")["bn_eval"] == "batch"


def test_batch_statistics_in_eval_mode_leave_running_estimates_alone():
    torch.manual_seed(0)
    model = build_cnn_bn(MNIST_INFO, CNNBNParams(bn_eval="batch"))
    assert isinstance(model.bn1, BatchStatisticsNorm)
    with torch.no_grad():
        model.bn1.running_mean.uniform_(-1, 1)
        model.bn1.running_var.uniform_(0.5, 2)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    x = torch.randn(6, 32, 26, 26)
    model.eval()
    with torch.no_grad():
        out = model.bn1(x)
        model(torch.rand(6, 1, 28, 28))
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    weight, bias = model.bn1.weight.view(1, -1, 1, 1), model.bn1.bias.view(1, -1, 1, 1)
    manual = (x - mean) / torch.sqrt(var + model.bn1.eps) * weight + bias
    torch.testing.assert_close(out, manual, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    running = F.batch_norm(x, model.bn1.running_mean, model.bn1.running_var,
                           model.bn1.weight, model.bn1.bias, False, 0.0, model.bn1.eps)
    assert not torch.allclose(out, running)


def test_bn_eval_batch_is_a_suite_entry_with_its_own_key(monkeypatch):
    data = {**SUITE, "models": [{"name": "cnn_bn"},
                                {"name": "cnn_bn", "label": "cnn_bn_batch", "bn_eval": "batch"}]}
    registry = default_registry()
    jobs = [j for j in expand(validate_suite(data, registry)) if j.kind == "train"]
    monkeypatch.setattr(identity, "weights_code", lambda *a, **k: {"fixed": 1})
    keys = [identity.model_key(identity.model_identity(j, registry)) for j in jobs]
    assert keys[0] == KEY_BEFORE_PROCEDURES and keys[1] != keys[0]


def test_a_model_entry_trains_with_its_own_procedure(monkeypatch):
    data = {**_suite(procedure={"name": "pgd_at", "steps": 5}),
            "models": [{"name": "cnn_bn"},
                       {"name": "cnn_bn", "label": "cnn_bn-fast",
                        "procedure": {"name": "fgsm_at", "eps": 0.1}},
                       {"name": "cnn_bn", "label": "cnn_bn-standard",
                        "procedure": {"name": "standard"}}]}
    registry = default_registry()
    suite = validate_suite(data, registry)
    jobs = [j for j in expand(suite) if j.kind == "train"]
    assert [(j.procedure.name, j.procedure.params.get("eps")) for j in jobs] == [
        ("pgd_at", 0.3), ("fgsm_at", 0.1), ("standard", None)]
    assert len({j.pack_key() for j in jobs}) == 3  # never trained in one pack
    monkeypatch.setattr(identity, "weights_code", lambda *a, **k: {"fixed": 1})
    keys = [identity.model_key(identity.model_identity(j, registry)) for j in jobs]
    assert keys[2] == KEY_BEFORE_PROCEDURES and len(set(keys)) == 3
    # the run directory's suite.yaml says each entry's procedure with its defaults
    written = yaml.safe_load(suite.to_yaml())
    assert "procedure" not in written["models"][0]
    assert written["models"][1]["procedure"] == {"name": "fgsm_at", "label": None, "eps": 0.1,
                                                 "alpha": None, "craft_mode": "train"}


def test_a_bad_procedure_of_a_model_entry_is_one_line_naming_the_key():
    data = {**SUITE, "models": [{"name": "cnn"}, {"name": "cnn_bn", "procedure": {
        "name": "fgsm_at", "eps": 3}}]}
    with pytest.raises(SuiteError) as raised:
        validate_suite(data, default_registry())
    assert "models.1.procedure.eps: expected a value <= 1" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_constant_lr_schedule_keeps_todays_key_and_cyclic_changes_it(monkeypatch):
    assert _key(_suite(lr_schedule="constant"), monkeypatch) == KEY_BEFORE_PROCEDURES
    assert _key(_suite(lr_schedule="cyclic"), monkeypatch) != KEY_BEFORE_PROCEDURES
    with pytest.raises(SuiteError, match="train.lr_schedule"):
        validate_suite(_suite(lr_schedule="onecycle"), default_registry())


def test_only_an_adversarial_run_with_a_curve_is_attacked_on_its_curve():
    from benchlab.execute.train import curve_eps

    ws = Workspace(default_registry(), torch.device("cpu"), Path("unused"))
    data = {**SUITE, "models": [{"name": "cnn"},
                                {"name": "cnn", "label": "at",
                                 "procedure": {"name": "fgsm_at", "eps": 0.2}}]}
    with_curve = [j for j in expand(validate_suite({**data, "train": {"epochs": 1,
                                                                      "eval_every": 10}},
                                                   default_registry())) if j.kind == "train"]
    assert [curve_eps(j, ws) for j in with_curve] == [None, 0.2]
    without = [j for j in expand(validate_suite(data, default_registry())) if j.kind == "train"]
    assert [curve_eps(j, ws) for j in without] == [None, None]

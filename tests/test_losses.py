"""Tests of the torchmetrics loss classes: gradients, accumulation, binding and composition."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable

import lightning as L
import pytest
import torch
from torch import nn
from torchmetrics import MeanSquaredError, Metric

import lightning_contloss.functional as CF
from lightning_contloss.losses import (
    ContinuousLoss,
    CosineLoss,
    EnergyLoss,
    InfoNCELoss,
    L2Loss,
    MaxMarginLoss,
    ReWELoss,
    SynMarginLoss,
    VMFLoss,
    bind_targets,
    decode_space_of,
    loss_names,
    make_loss,
)
from lightning_contloss.targets import TargetEmbeddings

IGNORE = -100
V, D = 40, 12


def _targets() -> TargetEmbeddings:
    return TargetEmbeddings.random(V, D, seed=0)


def _batch(seed: int, n: int = 10, pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(n, D, generator=g) * 2
    ids = torch.randint(V, (n,), generator=g)
    ids[:pad] = IGNORE
    return pred, ids


# Each case: the Metric, and the functional call it must agree with.
CASES: dict[
    str, tuple[Callable[[], ContinuousLoss], Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]]
] = {
    "cosine": (lambda: CosineLoss(ignore_index=IGNORE), lambda p, i, t: CF.cosine_loss(p, i, t, IGNORE)),
    "l2": (lambda: L2Loss(ignore_index=IGNORE), lambda p, i, t: CF.l2_loss(p, i, t, IGNORE)),
    "vmf": (
        lambda: VMFLoss(regularizer="default", kappa_min=0.0, lambda1=0.05, lambda2=0.5, ignore_index=IGNORE),
        lambda p, i, t: CF.vmf_nll(p, i, t, lambda1=0.05, lambda2=0.5, ignore_index=IGNORE),
    ),
    "vmf_defaults": (
        lambda: VMFLoss(ignore_index=IGNORE),
        lambda p, i, t: CF.vmf_nll(p, i, t, regularizer="kumar", kappa_min=1.0, ignore_index=IGNORE),
    ),
    "max_margin": (
        lambda: MaxMarginLoss(margin=1.0, chunk_size=7, ignore_index=IGNORE),
        lambda p, i, t: CF.max_margin_loss(p, i, t, margin=1.0, ignore_index=IGNORE),
    ),
    "max_margin_in_batch": (
        lambda: MaxMarginLoss(negatives="in_batch", ignore_index=IGNORE),
        lambda p, i, t: CF.max_margin_loss(p, i, t, negatives="in_batch", ignore_index=IGNORE),
    ),
    "info_nce": (
        # Both sides draw with a generator freshly seeded to 7 (see _seed_all), so same negatives.
        lambda: InfoNCELoss(temperature=0.2, num_negatives=16, ignore_index=IGNORE),
        lambda p, i, t: CF.info_nce_loss(
            p,
            i,
            t,
            temperature=0.2,
            num_negatives=16,
            ignore_index=IGNORE,
            generator=torch.Generator().manual_seed(7),
        ),
    ),
}


def _seed_all(metric: Metric) -> None:
    for m in metric.modules():
        if isinstance(m, (InfoNCELoss, MaxMarginLoss)):
            m.generator = torch.Generator().manual_seed(7)


@pytest.mark.parametrize("name", list(CASES))
def test_forward_is_the_functional_batch_loss_with_gradient(name: str) -> None:
    make, functional = CASES[name]
    targets = _targets()
    loss = make().bind(targets)
    _seed_all(loss)
    pred, ids = _batch(0, pad=3)
    pred.requires_grad_()
    got = loss(pred, ids)
    got.backward()
    grad = pred.grad.clone()

    pred.grad = None
    ref = functional(pred, ids, targets.weight)
    ref.backward()
    assert torch.allclose(got, ref, rtol=1e-6, atol=1e-7)
    assert got.requires_grad and torch.allclose(grad, pred.grad, rtol=1e-5, atol=1e-7)
    assert bool((grad[:3] == 0).all())  # padding


@pytest.mark.parametrize("name", list(CASES))
def test_compute_is_the_token_weighted_mean_over_batches(name: str) -> None:
    make, functional = CASES[name]
    targets = _targets()
    loss = make().bind(targets)
    batches = [_batch(1, n=10, pad=0), _batch(2, n=6, pad=4), _batch(3, n=8, pad=8), _batch(4, n=3, pad=1)]
    total, count = 0.0, 0
    for i, (pred, ids) in enumerate(batches):
        _seed_all(loss)
        if i % 2:
            loss.update(pred, ids)
        else:
            loss(pred, ids)
        per = functional(pred, ids, targets.weight)
        kept = int((ids != IGNORE).sum())
        total += float(per) * kept
        count += kept
    assert loss.count.item() == count
    assert torch.allclose(loss.compute(), torch.tensor(total / count), rtol=1e-5)
    assert not loss.loss_sum.requires_grad  # accumulated state holds no graph
    loss.reset()
    assert loss.count.item() == 0 and loss.loss_sum.item() == 0.0


def test_empty_epoch_computes_zero() -> None:
    loss = CosineLoss(_targets(), ignore_index=IGNORE)
    value = loss(torch.randn(4, D, requires_grad=True), torch.full((4,), IGNORE))
    assert value.item() == 0.0 and loss.compute().item() == 0.0


def test_metric_flags_and_reductions() -> None:
    from torchmetrics.utilities.data import dim_zero_sum  # what add_state(dist_reduce_fx="sum") stores

    for cls in (CosineLoss, L2Loss, MaxMarginLoss, VMFLoss, InfoNCELoss, ReWELoss):
        assert cls.is_differentiable is True
        assert cls.higher_is_better is False
        assert cls.full_state_update is False
        m = cls()
        assert set(m._defaults) == {"loss_sum", "count"}
        assert m._reductions["loss_sum"] is dim_zero_sum and m._reductions["count"] is dim_zero_sum


def test_decode_spaces() -> None:
    assert CosineLoss.decode_space == "cosine"
    assert L2Loss.decode_space == "l2"
    assert MaxMarginLoss.decode_space == "cosine"
    assert VMFLoss.decode_space == "cosine"
    assert InfoNCELoss.decode_space == "cosine"
    assert ReWELoss.decode_space == "cosine"


class _Owner(nn.Module):
    def __init__(self, targets: TargetEmbeddings) -> None:
        super().__init__()
        self.targets = targets
        self.loss = VMFLoss(targets)


def test_table_is_not_a_submodule_and_not_duplicated_in_state_dict() -> None:
    owner = _Owner(_targets())
    assert list(owner.loss.children()) == []
    keys = list(owner.state_dict())
    assert keys.count("targets.weight") == 1
    assert not any(k.startswith("loss.") and "weight" in k for k in keys)
    assert owner.loss.targets is owner.targets


def test_table_is_read_on_every_call() -> None:
    targets = _targets()
    loss = CosineLoss(targets)
    pred, ids = _batch(5)
    before = loss(pred, ids)
    targets.weight.neg_()
    after = loss(pred, ids)
    assert torch.allclose(before, 2 - after, rtol=1e-5)
    targets.double()
    assert loss(pred.double(), ids).dtype == torch.float64


def test_bind_later_and_errors() -> None:
    loss = L2Loss()
    pred, ids = _batch(6)
    with pytest.raises(RuntimeError, match=r"call \.bind\(targets\)"):
        loss(pred, ids)
    assert loss.count.item() == 0  # the failed call left no state behind
    with pytest.raises(ValueError, match="TargetEmbeddings or a"):
        loss.bind([[1.0, 2.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        loss.bind(torch.zeros(3))
    table = torch.randn(V, D)
    assert loss.bind(table) is loss
    assert torch.allclose(loss(pred, ids), CF.l2_loss(pred, ids, table))


def test_bad_input_leaves_state_untouched() -> None:
    loss = CosineLoss(_targets())
    pred, ids = _batch(7)
    loss.update(pred, ids)
    state = (loss.loss_sum.clone(), loss.count.clone())
    with pytest.raises(ValueError, match=r"valid ids are 0\.\.39"):
        loss.update(pred, ids + V)
    with pytest.raises(ValueError, match="pred has dim 5 but the target table has dim 12"):
        loss(torch.randn(3, 5), torch.tensor([1, 2, 3]))
    assert torch.equal(loss.loss_sum, state[0]) and torch.equal(loss.count, state[1])
    assert loss._enable_grad is False  # later updates must not record a graph
    loss.update(pred, ids)
    assert not loss.loss_sum.requires_grad and loss.count.item() == 2 * len(ids)


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="negatives must be one of"):
        MaxMarginLoss(negatives="hardest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_negatives must be a positive int"):
        MaxMarginLoss(negatives="sampled", num_negatives=0)
    with pytest.raises(ValueError, match="lambda2 must be in"):
        VMFLoss(lambda2=2.0)
    with pytest.raises(ValueError, match="pass regularizer='default' to use them"):
        VMFLoss(lambda1=0.05)  # the reference form's argument, under the default "kumar" form
    with pytest.raises(ValueError, match="temperature must be > 0"):
        InfoNCELoss(temperature=-1.0)
    with pytest.raises(ValueError, match="needs counts"):
        InfoNCELoss(sampler="unigram")
    with pytest.raises(ValueError, match="lam must be >= 0"):
        ReWELoss(lam=-1.0)
    with pytest.raises(ValueError, match="ignore_index must be an int"):
        CosineLoss(ignore_index=1.5)  # type: ignore[arg-type]


def test_composition_backpropagates_and_decodes_by_first_operand() -> None:
    targets = _targets()
    combo = bind_targets(VMFLoss(ignore_index=IGNORE) + 0.1 * CosineLoss(ignore_index=IGNORE), targets)
    assert decode_space_of(combo) == "cosine"
    pred, ids = _batch(8, pad=2)
    pred.requires_grad_()
    value = combo(pred, ids)
    value.backward()
    grad = pred.grad.clone()
    pred.grad = None
    vmf = CF.vmf_nll(pred, ids, targets.weight, ignore_index=IGNORE, regularizer="kumar", kappa_min=1.0)
    ref = vmf + 0.1 * CF.cosine_loss(pred, ids, targets.weight, ignore_index=IGNORE)
    ref.backward()
    assert torch.allclose(value, ref, rtol=1e-6)
    assert torch.allclose(grad, pred.grad, rtol=1e-5, atol=1e-7)
    # the composition accumulates too
    combo.update(*_batch(9))
    assert torch.isfinite(combo.compute())


def test_decode_space_of_and_bind_targets_errors() -> None:
    assert decode_space_of(L2Loss() + CosineLoss()) == "l2"
    assert decode_space_of(MeanSquaredError() + 0.5 * CosineLoss()) == "cosine"
    with pytest.raises(ValueError, match="not a continuous loss"):
        decode_space_of(MeanSquaredError())
    with pytest.raises(ValueError, match="contains no continuous loss"):
        bind_targets(MeanSquaredError(), _targets())


def test_special_ids_are_never_negatives() -> None:
    targets = TargetEmbeddings.random(V, D, seed=1, special_ids=[3, 4, 5])
    pred, ids = _batch(10)
    loss = MaxMarginLoss(targets, margin=2.0)
    ref = CF.max_margin_loss(pred, ids, targets.weight, margin=2.0, exclude=targets.special_mask)
    plain = CF.max_margin_loss(pred, ids, targets.weight, margin=2.0)
    assert torch.allclose(loss(pred, ids), ref)
    assert not torch.allclose(ref, plain)


def test_info_nce_unigram_counts_are_a_non_persistent_buffer() -> None:
    counts = torch.zeros(V)
    counts[:2] = 5.0
    loss = InfoNCELoss(_targets(), sampler="unigram", counts=counts, num_negatives=8)
    assert "counts" not in loss.state_dict()
    assert loss.double().counts is not None
    pred, ids = _batch(11)
    assert torch.isfinite(loss(pred, ids))


def test_info_nce_learned_temperature_matches_the_functional_loss_and_learns() -> None:
    pred, ids = _batch(13)
    fixed = InfoNCELoss(_targets(), temperature=0.2, num_negatives=8, generator=torch.Generator().manual_seed(5))
    learned = InfoNCELoss(
        _targets(), temperature=0.2, learn_temperature=True, num_negatives=8, generator=torch.Generator().manual_seed(5)
    )
    assert fixed.log_temperature is None and "log_temperature" not in fixed.state_dict()
    assert list(dict(learned.named_parameters())) == ["log_temperature"]
    value = learned(pred, ids)
    assert torch.allclose(value, fixed(pred, ids))  # same negatives, same τ at the start
    value.backward()
    assert learned.log_temperature is not None and learned.log_temperature.grad is not None
    # d loss / d log τ against a finite difference of the functional loss in τ.
    eps = 1e-3
    ref = [
        CF.info_nce_loss(
            pred,
            ids,
            _targets().weight,
            temperature=0.2 * float(torch.tensor(s * eps).exp()),
            num_negatives=8,
            generator=torch.Generator().manual_seed(5),
        )
        for s in (1, -1)
    ]
    assert learned.log_temperature.grad.item() == pytest.approx(float(ref[0] - ref[1]) / (2 * eps), rel=1e-3)
    # Plain SGD on τ alone moves it; it survives a state_dict round trip.
    opt = torch.optim.SGD(learned.parameters(), lr=0.5)
    before = learned.current_temperature
    for _ in range(3):
        opt.zero_grad()
        learned(pred, ids).backward()
        opt.step()
    assert learned.current_temperature != pytest.approx(before)
    again = InfoNCELoss(_targets(), temperature=0.2, learn_temperature=True, num_negatives=8)
    again.load_state_dict(learned.state_dict())
    assert again.current_temperature == pytest.approx(learned.current_temperature)


def test_info_nce_learned_temperature_floor_and_bad_input() -> None:
    loss = InfoNCELoss(_targets(), temperature=0.5, learn_temperature=True, num_negatives=8)
    assert loss.log_temperature is not None
    with torch.no_grad():
        loss.log_temperature.fill_(-20.0)
    assert loss.current_temperature == pytest.approx(0.01)  # the floor holds the logits bounded
    pred, ids = _batch(14)
    assert torch.isfinite(loss(pred, ids))
    with pytest.raises(ValueError, match="below the floor"):
        InfoNCELoss(_targets(), temperature=0.001, learn_temperature=True)
    with pytest.raises(ValueError, match="learn_temperature must be True or False"):
        InfoNCELoss(_targets(), learn_temperature="yes")  # type: ignore[arg-type]


def test_rewe_metric() -> None:
    targets = _targets()
    loss = ReWELoss(targets, lam=2.0, ignore_index=IGNORE)
    pred, ids = _batch(12, pad=2)
    logits = torch.randn(len(ids), V, requires_grad=True)
    value = loss(logits, pred, ids)
    value.backward()
    assert logits.grad is not None and bool((logits.grad[:2] == 0).all())
    assert torch.allclose(value, CF.rewe_loss(logits, pred, ids, targets.weight, lam=2.0, ignore_index=IGNORE))


def test_bf16_pred_returns_fp32() -> None:
    pred, ids = _batch(13)
    loss = VMFLoss(_targets())
    value = loss(pred.bfloat16(), ids)
    assert value.dtype == torch.float32 and loss.compute().dtype == torch.float32


def test_copy_and_pickle_keep_the_binding() -> None:
    owner = _Owner(_targets())
    clone = copy.deepcopy(owner)
    assert clone.loss.targets is clone.targets  # deepcopy keeps the sharing
    restored = pickle.loads(pickle.dumps(owner))
    assert restored.loss.targets is restored.targets
    pred, ids = _batch(14)
    assert torch.allclose(restored.loss(pred, ids), owner.loss(pred, ids))


class _TinyLM(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.targets = _targets()
        self.body = nn.Linear(8, D)
        self.loss = VMFLoss(self.targets, ignore_index=IGNORE) + 0.1 * CosineLoss(self.targets)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        value: torch.Tensor = self.loss(self.body(x), y)
        return value

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trains_inside_lightning() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=g), torch.randint(V, (64,), generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    model = _TinyLM()
    before = model.body.weight.detach().clone()
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    assert not torch.equal(before, model.body.weight)
    assert list(model.state_dict()).count("targets.weight") == 1


def test_torchmetrics_forward_path_also_backpropagates_and_keeps_state_on_error() -> None:
    # dist_sync_on_step hands forward to torchmetrics' own implementation.
    targets = _targets()
    loss = CosineLoss(targets, dist_sync_on_step=True)
    pred, ids = _batch(15)
    pred.requires_grad_()
    value = loss(pred, ids)
    value.backward()
    assert pred.grad is not None and torch.allclose(value, CF.cosine_loss(pred, ids, targets.weight))
    state = (loss.loss_sum.clone(), loss.count.clone())
    with pytest.raises(ValueError, match="valid ids"):
        loss(pred, ids + V)
    assert torch.equal(loss.loss_sum, state[0]) and torch.equal(loss.count, state[1])
    assert loss._enable_grad is False
    loss.update(pred, ids)
    assert not loss.loss_sum.requires_grad and loss.count.item() == 2 * len(ids)


def test_forward_sets_torchmetrics_bookkeeping() -> None:
    loss = L2Loss(_targets())
    assert not loss.update_called
    value = loss(*_batch(16))
    # The cache holds the batch value without its graph (a graph there stops copy.deepcopy).
    assert loss.update_called and torch.equal(loss._forward_cache, value) and not loss._forward_cache.requires_grad
    assert torch.allclose(loss.compute(), value)


# ---------------------------------------------------------------------- the registry of loss names
def test_registry_names_every_command_line_loss_and_builds_it() -> None:
    from lightning_contloss.losses import loss_names, loss_options, make_loss

    expected = {
        "cosine": CosineLoss,
        "l2": L2Loss,
        "maxmargin": MaxMarginLoss,
        "vmf": VMFLoss,
        "infonce": InfoNCELoss,
        "synmargin": SynMarginLoss,
        "energy": EnergyLoss,
    }
    assert set(loss_names()) == set(expected)
    options = {"margin": 0.3, "regularizer": "default", "lambda1": 0.05, "temperature": 0.2, "num_negatives": 8}
    for name, cls in expected.items():
        own = {key: value for key, value in options.items() if key in loss_options(name)}
        loss = make_loss(name, ignore_index=IGNORE, **own)
        assert type(loss) is cls and loss.ignore_index == IGNORE
        assert all(getattr(loss, key) == value for key, value in own.items())
    # The name fixes nothing: its default, the informative negative, is the one that learns.
    assert make_loss("maxmargin").negatives == "informative" == MaxMarginLoss().negatives
    assert make_loss("maxmargin", negatives="sampled").negatives == "sampled"
    assert make_loss("vmf", regularizer="default", lambda1=0.05).lambda1 == 0.05
    assert (make_loss("vmf").regularizer, make_loss("vmf").kappa_min) == ("kumar", 1.0)  # the defaults that learn
    with pytest.raises(ValueError, match="unknown loss 'hinge'; choose one of cosine"):
        make_loss("hinge")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        make_loss("infonce", temperature=-1.0)  # options still go through the class's checks


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("cosine", {"temperature": 0.1}, r"'cosine' \(CosineLoss\) takes no option 'temperature'; it takes none"),
        (
            "vmf",
            {"margin": 0.1, "lambda1": 0.05, "beta": 1.0},
            r"the loss 'vmf' \(VMFLoss\) takes no options 'margin', 'beta'; it takes lambda1, lambda2, approx, ",
        ),
        ("infonce", {"ignore_index_typo": 0}, r"takes no option 'ignore_index_typo'; it takes temperature, "),
        ("energy", {"dist_sync_on_step": True}, r"takes no option 'dist_sync_on_step'; it takes beta$"),
    ],
)
def test_make_loss_refuses_options_the_loss_does_not_take(name: str, options: dict[str, object], match: str) -> None:
    from lightning_contloss.losses import make_loss

    with pytest.raises(ValueError, match=match):
        make_loss(name, **options)


def test_loss_options_are_the_constructor_keywords_the_name_leaves_open() -> None:
    from lightning_contloss.losses import loss_options

    assert loss_options("cosine") == loss_options("l2") == ()
    assert loss_options("energy") == ("beta",)
    assert loss_options("synmargin") == ("margin", "synthetic")
    assert "negatives" in loss_options("maxmargin") and "margin" in loss_options("maxmargin")
    assert set(loss_options("infonce")) == {
        "temperature", "learn_temperature", "num_negatives", "sampler", "counts", "power", "generator"
    }  # fmt: skip
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        loss_options("hinge")


def test_register_loss_rejects_bad_names_and_clashes() -> None:
    from lightning_contloss.losses import loss_names, register_loss

    before = loss_names()
    for bad in ("", "Cosine", "a b", "a:b", 3):
        with pytest.raises(ValueError, match="a loss name must be"):
            register_loss(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="taken by CosineLoss"):
        register_loss("cosine")(L2Loss)
    with pytest.raises(TypeError, match="ContinuousLoss subclass"):
        register_loss("rewe")(ReWELoss)  # type: ignore[type-var]
    with pytest.raises(ValueError, match=r"fixes \['negatives'\], which CosineLoss does not take"):
        register_loss("cosine2", negatives="in_batch")(CosineLoss)
    assert register_loss("l2")(L2Loss) is L2Loss
    assert loss_names() == before


def test_command_line_lists_are_the_registry() -> None:
    import typing

    from lightning_contloss.compare import spec
    from lightning_contloss.examples import continuous_lm
    from lightning_contloss.losses import loss_names

    assert spec.LOSSES == continuous_lm.LOSSES == loss_names()
    assert typing.get_args(continuous_lm.LossName) == loss_names()  # what LightningCLI offers


def test_compare_spec_does_not_import_the_example_models() -> None:
    import subprocess
    import sys

    code = (
        "import sys, lightning_contloss.compare.spec; "
        "print(any(m.startswith('lightning_contloss.examples') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", loss_names())
@pytest.mark.parametrize("synced", [False, True], ids=["plain", "dist_sync_on_step"])
def test_a_loss_deep_copies_after_a_training_step(name: str, synced: bool) -> None:
    # Before the fix the batch value kept in _forward_cache still held the autograd graph:
    # "Only Tensors created explicitly by the user (graph leaves) support the deepcopy protocol".
    targets = TargetEmbeddings.random(50, 8, seed=0)
    loss = bind_targets(type(make_loss(name))(dist_sync_on_step=synced), targets)
    pred = torch.randn(4, 3, 8, requires_grad=True)
    if name == "energy":
        pred = torch.randn(4, 3, 2, 8, requires_grad=True)  # two samples per position
    value = loss(pred, torch.randint(0, 50, (4, 3)))
    value.backward()
    clone = copy.deepcopy(loss)
    torch.testing.assert_close(clone.compute(), loss.compute())
    assert pred.grad is not None  # the returned value did keep its graph


def test_a_module_deep_copies_after_a_fit_step() -> None:
    from helpers import TinyContinuousLM, loader, mapping_data, quiet_trainer

    lm = TinyContinuousLM()
    quiet_trainer(max_steps=1).fit(lm, loader(mapping_data(n=64), batch_size=16))
    clone = copy.deepcopy(lm)
    x = torch.randint(0, 200, (2, 5))
    torch.testing.assert_close(clone.model(x), lm.model(x))

"""Syn-margin (Bhat, Kumar & Tsvetkov, 2019): the synthetic negative, the loss, its gradient and its class."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import lightning_contloss.functional as CF
from lightning_contloss.losses import SynMarginLoss, decode_space_of, loss_names, make_loss
from lightning_contloss.targets import TargetEmbeddings

FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)


def _pair(seed: int, n: int = 6, d: int = 5) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)


def _angle(pred: Tensor, target: Tensor) -> Tensor:
    cos = (pred * target).sum(-1) / (pred.norm(dim=-1) * target.norm(dim=-1))
    return torch.arccos(cos.clamp(-1, 1))


@FAST
@given(seed=st.integers(0, 10_000), scale=st.floats(1e-3, 1e3))
def test_projection_negative_is_a_unit_vector_orthogonal_to_the_target_on_the_side_of_pred(
    seed: int, scale: float
) -> None:
    pred, target = _pair(seed)
    neg = CF.synthetic_negative(pred * scale, target)
    torch.testing.assert_close(neg.norm(dim=-1), torch.ones(len(neg), dtype=neg.dtype))
    u = target / target.norm(dim=-1, keepdim=True)
    assert float((neg * u).sum(-1).abs().max()) < 1e-10
    # cos(ê, u_orth) = sin θ: the direction in which ê strays from the target.
    cos_neg = (pred * neg).sum(-1) / pred.norm(dim=-1)
    torch.testing.assert_close(cos_neg, torch.sin(_angle(pred, target)))


@FAST
@given(seed=st.integers(0, 10_000))
def test_difference_negative_is_the_unit_difference(seed: int) -> None:
    pred, target = _pair(seed)
    neg = CF.synthetic_negative(pred, target, "difference")
    torch.testing.assert_close(neg.norm(dim=-1), torch.ones(len(neg), dtype=neg.dtype))
    expected = pred / pred.norm(dim=-1, keepdim=True) - target / target.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(neg, expected / expected.norm(dim=-1, keepdim=True))
    cos_neg = (pred * neg).sum(-1) / pred.norm(dim=-1)
    torch.testing.assert_close(cos_neg, torch.sin(_angle(pred, target) / 2))


def test_parallel_and_zero_predictions_have_no_negative() -> None:
    target = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    pred = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert float(CF.synthetic_negative(pred, target).abs().max()) == 0.0
    # For "difference" only a parallel pair is degenerate: a zero ê gives unit(0 − u) = −u.
    diff = CF.synthetic_negative(pred, target, "difference")
    assert float(diff[[0, 2]].abs().max()) == 0.0
    torch.testing.assert_close(diff[1], -target[1])


@FAST
@given(seed=st.integers(0, 10_000), margin=st.floats(0.0, 2.0))
def test_loss_matches_the_angle_formulas(seed: int, margin: float) -> None:
    pred, target = _pair(seed)
    ids = torch.arange(len(target))
    theta = _angle(pred, target)
    got = CF.syn_margin_loss(pred, ids, target, margin=margin, reduction="none")
    torch.testing.assert_close(got, torch.relu(margin + torch.sin(theta) - torch.cos(theta)))
    got = CF.syn_margin_loss(pred, ids, target, margin=margin, synthetic="difference", reduction="none")
    torch.testing.assert_close(got, torch.relu(margin + torch.sin(theta / 2) - torch.cos(theta)))


@settings(max_examples=8, deadline=None, derandomize=True, database=None)
@given(seed=st.integers(0, 10_000))
def test_projection_gradient_matches_finite_differences(seed: int) -> None:
    # The negative is held fixed, yet the gradient is that of max(0, m + sin θ − cos θ): exact.
    pred, target = _pair(seed, n=3, d=4)
    pred.requires_grad_(True)
    ids = torch.arange(3)
    margin = 1.5  # every hinge active, so the check never straddles the kink
    assert torch.autograd.gradcheck(lambda p: CF.syn_margin_loss(p, ids, target, margin=margin), (pred,))


def test_gradient_is_finite_and_turns_pred_towards_the_target() -> None:
    table = torch.eye(3)
    pred = torch.tensor([[1.0, 1.0, 0.0]], requires_grad=True)
    CF.syn_margin_loss(pred, torch.tensor([0]), table).backward()
    assert pred.grad is not None and bool(torch.isfinite(pred.grad).all())
    step = pred.detach() - 0.1 * pred.grad
    assert float(torch.cosine_similarity(step, table[:1])) > float(torch.cosine_similarity(pred.detach(), table[:1]))


def test_ignore_index_and_scale_invariance() -> None:
    table = torch.randn(10, 4)
    pred = torch.randn(2, 3, 4)
    ids = torch.tensor([[1, 2, -100], [3, -100, 4]])
    loss = CF.syn_margin_loss(pred, ids, table, ignore_index=-100, reduction="none")
    assert loss[0, 2] == 0 and loss[1, 1] == 0
    torch.testing.assert_close(CF.syn_margin_loss(7 * pred, ids, table, ignore_index=-100, reduction="none"), loss)
    bound = 0.5 + 2
    assert float(loss.max()) <= bound


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"margin": -0.1}, "margin"), ({"margin": math.nan}, "margin"), ({"synthetic": "orth"}, "synthetic")],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        CF.syn_margin_loss(torch.randn(2, 3), torch.tensor([0, 1]), torch.eye(3), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=name):
        SynMarginLoss(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        CF.synthetic_negative(torch.randn(2, 3), torch.randn(3, 3))


def test_class_is_registered_and_matches_the_function() -> None:
    assert "synmargin" in loss_names()
    loss = make_loss("synmargin", margin=0.3, ignore_index=-1)
    assert isinstance(loss, SynMarginLoss) and loss.margin == 0.3 and loss.ignore_index == -1
    assert decode_space_of(loss) == "cosine"
    targets = TargetEmbeddings.random(20, 8)
    loss.bind(targets)
    pred, ids = torch.randn(5, 8, requires_grad=True), torch.tensor([1, 2, -1, 4, 5])
    value = loss(pred, ids)
    torch.testing.assert_close(value, CF.syn_margin_loss(pred, ids, targets.weight, margin=0.3, ignore_index=-1))
    value.backward()
    assert pred.grad is not None and float(pred.grad[2].abs().sum()) == 0.0

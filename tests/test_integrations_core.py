"""The library-independent parts of lightning_contloss.integrations: outputs, padded vocabularies, the shift check."""

from __future__ import annotations

import pickle
import warnings
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lightning_contloss import ContinuousOutputMixin, EmbeddingRegressionHead, TargetEmbeddings, swap_softmax_head
from lightning_contloss.integrations import (
    PAD_MULTIPLES,
    adapt_model,
    library_model,
    padding_multiple,
    prediction_tensor,
)
from lightning_contloss.integrations.label_shift import ShiftCheck
from lightning_contloss.integrations.padding import MAX_PAD_FRACTION, vocab_fits
from lightning_contloss.losses import CosineLoss

# --------------------------------------------------------------------------- prediction_tensor


def test_prediction_tensor_reads_logits_and_explains_the_rest() -> None:
    pred = torch.randn(2, 3, 4)
    assert prediction_tensor(pred) is pred
    assert prediction_tensor(SimpleNamespace(logits=pred, loss=None)) is pred
    with pytest.raises(ValueError, match=r"tuple of 2 items.*return_dict=False"):
        prediction_tensor((pred, pred))
    with pytest.raises(ValueError, match=r"dict with keys \['logits'\].*out\['logits'\]"):
        prediction_tensor({"logits": pred})
    with pytest.raises(ValueError, match=r"got a NoneType"):
        prediction_tensor(None)
    with pytest.raises(ValueError, match=r"got a SimpleNamespace"):
        prediction_tensor(SimpleNamespace(logits=[1, 2]))


# --------------------------------------------------------------------------- padded vocabularies


def _reference_fits(out: int, vocab: int) -> bool:
    """Independent statement of the rule: out is vocab, or vocab rounded up to one of the multiples by a few rows."""
    if out == vocab:
        return True
    few = (out - vocab) < out / MAX_PAD_FRACTION
    return vocab < out and few and any(out % m == 0 and out - m < vocab for m in PAD_MULTIPLES)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(vocab=st.integers(1, 200_000), extra=st.integers(-2000, 2000))
def test_vocab_fits_matches_the_reference_rule(vocab: int, extra: int) -> None:
    out = max(1, vocab + extra)
    assert vocab_fits(out, vocab) == _reference_fits(out, vocab)
    multiple = padding_multiple(out, vocab)
    assert (multiple is not None) == (_reference_fits(out, vocab) and out != vocab)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(vocab=st.integers(1, 100_000), multiple=st.sampled_from(PAD_MULTIPLES))
def test_every_vocabulary_rounded_up_by_a_few_rows_fits(vocab: int, multiple: int) -> None:
    out = -(-vocab // multiple) * multiple
    assert vocab_fits(out, vocab) == ((out - vocab) * MAX_PAD_FRACTION < out)


class PaddedLM(ContinuousOutputMixin, L.LightningModule):
    def __init__(self, rows: int, out: int = 1024) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Embedding(out, 16), nn.Linear(16, out))
        self.replace_softmax_head("model.1", TargetEmbeddings.random(rows, 8), CosineLoss())


def test_mixin_accepts_targets_for_the_real_vocabulary_of_a_padded_layer() -> None:
    torch.manual_seed(0)
    lm = PaddedLM(1000)  # 1000 real tokens, layer padded to 1024 (a multiple of 64)
    pred = lm.model(torch.randint(0, 1000, (8, 32)))
    assert pred.shape == (8, 32, 8)
    assert int(lm.continuous_decode(pred, k=3).max()) < 1000  # no padding id can be decoded: it has no target row
    assert len(lm.continuous_decoder) == 1000


def test_targets_that_are_not_a_padding_say_what_to_do() -> None:
    with pytest.raises(ValueError, match=r"targets have V=900 rows but 'model.1' has out_features=1024.*padded"):
        PaddedLM(900)
    with pytest.raises(ValueError, match=r"targets have V=1030 rows.*special_ids=range\(real_vocab_size, 1024\)"):
        PaddedLM(1030)


def test_any_padding_works_with_special_padding_rows() -> None:
    torch.manual_seed(0)
    lm = PaddedLM(1024)
    lm.continuous_targets.mark_special(*range(900, 1024))
    assert int(lm.continuous_decode(lm.model(torch.randint(0, 900, (4, 16))), k=3).max()) < 900


def test_plain_swap_accepts_a_padded_vocabulary_and_keeps_its_message_otherwise() -> None:
    body = nn.ModuleDict({"lm_head": nn.Linear(8, 10240)})
    swap_softmax_head(body, "lm_head", EmbeddingRegressionHead(8, 4), vocab_size=10001)
    body = nn.ModuleDict({"lm_head": nn.Linear(8, 10240)})
    with pytest.raises(ValueError, match=r"out_features=10240 but the targets have V=9000.*multiple of 64, 128"):
        swap_softmax_head(body, "lm_head", EmbeddingRegressionHead(8, 4), vocab_size=9000)
    assert isinstance(body.lm_head, nn.Linear)  # nothing was swapped


# --------------------------------------------------------------------------- no library model


def test_plain_modules_have_no_library_model_and_are_left_alone() -> None:
    body = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 100))
    assert library_model(body, "1") is None
    adapt_model(body, "1", nn.Linear(8, 100))
    assert type(body) is nn.Sequential


# --------------------------------------------------------------------------- the missing-shift check


def test_shift_check_warns_once_and_only_for_varying_equal_targets() -> None:
    check = ShiftCheck("input_ids")
    x = torch.tensor([[4, 5, 6, 7]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check.record(torch.zeros(1, 4, dtype=torch.long))
        check.check(torch.zeros(1, 4, dtype=torch.long))  # constant (e.g. all padding): not a shift bug
        check.record(x)
        check.check(x[:, 1:])  # shifted
        check.check(x)  # nothing recorded since the last check
        check.record(torch.randn(1, 4))  # not token ids: ignored
        check.check(x)
    check.record(x)
    with pytest.warns(UserWarning, match="position by position"):
        check.check(x.clone())
    assert check.checks_left == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check.record(x)
        check.check(x)  # once only


def test_shift_check_switches_off_after_its_budget_and_pickles_without_the_batch() -> None:
    check = ShiftCheck("idx", max_checks=2)
    x = torch.tensor([[1, 2, 3]])
    for _ in range(2):
        check.record(x)
        check.check(x + 1)
    assert check.checks_left == 0
    check = ShiftCheck("idx")
    check.record(x)
    assert pickle.loads(pickle.dumps(check))._last is None

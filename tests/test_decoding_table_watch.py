"""TableWatch: a table is hashed again only when its tensors moved; the mixin and the callback share it."""

from __future__ import annotations

import pytest
import torch

from lightning_contloss import TargetEmbeddings
from lightning_contloss.decoding.table_watch import TableWatch, tensor_key


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = TargetEmbeddings.content_hash
    monkeypatch.setattr(TargetEmbeddings, "content_hash", lambda self: calls.append(1) or real(self))
    return calls


def test_the_same_tensors_are_hashed_once(hashes: list[int]) -> None:
    targets = TargetEmbeddings.random(20, 4, seed=0)
    watch = TableWatch()
    digests = {watch.digest(targets) for _ in range(5)}
    assert len(hashes) == 1 and digests == {targets.content_hash()}


def test_a_write_a_new_tensor_or_a_new_mask_is_hashed_again(hashes: list[int]) -> None:
    targets = TargetEmbeddings.random(20, 4, seed=0)
    watch = TableWatch()
    first = watch.digest(targets)
    with torch.no_grad():
        targets.weight.mul_(-1.0)  # in place: the version moves
    second = watch.digest(targets)
    assert second != first and len(hashes) == 2
    targets.special_mask = targets.special_mask.clone()  # a new tensor, the same content
    assert watch.digest(targets) == second and len(hashes) == 3
    targets.mark_special(3)
    assert watch.digest(targets) != second


def test_tensor_key_changes_on_writes_and_moves_not_on_reads() -> None:
    t = torch.zeros(4)
    key = tensor_key(t)
    _ = t.sum()
    assert tensor_key(t) == key
    t.add_(1.0)
    assert tensor_key(t) != key
    assert tensor_key(t.clone()) != tensor_key(t)


def test_the_mixin_decoder_follows_the_table_through_the_watch(hashes: list[int]) -> None:
    from helpers import TinyContinuousLM

    lm = TinyContinuousLM()
    decoder = lm.continuous_decoder
    assert lm.continuous_decoder is decoder and len(hashes) == 1
    with torch.no_grad():
        lm.continuous_targets.weight.mul_(-1.0)
    assert lm.continuous_decoder is not decoder and len(hashes) == 2

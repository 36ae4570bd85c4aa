"""EmbeddingRegressionHead and swap_softmax_head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_contloss import EmbeddingRegressionHead, swap_softmax_head
from lightning_contloss.heads import find_linear_layers


class TinyGPT(nn.Module):
    def __init__(self, vocab: int = 50, hidden: int = 16, tie: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(2)])
        self.lm_head = nn.Linear(hidden, vocab, bias=False)
        if tie:
            self.lm_head.weight = self.embed.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for b in self.blocks:
            h = torch.relu(b(h))
        out: torch.Tensor = self.lm_head(h)
        return out


def test_linear_head_shapes_and_no_normalisation() -> None:
    head = EmbeddingRegressionHead(16, 8)
    x = torch.randn(3, 5, 16) * 10
    y = head(x)
    assert y.shape == (3, 5, 8)
    assert not torch.allclose(y.norm(dim=-1), torch.ones(3, 5))  # the vMF loss needs the norm
    assert isinstance(head.net, nn.Linear)


def test_mlp_head_structure() -> None:
    head = EmbeddingRegressionHead(16, 8, hidden=32, activation="gelu", dropout=0.1)
    assert isinstance(head.net, nn.Sequential)
    kinds = [type(m).__name__ for m in head.net]
    assert kinds == ["Linear", "GELU", "Dropout", "Linear"]
    assert head(torch.randn(4, 16)).shape == (4, 8)
    custom = EmbeddingRegressionHead(16, 8, hidden=4, activation=nn.Tanh)
    assert isinstance(custom.net[1], nn.Tanh)


def test_head_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        EmbeddingRegressionHead(4, 4, hidden=4, activation="swishy")
    with pytest.raises(ValueError, match="out_features must be positive"):
        EmbeddingRegressionHead(4, 0)
    with pytest.raises(ValueError, match="hidden must be positive"):
        EmbeddingRegressionHead(4, 4, hidden=0)
    with pytest.raises(ValueError, match="build it with in_features=7"):
        EmbeddingRegressionHead(4, 4)(torch.randn(2, 7))


def test_replace_returns_old_and_forward_gives_embeddings() -> None:
    model = TinyGPT(tie=False)
    old_weight = model.lm_head.weight
    old = swap_softmax_head(model, "lm_head", EmbeddingRegressionHead(16, 8), vocab_size=50)
    assert old.weight is old_weight and old.out_features == 50
    assert model(torch.randint(0, 50, (2, 3))).shape == (2, 3, 8)


def test_tied_head_is_untied_with_warning_and_embedding_keeps_weight() -> None:
    model = TinyGPT(tie=True)
    emb_weight = model.embed.weight
    before = emb_weight.detach().clone()
    with pytest.warns(UserWarning, match="shares its weight with the input embedding 'embed'"):
        swap_softmax_head(model, "lm_head", EmbeddingRegressionHead(16, 8))
    assert model.embed.weight is emb_weight
    assert torch.equal(model.embed.weight, before)
    # Training the new head leaves the input embedding's gradient coming only from the input path.
    params = {id(p) for p in model.lm_head.parameters()}
    assert id(model.embed.weight) not in params


def test_nested_and_indexed_paths() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ModuleDict({"out": nn.Linear(8, 100)}))
    swap_softmax_head(model, "1.out", EmbeddingRegressionHead(8, 3))
    assert isinstance(model[1]["out"], EmbeddingRegressionHead)
    lst = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 30)])
    swap_softmax_head(lst, "1", EmbeddingRegressionHead(4, 2))
    assert isinstance(lst[1], EmbeddingRegressionHead)


def test_wrong_path_lists_candidates() -> None:
    model = TinyGPT(tie=False)
    expected = r"no submodule 'head'; Linear layers with out_features=50: 'lm_head' \(16->50\)"
    with pytest.raises(ValueError, match=expected):
        swap_softmax_head(model, "head", EmbeddingRegressionHead(16, 8), vocab_size=50)
    with pytest.raises(ValueError, match=r"no submodule 'blocks.7'.*largest output first\): 'lm_head'"):
        swap_softmax_head(model, "blocks.7", EmbeddingRegressionHead(16, 8))


def test_non_linear_at_path() -> None:
    model = TinyGPT(tie=False)
    with pytest.raises(ValueError, match=r"'embed' is a Embedding, not an nn.Linear.*'lm_head'"):
        swap_softmax_head(model, "embed", EmbeddingRegressionHead(16, 8), vocab_size=50)


def test_vocab_and_hidden_mismatch_build_nothing() -> None:
    model = TinyGPT(tie=False)
    with pytest.raises(ValueError, match="out_features=50 but the targets have V=60"):
        swap_softmax_head(model, "lm_head", EmbeddingRegressionHead(16, 8), vocab_size=60)
    with pytest.raises(ValueError, match="build the head with in_features=16"):
        swap_softmax_head(model, "lm_head", EmbeddingRegressionHead(32, 8))
    assert isinstance(model.lm_head, nn.Linear)  # nothing was swapped


def test_find_linear_layers_orders_by_size() -> None:
    model = TinyGPT(tie=False)
    assert next(p for p, _ in find_linear_layers(model)) == "lm_head"
    assert [p for p, _ in find_linear_layers(model, out_features=16)] == ["blocks.0", "blocks.1"]


def test_head_trains_towards_targets() -> None:
    torch.manual_seed(0)
    head = EmbeddingRegressionHead(8, 4, hidden=16)
    x = torch.randn(64, 8)
    target = torch.nn.functional.normalize(torch.randn(64, 4), dim=-1)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = None
    for _ in range(200):
        loss = (1 - torch.nn.functional.cosine_similarity(head(x), target)).mean()
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.2 * first


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((4.5, 8), {}, TypeError, "in_features must be an int, got float 4.5"),
        ((16, "8"), {}, TypeError, "out_features must be an int"),
        ((16, True), {}, TypeError, "out_features must be an int, got bool"),
        ((16, 8), {"hidden": 3.0}, TypeError, "hidden must be an int"),
        ((16, 8), {"hidden": 0}, ValueError, "hidden must be positive"),
        ((16, 8), {"activation": 3}, TypeError, "activation must be one of"),
        ((16, 8), {"activation": "swish"}, ValueError, "unknown activation"),
        ((16, 8), {"hidden": 4, "dropout": 1.5}, ValueError, r"dropout must lie in \[0, 1\]"),
        ((16, 8), {"dropout": float("nan")}, ValueError, "dropout must lie"),
        ((16, 8), {"dropout": "0.1"}, TypeError, "dropout must be a number"),
        ((16, 8), {"bias": "yes"}, TypeError, "bias must be True or False"),
    ],
)
def test_head_constructor_rejects_bad_arguments(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        EmbeddingRegressionHead(*args, **kwargs)  # type: ignore[arg-type]


def test_head_accepts_numpy_and_torch_integers() -> None:
    import numpy as np

    head = EmbeddingRegressionHead(np.int64(16), torch.tensor(8), hidden=np.int32(4))  # type: ignore[arg-type]
    assert (head.in_features, head.out_features, head.hidden) == (16, 8, 4)
    assert type(head.in_features) is int

"""A new decoder kind reaches make_decoder, DecoderFactory, DecodingCallback and compare --decoder via the registry.

The throwaway decoder below is written in this one file, as a contributor's would be in
``decoding/<name>.py``: registering it is all it takes.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest
import torch
from torch import Tensor

from lightning_contloss import DecodingCallback, TargetEmbeddings
from lightning_contloss.compare import runner
from lightning_contloss.decoding import DecoderFactory, ExactDecoder, decoder_kinds, make_decoder, register_decoder
from lightning_contloss.decoding import registry as decoder_registry
from lightning_contloss.decoding.base import TableLike, _TableDecoder, check_space, resolve_table
from lightning_contloss.decoding.registry import decoder_class, decoder_names, decoder_options
from lightning_contloss.functional.scoring import pairwise_similarity


class _BruteForce(_TableDecoder):
    """A throwaway decoder kind: every row scored at once (no chunks), standing for the next one a contributor adds."""

    def __init__(
        self, table: TableLike, space: str = "cosine", *, exclude: Iterable[int] | Tensor | None = None, block: int = 64
    ) -> None:
        space = check_space(space)
        super().__init__(resolve_table(table, space, exclude), space)
        self.block = block

    def query(self, x: Tensor, k: int = 1) -> tuple[Tensor, Tensor]:
        q, k = self._check(x, k)
        flat = q.reshape(-1, self.dim).to(self.table.dtype)
        scores = pairwise_similarity(flat, self.table, self.space).masked_fill(~self.returnable, float("-inf"))
        top, ids = scores.topk(k, dim=-1)
        return ids.reshape(*q.shape[:-1], k), top.reshape(*q.shape[:-1], k)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> str:
    # A copy of the registry, so the throwaway kind is gone again after the test.
    monkeypatch.setattr(decoder_registry, "_REGISTRY", dict(decoder_registry._REGISTRY))
    register_decoder("bruteforce")(_BruteForce)
    return "bruteforce"


def test_registering_a_decoder_makes_it_a_kind_everywhere(registered: str) -> None:
    targets = TargetEmbeddings.random(40, 8, seed=0, special_ids=[0])
    assert decoder_kinds() == ("auto", "exact", "hnsw", registered) and decoder_class(registered) is _BruteForce
    assert decoder_options(registered) == {"exclude", "block"}
    # make_decoder and DecoderFactory build it by name, with its own arguments and no others.
    built = make_decoder(targets, "ip", registered, block=8)
    assert isinstance(built, _BruteForce) and built.block == 8 and built.space == "ip"
    with pytest.raises(ValueError, match=r"_BruteForce does not take \['M'\]; it takes \['block', 'exclude'\]"):
        make_decoder(targets, "ip", registered, M=8)
    factory = DecoderFactory(registered, block=16)
    assert factory.shares_cache is False and not factory.may_screen  # no cache_dir, no screen
    decoder = factory(targets, "cosine")
    assert isinstance(decoder, _BruteForce) and decoder.block == 16
    with pytest.raises(ValueError, match="_BruteForce has no ef"):
        DecoderFactory(registered, ef=32)
    # Its answers are exact search's, and the special id is never returned.
    queries = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    ids, scores = decoder.query(queries, 3)
    exact_ids, exact_scores = ExactDecoder(targets).query(queries, 3)
    assert torch.equal(ids, exact_ids) and 0 not in ids.tolist()
    torch.testing.assert_close(scores, exact_scores)
    # DecodingCallback takes the name; compare's --decoder lists and accepts it.
    assert DecodingCallback(decoder=registered).factory.kind == registered
    parser = runner.build_parser()
    assert registered in parser.format_help()
    assert parser.parse_args(["--decoder", registered]).decoder == registered


def test_an_unregistered_kind_is_refused_with_the_choices() -> None:
    assert "bruteforce" not in decoder_kinds()
    with pytest.raises(ValueError, match=r"decoder must be 'auto', 'exact', 'hnsw', a Decoder"):
        DecoderFactory("bruteforce")
    with pytest.raises(ValueError, match=r"decoder must be one of 'auto', 'exact', 'hnsw', got 'bruteforce'"):
        make_decoder(torch.eye(4), "cosine", "bruteforce")
    with pytest.raises(SystemExit):
        runner.build_parser().parse_args(["--decoder", "bruteforce"])


def test_register_decoder_rejects_bad_names_classes_and_clashes() -> None:
    before = decoder_names()
    for bad in ("", "Exact", "a b", "a:b", 3):
        with pytest.raises(ValueError, match="a decoder kind must be"):
            register_decoder(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'auto' is the factory's own choice"):
        register_decoder("auto")
    with pytest.raises(ValueError, match="taken by ExactDecoder"):
        register_decoder("exact")(_BruteForce)
    with pytest.raises(TypeError, match="with a query"):
        register_decoder("nothing")(int)
    with pytest.raises(TypeError, match=r"built as _NoSpace\(table, space, \*\*options\)"):

        class _NoSpace:
            def __init__(self, table: Tensor) -> None: ...

            def query(self, x: Tensor, k: int = 1) -> tuple[Tensor, Tensor]: ...

        register_decoder("nospace")(_NoSpace)
    assert decoder_names() == before == ("exact", "hnsw")
    with pytest.raises(ValueError, match="unknown decoder 'nothing'"):
        decoder_class("nothing")

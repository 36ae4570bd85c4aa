"""Generated bad input to every TargetEmbeddings constructor and to EmbeddingRegressionHead (issue 11).

Each call either returns a valid, documented result or raises the package's own
``ValueError``/``TypeError`` with a message that names the argument at fault. Nothing else
may escape (no ``IndexError``, ``RuntimeError``, ``UnicodeDecodeError``, ``EOFError``,
``MemoryError``...), and a rejected call leaves an existing object as it was.
Derandomised, so CI sees the same cases every run.
"""

from __future__ import annotations

import gzip
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightning_contloss import EmbeddingRegressionHead, TargetEmbeddings

SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None
)

# Values that are wrong for almost any argument, plus a few that are right for some.
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.just(2**40),
    st.just(2**70),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.text(max_size=3),
    st.lists(st.integers(-2, 5), max_size=3),
    st.sampled_from([torch.tensor(1.5), torch.tensor(2), np.int64(3), np.float64(2.0), b"ab", object()]),
)
SIZE = st.one_of(st.integers(1, 8), st.integers(-2, 0), JUNK)
WORDS = st.lists(st.text(alphabet="abcxyz<>", min_size=0, max_size=3), max_size=10)
VOCAB = st.one_of(st.none(), WORDS, JUNK)
SPECIAL_ITEM = st.one_of(st.integers(-2, 10), st.text(alphabet="abc<>", max_size=2), JUNK)
SPECIALS = st.one_of(st.just(()), st.lists(SPECIAL_ITEM, max_size=3), JUNK)


@contextmanager
def documented(*names: str) -> Iterator[list[BaseException]]:
    """Allow only ``ValueError``/``TypeError`` whose message names one of ``names`` (case-insensitive)."""
    caught: list[BaseException] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # zero-row warnings are documented behaviour
            yield caught
    except (ValueError, TypeError) as err:
        message = str(err).lower()
        assert any(n.lower() in message for n in names), f"{type(err).__name__} names none of {names}: {err}"
        caught.append(err)


def assert_valid_table(t: TargetEmbeddings, rows: int | None = None, dim: int | None = None) -> None:
    assert isinstance(t, TargetEmbeddings)
    assert t.weight.dim() == 2 and bool(torch.isfinite(t.weight).all())
    assert rows is None or len(t) == rows
    assert dim is None or t.dim == dim
    if t.normalized:
        norms = t.weight.norm(dim=-1)
        assert bool(((norms - 1).abs() < 1e-4).logical_or(norms == 0).all())
    assert t.vocab is None or (len(t.vocab) == len(t) and len(set(t.vocab)) == len(t))
    assert t.special_mask.shape == (len(t),) and t.special_mask.dtype == torch.bool


TARGET_NAMES = ("vocab", "special", "cannot mark", "normalize", "seed")


# ---------------------------------------------------------------------- random
@SETTINGS
@given(v=SIZE, d=SIZE, seed=st.one_of(st.integers(-(2**70), 2**70), JUNK), vocab=VOCAB, specials=SPECIALS)
def test_random(v: Any, d: Any, seed: Any, vocab: Any, specials: Any) -> None:
    with documented("num_embeddings", "dim", "v=", "d=", *TARGET_NAMES) as caught:
        t = TargetEmbeddings.random(v, d, seed, vocab=vocab, special_ids=specials)
    if not caught:
        assert_valid_table(t, int(v), int(d))


# ---------------------------------------------------------------------- from_tensor
def tensors() -> st.SearchStrategy[Any]:
    shapes = st.one_of(
        st.tuples(st.integers(0, 6), st.integers(0, 5)),
        st.tuples(st.integers(1, 4)),
        st.tuples(st.just(2), st.just(2), st.just(2)),
    )

    def build(shape: tuple[int, ...], dtype: torch.dtype, poison: str, seed: int) -> Any:
        g = torch.Generator().manual_seed(seed)
        x = (torch.randn(shape, generator=g) * 3).to(dtype)
        if x.numel() and x.is_floating_point():
            flat = x.view(-1)
            if poison in ("nan", "inf"):
                flat[seed % flat.numel()] = float(poison)
            elif poison == "zero-row" and x.dim() == 2:
                x[seed % x.shape[0]] = 0
        if poison == "meta":
            x = torch.empty(shape, dtype=dtype, device="meta")
        elif poison == "numpy":
            return x.numpy()
        elif poison == "list":
            return x.tolist()
        return x

    return st.builds(
        build,
        shapes,
        st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64, torch.bool]),
        st.sampled_from(["none", "nan", "inf", "zero-row", "meta", "numpy", "list"]),
        st.integers(0, 100),
    )


@SETTINGS
@given(weight=st.one_of(tensors(), JUNK), vocab=VOCAB, normalize=st.one_of(st.booleans(), JUNK), specials=SPECIALS)
def test_from_tensor(weight: Any, vocab: Any, normalize: Any, specials: Any) -> None:
    with documented("weight", *TARGET_NAMES) as caught:
        t = TargetEmbeddings.from_tensor(weight, vocab, normalize=normalize, special_ids=specials)
    if not caught:
        assert_valid_table(t, *weight.shape)


# ---------------------------------------------------------------------- from_embedding
def embeddings() -> st.SearchStrategy[Any]:
    def build(n: int, d: int, pad: int | None, poison: str) -> Any:
        if poison == "meta":
            return torch.nn.Embedding(n, d, device="meta")
        if poison == "linear":
            return torch.nn.Linear(n, d)
        emb = torch.nn.Embedding(n, d, padding_idx=None if pad is None else pad % n)
        if poison == "nan":
            with torch.no_grad():
                emb.weight[0, 0] = float("nan")
        return emb

    return st.builds(
        build,
        st.integers(1, 6),
        st.integers(1, 4),
        st.one_of(st.none(), st.integers(0, 5)),
        st.sampled_from(["none", "none", "nan", "meta", "linear"]),
    )


@SETTINGS
@given(embedding=st.one_of(embeddings(), tensors(), JUNK), vocab=VOCAB, specials=SPECIALS)
def test_from_embedding(embedding: Any, vocab: Any, specials: Any) -> None:
    with documented("embedding", "weight", *TARGET_NAMES) as caught:
        t = TargetEmbeddings.from_embedding(embedding, vocab, special_ids=specials)
    if not caught:
        assert_valid_table(t, embedding.num_embeddings, embedding.embedding_dim)
        if embedding.padding_idx is not None:
            assert bool(t.special_mask[embedding.padding_idx])


# ---------------------------------------------------------------------- from_file
ROW_WORDS = ["the", "cat", "sat", "café", "a b", ""]


@st.composite
def vector_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A file name and its bytes: a text or binary vector file, often damaged."""
    kind = draw(st.sampled_from(["text", "binary", "bytes"]))
    if kind == "bytes":
        return draw(st.sampled_from(["v.txt", "v.bin", "v.txt.gz"])), draw(st.binary(max_size=120))
    n = draw(st.integers(0, 5))
    dim = draw(st.integers(1, 4))
    words = [draw(st.sampled_from(ROW_WORDS)) for _ in range(n)]
    values = st.one_of(st.floats(-3, 3, width=32), st.sampled_from([0.0, float("nan"), float("inf")]))
    rows = [[draw(values) for _ in range(dim + draw(st.sampled_from([0, 0, 0, 1, -1])))] for _ in words]
    header = draw(st.sampled_from([None, f"{n} {dim}", f"{n} -{dim}", f"-1 {dim}", f"{n} {2**40}"]))
    encoding = draw(st.sampled_from(["utf-8", "latin-1", "utf-16"]))
    if kind == "text":
        lines = ([header] if header else []) + [w + " " + " ".join(f"{x:.4f}" for x in r) for w, r in zip(words, rows)]
        try:
            data = ("\n".join(lines) + "\n").encode(encoding)
        except UnicodeEncodeError:
            data = ("\n".join(lines) + "\n").encode("utf-8")
        name = "v.txt"
    else:
        data = (header or f"{n} {dim}").encode() + b"\n"
        for w, r in zip(words, rows):
            data += w.encode(encoding if encoding != "utf-16" else "utf-8") + b" " + np.asarray(r, "<f4").tobytes()
        name = draw(st.sampled_from(["v.bin", "v.vec"]))
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    if draw(st.booleans()):
        data, name = gzip.compress(data), name + ".gz"
    cut = draw(st.one_of(st.none(), st.integers(0, max(len(data) - 1, 0))))
    return name, data if cut is None else data[:cut]


@settings(SETTINGS, max_examples=250)
@given(
    file=vector_files(),
    vocab=st.one_of(st.lists(st.sampled_from([*ROW_WORDS, "dog"]), min_size=0, max_size=4), JUNK),
    oov=st.one_of(st.sampled_from(["random", "mean", "error"]), JUNK),
    binary=st.one_of(st.none(), st.booleans(), JUNK),
    encoding=st.one_of(st.sampled_from(["utf-8", "latin-1", "utf-16"]), JUNK),
    seed=st.one_of(st.integers(0, 5), JUNK),
    specials=SPECIALS,
)
def test_from_file(
    file: tuple[str, bytes], vocab: Any, oov: Any, binary: Any, encoding: Any, seed: Any, specials: Any
) -> None:
    name, data = file
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        names = (str(path), "oov", "binary", "encoding", *TARGET_NAMES)
        with documented(*names) as caught:
            t = TargetEmbeddings.from_file(
                path, vocab, oov=oov, binary=binary, encoding=encoding, seed=seed, special_ids=specials
            )
    if not caught:
        assert_valid_table(t, len(vocab))
        cov = t.coverage
        assert cov is not None and cov.total == len(vocab) and cov.found + len(cov.missing) == cov.total
        assert set(cov.zero) <= set(vocab) - set(cov.missing)


# ---------------------------------------------------------------------- from_corpus
def corpora() -> st.SearchStrategy[Any]:
    ints = st.lists(st.integers(-1, 12), max_size=60)
    return st.one_of(
        ints,
        ints.map(lambda x: torch.tensor(x, dtype=torch.int64)),
        ints.map(lambda x: np.asarray(x, dtype=np.int32)),
        st.lists(st.floats(-1, 12, width=32), max_size=20),
        ints.map(lambda x: torch.tensor(x, dtype=torch.float32)),
        st.lists(st.text(max_size=2), max_size=5),
        JUNK,
    )


@SETTINGS
@given(
    token_ids=corpora(),
    vocab_size=st.one_of(st.integers(1, 14), SIZE),
    dim=SIZE,
    window=st.one_of(st.integers(1, 4), SIZE),
    alpha=st.one_of(st.floats(-1, 2), JUNK),
    niter=st.one_of(st.integers(0, 3), JUNK),
    specials=SPECIALS,
)
def test_from_corpus(
    token_ids: Any, vocab_size: Any, dim: Any, window: Any, alpha: Any, niter: Any, specials: Any
) -> None:
    names = ("token_ids", "token ids", "corpus", "vocab_size", "dim", "window", "alpha", "niter", *TARGET_NAMES)
    with documented(*names) as caught:
        t = TargetEmbeddings.from_corpus(
            token_ids, vocab_size, dim, window, alpha=alpha, niter=niter, special_ids=specials
        )
    if not caught:
        assert_valid_table(t, int(vocab_size), int(dim))


# ---------------------------------------------------------------------- mix
@SETTINGS
@given(
    other=st.one_of(
        st.tuples(st.integers(3, 5), st.integers(2, 3), st.integers(0, 9)).map(
            lambda a: TargetEmbeddings.random(a[0], a[1], seed=a[2])
        ),
        tensors(),
        JUNK,
    ),
    alpha=st.one_of(
        st.floats(-1, 2),
        st.floats(allow_nan=True, allow_infinity=True),
        st.lists(st.one_of(st.floats(-0.5, 1.5), st.just(float("nan"))), min_size=3, max_size=5),
        st.lists(st.floats(0, 1), min_size=4, max_size=4).map(torch.tensor),
        JUNK,
    ),
)
def test_mix(other: Any, alpha: Any) -> None:
    base = TargetEmbeddings.random(4, 2, seed=1, vocab=list("abcd"), special_ids=[0])
    before = base.weight.clone()
    with documented("other", "alpha", "mix", "same v and d") as caught:
        m = base.mix(other, alpha)
    assert torch.equal(base.weight, before)
    if not caught:
        assert_valid_table(m, 4, 2)
        assert m.vocab == list("abcd") and m.special_ids.tolist() == [0]


# ---------------------------------------------------------------------- mark_special
@settings(SETTINGS, max_examples=200)
@given(ids=st.lists(SPECIAL_ITEM, max_size=4), with_vocab=st.booleans())
def test_mark_special(ids: list[Any], with_vocab: bool) -> None:
    t = TargetEmbeddings.random(6, 2, vocab=["a", "b", "c", "<", ">", "ab"] if with_vocab else None)
    before = t.special_mask.clone()
    with documented("special", "cannot mark") as caught:
        t.mark_special(*ids)
    if caught:
        assert torch.equal(t.special_mask, before), "a rejected call must not mark anything"
    else:
        for i in ids:
            assert bool(t.special_mask[t.token_to_id[i] if isinstance(i, str) else int(i)])


# ---------------------------------------------------------------------- forward
@SETTINGS
@given(
    ids=st.one_of(
        st.lists(st.integers(-3, 9), max_size=5).map(torch.tensor),
        st.lists(st.integers(0, 5), min_size=1, max_size=5).map(lambda x: torch.tensor(x, dtype=torch.int32)),
        st.lists(st.floats(-1, 6, width=32), min_size=1, max_size=5).map(torch.tensor),
        st.lists(st.booleans(), min_size=1, max_size=3).map(torch.tensor),
        JUNK,
    )
)
def test_forward(ids: Any) -> None:
    t = TargetEmbeddings.random(6, 3)
    with documented("ids") as caught:
        out = t(ids)
    if not caught:
        assert out.shape == (*ids.shape, 3) and torch.equal(out, t.weight[ids.long()])


# ---------------------------------------------------------------------- load_state_dict
@st.composite
def state_dicts(draw: st.DrawFn) -> dict[str, Any]:
    sd: dict[str, Any] = dict(TargetEmbeddings.random(5, 3, seed=4, vocab=list("vwxyz"), special_ids=[2]).state_dict())
    key = draw(st.sampled_from(["weight", "special_mask", "_extra_state", "none"]))
    if key == "weight":
        sd["weight"] = draw(st.one_of(tensors(), JUNK))
    elif key == "special_mask":
        sd["special_mask"] = draw(
            st.one_of(
                st.lists(st.booleans(), min_size=4, max_size=6).map(torch.tensor),
                st.lists(st.integers(0, 1), min_size=5, max_size=5).map(torch.tensor),
                JUNK,
            )
        )
    elif key == "_extra_state":
        sd["_extra_state"] = draw(
            st.one_of(
                st.fixed_dictionaries(
                    {},
                    optional={"vocab": st.one_of(st.none(), WORDS, JUNK), "normalized": st.one_of(st.booleans(), JUNK)},
                ),
                JUNK,
            )
        )
    if draw(st.booleans()):
        sd.pop(draw(st.sampled_from(["weight", "special_mask", "_extra_state"])), None)
    return sd


@settings(SETTINGS, max_examples=200)
@given(sd=state_dicts())
def test_load_state_dict(sd: dict[str, Any]) -> None:
    t = TargetEmbeddings.random(5, 3, vocab=list("abcde"))
    before = (t.weight.clone(), t.special_mask.clone(), t.vocab, t.normalized)
    with documented("state dict", "weight", "special_mask", "_extra_state", "vocab", "normalized") as caught:
        t.load_state_dict(sd, strict=False)
    if caught:
        assert torch.equal(t.weight, before[0]) and torch.equal(t.special_mask, before[1])
        assert (t.vocab, t.normalized) == before[2:], "a rejected state dict must change nothing"
    else:
        assert_valid_table(t, 5, 3)
        assert t.vocab is not None, "loading never erases a vocabulary"


# ---------------------------------------------------------------------- EmbeddingRegressionHead
@SETTINGS
@given(
    in_features=SIZE,
    out_features=SIZE,
    hidden=st.one_of(st.none(), st.integers(1, 6), SIZE),
    activation=st.one_of(st.sampled_from(["relu", "gelu", "tanh", "silu", "swish"]), st.just(torch.nn.ReLU), JUNK),
    dropout=st.one_of(st.floats(-0.5, 1.5), JUNK),
    bias=st.one_of(st.booleans(), JUNK),
)
def test_embedding_regression_head(
    in_features: Any, out_features: Any, hidden: Any, activation: Any, dropout: Any, bias: Any
) -> None:
    names = ("in_features", "out_features", "hidden", "activation", "dropout", "bias")
    with documented(*names) as caught:
        head = EmbeddingRegressionHead(in_features, out_features, hidden, activation, dropout, bias)
    if not caught:
        assert head(torch.randn(2, int(in_features))).shape == (2, int(out_features))


def test_every_constructor_is_covered() -> None:
    """A new public constructor of TargetEmbeddings needs a property test here."""
    members = vars(TargetEmbeddings).items()
    constructors = {n for n, v in members if isinstance(v, classmethod) and not n.startswith("_")}
    tested: set[str] = {"random", "from_tensor", "from_embedding", "from_file", "from_corpus"}
    assert constructors == tested


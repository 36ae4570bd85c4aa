"""Translation example: tokenizer, fixed split, datamodule, Seq2SeqTransformer, searches, metrics, both translators."""

from __future__ import annotations

import itertools
import json
import math
import unicodedata
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_contloss.examples.continuous_lm import glove_targets
from lightning_contloss.examples.data import BOS, EOS, PAD, UNK, Vocabulary
from lightning_contloss.examples.seq2seq_transformer import Seq2SeqTransformer
from lightning_contloss.examples.softmax_search import softmax_beam_search, softmax_greedy_decode
from lightning_contloss.examples.subword import SubwordVocabulary
from lightning_contloss.examples.translation import ContinuousTranslator, SoftmaxTranslator
from lightning_contloss.examples.translation_data import (
    BIBLE_DIR,
    BibleDataModule,
    LengthBucketSampler,
    ParallelText,
    TranslationDataModule,
    bible_corpus,
    collate_pairs,
    decode_ids,
    detokenize,
    encode_text,
    read_lines,
    tokenize,
)
from lightning_contloss.examples.translation_metrics import corpus_scores, distinct_words, eos_rate

SMALL = {"d_model": 32, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "dim_feedforward": 64}


@pytest.fixture(scope="module")
def bible() -> BibleDataModule:
    return BibleDataModule(batch_size=16, max_train_pairs=400, max_train_len=30)


# --------------------------------------------------------------------------- tokenizer and split


def test_tokenize_lowercases_and_splits_punctuation_and_clitics() -> None:
    assert tokenize("Y dijo Dios: Sea la luz: y fué la luz.") == [
        "y", "dijo", "dios", ":", "sea", "la", "luz", ":", "y", "fué", "la", "luz", ".",
    ]
    assert tokenize("the LORD's house, (saith he)") == ["the", "lord", "'s", "house", ",", "(", "saith", "he", ")"]
    # NFC: a decomposed accent is the same token as the composed one.
    assert tokenize("fue\u0301") == tokenize("fu\u00e9") == ["fu\u00e9"]
    assert tokenize("  ") == []


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.text(max_size=40))
def test_tokenize_is_idempotent_on_its_own_output(text: str) -> None:
    tokens = tokenize(text)
    assert tokenize(" ".join(tokens)) == tokens
    assert all(t and not any(c.isspace() for c in t) for t in tokens)


def test_detokenize_gives_back_every_packaged_verse_lower_cased() -> None:
    # The documented normalisation: NFC, lower case, single spaces. Both languages, every line.
    corpus = bible_corpus()
    for part in corpus.values():
        for line in part.src + part.tgt:
            assert detokenize(tokenize(line)) == " ".join(unicodedata.normalize("NFC", line).lower().split()), line


def test_detokenised_word_output_scores_100_bleu_where_space_joined_tokens_do_not() -> None:
    # 13a keeps "wife’s", "beth-el" and "¿quién" whole, so spaces the tokenizer put in would cost n-grams.
    refs = bible_corpus()["valid"].tgt[:200]
    assert corpus_scores([detokenize(tokenize(r)) for r in refs], refs)["bleu"] == pytest.approx(100.0)
    assert corpus_scores([" ".join(tokenize(r)) for r in refs], refs)["bleu"] < 99.0
    assert corpus_scores([r.lower() for r in refs], refs, lowercase=False)["bleu"] < 99.0
    v = Vocabulary.build(w for r in refs for w in tokenize(r))
    assert decode_ids(v, encode_text(v, refs[0])) == refs[0].lower()


def test_split_is_the_stored_seeded_sample_and_disjoint() -> None:
    split = json.loads((BIBLE_DIR / "split.json").read_text())
    perm = np.random.default_rng(split["seed"]).permutation(split["lines"])
    assert split["valid"] == sorted(perm[:1000].tolist())
    assert split["test"] == sorted(perm[1000:2000].tolist())
    assert not set(split["valid"]) & set(split["test"])
    corpus = bible_corpus()
    assert [len(corpus[s].src) for s in ("train", "valid", "test")] == [29084, 1000, 1000]
    # The held-out lines are those indices of both files (aligned), and no other line is held out.
    es, en = read_lines(BIBLE_DIR / "rv1909.es.gz"), read_lines(BIBLE_DIR / "kjv.en.gz")
    assert corpus["test"] == ParallelText([es[i] for i in split["test"]], [en[i] for i in split["test"]])
    held = set(split["valid"]) | set(split["test"])
    assert corpus["train"].src[:3] == [es[i] for i in range(len(es)) if i not in held][:3]
    assert corpus["valid"].tgt[0] == bible_corpus("en-es")["valid"].src[0]
    assert bible_corpus()["test"] == corpus["test"]


def test_bible_files_are_in_the_package_folder() -> None:
    for name in ("kjv.en.gz", "rv1909.es.gz", "split.json", "README.md"):
        assert (BIBLE_DIR / name).is_file(), name
    assert "public domain" in (BIBLE_DIR / "README.md").read_text().lower()


# --------------------------------------------------------------------------- datamodule


def test_batches_are_padded_with_bos_first_and_eos_last(bible: BibleDataModule) -> None:
    tv = bible.tgt_vocab
    assert tv.specials == (PAD, UNK, EOS, BOS) and tv.bos_id == 3
    assert bible.src_vocab.specials == (PAD, UNK, EOS)
    for batch in itertools.islice(bible.train_dataloader(), 5):
        src, tgt_in, tgt_out = batch
        assert src.shape[0] == tgt_in.shape[0] == tgt_out.shape[0] <= 16
        assert tgt_in.shape == tgt_out.shape
        assert bool((tgt_in[:, 0] == tv.bos_id).all())
        lengths = (tgt_out != tv.pad_id).sum(dim=1)
        rows = torch.arange(len(lengths))
        assert bool((tgt_out[rows, lengths - 1] == tv.eos_id).all())
        # Padding only after the end; tgt_in is tgt_out shifted right behind <bos>.
        positions = torch.arange(tgt_out.shape[1])
        assert bool(((tgt_out == tv.pad_id) == (positions >= lengths[:, None])).all())
        inside = positions[1:] < lengths[:, None]
        assert torch.equal(tgt_in[:, 1:][inside], tgt_out[:, :-1][inside])
        src_len = (src != bible.src_vocab.pad_id).sum(dim=1)
        assert bool((src[rows, src_len - 1] == bible.src_vocab.eos_id).all())
        assert int(lengths.max()) <= 31 and int(src_len.max()) <= 31  # max_train_len=30 plus <eos>


def test_valid_and_test_keep_every_pair_and_the_references(bible: BibleDataModule) -> None:
    assert len(bible.valid_pairs) == 1000 and bible.test_pairs is not None and len(bible.test_pairs) == 1000
    # References are the sentences as written: BLEU scores detokenised output against them.
    assert bible.valid_pairs.references[0] == bible_corpus()["valid"].tgt[0]
    assert bible.valid_pairs.sources[0] == bible_corpus()["valid"].src[0]
    seen = sorted(i for b in LengthBucketSampler(bible.valid_pairs.lengths, 16, shuffle=False) for i in b)
    assert seen == list(range(1000))


def test_bucket_sampler_is_deterministic_covers_each_item_and_buckets_lengths() -> None:
    lengths = [int(x) for x in torch.randint(1, 60, (1000,), generator=torch.Generator().manual_seed(0))]
    a = LengthBucketSampler(lengths, 20, seed=3)
    b = LengthBucketSampler(lengths, 20, seed=3)
    assert a.batches(0) == b.batches(0) and a.batches(0) != a.batches(1)
    assert sorted(i for batch in a.batches(0) for i in batch) == list(range(1000))
    spread = [max(lengths[i] for i in batch) - min(lengths[i] for i in batch) for batch in a.batches(0)]
    assert np.mean(spread) < 5  # random batches of 20 would spread ~50
    assert list(a) == a.batches(0) and list(a) == a.batches(1)  # iterating advances the epoch


def test_datamodule_errors_name_the_fix() -> None:
    text = ParallelText(["a b"] * 3, ["x"] * 3)
    with pytest.raises(ValueError, match="no \\['valid'\\] split"):
        TranslationDataModule({"train": text})  # type: ignore[typeddict-item]
    with pytest.raises(ValueError, match="max_train_len"):
        TranslationDataModule({"train": text, "valid": text}, max_train_len=1, min_count=1)
    with pytest.raises(ValueError, match="aligned"):
        TranslationDataModule({"train": ParallelText(["a"], ["x", "y"]), "valid": text})
    with pytest.raises(ValueError, match="empty batch"):
        collate_pairs([], 0, 0, 3)


def test_bos_is_optional_for_the_lm_vocabulary() -> None:
    v = Vocabulary.build("a b".split())
    with pytest.raises(ValueError, match="no <bos>"):
        _ = v.bos_id
    assert v.specials == (PAD, UNK, EOS)


# --------------------------------------------------------------------------- the body


def body() -> Seq2SeqTransformer:
    torch.manual_seed(0)
    return Seq2SeqTransformer(20, 25, src_pad_id=0, tgt_pad_id=0, **SMALL).eval()


def test_decode_is_causal_and_ignores_source_padding() -> None:
    m = body()
    src = torch.tensor([[5, 6, 7, 2]])
    tgt = torch.tensor([[3, 8, 9, 10, 11]])
    memory, mask = m.encode(src)
    h = m.decode(tgt, memory, mask)
    changed = tgt.clone()
    changed[0, 3:] = torch.tensor([12, 13])
    torch.testing.assert_close(m.decode(changed, memory, mask)[:, :3], h[:, :3])
    padded = torch.tensor([[5, 6, 7, 2, 0, 0, 0]])
    mem_p, mask_p = m.encode(padded)
    assert mask_p.tolist() == [[False] * 4 + [True] * 3]
    torch.testing.assert_close(m.decode(tgt, mem_p, mask_p), h, atol=1e-5, rtol=1e-4)


def test_embed_target_offset_matches_the_full_prefix() -> None:
    m = body()
    tgt = torch.tensor([[3, 8, 9, 10]])
    full = m.embed_target(tgt)
    for t in range(4):
        torch.testing.assert_close(m.embed_target(tgt[:, t : t + 1], offset=t), full[:, t : t + 1])
    assert isinstance(m.decoder, torch.nn.TransformerDecoder) and isinstance(m.decoder.norm, torch.nn.LayerNorm)
    with pytest.raises(ValueError, match="max_len"):
        m.embed_target(tgt, offset=m.max_len - 2)


# --------------------------------------------------------------------------- softmax search


def _chain_model(vocab: int, seed: int) -> Any:
    """A fixed random next-token distribution per (last token, length): a tiny Markov LM."""
    g = torch.Generator().manual_seed(seed)
    table = torch.log_softmax(torch.randn(8, vocab, vocab, generator=g) * 2, dim=-1)
    return lambda prefix: table[prefix.shape[1] - 1, prefix[:, -1]]


def _exhaustive_best(step: Any, vocab: int, max_len: int, eos: int, alpha: float) -> tuple[list[int], float]:
    best: tuple[list[int], float] = ([], -math.inf)
    for n in range(1, max_len + 1):
        for seq in itertools.product(range(vocab), repeat=n):
            if eos in seq[:-1] or (n < max_len and seq[-1] != eos):
                continue
            total = 0.0
            for t in range(n):
                prefix = torch.tensor([[0, *seq[:t]]])
                total += float(step(prefix)[0, seq[t]])
            if total / n**alpha > best[1]:
                best = (list(seq), total / n**alpha)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_softmax_beam_with_a_full_beam_finds_the_exhaustive_best(seed: int) -> None:
    vocab, max_len, eos = 4, 3, 3
    step = _chain_model(vocab, seed)
    seq, score = _exhaustive_best(step, vocab, max_len, eos, alpha=1.0)
    out = softmax_beam_search(step, torch.tensor([[0]]), beam_size=vocab**max_len, max_len=max_len, eos_id=eos)
    assert out.ids[0, : out.lengths[0]].tolist() == seq
    assert out.scores[0].item() == pytest.approx(score)


def test_softmax_greedy_takes_the_argmax_and_stops_rows_at_eos() -> None:
    step = _chain_model(5, 4)
    start = torch.tensor([[0], [1], [2]])
    out = softmax_greedy_decode(step, start, max_len=6, eos_id=4)
    for row in range(3):
        prefix = start[row : row + 1]
        for t in range(int(out.lengths[row])):
            tok = int(step(prefix).argmax())
            assert out.ids[row, t] == tok
            prefix = torch.cat([prefix, torch.tensor([[tok]])], dim=1)
        assert out.lengths[row] == 6 or out.ids[row, out.lengths[row] - 1] == 4


# --------------------------------------------------------------------------- metrics


def _bleu_by_hand(hyps: list[str], refs: list[str]) -> float:
    """Papineni et al.'s corpus BLEU-4, no smoothing: an independent reference."""
    match, total = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for h, r in zip(hyps, refs):
        hw, rw = h.split(), r.split()
        hyp_len, ref_len = hyp_len + len(hw), ref_len + len(rw)
        for n in range(1, 5):
            hc = Counter(tuple(hw[i : i + n]) for i in range(len(hw) - n + 1))
            rc = Counter(tuple(rw[i : i + n]) for i in range(len(rw) - n + 1))
            match[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
            total[n - 1] += max(len(hw) - n + 1, 0)
    log_p = sum(math.log(m / t) for m, t in zip(match, total)) / 4
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100 * bp * math.exp(log_p)


def test_bleu_matches_a_hand_computation() -> None:
    hyps = ["the cat sat on the mat .", "and god said , let there be light", "he went up unto the mount"]
    refs = ["the cat sat on a mat .", "and god said , let there be light :", "and he went up into the mount"]
    scores = corpus_scores(hyps, refs)
    assert scores["bleu"] == pytest.approx(_bleu_by_hand(hyps, refs), abs=1e-6)
    assert 0 < scores["chrf"] < 100
    assert corpus_scores(refs, refs)["bleu"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="one hypothesis per reference"):
        corpus_scores(hyps, refs[:2])


def test_eos_rate_and_distinct_words() -> None:
    ids = torch.tensor([[7, 2, 0, 0], [7, 8, 9, 6], [2, 0, 0, 0]])
    assert eos_rate(ids, torch.tensor([2, 4, 1]), eos_id=2) == pytest.approx(2 / 3)
    assert distinct_words(["a b a", "", "c"]) == 3


# --------------------------------------------------------------------------- the translators


def _fit(module: L.LightningModule, dm: BibleDataModule, tmp_path: Path) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=3,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*val_check_interval.*|.*check_val_every_n_epoch.*")
        trainer.fit(module, datamodule=dm)
    return trainer


def _translators(dm: BibleDataModule) -> list[L.LightningModule]:
    sizes = (dm.src_vocab_size, dm.tgt_vocab_size)
    torch.manual_seed(0)
    return [
        SoftmaxTranslator(*sizes, **SMALL, warmup_steps=1),
        ContinuousTranslator(*sizes, **SMALL, warmup_steps=1, target_dim=16),
        ContinuousTranslator(*sizes, **SMALL, warmup_steps=1, targets="glove"),
    ]


def test_both_translators_train_and_translate_the_committed_sample(bible: BibleDataModule, tmp_path: Path) -> None:
    sources = bible.test_pairs.sources[:3]  # type: ignore[union-attr]
    for module in _translators(bible):
        before = {k: v.clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
        trainer = _fit(module, bible, tmp_path)
        assert trainer.global_step == 3 and module.tokens_seen > 0
        after = module.state_dict()
        changed = [k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, after[k])]
        assert any("decoder" in k for k in changed)
        for method in ("greedy", "beam"):
            out = module.translate(sources, method=method, beam_size=3, max_len=8)
            assert len(out) == 3 and all(isinstance(s, str) for s in out)
            assert all(len(s.split()) <= 8 for s in out)
            assert not any(w in (PAD, BOS) for s in out for w in s.split())


def test_glove_targets_hold_glove_rows(bible: BibleDataModule, tmp_path: Path) -> None:
    module = _translators(bible)[2]
    _fit(module, bible, tmp_path)
    the = bible.tgt_vocab.index("the")
    row = module.continuous_targets.weight[the]
    glove = glove_targets(["the", "lord"]).weight
    assert row.shape == (50,)
    assert float(torch.cosine_similarity(row, glove[0], dim=0)) == pytest.approx(1.0, abs=1e-6)
    assert module.continuous_targets.special_ids.tolist() == [0, 1, 3]


def test_batched_translation_equals_one_sentence_at_a_time(bible: BibleDataModule) -> None:
    # The source index rides in the prefix; a mix-up of rows would change the outputs.
    src = bible.test_pairs.sources[:4]  # type: ignore[union-attr]
    for module in _translators(bible)[:2]:
        module.attach_vocabularies(bible.src_vocab, bible.tgt_vocab)
        for method in ("greedy", "beam"):
            together = module.translate(src, method=method, beam_size=2, max_len=6)
            alone = [module.translate([s], method=method, beam_size=2, max_len=6)[0] for s in src]
            assert together == alone
        assert len(set(together)) > 1  # the sources differ, so (random) outputs do too


def test_cached_and_recompute_search_give_the_same_translations(bible: BibleDataModule) -> None:
    for module in _translators(bible)[:2]:
        module.attach_vocabularies(bible.src_vocab, bible.tgt_vocab)
        ids = module.encode_sources(bible.test_pairs.sources[:6])  # type: ignore[union-attr]
        for method in ("greedy", "beam"):
            cached = module.generate(ids, method, beam_size=3, max_len=12, stateful=True)
            recompute = module.generate(ids, method, beam_size=3, max_len=12, stateful=False)
            assert cached.ids.tolist() == recompute.ids.tolist(), (type(module).__name__, method)
            assert torch.allclose(cached.scores, recompute.scores, atol=1e-4)


def test_fitted_eos_bias_and_rules_reach_the_continuous_search(bible: BibleDataModule, tmp_path: Path) -> None:
    from lightning_contloss import SearchRules

    module = _translators(bible)[1]
    _fit(module, bible, tmp_path)
    fit = module.fit_eos_bias(bible.val_dataloader(), max_batches=2)
    assert fit.positions > 0 and fit.errors_after <= fit.errors_before
    sources = bible.test_pairs.sources[:4]  # type: ignore[union-attr]
    # a large bias ends every output at its minimum length, EOS included
    ids = module.encode_sources(sources)
    out = module.generate(ids, "greedy", max_len=10, rules=SearchRules(eos_bias=10.0, min_length=2))
    assert out.lengths.tolist() == [2] * 4
    with pytest.raises(ValueError, match="rules apply to the continuous search"):
        _translators(bible)[0].generate(ids, "greedy", max_len=4, rules=SearchRules(min_length=2))


def test_checkpoint_keeps_vocabularies_and_translations(bible: BibleDataModule, tmp_path: Path) -> None:
    module = _translators(bible)[1]
    trainer = _fit(module, bible, tmp_path)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = ContinuousTranslator.load_from_checkpoint(path)
    src = bible.test_pairs.sources[:2]  # type: ignore[union-attr]
    assert loaded.translate(src, max_len=5) == module.translate(src, max_len=5)
    assert loaded.tokens_seen == module.tokens_seen


@pytest.fixture(scope="module")
def bible_bpe(tmp_path_factory: pytest.TempPathFactory) -> BibleDataModule:
    folder = tmp_path_factory.mktemp("tokenizers")
    return BibleDataModule(batch_size=16, max_train_pairs=400, max_train_len=40, vocab="bpe-1k", tokenizer_dir=folder)


def test_bpe_translators_fit_translate_and_keep_the_tokenizer_in_checkpoints(
    bible_bpe: BibleDataModule, tmp_path: Path
) -> None:
    dm = bible_bpe
    assert isinstance(dm.tgt_vocab, SubwordVocabulary) and isinstance(dm.src_vocab, SubwordVocabulary)
    assert dm.tgt_vocab.words[:4] == [PAD, UNK, EOS, BOS] and dm.tgt_vocab_size <= 1000
    assert len(list(dm.tgt_vocab.words)) == dm.tgt_vocab_size
    sources = dm.test_pairs.sources[:3]  # type: ignore[union-attr]
    sizes = (dm.src_vocab_size, dm.tgt_vocab_size)
    torch.manual_seed(0)
    softmax = SoftmaxTranslator(*sizes, **SMALL, warmup_steps=1)
    continuous = ContinuousTranslator(*sizes, **SMALL, warmup_steps=1, target_dim=16)
    for module in (softmax, continuous):
        trainer = _fit(module, dm, tmp_path)
        assert trainer.global_step == 3 and module.tokens_seen > 0
        assert module.tgt_vocab is dm.tgt_vocab
        for method in ("greedy", "beam"):
            out = module.translate(sources, method=method, beam_size=3, max_len=8)
            assert len(out) == 3 and all(isinstance(s, str) for s in out)
            # Detokenised: no word-start marks, no specials but <unk>, at most 8 pieces' worth of words.
            assert not any("\u2581" in s or PAD in s or BOS in s or EOS in s for s in out)
            assert all(len(s.split()) <= 8 for s in out)
    # Random targets over the subword table, <pad> <unk> <bos> never decoded (as word-level).
    assert continuous.continuous_targets.weight.shape == (dm.tgt_vocab_size, 16)
    assert continuous.continuous_targets.special_ids.tolist() == [0, 1, 3]
    path = tmp_path / "bpe.ckpt"
    trainer.save_checkpoint(path)
    loaded = ContinuousTranslator.load_from_checkpoint(path)
    assert isinstance(loaded.tgt_vocab, SubwordVocabulary) and loaded.tgt_vocab.words == dm.tgt_vocab.words
    assert loaded.src_vocab is not None and loaded.src_vocab.fingerprint == dm.src_vocab.fingerprint  # type: ignore[attr-defined]
    assert loaded.translate(sources, max_len=6) == continuous.translate(sources, max_len=6)


def test_bpe_vocabulary_against_a_word_level_model_or_glove_targets_is_refused(
    bible: BibleDataModule, bible_bpe: BibleDataModule, tmp_path: Path
) -> None:
    word_sized = ContinuousTranslator(bible.src_vocab_size, bible.tgt_vocab_size, **SMALL)
    with pytest.raises(ValueError, match="model was built for src_vocab_size"):
        word_sized.attach_vocabularies(bible_bpe.src_vocab, bible_bpe.tgt_vocab)
    with pytest.raises(ValueError, match="model was built for src_vocab_size"):
        _fit(word_sized, bible_bpe, tmp_path)
    glove = ContinuousTranslator(bible_bpe.src_vocab_size, bible_bpe.tgt_vocab_size, **SMALL, targets="glove")
    with pytest.raises(ValueError, match=r"targets='glove' are word vectors.*targets='random'"):
        _fit(glove, bible_bpe, tmp_path)
    with pytest.raises(ValueError, match=r"targets='glove' are word vectors"):
        glove.attach_vocabularies(bible_bpe.src_vocab, bible_bpe.tgt_vocab)
    assert glove.tgt_vocab is None  # refused before anything was attached


def test_translator_errors_say_what_to_do(bible: BibleDataModule) -> None:
    module = SoftmaxTranslator(bible.src_vocab_size, bible.tgt_vocab_size, **SMALL)
    with pytest.raises(ValueError, match="attach_vocabularies"):
        module.translate(["hola"])
    with pytest.raises(ValueError, match="src_vocab_size"):
        module.attach_vocabularies(bible.tgt_vocab, bible.src_vocab)
    with pytest.raises(ValueError, match="'greedy' or 'beam'"):
        module.generate(torch.tensor([[5, 2]]), method="sample")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown loss"):
        ContinuousTranslator(10, 10, loss="nope")
    glove = ContinuousTranslator(10, 10, **SMALL, targets="glove")
    with pytest.raises(ValueError, match="use_glove_targets"):
        glove.setup("fit")


def test_continuous_translator_defaults_to_infonce() -> None:
    # InfoNCE translated best in benchmarks/translation.py; the default pins that choice.
    from lightning_contloss.losses import InfoNCELoss

    model = ContinuousTranslator(20, 30, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1)
    assert isinstance(model.continuous_loss_fn, InfoNCELoss)
    assert model.continuous_loss_fn.ignore_index == model.hparams["tgt_pad_id"]
    assert model.continuous_decode_space == "cosine"

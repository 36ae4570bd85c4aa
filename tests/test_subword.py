"""Subword vocabularies: BPE trained on committed Bible lines, round trip, the cache, files that do not match."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_contloss.examples.data import BOS, EOS, PAD, UNK
from lightning_contloss.examples.subword import (
    SubwordVocabulary,
    parse_vocab,
    subword_vocabulary,
    text_fingerprint,
)
from lightning_contloss.examples.translation_data import (
    ParallelText,
    TranslationDataModule,
    bible_corpus,
    build_vocabularies,
    decode_ids,
    encode_text,
)

N_LINES = 300


@pytest.fixture(scope="module")
def corpus() -> dict[str, ParallelText]:
    full = bible_corpus("es-en")
    train = full["train"]
    return {"train": ParallelText(train.src[:N_LINES], train.tgt[:N_LINES]), "valid": full["valid"]}


@pytest.fixture(scope="module")
def english(corpus: dict[str, ParallelText]) -> SubwordVocabulary:
    return SubwordVocabulary.train(corpus["train"].tgt, size=600)


def normalised(text: str) -> str:
    """The documented normalisation: NFC, lower case, whitespace runs as one space, no edge spaces."""
    return " ".join(unicodedata.normalize("NFC", text).lower().split())


def test_parse_vocab_sizes_and_bad_choices() -> None:
    assert parse_vocab("word") is None
    assert parse_vocab("bpe-8k") == 8000 and parse_vocab("bpe-32k") == 32000 and parse_vocab("bpe-1234") == 1234
    for bad in ("bpe", "bpe-0", "bpe-4", "BPE-8k", "bpe-8m", "words", "bpe-08k"):
        with pytest.raises(ValueError, match=r"'word' or 'bpe-<size>'|more than 4"):
            parse_vocab(bad)


def test_training_on_committed_lines_gives_specials_first_and_the_asked_size(
    english: SubwordVocabulary, corpus: dict[str, ParallelText]
) -> None:
    assert english.words[:4] == [PAD, UNK, EOS, BOS] and len(english) == 600
    assert (english.pad_id, english.unk_id, english.eos_id, english.bos_id) == (0, 1, 2, 3)
    assert english.fingerprint == text_fingerprint(corpus["train"].tgt) and english.lines == N_LINES
    # Frequent words are whole pieces; word starts carry the ▁ mark, punctuation stands alone.
    assert english.pieces("And the LORD said,") == ["▁and", "▁the", "▁lord", "▁said", ","]
    # Deterministic: the same lines and size give the same pieces in the same order.
    assert SubwordVocabulary.train(corpus["train"].tgt, size=600).words == english.words
    # A corpus this small stops short of a large size (no pair left that occurs twice).
    assert len(SubwordVocabulary.train(corpus["train"].tgt[:20], size=5000)) < 5000


def test_round_trip_of_held_out_verses_is_the_normalised_text(
    english: SubwordVocabulary, corpus: dict[str, ParallelText]
) -> None:
    spanish = SubwordVocabulary.train(corpus["train"].src, size=600)
    sides = ((english, corpus["train"].tgt, corpus["valid"].tgt), (spanish, corpus["train"].src, corpus["valid"].src))
    for vocab, train, held_out in sides:
        seen = set(normalised(" ".join(train)))
        exact = 0
        for line in held_out:
            ids = vocab.encode_text(line)
            # <unk> exactly where a character never met in the 300 training lines is; elsewhere the text comes back.
            assert (vocab.unk_id in ids) == bool(set(normalised(line)) - seen - {" "}), line
            if vocab.unk_id not in ids:
                assert vocab.decode_text(ids) == normalised(line), line
                exact += 1
        assert exact > 900
    # Subwords: a held-out word the training lines lack is spelled with several pieces.
    assert len(english.pieces("Zaphnathpaaneah")) > 1


@settings(max_examples=80, deadline=None, derandomize=True)
@given(data=st.data())
def test_round_trip_property_over_the_trained_alphabet(english: SubwordVocabulary, data: st.DataObject) -> None:
    alphabet = [w for w in english.words if len(w) == 1 and w != "▁"] + [" ", "  ", "\t", "A", "B"]
    text = "".join(data.draw(st.lists(st.sampled_from(alphabet), max_size=40)))
    ids = english.encode_text(text)
    assert english.unk_id not in ids
    assert english.decode_text(ids) == normalised(text)
    assert all(0 <= i < len(english) for i in ids)


def test_cased_training_keeps_case(corpus: dict[str, ParallelText]) -> None:
    cased = SubwordVocabulary.train(corpus["train"].tgt, size=600, lowercase=False)
    line = corpus["train"].tgt[0]
    assert cased.decode_text(cased.encode_text(line)) == line
    assert cased.state()["lowercase"] is False


def test_save_load_and_the_cache_reuse_the_file(
    english: SubwordVocabulary, corpus: dict[str, ParallelText], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = english.save(tmp_path / "en.json")
    loaded = SubwordVocabulary.load(path, lines=corpus["train"].tgt, size=600)
    assert loaded.words == english.words and loaded.fingerprint == english.fingerprint
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed into place

    cache = tmp_path / "cache"
    first = subword_vocabulary(corpus["train"].tgt, 600, cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].name.startswith("bpe-600-lower-")

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached tokenizer should have been read, not trained again")

    monkeypatch.setattr(SubwordVocabulary, "train", no_training)
    assert subword_vocabulary(corpus["train"].tgt, 600, cache).words == first.words
    monkeypatch.undo()
    # Another size or other lines are other files.
    subword_vocabulary(corpus["train"].tgt, 500, cache)
    subword_vocabulary(corpus["train"].tgt[:-1], 600, cache)
    assert len(list(cache.iterdir())) == 3


def test_files_that_are_missing_or_do_not_match_the_data_are_refused(
    english: SubwordVocabulary, corpus: dict[str, ParallelText], tmp_path: Path
) -> None:
    lines = corpus["train"].tgt
    with pytest.raises(ValueError, match=r"no tokenizer file at .*nope\.json"):
        SubwordVocabulary.load(tmp_path / "nope.json")
    path = english.save(tmp_path / "en.json")
    with pytest.raises(ValueError, match="trained for a bpe-600 vocabulary but bpe-8000 was asked"):
        SubwordVocabulary.load(path, lines=lines, size=8000)
    with pytest.raises(ValueError, match="trained on other text"):
        SubwordVocabulary.load(path, lines=corpus["train"].src, size=600)
    with pytest.raises(ValueError, match="trained on other text"):
        SubwordVocabulary.load(path, lines=lines[:-1])
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not a subword vocabulary saved by SubwordVocabulary"):
        SubwordVocabulary.load(broken)
    foreign = tmp_path / "tokenizer.json"  # a plain Hugging Face tokenizer file, without the training record
    foreign.write_text(json.dumps(english.state()["tokenizer"]), encoding="utf-8")
    with pytest.raises(ValueError, match="not a subword vocabulary"):
        SubwordVocabulary.load(foreign)
    with pytest.raises(ValueError, match="no text to train"):
        SubwordVocabulary.train(["", "  "], size=100)
    with pytest.raises(ValueError, match="more than 4"):
        SubwordVocabulary.train(lines, size=4)


def test_datamodule_tokenizer_files_are_checked_against_each_side(
    corpus: dict[str, ParallelText], tmp_path: Path
) -> None:
    train = corpus["train"]
    src, tgt = build_vocabularies(train, "bpe-500", tokenizer_dir=tmp_path / "tok")
    assert isinstance(src, SubwordVocabulary) and isinstance(tgt, SubwordVocabulary)
    assert src.fingerprint == text_fingerprint(train.src) and tgt.fingerprint == text_fingerprint(train.tgt)
    src_file, tgt_file = src.save(tmp_path / "es.json"), tgt.save(tmp_path / "en.json")
    dm = TranslationDataModule(
        corpus, vocab="bpe-500", src_tokenizer=src_file, tgt_tokenizer=tgt_file, max_train_len=None
    )
    assert dm.tgt_vocab.words == tgt.words and dm.src_vocab.words == src.words
    assert len(dm.train_pairs) == N_LINES
    # Each pair's ids decode back to the (normalised) sentences.
    s_ids, t_ids = dm.train_pairs[0]
    assert decode_ids(dm.tgt_vocab, t_ids[:-1].tolist()) == normalised(train.tgt[0])
    assert decode_ids(dm.src_vocab, s_ids[:-1].tolist()) == normalised(train.src[0])
    assert encode_text(dm.tgt_vocab, train.tgt[0]) == t_ids[:-1].tolist()

    with pytest.raises(ValueError, match="target sentences \\(the other language\\); pass it as tgt_tokenizer"):
        TranslationDataModule(corpus, vocab="bpe-500", src_tokenizer=tgt_file)
    with pytest.raises(ValueError, match="bpe-500 vocabulary but bpe-8000 was asked"):
        TranslationDataModule(corpus, vocab="bpe-8k", tgt_tokenizer=tgt_file)
    with pytest.raises(ValueError, match="no tokenizer file at"):
        TranslationDataModule(corpus, vocab="bpe-500", tgt_tokenizer=tmp_path / "missing.json")
    with pytest.raises(ValueError, match="trained on other text"):
        TranslationDataModule(corpus, vocab="bpe-500", max_train_pairs=100, tgt_tokenizer=tgt_file)
    with pytest.raises(ValueError, match="pass vocab='bpe-<size>'"):
        TranslationDataModule(corpus, tgt_tokenizer=tgt_file)
    with pytest.raises(ValueError, match="'word' or 'bpe-<size>'"):
        TranslationDataModule(corpus, vocab="bpe8k")

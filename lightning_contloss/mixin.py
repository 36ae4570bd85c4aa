"""ContinuousOutputMixin: turn a softmax LightningModule into a continuous-output one."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_contloss.calibration import Calibration
from lightning_contloss.decoding import Decoder, make_decoder
from lightning_contloss.decoding.factory import check_decoder
from lightning_contloss.decoding.table_watch import TableWatch
from lightning_contloss.finite_loss import check_finite_loss
from lightning_contloss.heads import EmbeddingRegressionHead, JointHead, split_head_output, swap_softmax_head
from lightning_contloss.integrations import check_targets, head_vocab_fits, prediction_tensor, vocab_hint
from lightning_contloss.losses import ReWELoss, bind_targets, decode_space_of, ignore_index_of
from lightning_contloss.targets import TargetEmbeddings

if TYPE_CHECKING:
    import lightning as L

    _Base = L.LightningModule
else:
    _Base = object

__all__ = ["ContinuousOutputMixin"]


class ContinuousOutputMixin(_Base):
    """Adds a continuous output head to a ``LightningModule``; list it *before* ``L.LightningModule``.

    Call :meth:`replace_softmax_head` once in ``__init__``; then
    :meth:`continuous_loss` in ``training_step`` and :meth:`continuous_validation_step` in
    ``validation_step``/``test_step``. Pair it with
    :class:`~lightning_contloss.DecodingCallback`, which builds the decoder and logs
    accuracy, recall and collapse metrics.

    The targets, the loss and the head are registered as submodules (``continuous_targets``,
    ``continuous_loss_fn`` and the head at its path), so they move with the module and go into
    checkpoints. The mixin defines no ``__init__``, so ``save_hyperparameters`` keeps working;
    its override only drops tensors and modules (tables are not hyper-parameters).

    Example:
        >>> import lightning as L
        >>> from lightning_contloss.losses import CosineLoss
        >>> class LM(ContinuousOutputMixin, L.LightningModule):
        ...     def __init__(self) -> None:
        ...         super().__init__()
        ...         self.model = torch.nn.Sequential(torch.nn.Embedding(100, 16), torch.nn.Linear(16, 100))
        ...         self.replace_softmax_head("model.1", TargetEmbeddings.random(100, 8), CosineLoss())
        >>> lm = LM()
        >>> pred = lm.model(torch.tensor([[1, 2, 3]]))
        >>> pred.shape, lm.continuous_loss(pred, torch.tensor([[2, 3, 4]])).shape
        (torch.Size([1, 3, 8]), torch.Size([]))
    """

    continuous_targets: TargetEmbeddings
    continuous_loss_fn: Metric
    continuous_calibration: Calibration
    # Class-level defaults: the mixin has no __init__, so these read as "no head yet".
    _continuous_path: str | None = None
    _continuous_decoder_built: Decoder | None = None
    # The content hash of the table the decoder was built from, and what notices the table change.
    _continuous_decoder_for: str | None = None
    _continuous_table_watch: TableWatch | None = None
    # The loss's padding id, read once here rather than by walking the loss on every step.
    continuous_ignore_index: int | None = None
    # continuous_loss raises FloatingPointError on a NaN/inf loss (see finite_loss.py); False skips it.
    continuous_check_finite: bool = True

    # ------------------------------------------------------------------ set-up
    def replace_softmax_head(
        self,
        path: str,
        targets: TargetEmbeddings,
        loss: Metric,
        head_hidden: int | None = None,
        keep_softmax: bool = False,
        rewe_lambda: float | None = None,
        *,
        head: nn.Module | None = None,
        activation: str = "relu",
    ) -> nn.Module:
        """Swap the softmax ``nn.Linear(H, V)`` at ``path`` for a regression head onto ``targets``.

        Args:
            path: dotted path of the softmax layer from this module, e.g. ``"model.lm_head"``.
            targets: the ``[V, D]`` target table; V must equal the layer's ``out_features``.
            loss: a continuous loss (``CosineLoss()``, ``VMFLoss() + 0.1 * CosineLoss()``, ...);
                it is bound to ``targets`` here.
            head_hidden: hidden width of an MLP head; ``None`` for a Linear head.
            keep_softmax: ReWE joint mode: keep the softmax layer and add the regression head
                beside it (the model then returns ``[..., V + D]``; the loss is ``ReWELoss``).
            rewe_lambda: λ of ReWE when ``keep_softmax`` and ``loss`` is not already a ReWELoss;
                ``None`` keeps ``ReWELoss``'s default.
            head: a ready-made head instead of building an :class:`EmbeddingRegressionHead`.
            activation: activation of the MLP head.

        Returns:
            The old softmax layer.
        """
        if not isinstance(targets, TargetEmbeddings):
            raise ValueError(
                f"targets must be a TargetEmbeddings, got {type(targets).__name__}; wrap a tensor with "
                "TargetEmbeddings.from_tensor(weight)"
            )
        if not isinstance(loss, Metric):
            raise ValueError(
                f"loss must be a lightning_contloss loss (a torchmetrics Metric), got {type(loss).__name__}"
            )
        if self._continuous_path is not None:
            raise ValueError(
                f"replace_softmax_head was already called for {self._continuous_path!r}; call it once"
            )
        if keep_softmax and not any(isinstance(m, ReWELoss) for m in loss.modules()):
            ignore = ignore_index_of(loss)
            if rewe_lambda is None:
                loss = ReWELoss(ignore_index=ignore)
            else:
                loss = ReWELoss(lam=rewe_lambda, ignore_index=ignore)
        decode_space_of(loss)  # fails early, before anything is swapped, for a non-continuous loss
        old = self._continuous_softmax_layer(path, len(targets))
        new_head = head if head is not None else EmbeddingRegressionHead(
            old.in_features, targets.dim, hidden=head_hidden, activation=activation
        )
        out_dim = getattr(new_head, "out_features", targets.dim)
        if out_dim != targets.dim:
            raise ValueError(
                f"the head outputs dim {out_dim} but the targets have dim {targets.dim}; "
                "build the head with out_features=targets.dim"
            )
        if keep_softmax:
            new_head = JointHead(old, new_head, pred_dim=targets.dim)
        swap_softmax_head(self, path, new_head, vocab_size=len(targets), owner=self)
        self.continuous_targets = targets
        self.continuous_loss_fn = bind_targets(loss, targets)
        # The κ of the model's distribution (perplexity, BrierLM, sampling); saved with the model.
        self.continuous_calibration = Calibration(self.continuous_loss_fn)
        self.continuous_ignore_index = ignore_index_of(loss)
        self._continuous_path = path
        self._continuous_decoder_built = None
        return old

    def _continuous_softmax_layer(self, path: str, vocab_size: int) -> nn.Linear:
        try:
            old = self.get_submodule(path)
        except AttributeError:
            old = None
        if isinstance(old, nn.Linear) and not head_vocab_fits(self, path, old.out_features, vocab_size):
            raise ValueError(
                f"the targets have V={vocab_size} rows but {path!r} has out_features={old.out_features}; "
                f"{vocab_hint(old.out_features)}"
            )
        if not isinstance(old, nn.Linear):
            # swap_softmax_head raises with the list of candidate layers.
            swap_softmax_head(self, path, nn.Identity(), vocab_size=vocab_size)
        assert isinstance(old, nn.Linear)
        return old

    def save_hyperparameters(
        self,
        *args: Any,
        ignore: Sequence[str] | str | None = None,
        frame: Any = None,
        logger: bool = True,
    ) -> None:
        """Lightning's ``save_hyperparameters``, ignoring tensors and modules (targets, models, losses)."""
        if frame is None:
            current = inspect.currentframe()
            frame = current.f_back if current is not None else None
        ignored = [ignore] if isinstance(ignore, str) else list(ignore or [])
        if frame is not None:
            ignored += [
                name for name, value in frame.f_locals.items()
                if name != "self" and isinstance(value, Tensor | nn.Module)
            ]
        super().save_hyperparameters(*args, ignore=ignored, frame=frame, logger=logger)

    # ------------------------------------------------------------------ steps
    def _continuous_head(self) -> nn.Module:
        if self._continuous_path is None:
            raise RuntimeError(
                f"{type(self).__name__} has no continuous head yet; call "
                "self.replace_softmax_head('path.to.lm_head', targets=..., loss=...) in __init__ first"
            )
        return self.get_submodule(self._continuous_path)

    def continuous_split_output(self, out: Tensor | Any) -> tuple[Tensor | None, Tensor]:
        """``(logits or None, pred [..., D])`` from the model's output (logits only in ReWE mode).

        ``out`` is the model's output tensor, or a Hugging Face ``ModelOutput`` (its ``.logits``).
        """
        head = self._continuous_head()
        out = prediction_tensor(out)
        expected = int(getattr(head, "out_features", self.continuous_targets.dim))
        if out.shape[-1] != expected:
            raise ValueError(
                f"predictions have last dim {out.shape[-1]} but the continuous head outputs dim {expected}; "
                f"pass the output of the model whose head was replaced at {self._continuous_path!r}"
            )
        return split_head_output(head, out)

    def _continuous_loss_value(self, out: Tensor | Any, ids: Tensor) -> tuple[Tensor, Tensor, Tensor | None, int]:
        logits, pred = self.continuous_split_output(out)
        check_targets(self, self._continuous_path or "", ids)
        value = self.continuous_loss_fn(logits, pred, ids) if logits is not None else self.continuous_loss_fn(pred, ids)
        ignore = self.continuous_ignore_index
        tokens = int((ids != ignore).sum()) if ignore is not None else ids.numel()
        return value, pred, logits, tokens

    def continuous_loss(self, pred: Tensor | Any, ids: Tensor) -> Tensor:
        """The training loss of a batch, with gradients; return it from ``training_step``.

        Inside a Trainer loop it also logs ``train/loss`` (per step and epoch); called anywhere
        else (after ``fit``, in a notebook) it only returns the loss.

        A NaN or inf loss raises ``FloatingPointError`` naming the global step, before the
        optimizer sees it (set ``continuous_check_finite = False`` to train on regardless).

        Args:
            pred: ``[..., D]`` the model's output (``[..., V + D]`` in ReWE mode), or a Hugging
                Face ``ModelOutput`` whose ``.logits`` holds it.
            ids: ``[...]`` target token ids.
        """
        value, _, _, tokens = self._continuous_loss_value(pred, ids)
        check_finite_loss(self, value)
        if _loop_can_log(self):
            self.log("train/loss", value, on_step=True, on_epoch=True, prog_bar=True, batch_size=max(tokens, 1))
        return value

    def continuous_validation_step(self, pred: Tensor | Any, ids: Tensor) -> dict[str, Tensor]:
        """Logs ``val/loss`` (``test/loss`` under ``trainer.test``) and returns what the callback decodes.

        Outside a Trainer loop it logs nothing and only returns the dict.

        Args:
            pred: ``[..., D]`` the model's output (``[..., V + D]`` in ReWE mode), or a Hugging
                Face ``ModelOutput`` whose ``.logits`` holds it.
            ids: ``[...]`` target token ids.

        Returns:
            ``{"loss", "pred", "target"}`` (plus ``"logits"`` in ReWE mode); return it from
            ``validation_step``/``test_step`` so :class:`~lightning_contloss.DecodingCallback`
            can decode the predictions.
        """
        value, emb, logits, tokens = self._continuous_loss_value(pred, ids)
        prefix = "test" if self._trainer is not None and self.trainer.testing else "val"
        if _loop_can_log(self):
            self.log(f"{prefix}/loss", value, on_step=False, on_epoch=True, sync_dist=True, batch_size=max(tokens, 1))
        out = {"loss": value.detach(), "pred": emb.detach(), "target": ids.detach()}
        if logits is not None:
            out["logits"] = logits.detach()
        return out

    continuous_test_step = continuous_validation_step

    @torch.no_grad()
    def continuous_calibrate(self, pred: Tensor | Any, ids: Tensor) -> float:
        """Fit κ̂ of the model's distribution on held-out predictions and targets; store it and return it.

        ``generate(do_sample=True)``, ``val/vmf_ppl`` and BrierLM then use it (see
        :class:`~lightning_contloss.calibration.Calibration`); it is saved in checkpoints.

        Args:
            pred: ``[..., D]`` the model's output on a few validation batches (or its ``ModelOutput``).
            ids: ``[...]`` their target ids (padding and special ids are left out).
        """
        logits, emb = self.continuous_split_output(pred)
        if logits is not None:
            raise ValueError("in ReWE mode tokens come from the kept softmax, whose logits need no calibration")
        return self.continuous_calibration.fit(emb, ids, ignore_index=self.continuous_ignore_index)

    # ------------------------------------------------------------------ decoding
    @property
    def continuous_decoder(self) -> Decoder:
        """The decoder in use: the callback's, or an exact/HNSW one built on first use.

        It follows the targets: after ``load_state_dict`` (or anything else that changes the
        table's content) the next access builds a decoder of the new table.
        """
        targets = self._continuous_targets_for_decoding()
        # Hashed only when the table's tensors moved (a load, a move, a write).
        digest = self._continuous_watch().digest(targets)
        if self._continuous_decoder_built is None or digest != self._continuous_decoder_for:
            self._continuous_decoder_built = make_decoder(targets, self.continuous_decode_space)
            self._continuous_decoder_for = digest
        return self._continuous_decoder_built

    @continuous_decoder.setter
    def continuous_decoder(self, value: Decoder) -> None:
        targets = self._continuous_targets_for_decoding()
        check_decoder(value, targets, self.continuous_decode_space)
        self._continuous_decoder_built = value
        self._continuous_decoder_for = self._continuous_watch().digest(targets)

    def _continuous_watch(self) -> TableWatch:
        if self._continuous_table_watch is None:
            self._continuous_table_watch = TableWatch()
        return self._continuous_table_watch

    def _continuous_targets_for_decoding(self) -> TargetEmbeddings:
        if self._continuous_path is None:
            raise RuntimeError("call self.replace_softmax_head(...) before decoding")
        return self.continuous_targets

    @property
    def continuous_decode_space(self) -> str:
        """The similarity the decoder ranks by, as declared by the loss."""
        return decode_space_of(self.continuous_loss_fn)

    @torch.no_grad()
    def continuous_decode(self, pred: Tensor | Any, k: int = 1) -> Tensor:
        """Token ids of the k nearest targets: ``pred [..., D] -> ids [..., k]`` (best first).

        In ReWE mode pass the model's ``[..., V + D]`` output: as in ReWE, tokens come from the
        kept softmax (its top-k logits); the regression head only regularises training.
        """
        logits, emb = self.continuous_split_output(pred)
        if logits is not None:
            return logits.topk(k, dim=-1).indices
        ids, _ = self.continuous_decoder.query(emb.reshape(-1, emb.shape[-1]).float(), k)
        return ids.reshape(*emb.shape[:-1], k).to(emb.device)

    def continuous_predict_step(self, pred: Tensor, k: int = 1) -> Tensor:
        """``predict_step`` helper: token ids ``[..., k]`` of the model's predictions."""
        return self.continuous_decode(pred, k)


def _loop_can_log(module: L.LightningModule) -> bool:
    """Whether ``module.log`` can record now: inside a Trainer loop's hook, or under Fabric.

    Outside one (after ``fit``, in a notebook) Lightning's ``log`` warns or raises ("result
    collection is not registered"), as its ``LightningModule.log`` decides; a loss must still work there.
    """
    if module._fabric is not None:
        return True
    trainer = module._trainer
    return (
        trainer is not None
        and not trainer.barebones
        and trainer._results is not None
        and module._current_fx_name is not None
    )


"""Hugging Face ``transformers`` models after ``replace_softmax_head``: no path silently does the wrong thing.

:func:`adapt_hf_model` is called by ``replace_softmax_head`` when the replaced layer belongs to a
``transformers.PreTrainedModel``. It gives the model instance a subclass of its own class
(same name, same ``isinstance``) with these behaviours, and neutralises what HF applies around
the head:

============================== =====================================================================
``model(..., labels=y)``       the continuous loss with HF's own label convention: causal LMs shift
                               (position t predicts ``y[t + 1]``; ``shift_labels=`` are taken as
                               already shifted), seq2seq models build ``decoder_input_ids`` from
                               ``y`` as HF does; ``-100`` is padding
``model.generate(...)``        HF's generate on vocabulary scores that rank as the decoder does
                               (greedy = ``greedy_decode``, beam = ``beam_search``); sampling draws
                               from the calibrated distribution, see ``hf_generation.py``
``get_output_embeddings()``    ``None``: the model has no vocabulary projection any more
``tie_weights()``              ties the model's other weights; the continuous head stays untied
``resize_token_embeddings()``  raises before changing anything: resize before the swap
``save_pretrained()``          writes a continuous save (``hf_save.py``): the head, targets and loss
                               come back with ``load_continuous``; ``from_pretrained`` refuses it
post-head transforms           soft-caps, logit scales, ``final_logits_bias``, T5's ``d_model**-0.5``
                               rescale: turned off (``hf_post_head.py``); the first forward checks
                               that ``logits`` are the head's own output
``early_stopping``             is ``"never"`` in beam search unless the call or the model's
                               ``generation_config`` sets it: HF's default heuristic assumes
                               log-probabilities; ``"never"`` is the exact bound that ``beam_search``
                               uses, so both find the same beam. Only the call's resolved copy
                               changes, so ``generation_config`` stays valid to save
============================== =====================================================================

``transformers`` is imported lazily: this module imports without it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from lightning_contloss.finite_loss import check_finite_loss
from lightning_contloss.integrations.hf_generation import ContinuousLogitsView
from lightning_contloss.integrations.hf_post_head import HeadOutputProbe, neutralise_post_head
from lightning_contloss.integrations.label_shift import ShiftCheck
from lightning_contloss.integrations.state import STATE_ATTR, ContinuousOwner, IntegrationState

__all__ = ["HF_IGNORE_INDEX", "ContinuousHFModel", "adapt_hf_model", "continuous_class"]

HF_IGNORE_INDEX = -100  # HF's padding label

_CLASSES: dict[type, type] = {}


def _state(model: nn.Module) -> IntegrationState:
    state = model.__dict__.get(STATE_ATTR)
    assert isinstance(state, IntegrationState)
    return state


class ContinuousHFModel:
    """Mixed in before a ``PreTrainedModel`` class by :func:`continuous_class`; see the module docs."""

    # ------------------------------------------------------------------ generation
    def generate(
        self, *args: Any, num_candidates: int | None = None, token_score: str = "cosine", **kwargs: Any
    ) -> Any:
        """HF's ``generate`` on continuous scores; takes two extra keyword arguments.

        With ``do_sample=True`` tokens are drawn from the model's calibrated distribution
        ``softmax(κ·cos(ê, e_w) / temperature)`` over the candidates (see
        :class:`~lightning_contloss.calibration.Calibration` for where κ comes from).

        Args:
            num_candidates: nearest tokens scored per step (default ``num_beams`` in beam
                search without sampling, as ``beam_search``; 50 otherwise, HF's ``top_k``).
            token_score: ``"cosine"`` or ``"vmf"``, as ``beam_search``'s ``score`` (greedy and
                beam search; sampling always uses the calibrated logits).
        """
        state = _state(self)  # type: ignore[arg-type]
        owner = state.require_owner("generate()")
        config = kwargs.get("generation_config") or self.generation_config  # type: ignore[attr-defined]
        exact_stop = "early_stopping" not in kwargs and getattr(config, "early_stopping", None) is None
        state.view = ContinuousLogitsView(owner, state.vocab_width, token_score, num_candidates, exact_stop=exact_stop)
        try:
            return super().generate(*args, **kwargs)  # type: ignore[misc]
        finally:
            state.view = None

    def _get_logits_processor(self, *args: Any, **kwargs: Any) -> Any:
        processors = super()._get_logits_processor(*args, **kwargs)  # type: ignore[misc]
        view = _state(self).view  # type: ignore[arg-type]
        if view is not None:
            config = kwargs["generation_config"] if "generation_config" in kwargs else args[0]
            view.configure(config, processors)
        return processors

    # ------------------------------------------------------------------ embeddings
    def get_output_embeddings(self) -> None:
        """``None``: after the swap the model has no vocabulary projection (its head predicts embeddings)."""
        return None

    def tie_weights(self, *args: Any, **kwargs: Any) -> None:
        """HF's ``tie_weights`` for every weight but the continuous head, which stays untied on purpose."""
        model: nn.Module = self  # type: ignore[assignment]
        path = _state(model).head_path
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        head = getattr(parent, name)
        # HF ties by setattr(head, "weight", embedding.weight) and rewrites head.out_features;
        # a placeholder takes that while the real head is out of the way.
        setattr(parent, name, nn.Module())
        try:
            super().tie_weights(*args, **kwargs)  # type: ignore[misc]
        finally:
            setattr(parent, name, head)

    def resize_token_embeddings(self, *args: Any, **kwargs: Any) -> Any:
        """Refuses, before changing anything: the target table fixes the vocabulary after the swap."""
        state = _state(self)  # type: ignore[arg-type]
        raise ValueError(
            "resize_token_embeddings cannot run after replace_softmax_head: the continuous head predicts "
            f"embeddings and its target table fixes the vocabulary ({state.vocab_width} ids). Resize first, "
            "then swap: model.resize_token_embeddings(n); replace_softmax_head(path, targets for n tokens, loss)"
        )

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, save_directory: Any, **kwargs: Any) -> None:
        """Writes a continuous save that :func:`~lightning_contloss.load_continuous` reads back exactly.

        Same as :func:`~lightning_contloss.save_continuous`; HF's ``from_pretrained`` refuses the
        directory (it would return a softmax model with a random ``lm_head``).
        """
        from lightning_contloss.integrations.hf_save import save_continuous

        save_continuous(self, save_directory, **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ pickling
    def __reduce_ex__(self, protocol: Any) -> Any:
        # The class is made at run time, so pickle rebuilds it from the HF class it extends.
        reduced = super().__reduce_ex__(protocol)
        base = next(c for c in type(self).__mro__ if c in _CLASSES)
        return (_new_instance, (base,), *reduced[2:])


def _new_instance(base: type) -> Any:
    return object.__new__(continuous_class(base))


def continuous_class(base: type) -> type:
    """The subclass of the HF class ``base`` that converted models of that class become (made once, cached).

    It keeps ``base``'s name, so ``isinstance`` checks and HF's class-name lookups behave as before.
    """
    if issubclass(base, ContinuousHFModel):
        return base
    cls = _CLASSES.get(base)
    if cls is None:
        attrs = {
            "__module__": __name__,
            "__qualname__": f"continuous_class.<{base.__qualname__}>",
            "forward": _continuous_forward(base.forward),  # type: ignore[attr-defined]
            "_contloss_labels_position": _labels_position(base.forward),  # type: ignore[attr-defined]
        }
        cls = type(base.__name__, (ContinuousHFModel, base), attrs)
        _CLASSES[base] = cls
    return cls


def _labels_position(forward: Callable[..., Any]) -> int | None:
    names = list(inspect.signature(forward).parameters)[1:]  # without self
    return names.index("labels") if "labels" in names else None


def _continuous_forward(base_forward: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(base_forward)  # keeps the signature, which generate() inspects
    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        state = _state(self)
        labels = kwargs.pop("labels", None)
        # HF 5.x: shift_labels= are causal labels the caller has already shifted.
        shifted = kwargs.pop("shift_labels", None)
        if shifted is not None and labels is not None:
            raise ValueError("pass labels= or shift_labels=, not both")
        position = getattr(type(self), "_contloss_labels_position", None)
        if position is not None and len(args) > position:
            raise ValueError(f"pass labels= by keyword to a continuous {type(self).__name__}, not by position")
        config = getattr(self, "config", None)
        seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        owner = state.require_owner("labels=") if labels is not None or shifted is not None else None
        if labels is not None and seq2seq and kwargs.get("decoder_input_ids") is None:
            if kwargs.get("decoder_inputs_embeds") is None:
                kwargs["decoder_input_ids"] = self.prepare_decoder_input_ids_from_labels(labels=labels)  # type: ignore[operator]
        if seq2seq:
            state.shift.record(kwargs.get("decoder_input_ids"))
        else:
            state.shift.record(kwargs["input_ids"] if "input_ids" in kwargs else (args[0] if args else None))
        if state.head_checked:
            out = base_forward(self, *args, **kwargs)
        else:  # once: are the logits the head's own output? (a post-head transform we do not know)
            head = self.get_submodule(state.head_path)
            with HeadOutputProbe(type(self).__name__, state.head_path, head) as probe:
                out = base_forward(self, *args, **kwargs)
            state.head_checked = probe.check(_logits_of(out))
        if state.view is not None:
            out = _with_logits(out, state.view(_logits_of(out)))
        if owner is not None:
            target = labels if labels is not None else shifted
            assert target is not None
            shift = labels is not None and not seq2seq
            out = _with_loss(out, _labels_loss(owner, _logits_of(out), target, shift=shift))
        return out

    return forward


def _logits_of(out: Any) -> Tensor:
    logits = out["logits"] if not isinstance(out, tuple) else out[0]
    assert isinstance(logits, Tensor)
    return logits


def _with_logits(out: Any, logits: Tensor) -> Any:
    if isinstance(out, tuple):
        return (logits, *out[1:])
    out["logits"] = logits
    return out


def _with_loss(out: Any, loss: Tensor) -> Any:
    if isinstance(out, tuple):
        return (loss, *out)
    # A new output puts loss first, as HF's own outputs with labels= do (out[0] is the loss).
    return type(out)(loss=loss, **{k: v for k, v in out.items() if k != "loss"})


def _labels_loss(owner: ContinuousOwner, pred: Tensor, labels: Tensor, shift: bool) -> Tensor:
    """The continuous loss of HF-style ``labels`` (``-100`` = ignore), shifted for causal LMs as HF does."""
    labels = labels.to(pred.device)
    if shift:
        pred, labels = pred[..., :-1, :], labels[..., 1:]
    padded = labels == HF_IGNORE_INDEX
    ignore = owner.continuous_ignore_index
    if ignore != HF_IGNORE_INDEX and bool(padded.any()):
        if ignore is None:
            raise ValueError(
                "labels contain -100 (Hugging Face's padding label) but the continuous loss has no ignore_index; "
                "build the loss with ignore_index=-100, e.g. CosineLoss(ignore_index=-100)"
            )
        labels = labels.masked_fill(padded, ignore)
    value, _, _, _ = owner._continuous_loss_value(pred, labels)
    if getattr(owner, "training", False):  # the training loss; validation only reports
        check_finite_loss(owner, value)
    return value


def adapt_hf_model(model: nn.Module, head_path: str, old: nn.Linear, owner: ContinuousOwner | None) -> None:
    """Make a HF model whose layer at ``head_path`` was just replaced behave as described in the module docs.

    Args:
        model: the ``PreTrainedModel`` that holds the head.
        head_path: the head's path inside ``model``, e.g. ``"lm_head"``.
        old: the replaced softmax layer.
        owner: the module with targets and loss (``None`` when swapped without the mixin:
            ``labels=`` and ``generate()`` then raise and say how to convert).
    """
    head = model.get_submodule(head_path)
    neutralise_post_head(model, head, old.out_features)
    seq2seq = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    state = IntegrationState(
        library="transformers",
        head_path=head_path,
        vocab_width=old.out_features,
        owner=owner,
        shift=ShiftCheck("decoder_input_ids" if seq2seq else "input_ids"),
    )
    model.__dict__[STATE_ATTR] = state
    model.__class__ = continuous_class(type(model))

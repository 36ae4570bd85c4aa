"""What a converted library model (Hugging Face, litgpt) remembers about its continuous head."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from torch import Tensor

from lightning_contloss.integrations.label_shift import ShiftCheck

if TYPE_CHECKING:
    from lightning_contloss.calibration import Calibration
    from lightning_contloss.decoding import Decoder

__all__ = ["STATE_ATTR", "ContinuousOwner", "IntegrationState"]

# The attribute of the library model that holds its IntegrationState (a plain attribute, so it
# is neither a submodule nor in the state dict).
STATE_ATTR = "_contloss_state"


class ContinuousOwner(Protocol):
    """What an integration needs from the module that owns the targets and the loss.

    :class:`~lightning_contloss.ContinuousOutputMixin` is one: ``labels=`` calls its loss,
    ``generate()`` ranks tokens with its decoder and samples from its calibrated distribution.
    """

    continuous_ignore_index: int | None
    continuous_calibration: Calibration

    @property
    def continuous_decoder(self) -> Decoder: ...

    def continuous_split_output(self, out: Any) -> tuple[Tensor | None, Tensor]: ...

    def _continuous_loss_value(self, out: Any, ids: Tensor) -> tuple[Tensor, Tensor, Tensor | None, int]: ...


@dataclass
class IntegrationState:
    """The continuous head of one library model.

    Attributes:
        library: ``"transformers"`` or ``"litgpt"``.
        head_path: the head's module path inside the library model, e.g. ``"lm_head"``.
        vocab_width: ``out_features`` of the replaced softmax layer (the padded width when
            the vocabulary is padded); vocabulary scores for ``generate()`` have this width.
        owner: the module that owns targets and loss, or ``None`` when the head was swapped
            with the plain :func:`~lightning_contloss.heads.swap_softmax_head`.
        shift: the missing-label-shift check fed by the model's forward.
    """

    library: str
    head_path: str
    vocab_width: int
    owner: ContinuousOwner | None = None
    shift: ShiftCheck = field(default_factory=lambda: ShiftCheck("input_ids"))
    # Set while generate() runs (see hf_generation.py); None otherwise.
    view: Any = None
    # Whether a forward has confirmed that the model returns the head's output unchanged (hf_post_head.py).
    head_checked: bool = False

    def require_owner(self, what: str) -> ContinuousOwner:
        """The owner, or a ``ValueError`` that says how to convert the model so ``what`` works."""
        if self.owner is None:
            raise ValueError(
                f"{what} needs the target table and loss, but this model's head was swapped with "
                "lightning_contloss.swap_softmax_head, which does not know them; convert it inside a "
                "LightningModule with ContinuousOutputMixin.replace_softmax_head(path, targets, loss), or use "
                "continuous losses and greedy_decode/beam_search directly"
            )
        return self.owner

    def __getstate__(self) -> dict[str, Any]:
        # A generation in progress is not part of a pickled or copied model.
        return {**self.__dict__, "view": None}

"""Read the prediction tensor out of a model's output: a tensor, or a Hugging Face ``ModelOutput``."""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["prediction_tensor"]


def prediction_tensor(out: Any) -> Tensor:
    """The ``[..., D]`` predictions in a model's output.

    A tensor is returned as is; an object with a tensor ``.logits`` (a Hugging Face
    ``ModelOutput`` such as ``CausalLMOutputWithCrossAttentions``) gives its ``.logits``,
    which after ``replace_softmax_head`` hold the predicted embeddings. Anything else
    raises a ``ValueError`` that says what to pass instead.

    Args:
        out: what the model returned.

    Example:
        >>> from types import SimpleNamespace
        >>> pred = torch.zeros(2, 3, 8)
        >>> prediction_tensor(pred) is pred, prediction_tensor(SimpleNamespace(logits=pred)) is pred
        (True, True)
    """
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    name = type(out).__name__
    if isinstance(out, tuple | list):
        hint = (
            f"got a {name} of {len(out)} items (a Hugging Face model called with return_dict=False?); pass the "
            "predictions tensor itself, e.g. out[0] without labels= or out[1] with them, or call the model with "
            "return_dict=True and pass its output"
        )
    elif isinstance(out, dict):
        hint = f"got a dict with keys {sorted(map(str, out))}; pass the predictions tensor, e.g. out['logits']"
    else:
        hint = f"got a {name}; pass the model's output tensor [..., D] (for a Hugging Face ModelOutput, its .logits)"
    raise ValueError(f"expected the model's predictions [..., D]: {hint}")

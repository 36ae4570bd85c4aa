"""The regression head that replaces a softmax layer, and swapping it in by module path."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lightning_contloss._arguments import bool_arg, check_allocation, int_arg, real_arg
from lightning_contloss.integrations import (
    ContinuousOwner,
    adapt_model,
    check_convertible,
    head_vocab_fits,
    vocab_hint,
)

__all__ = ["EmbeddingRegressionHead", "JointHead", "find_linear_layers", "split_head_output", "swap_softmax_head"]

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


class EmbeddingRegressionHead(nn.Module):
    """Maps hidden states to predicted target embeddings: ``[..., in_features] -> [..., out_features]``.

    A single ``Linear`` by default, or ``Linear -> activation -> Linear`` when ``hidden`` is
    given (ReWE used Linear-ReLU-Linear). There is deliberately no normalisation at the end:
    the von Mises-Fisher loss reads the concentration κ from the norm of the prediction.

    Args:
        in_features: the model's hidden size H.
        out_features: D, the target table's dim.
        hidden: width of the MLP's hidden layer; ``None`` for a plain Linear.
        activation: ``"relu"``, ``"gelu"``, ``"tanh"``, ``"silu"`` or an ``nn.Module`` class.
        dropout: dropout before the last Linear (MLP only).
        bias: whether the Linear layers have a bias.

    Example:
        >>> head = EmbeddingRegressionHead(512, 300, hidden=1024)
        >>> head(torch.randn(2, 7, 512)).shape
        torch.Size([2, 7, 300])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int | None = None,
        activation: str | Callable[[], nn.Module] = "relu",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        in_features, out_features = int_arg(in_features, "in_features"), int_arg(out_features, "out_features")
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if hidden is not None:
            hidden = int_arg(hidden, "hidden")
            if hidden <= 0:
                raise ValueError(f"hidden must be positive or None, got {hidden}")
        if isinstance(activation, str):
            if activation not in _ACTIVATIONS:
                raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(_ACTIVATIONS)}")
            act_factory = _ACTIVATIONS[activation]
        elif callable(activation):
            act_factory = activation
        else:
            raise TypeError(
                f"activation must be one of {sorted(_ACTIVATIONS)} or an nn.Module class, "
                f"got {type(activation).__name__}"
            )
        dropout = real_arg(dropout, "dropout", 0.0, 1.0)
        bias = bool_arg(bias, "bias")
        widths = (in_features, out_features) if hidden is None else (in_features, hidden, out_features)
        weights = sum(a * b for a, b in itertools.pairwise(widths))
        layers = f"in_features={in_features}, hidden={hidden}, out_features={out_features}"
        check_allocation(4 * weights, f"a head of {layers}", "smaller layers")
        self.in_features = in_features
        self.out_features = out_features
        self.hidden = hidden
        if hidden is None:
            self.net: nn.Module = nn.Linear(in_features, out_features, bias=bias)
        else:
            self.net = nn.Sequential(
                nn.Linear(in_features, hidden, bias=bias),
                act_factory(),
                nn.Dropout(dropout),
                nn.Linear(hidden, out_features, bias=bias),
            )

    @property
    def output_layer(self) -> nn.Linear:
        """The last ``Linear``, whose bias is the prediction for an all-zero hidden state."""
        layer = self.net if isinstance(self.net, nn.Linear) else list(self.net.children())[-1]
        assert isinstance(layer, nn.Linear)
        return layer

    @property
    def weight(self) -> Tensor:
        """The weight of the first ``Linear`` (the one that reads the hidden states), read-only.

        For code that reads ``lm_head.weight.dtype`` to cast its input, as the forwards of
        Hugging Face's Mamba, Mamba 2, FalconMamba and xLSTM do. It is not a vocabulary matrix.
        """
        first = self.net if isinstance(self.net, nn.Linear) else next(iter(self.net.children()))
        assert isinstance(first, nn.Linear)
        return first.weight

    def forward(self, hidden_states: Tensor) -> Tensor:
        if hidden_states.shape[-1] != self.in_features:
            raise ValueError(
                f"the head expects hidden size {self.in_features} but got input of shape "
                f"{tuple(hidden_states.shape)}; build it with in_features={hidden_states.shape[-1]}"
            )
        out: Tensor = self.net(hidden_states)
        return out

    def split(self, out: Tensor) -> tuple[Tensor | None, Tensor]:
        """``(logits or None, pred [..., D])`` of this head's output: no logits, the prediction itself.

        Example:
            >>> head = EmbeddingRegressionHead(8, 4)
            >>> logits, pred = head.split(head(torch.randn(2, 8)))
            >>> logits is None, pred.shape
            (True, torch.Size([2, 4]))
        """
        return None, out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, hidden={self.hidden}"


class JointHead(nn.Module):
    """ReWE's joint head: the softmax layer and a regression head side by side.

    ``forward`` returns ``[..., V + D]``: the V logits of the kept softmax layer followed by
    the D-dimensional predicted embedding, so a model whose code expects one tensor from its
    head keeps working; :meth:`split` takes it apart again, so the mixin and the callback never
    need to know which kind of head they have.

    Args:
        softmax: the original ``nn.Linear(H, V)``.
        regression: the new ``[..., H] -> [..., D]`` head.
        pred_dim: D; ``None`` reads ``regression.out_features``.

    Example:
        >>> joint = JointHead(torch.nn.Linear(8, 100), EmbeddingRegressionHead(8, 16))
        >>> out = joint(torch.randn(2, 8))
        >>> out.shape, [None if t is None else tuple(t.shape) for t in joint.split(out)]
        (torch.Size([2, 116]), [(2, 100), (2, 16)])
    """

    def __init__(self, softmax: nn.Linear, regression: nn.Module, pred_dim: int | None = None) -> None:
        super().__init__()
        dim = pred_dim if pred_dim is not None else getattr(regression, "out_features", None)
        try:
            dim = int_arg(dim, "pred_dim", 1)
        except ValueError:  # int_arg's wrong-type error is a ValueError too
            raise ValueError(
                f"JointHead needs the regression head's output dim: pass pred_dim=targets.dim (got {dim!r})"
            ) from None
        self.softmax = softmax
        self.regression = regression
        self.vocab_size = softmax.out_features
        self.in_features = softmax.in_features
        self.out_features = self.vocab_size + dim

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.cat([self.softmax(hidden), self.regression(hidden)], dim=-1)

    def split(self, out: Tensor) -> tuple[Tensor, Tensor]:
        """``[..., V + D] -> (logits [..., V], pred [..., D])``."""
        return out[..., : self.vocab_size], out[..., self.vocab_size :]


def split_head_output(head: nn.Module, out: Tensor) -> tuple[Tensor | None, Tensor]:
    """``(logits or None, pred)`` of ``head``'s output: its ``split`` if it has one, else ``(None, out)``.

    A head of your own (``replace_softmax_head(..., head=...)``) needs no ``split`` unless it
    returns more than the prediction.

    Example:
        >>> split_head_output(torch.nn.Linear(4, 3), torch.zeros(2, 3))[0] is None
        True
    """
    split = getattr(head, "split", None)
    if split is None:
        return None, out
    logits, pred = split(out)
    return logits, pred


def find_linear_layers(root: nn.Module, out_features: int | None = None) -> list[tuple[str, nn.Linear]]:
    """Lists ``(path, layer)`` of the ``nn.Linear`` layers in ``root``, largest output first.

    With ``out_features`` only layers of that output size are listed: the candidates for
    a softmax head over a vocabulary of that size.

    Example:
        >>> m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 100))
        >>> [p for p, _ in find_linear_layers(m)]
        ['2', '0']
    """
    layers = [(p, m) for p, m in root.named_modules() if isinstance(m, nn.Linear)]
    if out_features is not None:
        layers = [(p, m) for p, m in layers if m.out_features == out_features]
    return sorted(layers, key=lambda pm: -pm[1].out_features)


def _candidates(root: nn.Module, vocab_size: int | None) -> str:
    layers = find_linear_layers(root, vocab_size)
    if not layers and vocab_size is not None:
        return f"no nn.Linear in the model has out_features={vocab_size}"
    shown = ", ".join(f"{p!r} ({m.in_features}->{m.out_features})" for p, m in layers[:8])
    which = f"with out_features={vocab_size}" if vocab_size is not None else "(largest output first)"
    return f"Linear layers {which}: {shown or 'none'}"


def swap_softmax_head(
    root: nn.Module,
    path: str,
    head: nn.Module,
    *,
    vocab_size: int | None = None,
    owner: ContinuousOwner | None = None,
) -> nn.Linear:
    """Swaps the ``nn.Linear(H, V)`` at ``path`` inside ``root`` for ``head`` and returns the old layer.

    A head whose weight is tied to an input ``nn.Embedding`` (GPT style) is untied on purpose,
    with a warning: the embedding keeps its own weight and goes on training as an input table.

    Args:
        root: the model holding the softmax layer.
        path: dotted module path, e.g. ``"lm_head"`` or ``"decoder.layers.3.out"``.
        head: the replacement, typically an :class:`EmbeddingRegressionHead`. If it has an
            ``in_features`` attribute it must match the old layer's.
        vocab_size: V; when given the old layer must have ``out_features == V``, or be V
            rounded up to a multiple of 64 … 1024 (a padded vocabulary, as litgpt's).
        owner: the module that owns targets and loss (``ContinuousOutputMixin`` passes itself);
            a Hugging Face or litgpt model holding the layer is adapted to the new head
            (``labels=``, ``generate()``, tying; see :mod:`lightning_contloss.integrations`).

    Example:
        >>> lm = torch.nn.ModuleDict({"body": torch.nn.Linear(8, 16), "lm_head": torch.nn.Linear(16, 1000)})
        >>> old = swap_softmax_head(lm, "lm_head", EmbeddingRegressionHead(16, 32))
        >>> old.out_features, type(lm.lm_head).__name__
        (1000, 'EmbeddingRegressionHead')
    """
    if not path:
        raise ValueError(f"path must name a submodule; {_candidates(root, vocab_size)}")
    parent_path, _, name = path.rpartition(".")
    try:
        parent = root.get_submodule(parent_path) if parent_path else root
        old = parent.get_submodule(name)
    except AttributeError:
        raise ValueError(f"the model has no submodule {path!r}; {_candidates(root, vocab_size)}") from None
    if not isinstance(old, nn.Linear):
        raise ValueError(
            f"{path!r} is a {type(old).__name__}, not an nn.Linear softmax head; {_candidates(root, vocab_size)}"
        )
    if vocab_size is not None and not head_vocab_fits(root, path, old.out_features, vocab_size):
        raise ValueError(
            f"{path!r} has out_features={old.out_features} but the targets have V={vocab_size}; "
            f"point at the vocabulary projection, or {vocab_hint(old.out_features)}. "
            f"{_candidates(root, vocab_size)}"
        )
    head_in = getattr(head, "in_features", None)
    if head_in is not None and head_in != old.in_features:
        raise ValueError(
            f"{path!r} takes {old.in_features} hidden features but the new head takes {head_in}; "
            f"build the head with in_features={old.in_features}"
        )
    check_convertible(root, path)
    tied = [p for p, m in root.named_modules() if isinstance(m, nn.Embedding) and m.weight is old.weight]
    if tied:
        warnings.warn(
            f"{path!r} shares its weight with the input embedding {tied[0]!r}; the continuous head unties "
            "them on purpose: the embedding keeps its weight as an input table and the regression head "
            "gets its own parameters. Do not call the model's tie_weights() afterwards.",
            UserWarning,
            stacklevel=2,
        )
    setattr(parent, name, head)
    adapt_model(root, path, old, owner)
    return old

"""GenerativeHead: noise in, embedding out; S samples of a predictive distribution per position.

CALM's energy-based head (Shao et al. 2025), at small scale: uniform noise ``z ~ U[−½, ½]^Z``
is embedded to a width W and refined by residual SwiGLU blocks, each conditioned on the model's
hidden state by concatenation; a last Linear maps to the target dim D. The head is an implicit
distribution: it has no density, only samples, which is what the energy score
(:class:`~lightning_contloss.losses.EnergyLoss`) trains.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_contloss._arguments import check_allocation, int_arg
from lightning_contloss.functional._checks import check_generator

__all__ = ["GenerativeHead"]

DEFAULT_NUM_SAMPLES = 8
DEFAULT_EVAL_SAMPLES = 16
DEFAULT_NOISE_DIM = 64


class _ConditionedBlock(nn.Module):
    """``x + down(silu(gate) · up)``, with ``[gate, up]`` read from ``LN(x)`` and the condition.

    The condition's share of the first Linear is computed once per position and broadcast over
    the S samples, so the per-sample cost is that of the noise stream alone.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.from_x = nn.Linear(width, 2 * width)
        self.from_cond = nn.Linear(width, 2 * width, bias=False)
        self.down = nn.Linear(width, width)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """``x [..., S, W]`` (the noise stream) and ``cond [..., W]`` (one per position) -> ``[..., S, W]``."""
        shared = self.from_cond(cond).unsqueeze(-2)  # [..., 1, 2W], broadcast over the samples
        gate, up = (self.from_x(self.norm(x)) + shared).chunk(2, dim=-1)
        out: Tensor = x + self.down(nn.functional.silu(gate) * up)
        return out


class GenerativeHead(nn.Module):
    """Maps hidden states and noise to S sampled embeddings: ``[..., H] -> [..., S, D]`` in training.

    In training mode ``forward(hidden)`` returns ``num_samples`` samples per position, for the
    energy loss. In eval mode it returns one point per position, :meth:`predict`: the mean of
    ``eval_samples`` samples, the L2-optimal point of the head's distribution, which the k-NN
    decoders (by L2) take as the prediction. ``forward(hidden, num_samples)`` draws samples in
    either mode.

    The last Linear starts at zero weight (as in CALM), so every sample starts at its bias, a
    point mass (:meth:`~lightning_contloss.examples.ContinuousLM.init_output_bias` sets it to the
    unigram mean of the targets); the spread is learnt.

    Args:
        in_features: the model's hidden size H.
        out_features: D, the target table's dim.
        width: W, the width of the noise stream; ``None`` for ``max(in_features, out_features)``.
        noise_dim: Z, the dimension of the uniform noise.
        num_blocks: residual blocks.
        num_samples: samples per position in training (S ≥ 2 for the energy score's spread term).
        eval_samples: samples averaged into the point prediction in eval mode.
        generator: random generator of the noise (``None``: torch's global one).

    Example:
        >>> head = GenerativeHead(32, 8, num_samples=4)
        >>> hidden = torch.randn(2, 5, 32)
        >>> head(hidden).shape, head(hidden, 3).shape
        (torch.Size([2, 5, 4, 8]), torch.Size([2, 5, 3, 8]))
        >>> head.eval().predict(hidden).shape == head(hidden).shape == (2, 5, 8)
        True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        width: int | None = None,
        *,
        noise_dim: int = DEFAULT_NOISE_DIM,
        num_blocks: int = 2,
        num_samples: int = DEFAULT_NUM_SAMPLES,
        eval_samples: int = DEFAULT_EVAL_SAMPLES,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        in_features = int_arg(in_features, "in_features", 1)
        out_features = int_arg(out_features, "out_features", 1)
        width = max(in_features, out_features) if width is None else int_arg(width, "width", 1)
        noise_dim = int_arg(noise_dim, "noise_dim", 1)
        num_blocks = int_arg(num_blocks, "num_blocks", 0)
        self.num_samples = int_arg(num_samples, "num_samples", 1)
        self.eval_samples = int_arg(eval_samples, "eval_samples", 1)
        check_generator(generator)
        weights = noise_dim * width + in_features * width + num_blocks * 5 * width * width + width * out_features
        check_allocation(4 * weights, f"a generative head of width {width} with {num_blocks} blocks", "a smaller width")
        self.in_features = in_features
        self.out_features = out_features
        self.width = width
        self.noise_dim = noise_dim
        self.generator = generator
        self.noise_in = nn.Sequential(nn.Linear(noise_dim, width), nn.LayerNorm(width))
        self.cond_in = nn.Sequential(nn.Linear(in_features, width), nn.LayerNorm(width))
        self.blocks = nn.ModuleList(_ConditionedBlock(width) for _ in range(num_blocks))
        self.out_norm = nn.LayerNorm(width)
        self.output_layer = nn.Linear(width, out_features)
        nn.init.zeros_(self.output_layer.weight)
        nn.init.zeros_(self.output_layer.bias)

    def _check(self, hidden: Tensor) -> None:
        if not isinstance(hidden, Tensor) or hidden.dim() == 0 or hidden.shape[-1] != self.in_features:
            shape = tuple(hidden.shape) if isinstance(hidden, Tensor) else type(hidden).__name__
            raise ValueError(
                f"the head expects hidden size {self.in_features} but got input of shape {shape}; "
                f"build it with in_features=<the model's hidden size>"
            )

    def sample(self, hidden: Tensor, num_samples: int) -> Tensor:
        """``num_samples`` samples per position: ``hidden [..., H] -> [..., S, D]``."""
        self._check(hidden)
        num = int_arg(num_samples, "num_samples", 1)
        # Drawn where the generator lives (a CPU generator stays usable when the model moves).
        device = self.generator.device if self.generator is not None else hidden.device
        shape = (*hidden.shape[:-1], num, self.noise_dim)
        noise = torch.rand(shape, generator=self.generator, dtype=hidden.dtype, device=device).to(hidden.device)
        x = self.noise_in(noise - 0.5)
        cond = self.cond_in(hidden)
        for block in self.blocks:
            x = block(x, cond)
        out: Tensor = self.output_layer(self.out_norm(x))
        return out

    def predict(self, hidden: Tensor, num_samples: int | None = None) -> Tensor:
        """One point per position, the mean of ``num_samples`` (default ``eval_samples``) samples: ``[..., D]``."""
        return self.sample(hidden, self.eval_samples if num_samples is None else num_samples).mean(dim=-2)

    def forward(self, hidden: Tensor, num_samples: int | None = None) -> Tensor:
        """Samples ``[..., S, D]`` in training or when ``num_samples`` is given; else :meth:`predict` ``[..., D]``."""
        if num_samples is not None:
            return self.sample(hidden, num_samples)
        if self.training:
            return self.sample(hidden, self.num_samples)
        return self.predict(hidden)

    def split(self, out: Tensor) -> tuple[Tensor | None, Tensor]:
        """``(None, out)``: the head has no logits; ``out`` is its samples or its point."""
        return None, out

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, width={self.width}, "
            f"noise_dim={self.noise_dim}, blocks={len(self.blocks)}, num_samples={self.num_samples}, "
            f"eval_samples={self.eval_samples}"
        )

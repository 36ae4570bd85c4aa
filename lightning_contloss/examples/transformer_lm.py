"""A small causal Transformer language model: the body both the softmax and continuous examples share."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["CausalTransformerLM"]


class CausalTransformerLM(nn.Module):
    """Decoder-only Transformer LM: embeddings, pre-norm causal self-attention blocks, ``lm_head``.

    Token plus learned position embeddings feed ``n_layers`` pre-norm
    ``nn.TransformerEncoderLayer`` blocks under a causal mask, then a final LayerNorm and
    ``lm_head``. ``forward`` returns whatever ``lm_head`` returns: logits ``[B, T, V]`` with
    the default ``nn.Linear``, or ``[B, T, D]`` once the head is swapped for an
    ``EmbeddingRegressionHead`` (``swap_softmax_head(model, "lm_head", ...)``).

    Args:
        vocab_size: V, the number of token ids.
        d_model: hidden size H.
        n_layers: number of Transformer blocks.
        n_heads: attention heads per block (must divide ``d_model``).
        dim_feedforward: width of each block's MLP.
        dropout: dropout on embeddings, attention and MLP.
        max_len: longest sequence the position table covers.
        tie_weights: share ``lm_head.weight`` with ``embed.weight`` (saves ``V·H`` parameters).
        pad_id: ``padding_idx`` of the token embedding (its row stays zero), or ``None``.
        input_vocab_size: rows of the input embedding, when fewer ids can appear as input than
            as output: ids ``>= input_vocab_size`` share one extra learned row. With a 400k-word
            output vocabulary and a corpus that uses 10k of its words, this keeps the input table
            (and its optimiser state) at 10k rows. ``None`` (default) gives every id its own row.

    Example:
        >>> model = CausalTransformerLM(vocab_size=100, d_model=32, n_layers=1, n_heads=2, dim_feedforward=64)
        >>> model(torch.randint(0, 100, (2, 7))).shape
        torch.Size([2, 7, 100])
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 256,
        n_layers: int = 2,
        n_heads: int = 4,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        max_len: int = 512,
        tie_weights: bool = False,
        pad_id: int | None = None,
        input_vocab_size: int | None = None,
        lm_head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("d_model", d_model),
            ("n_layers", n_layers),
            ("n_heads", n_heads),
            ("dim_feedforward", dim_feedforward),
            ("max_len", max_len),
        ):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if d_model % n_heads:
            raise ValueError(
                f"d_model={d_model} is not divisible by n_heads={n_heads}; pick an n_heads that divides it"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if pad_id is not None and not 0 <= pad_id < vocab_size:
            raise ValueError(f"pad_id={pad_id} is outside the vocabulary 0..{vocab_size - 1}")
        if input_vocab_size is not None:
            if not 1 <= input_vocab_size <= vocab_size:
                raise ValueError(
                    f"input_vocab_size must be in 1..vocab_size={vocab_size}, got {input_vocab_size}; "
                    "pass None to give every id an input row"
                )
            if tie_weights and input_vocab_size < vocab_size:
                raise ValueError(
                    f"tie_weights needs one input row per output id, but input_vocab_size={input_vocab_size} "
                    f"< vocab_size={vocab_size}; drop one of the two"
                )
            if pad_id is not None and pad_id >= input_vocab_size:
                raise ValueError(f"pad_id={pad_id} must be below input_vocab_size={input_vocab_size}")
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.max_len = max_len
        # The shared row for ids outside the input vocabulary is index input_vocab_size.
        self.input_vocab_size = vocab_size if input_vocab_size is None else input_vocab_size
        rows = vocab_size if self.input_vocab_size == vocab_size else self.input_vocab_size + 1
        self.embed = nn.Embedding(rows, d_model, padding_idx=pad_id)
        self.pos_embed = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model,
            n_heads,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Nested tensors only help with padding masks, which a causal LM does not use.
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        head = nn.Linear(d_model, vocab_size) if lm_head is None else lm_head
        self.lm_head: nn.Module = head
        self._init_weights(n_layers)
        if tie_weights:
            if not isinstance(head, nn.Linear):
                raise ValueError(f"tie_weights needs an nn.Linear lm_head, got {type(head).__name__}")
            head.weight = self.embed.weight

    def _init_weights(self, n_layers: int) -> None:
        # GPT-2 style: small normal weights, and residual-branch outputs scaled down with
        # depth so the residual stream's variance does not grow with the number of blocks.
        residual_std = 0.02 / math.sqrt(2 * n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith(("out_proj", "linear2")) else 0.02
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.MultiheadAttention):
                if module.in_proj_weight is not None:
                    nn.init.normal_(module.in_proj_weight, std=0.02)
                if module.in_proj_bias is not None:
                    nn.init.zeros_(module.in_proj_bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()

    def hidden_states(self, x: Tensor) -> Tensor:
        """The final-LayerNorm hidden states, before ``lm_head``.

        Args:
            x: ``[B, T]`` int64 token ids, ``T <= max_len``.

        Returns:
            ``[B, T, d_model]``; position ``t`` depends only on ``x[:, :t + 1]``.
        """
        if x.dim() != 2:
            raise ValueError(f"x must be [B, T] token ids, got shape {tuple(x.shape)}")
        seq_len = x.shape[1]
        if seq_len > self.max_len:
            raise ValueError(
                f"sequence length {seq_len} exceeds max_len={self.max_len}; "
                f"build the model with max_len >= {seq_len} or use shorter windows"
            )
        positions = torch.arange(seq_len, device=x.device)
        if self.input_vocab_size < self.vocab_size:
            x = x.clamp(max=self.input_vocab_size)
        h = self.dropout(self.embed(x) + self.pos_embed(positions))
        mask = nn.Transformer.generate_square_subsequent_mask(seq_len, device=x.device, dtype=h.dtype)
        h = self.blocks(h, mask=mask, is_causal=True)
        return self.norm(h)

    def forward(self, x: Tensor) -> Tensor:
        """``lm_head`` applied to the hidden states.

        Args:
            x: ``[B, T]`` int64 token ids.

        Returns:
            ``[B, T, V]`` logits with the default head, ``[B, T, D]`` with a regression head.
        """
        return self.lm_head(self.hidden_states(x))

"""A small Transformer encoder-decoder: the body both translation examples share."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lightning_contloss._arguments import int_arg

__all__ = ["Seq2SeqTransformer", "sinusoidal_positions"]


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """Vaswani et al.'s fixed position encodings: ``[length, dim]``, sines on even and cosines on odd columns.

    Example:
        >>> pe = sinusoidal_positions(4, 6)
        >>> pe.shape, pe[0].tolist()
        (torch.Size([4, 6]), [0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    """
    if dim % 2:
        raise ValueError(f"sinusoidal positions need an even dim, got {dim}")
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe


class Seq2SeqTransformer(nn.Module):
    """Pre-norm Transformer encoder-decoder (``nn.TransformerEncoder`` + ``nn.TransformerDecoder``), then ``lm_head``.

    Tokens are embedded, scaled by ``sqrt(d_model)`` and added to fixed sinusoidal positions;
    both stacks are ``batch_first`` and ``norm_first``, each ending in a LayerNorm (the
    decoder's is ``self.decoder.norm``). The pieces a search or a KV cache needs are public:
    :meth:`encode` runs the encoder once per source, :meth:`embed_target` embeds any slice of
    target positions (``offset`` says where it starts), and :meth:`decode` runs the decoder
    under a causal mask. ``forward`` returns ``lm_head`` of the decoder's hidden states:
    logits ``[B, T, V]`` with the default ``nn.Linear``, or ``[B, T, D]`` once the head is
    swapped for an ``EmbeddingRegressionHead``.

    Args:
        src_vocab_size: source ids.
        tgt_vocab_size: V, target ids.
        d_model: hidden size.
        n_heads: attention heads (must divide ``d_model``).
        n_encoder_layers: encoder blocks.
        n_decoder_layers: decoder blocks.
        dim_feedforward: MLP width per block.
        dropout: dropout on embeddings, attention and MLP.
        max_len: most positions on either side.
        src_pad_id: source padding id (masked out of attention; its embedding row stays zero).
        tgt_pad_id: target padding id (its embedding row stays zero).
        lm_head: the output layer; ``None`` builds ``nn.Linear(d_model, tgt_vocab_size)``.

    Example:
        >>> m = Seq2SeqTransformer(20, 30, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1,
        ...     dim_feedforward=32, src_pad_id=0, tgt_pad_id=0)
        >>> src, tgt = torch.randint(1, 20, (2, 5)), torch.randint(1, 30, (2, 4))
        >>> memory, mask = m.encode(src)
        >>> m(src, tgt).shape, memory.shape, m.decode(tgt, memory, mask).shape
        (torch.Size([2, 4, 30]), torch.Size([2, 5, 16]), torch.Size([2, 4, 16]))
    """

    positions: Tensor

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        d_model: int = 256,
        n_heads: int = 4,
        n_encoder_layers: int = 3,
        n_decoder_layers: int = 3,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        max_len: int = 256,
        src_pad_id: int | None = 0,
        tgt_pad_id: int | None = 0,
        lm_head: nn.Module | None = None,
    ) -> None:
        super().__init__()

        def positive(value: int, name: str) -> int:
            return int_arg(value, name, 1, rule="a positive integer")

        src_vocab_size = positive(src_vocab_size, "src_vocab_size")
        tgt_vocab_size = positive(tgt_vocab_size, "tgt_vocab_size")
        d_model, n_heads = positive(d_model, "d_model"), positive(n_heads, "n_heads")
        max_len = positive(max_len, "max_len")
        n_encoder_layers = positive(n_encoder_layers, "n_encoder_layers")
        n_decoder_layers = positive(n_decoder_layers, "n_decoder_layers")
        dim_feedforward = positive(dim_feedforward, "dim_feedforward")
        if d_model % n_heads or d_model % 2:
            raise ValueError(f"d_model={d_model} must be even and divisible by n_heads={n_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        for name, pad, size in (("src_pad_id", src_pad_id, src_vocab_size), ("tgt_pad_id", tgt_pad_id, tgt_vocab_size)):
            if pad is not None and not 0 <= pad < size:
                raise ValueError(f"{name}={pad} is outside the vocabulary 0..{size - 1}")
        self.d_model = d_model
        self.max_len = max_len
        self.src_pad_id = src_pad_id
        self.tgt_pad_id = tgt_pad_id
        self.src_embed = nn.Embedding(src_vocab_size, d_model, padding_idx=src_pad_id)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, d_model, padding_idx=tgt_pad_id)
        self.register_buffer("positions", sinusoidal_positions(max_len, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)
        enc_layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        dec_layer = nn.TransformerDecoderLayer(
            d_model, n_heads, dim_feedforward, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        # Nested tensors are an inference fast path that pre-norm layers do not take anyway.
        self.encoder = nn.TransformerEncoder(
            enc_layer, n_encoder_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.decoder = nn.TransformerDecoder(dec_layer, n_decoder_layers, norm=nn.LayerNorm(d_model))
        self.lm_head: nn.Module = nn.Linear(d_model, tgt_vocab_size) if lm_head is None else lm_head
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                # std d^-1/2, so that after the sqrt(d) scale the token part has unit size, as the positions.
                nn.init.normal_(module.weight, std=self.d_model**-0.5)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()

    def _check_ids(self, ids: Tensor, name: str, offset: int = 0) -> None:
        if ids.dim() != 2 or ids.is_floating_point():
            raise ValueError(f"{name} must be [B, T] integer token ids, got {ids.dtype} {tuple(ids.shape)}")
        if offset < 0 or offset + ids.shape[1] > self.max_len:
            raise ValueError(
                f"{name} covers positions {offset}..{offset + ids.shape[1] - 1}, beyond max_len={self.max_len}; "
                f"build the model with a larger max_len or pass shorter sentences"
            )

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """Run the encoder once: ``src [B, S]`` -> ``(memory [B, S, d_model], src_pad_mask [B, S])``.

        ``src_pad_mask`` is ``True`` at padding positions (the decoder's cross-attention skips them).
        """
        self._check_ids(src, "src")
        if self.src_pad_id is None:
            pad_mask = torch.zeros(src.shape, dtype=torch.bool, device=src.device)
        else:
            pad_mask = src == self.src_pad_id
        h = self.src_embed(src) * math.sqrt(self.d_model) + self.positions[: src.shape[1]]
        memory = self.encoder(self.dropout(h), src_key_padding_mask=pad_mask)
        return memory, pad_mask

    def embed_target(self, tgt: Tensor, offset: int = 0) -> Tensor:
        """Target embeddings of positions ``offset .. offset + T - 1``: ``tgt [B, T]`` -> ``[B, T, d_model]``.

        A cached decoder embeds only its newest token, ``embed_target(last[:, None], offset=t)``;
        this equals row ``t`` of ``embed_target(prefix)``.

        Example:
            >>> m = Seq2SeqTransformer(10, 10, d_model=8, n_heads=2, n_encoder_layers=1, n_decoder_layers=1).eval()
            >>> y = torch.tensor([[3, 4, 5]])
            >>> torch.allclose(m.embed_target(y)[:, 2:], m.embed_target(y[:, 2:], offset=2))
            True
        """
        self._check_ids(tgt, "tgt", offset)
        pos = self.positions[offset : offset + tgt.shape[1]]
        return self.dropout(self.tgt_embed(tgt) * math.sqrt(self.d_model) + pos)

    def decode(self, tgt_in: Tensor, memory: Tensor, src_pad_mask: Tensor) -> Tensor:
        """Decoder hidden states (after ``decoder.norm``) ``[B, T, d_model]`` for ``tgt_in [B, T]``.

        Position ``t`` attends to ``tgt_in[:, :t + 1]`` and to the non-padding memory.

        Args:
            tgt_in: target ids, BOS first.
            memory: ``[B, S, d_model]`` from :meth:`encode`.
            src_pad_mask: ``[B, S]`` bool, ``True`` at source padding.
        """
        if memory.dim() != 3 or memory.shape[0] != tgt_in.shape[0] or tuple(src_pad_mask.shape) != memory.shape[:2]:
            raise ValueError(
                f"memory {tuple(memory.shape)} and src_pad_mask {tuple(src_pad_mask.shape)} do not match "
                f"tgt_in {tuple(tgt_in.shape)}; pass encode(src)'s outputs for the same batch"
            )
        h = self.embed_target(tgt_in)
        size = tgt_in.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(size, device=h.device, dtype=h.dtype)
        out: Tensor = self.decoder(
            h, memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=src_pad_mask
        )
        return out

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """``lm_head(decode(tgt_in, *encode(src)))``: ``[B, T, V]`` logits or ``[B, T, D]`` predictions."""
        memory, mask = self.encode(src)
        return self.lm_head(self.decode(tgt_in, memory, mask))

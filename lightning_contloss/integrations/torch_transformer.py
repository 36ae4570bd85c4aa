"""A KV-cached search step for ``nn.TransformerDecoder``: each generated token costs one position.

``nn.TransformerDecoder`` has no incremental mode, so the prefix form of a search step reruns
the whole decoder over the whole prefix at every token (quadratic in the output length).
:class:`TransformerDecoderStep` runs the same layers, with their own weights, one position at a
time: it keeps each layer's self-attention keys and values for the tokens so far, and the
cross-attention keys and values of the encoder output, computed once per source. Pass it as
``step_fn`` to :func:`~lightning_contloss.greedy_decode` or :func:`~lightning_contloss.beam_search`.

Supported: ``nn.TransformerDecoderLayer`` layers built with ``batch_first=True``, pre-norm or
post-norm (``norm_first``), any ``activation``, with or without biases and a final ``norm``,
in eval mode. The model around the decoder is given by two callables, ``embed(ids, offset)``
(token embedding plus the positions ``offset ..``) and ``head(hidden)`` (the output head).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_contloss.decoding.search_state import StatefulStep

__all__ = ["TransformerDecoderStep"]

EmbedFn = Callable[[Tensor, int], Tensor]
HeadFn = Callable[[Tensor], Tensor]


def _check_layer(i: int, layer: nn.Module) -> None:
    if not isinstance(layer, nn.TransformerDecoderLayer):
        raise ValueError(
            f"decoder.layers[{i}] is a {type(layer).__name__}, not an nn.TransformerDecoderLayer; the cached "
            "step runs nn.TransformerDecoderLayer's own sub-modules (write a StatefulStep for other layers)"
        )
    for name in ("self_attn", "multihead_attn"):
        attn = getattr(layer, name)
        if not attn.batch_first:
            raise ValueError(
                f"decoder.layers[{i}].{name} is not batch_first; build the decoder layers with batch_first=True"
            )
        if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
            raise ValueError(
                f"decoder.layers[{i}].{name} uses kdim/vdim, add_bias_kv or add_zero_attn, which the cached "
                "step does not support"
            )


def _project(attn: nn.MultiheadAttention, x: Tensor, part: int) -> Tensor:
    # Rows part*E .. (part+1)*E of the packed in-projection are q (0), k (1) or v (2).
    e = attn.embed_dim
    weight = attn.in_proj_weight[part * e : (part + 1) * e]
    bias = None if attn.in_proj_bias is None else attn.in_proj_bias[part * e : (part + 1) * e]
    out = F.linear(x, weight, bias)
    b, n, _ = out.shape
    return out.view(b, n, attn.num_heads, e // attn.num_heads).transpose(1, 2)  # [B, H, n, hd]


def _attend(attn: nn.MultiheadAttention, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    b, h, n, hd = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, h * hd))


class TransformerDecoderStep(StatefulStep):
    """Greedy/beam search step over an ``nn.TransformerDecoder`` with a key/value cache.

    Args:
        decoder: the ``nn.TransformerDecoder`` (batch-first layers), in eval mode.
        embed: ``(ids [B, n], offset) -> [B, n, d_model]``, the decoder input of tokens at
            positions ``offset .. offset + n - 1`` (embedding, scaling, positions).
        head: ``hidden [B, d_model] -> pred [B, D]``, applied to the decoder output (after
            ``decoder.norm``) at the last position.
        memory: ``[B, S, d_model]`` the encoder output, one row per sequence searched.
        memory_key_padding_mask: ``[B, S]`` bool, True at padded source positions, or ``None``.

    Example:
        >>> from lightning_contloss.decoding import ExactDecoder, greedy_decode
        >>> _ = torch.manual_seed(0)
        >>> layer = nn.TransformerDecoderLayer(8, 2, 16, batch_first=True, norm_first=True)
        >>> decoder, emb, table = nn.TransformerDecoder(layer, 2).eval(), nn.Embedding(5, 8), torch.randn(5, 8)
        >>> embed = lambda ids, offset: emb(ids) + offset  # a stand-in for positions
        >>> step = TransformerDecoderStep(decoder, embed, lambda h: h, memory=torch.randn(2, 3, 8))
        >>> greedy_decode(step, torch.zeros(2, 1, dtype=torch.long), 4, None, ExactDecoder(table)).ids.shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        decoder: nn.TransformerDecoder,
        embed: EmbedFn,
        head: HeadFn,
        memory: Tensor,
        memory_key_padding_mask: Tensor | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(decoder, nn.TransformerDecoder):
            raise ValueError(f"decoder must be an nn.TransformerDecoder, got {type(decoder).__name__}")
        for i, layer in enumerate(decoder.layers):
            _check_layer(i, layer)
        if not callable(embed) or not callable(head):
            raise ValueError("embed and head must be callables: embed(ids, offset) -> [B, n, d], head(h [B, d])")
        d_model = decoder.layers[0].self_attn.embed_dim
        if not isinstance(memory, Tensor) or memory.dim() != 3 or memory.shape[-1] != d_model:
            shape = tuple(memory.shape) if isinstance(memory, Tensor) else type(memory).__name__
            raise ValueError(f"memory must be the encoder output [B, S, {d_model}], got {shape}")
        mask = memory_key_padding_mask
        if mask is not None and (
            not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != tuple(memory.shape[:2])
        ):
            got = (tuple(mask.shape), mask.dtype) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(
                f"memory_key_padding_mask must be a bool [B, S] = {list(memory.shape[:2])} tensor (True at padding), "
                f"got {got}"
            )
        self.decoder = decoder
        self.embed = embed
        self.head = head
        self.memory = memory
        self.memory_key_padding_mask = mask

    def step(self, ids: Tensor, state: Any) -> tuple[Tensor, Any]:
        """Run the decoder over ``ids`` (the start tokens, or each row's last token) with the cache.

        Args:
            ids: ``[B, t0]`` on the first call (``state`` None), ``[B', 1]`` afterwards.
            state: ``None``, or the dict this method returned (rows reordered by the search).
        """
        if self.decoder.training:
            raise ValueError(
                "the decoder is in training mode (dropout makes every step random); call model.eval() before searching"
            )
        if state is None:
            state = self._start(ids.shape[0])
        offset = state["offset"]
        x = self.embed(ids, offset)
        n = ids.shape[1]
        # A causal mask within the block; cached keys (earlier positions) are all visible.
        causal = None
        if n > 1:
            causal = torch.ones(n, offset + n, dtype=torch.bool, device=x.device).tril(offset)
        self_k, self_v = list(state["self_k"]), list(state["self_v"])
        for i, layer in enumerate(self.decoder.layers):
            x, self_k[i], self_v[i] = self._layer(layer, x, self_k[i], self_v[i], causal, state, i)
        if self.decoder.norm is not None:
            x = self.decoder.norm(x)
        pred = self.head(x[:, -1])
        new_state = dict(state, self_k=self_k, self_v=self_v, offset=offset + n)
        return pred, new_state

    def _start(self, rows: int) -> dict[str, Any]:
        memory = self.memory
        if rows != memory.shape[0]:
            raise ValueError(
                f"the search starts {rows} sequences but memory holds {memory.shape[0]}; build the step with "
                "the encoder output of the same batch of sources"
            )
        mem_k = [_project(layer.multihead_attn, memory, 1) for layer in self.decoder.layers]
        mem_v = [_project(layer.multihead_attn, memory, 2) for layer in self.decoder.layers]
        allowed = None
        if self.memory_key_padding_mask is not None:
            allowed = ~self.memory_key_padding_mask[:, None, None, :]  # [B, 1, 1, S]
        empty = memory.new_zeros(rows, 1, 0, 1)
        layers = len(self.decoder.layers)
        return {
            "mem_k": mem_k,
            "mem_v": mem_v,
            "mem_allowed": allowed,
            "self_k": [empty] * layers,
            "self_v": [empty] * layers,
            "offset": 0,
        }

    def _layer(
        self,
        layer: nn.TransformerDecoderLayer,
        x: Tensor,
        k_cache: Tensor,
        v_cache: Tensor,
        causal: Tensor | None,
        state: dict[str, Any],
        i: int,
    ) -> tuple[Tensor, Tensor, Tensor]:
        # The layer's own forward, one block of positions at a time; its dropouts are left out
        # because step() runs in eval mode only, where they are the identity.
        def self_block(h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            sa = layer.self_attn
            q, k, v = _project(sa, h, 0), _project(sa, h, 1), _project(sa, h, 2)
            if k_cache.shape[2]:
                k, v = torch.cat([k_cache, k], dim=2), torch.cat([v_cache, v], dim=2)
            return _attend(sa, q, k, v, causal), k, v

        def cross_block(h: Tensor) -> Tensor:
            ca = layer.multihead_attn
            q = _project(ca, h, 0)
            return _attend(ca, q, state["mem_k"][i], state["mem_v"][i], state["mem_allowed"])

        def ff_block(h: Tensor) -> Tensor:
            return layer.linear2(layer.activation(layer.linear1(h)))

        if layer.norm_first:
            sa_out, k, v = self_block(layer.norm1(x))
            x = x + sa_out
            x = x + cross_block(layer.norm2(x))
            x = x + ff_block(layer.norm3(x))
        else:
            sa_out, k, v = self_block(x)
            x = layer.norm1(x + sa_out)
            x = layer.norm2(x + cross_block(x))
            x = layer.norm3(x + ff_block(x))
        return x, k, v

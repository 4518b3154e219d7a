"""Attention handlers: whole heads are the prunable unit.

Removing a head drops its rows of the q/k/v projections and its columns of the
output projection.  The head width (and so the softmax scale) is unchanged, which
is what makes the pruned module compute exactly what the original computes with
those heads masked.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compressor.engine.analysis.layers import LayerHandler, _rows
from compressor.engine.analysis.records import ChannelMap


def _attention_macs(batch: int, heads: int, q_len: int, k_len: int, head_dim: int) -> int:
    """MACs of q@k^T plus attn@v, as FlopCounterMode counts SDPA (flops / 2)."""
    return batch * heads * q_len * k_len * 2 * head_dim


def trace_head_projection(state, child: str, linear: nn.Linear, rows: np.ndarray, in_atoms, tokens: int) -> None:
    """A linear whose output rows belong to heads (q, k, v, or a packed qkv)."""
    if in_atoms is not None:
        state.slot(child, "weight", 1, in_atoms)
    state.slot(child, "weight", 0, rows)
    if linear.bias is not None:
        state.slot(child, "bias", 0, rows)
    state.term(f"{child} linear", linear.weight.numel() * tokens, rows, in_atoms)


def trace_output_projection(state, child: str, linear: nn.Linear, rows: np.ndarray, tokens: int) -> np.ndarray:
    """The linear that merges the heads: its columns follow the heads, its rows are new channels."""
    out_atoms = state.new_space(child, linear.out_features)
    state.slot(child, "weight", 1, rows)
    state.slot(child, "weight", 0, out_atoms)
    if linear.bias is not None:
        state.slot(child, "bias", 0, out_atoms)
    state.term(f"{child} linear", linear.weight.numel() * tokens, out_atoms, rows)
    return out_atoms


class SeparateQKVAttentionHandler(LayerHandler):
    """Attention with separate ``q``/``k``/``v``/``proj`` linears and ``num_heads``/``head_dim``
    attributes, as in the zoo's ViT, which registers it for its ``Attention`` class
    (``register_handler(SeparateQKVAttentionHandler(Attention))``): the engine does not
    import the zoo."""

    def __init__(self, *types: type) -> None:
        self.types = types

    def trace(self, state, name, module, args, kwargs, out):
        x = args[0]
        batch, tokens = x.shape[0], x.shape[1]
        in_atoms = state.channel_atoms(x, -1, f"'{name}' input features are not the last dim alone")
        heads = state.new_space(f"{name}.heads", module.num_heads)
        rows = np.repeat(heads, module.head_dim)
        for proj_name in ("q", "k", "v"):
            trace_head_projection(state, f"{name}.{proj_name}", getattr(module, proj_name), rows, in_atoms, _rows(x, -1))
        state.term(
            f"{name} attention", _attention_macs(batch, module.num_heads, tokens, tokens, module.head_dim), heads
        )
        out_atoms = trace_output_projection(state, f"{name}.proj", module.proj, rows, _rows(x, -1))
        state.set_map(out, ChannelMap((out.dim() - 1,), out_atoms))

    def refresh(self, module):
        module.num_heads = module.q.weight.shape[0] // module.head_dim
        return None


class MultiheadAttentionHandler(LayerHandler):
    """``nn.MultiheadAttention`` with packed q/k/v (torchvision's ViT)."""

    types = (nn.MultiheadAttention,)

    def trace(self, state, name, module, args, kwargs, out):
        names = ("query", "key", "value")
        inputs = [args[i] if len(args) > i else kwargs.get(n) for i, n in enumerate(names)]
        if not module._qkv_same_embed_dim:
            for value in inputs:
                state.freeze_map(state.map_of(value), f"separate k/v widths in '{name}' are kept whole")
            return
        in_atoms = self._input_atoms(state, name, inputs, module.batch_first)
        heads = state.new_space(f"{name}.heads", module.num_heads)
        rows = np.repeat(heads, module.head_dim)
        packed = np.tile(rows, 3)
        state.slot(name, "in_proj_weight", 0, packed)
        if in_atoms is not None:
            state.slot(name, "in_proj_weight", 1, in_atoms)
        if module.in_proj_bias is not None:
            state.slot(name, "in_proj_bias", 0, packed)
        query, key = inputs[0], inputs[1]
        seq_dim, batch_dim = (1, 0) if module.batch_first else (0, 1)
        q_rows = _rows(query, -1)
        k_rows = _rows(key, -1)
        # In-projection runs once per input (packed into one matmul for self-attention).
        in_macs = len(rows) * module.in_proj_weight.shape[1] * (q_rows + 2 * k_rows)
        state.term(f"{name} in_proj", in_macs, rows, in_atoms)
        attention = _attention_macs(
            query.shape[batch_dim], module.num_heads, query.shape[seq_dim], key.shape[seq_dim], module.head_dim
        )
        state.term(f"{name} attention", attention, heads)
        out_atoms = trace_output_projection(state, f"{name}.out_proj", module.out_proj, rows, q_rows)
        result = out[0] if isinstance(out, tuple) else out
        state.set_map(result, ChannelMap((result.dim() - 1,), out_atoms))

    @staticmethod
    def _input_atoms(state, name, inputs, batch_first) -> np.ndarray | None:
        """q, k and v share the in-projection's input columns, so their channels couple."""
        maps = [state.channel_atoms(v, -1, f"'{name}' inputs are not laid out (..., embed)") for v in inputs]
        tracked = [m for m in maps if m is not None]
        if tracked and len(tracked) != len(maps):
            for m in tracked:
                state.table.freeze(m, f"'{name}' mixes fixed and prunable inputs")
        for m in tracked[1:]:
            state.table.union(tracked[0], m)
        return tracked[0] if tracked else None

    def refresh(self, module):
        inner = module.in_proj_weight.shape[0] // 3
        if inner == module.embed_dim and module.in_proj_weight.shape[1] == module.embed_dim:
            if module.out_proj.weight.shape[0] == module.embed_dim:
                return None
        return PrunedMultiheadAttention.from_module(module)


class PrunedMultiheadAttention(nn.Module):
    """Drop-in for ``nn.MultiheadAttention`` whose inner width (heads x head_dim) no
    longer equals the embedding width.  Reuses the original parameter objects so an
    optimizer built on the unpruned model keeps training them."""

    def __init__(
        self,
        in_proj_weight: nn.Parameter,
        in_proj_bias: nn.Parameter | None,
        out_proj: nn.Linear,
        head_dim: int,
        dropout: float,
        batch_first: bool,
    ):
        super().__init__()
        self.in_proj_weight = in_proj_weight
        self.in_proj_bias = in_proj_bias
        self.out_proj = out_proj
        self.head_dim = head_dim
        self.num_heads = in_proj_weight.shape[0] // (3 * head_dim)
        self.embed_dim = in_proj_weight.shape[1]
        self.dropout = dropout
        self.batch_first = batch_first

    @classmethod
    def from_module(cls, module: nn.Module) -> "PrunedMultiheadAttention":
        return cls(
            module.in_proj_weight,
            module.in_proj_bias,
            module.out_proj,
            module.head_dim,
            module.dropout,
            module.batch_first,
        )

    def refresh_shape(self) -> None:
        self.num_heads = self.in_proj_weight.shape[0] // (3 * self.head_dim)
        self.embed_dim = self.in_proj_weight.shape[1]

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3
        q, k, v = (self._heads(F.linear(t, w, b)) for t, w, b in ((query, w_q, b_q), (key, w_k, b_k), (value, w_v, b_v)))
        mask = _merge_masks(attn_mask, key_padding_mask, q.dtype)
        dropout = self.dropout if self.training else 0.0
        if need_weights:
            scores = q @ k.transpose(-2, -1) * self.head_dim**-0.5
            if mask is not None:
                scores = scores + mask
            weights = F.dropout(scores.softmax(-1), dropout, self.training)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)
            weights = None
        batch, _, length, _ = out.shape
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if weights is not None and average_attn_weights:
            weights = weights.mean(1)
        return out, weights

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2)


def _merge_masks(attn_mask: Any, key_padding_mask: Any, dtype: torch.dtype) -> torch.Tensor | None:
    """Turn boolean/float masks into one additive float mask broadcastable to scores."""

    def additive(mask: torch.Tensor) -> torch.Tensor:
        if mask.dtype == torch.bool:
            return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
        return mask.to(dtype)

    merged = None
    if attn_mask is not None:
        merged = additive(attn_mask)
    if key_padding_mask is not None:
        padding = additive(key_padding_mask)[:, None, None, :]
        merged = padding if merged is None else merged + padding
    return merged


class PrunedMultiheadAttentionHandler(LayerHandler):
    """A model pruned once can be analysed (and pruned) again."""

    types = (PrunedMultiheadAttention,)

    def trace(self, state, name, module, args, kwargs, out):
        MultiheadAttentionHandler.trace(self, state, name, _MhaView(module), args, kwargs, out)

    _input_atoms = staticmethod(MultiheadAttentionHandler._input_atoms)

    def refresh(self, module):
        module.refresh_shape()
        return None


class _MhaView:
    """Presents a PrunedMultiheadAttention with nn.MultiheadAttention's attribute names."""

    _qkv_same_embed_dim = True

    def __init__(self, module: PrunedMultiheadAttention):
        self._module = module
        self.embed_dim = module.num_heads * module.head_dim

    def __getattr__(self, item):
        return getattr(self._module, item)

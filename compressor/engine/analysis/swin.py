"""Head pruning for torchvision's Swin window attention (V1 and V2).

torchvision's functional derives the head width from the *input* width
(``C // num_heads``), which stays fixed when heads are removed.  After slicing,
the module's class is switched to a subclass whose forward takes the head width
from ``self.head_dim`` instead; parameters, buffers and state-dict keys stay the
same, so optimizers and saved files keep working.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compressor.engine.analysis.attention import trace_head_projection, trace_output_projection
from compressor.engine.analysis.layers import LayerHandler
from compressor.engine.analysis.records import ChannelMap

try:
    from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2
except ImportError:  # pragma: no cover - torchvision is a dependency, but keep the engine importable
    ShiftedWindowAttention = ShiftedWindowAttentionV2 = None


def _head_dim(module: nn.Module) -> int:
    return getattr(module, "head_dim", None) or module.qkv.in_features // module.num_heads


def _is_v2(module: nn.Module) -> bool:
    return hasattr(module, "logit_scale")


def _cpb_output(module: nn.Module) -> tuple[str, nn.Linear]:
    """V2's continuous position bias MLP ends in a Linear with one output per head."""
    index = len(module.cpb_mlp) - 1
    return f"cpb_mlp.{index}", module.cpb_mlp[index]


class SwinAttentionHandler(LayerHandler):
    types = tuple(t for t in (ShiftedWindowAttention, ShiftedWindowAttentionV2) if t is not None)

    def trace(self, state, name, module, args, kwargs, out):
        x = args[0]
        batch, height, width, _ = x.shape
        wh, ww = module.window_size
        tokens = batch * (height + (-height) % wh) * (width + (-width) % ww)
        heads, head_dim = module.num_heads, _head_dim(module)
        in_atoms = state.channel_atoms(x, -1, f"'{name}' input features are not the last dim alone")
        head_atoms = state.new_space(f"{name}.heads", heads)
        rows = np.repeat(head_atoms, head_dim)
        trace_head_projection(state, f"{name}.qkv", module.qkv, np.tile(rows, 3), in_atoms, tokens)
        state.term(f"{name} attention", 2 * tokens * wh * ww * heads * head_dim, head_atoms)
        self._trace_position_bias(state, name, module, head_atoms)
        out_atoms = trace_output_projection(state, f"{name}.proj", module.proj, rows, tokens)
        state.set_map(out, ChannelMap((out.dim() - 1,), out_atoms))

    @staticmethod
    def _trace_position_bias(state, name, module, head_atoms) -> None:
        if _is_v2(module):
            state.slot(name, "logit_scale", 0, head_atoms)
            child, linear = _cpb_output(module)
            state.slot(f"{name}.{child}", "weight", 0, head_atoms)
            if linear.bias is not None:
                state.slot(f"{name}.{child}", "bias", 0, head_atoms)
            positions = module.relative_coords_table.numel() // module.relative_coords_table.shape[-1]
            state.term(f"{name}.{child} linear", linear.weight.numel() * positions, head_atoms)
        else:
            state.slot(name, "relative_position_bias_table", 1, head_atoms)

    def refresh(self, module):
        head_dim = _head_dim(module)
        heads = module.qkv.out_features // (3 * head_dim)
        if heads == module.num_heads and not isinstance(module, _PRUNED):
            return None
        module.head_dim = head_dim
        module.num_heads = heads
        if not isinstance(module, _PRUNED):
            module.__class__ = PrunedSwinAttentionV2 if _is_v2(module) else PrunedSwinAttention
        return None


def window_attention(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Shifted-window attention on (B, H, W, C) with an explicit head width."""
    batch, height, width, _ = x.shape
    wh, ww = module.window_size
    x = F.pad(x, (0, 0, 0, (-width) % ww, 0, (-height) % wh))
    padded_h, padded_w = x.shape[1], x.shape[2]
    shift = [0 if wh >= padded_h else module.shift_size[0], 0 if ww >= padded_w else module.shift_size[1]]
    if any(shift):
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    rows, cols = padded_h // wh, padded_w // ww
    windows = x.view(batch, rows, wh, cols, ww, -1).permute(0, 1, 3, 2, 4, 5).reshape(batch * rows * cols, wh * ww, -1)
    logits, values = _attend(module, windows)
    if any(shift):
        logits = logits.view(batch, rows * cols, module.num_heads, wh * ww, wh * ww)
        logits = logits + _shift_mask(padded_h, padded_w, (wh, ww), shift, x)[None, :, None]
        logits = logits.view(-1, module.num_heads, wh * ww, wh * ww)
    out = _combine(module, logits, values)
    out = out.view(batch, rows, cols, wh, ww, -1).permute(0, 1, 3, 2, 4, 5).reshape(batch, padded_h, padded_w, -1)
    if any(shift):
        out = torch.roll(out, shifts=(shift[0], shift[1]), dims=(1, 2))
    return out[:, :height, :width, :].contiguous()


def _attend(module: nn.Module, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention logits (before the shift mask) and values of every window."""
    bias = module.qkv.bias
    if _is_v2(module) and bias is not None:
        # V2 has no key bias: its slot in the packed bias is ignored.
        third = bias.numel() // 3
        bias = bias.clone()
        bias[third : 2 * third] = 0.0
    qkv = F.linear(windows, module.qkv.weight, bias)
    qkv = qkv.reshape(windows.shape[0], windows.shape[1], 3, module.num_heads, module.head_dim).permute(2, 0, 3, 1, 4)
    if _is_v2(module):
        logits = F.normalize(qkv[0], dim=-1) @ F.normalize(qkv[1], dim=-1).transpose(-2, -1)
        logits = logits * torch.clamp(module.logit_scale, max=math.log(100.0)).exp()
    else:
        logits = (qkv[0] * module.head_dim**-0.5) @ qkv[1].transpose(-2, -1)
    return logits + module.get_relative_position_bias(), qkv[2]


def _combine(module: nn.Module, logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    weights = F.dropout(F.softmax(logits, dim=-1), p=module.attention_dropout, training=module.training)
    out = (weights @ values).transpose(1, 2).flatten(2)
    return F.dropout(module.proj(out), p=module.dropout, training=module.training)


def _shift_mask(height: int, width: int, window: tuple[int, int], shift: list[int], like: torch.Tensor) -> torch.Tensor:
    """-100 between tokens that came from different regions before the cyclic shift."""
    region = like.new_zeros((height, width))
    bounds_h = ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None))
    bounds_w = ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None))
    for index, ((h0, h1), (w0, w1)) in enumerate((h, w) for h in bounds_h for w in bounds_w):
        region[h0:h1, w0:w1] = index
    region = region.view(height // window[0], window[0], width // window[1], window[1]).permute(0, 2, 1, 3)
    region = region.reshape(-1, window[0] * window[1])
    differs = region.unsqueeze(1) - region.unsqueeze(2)
    return differs.masked_fill(differs != 0, -100.0).masked_fill(differs == 0, 0.0)


if ShiftedWindowAttention is not None:

    class PrunedSwinAttention(ShiftedWindowAttention):
        """Swin V1 window attention with ``num_heads * head_dim`` != input width."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return window_attention(self, x)

    class PrunedSwinAttentionV2(ShiftedWindowAttentionV2):
        """Swin V2 window attention with ``num_heads * head_dim`` != input width."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return window_attention(self, x)

    _PRUNED: tuple[type, ...] = (PrunedSwinAttention, PrunedSwinAttentionV2)
else:  # pragma: no cover
    _PRUNED = ()

"""Layer handlers for timm's own layer types (timm is optional).

* ``timm.layers.Attention`` (ViT, DeiT and the many models built from
  ``vision_transformer``): one fused ``qkv`` linear, ``num_heads``/``head_dim``/
  ``attn_dim`` attributes, optional q/k norms over the head width (unchanged by
  head pruning), an optional gate linear, and an optional ``norm`` over all heads
  (a LayerNorm across heads: with one, the heads stay whole).
* ``timm.models.swin_transformer.WindowAttention``: fused ``qkv``, a relative
  position bias table with one column per head, and a forward that infers the head
  width, so only ``num_heads`` needs refreshing.

Both forwards read ``num_heads`` (and ``attn_dim``) at run time, so after slicing
the module computes exactly what the original computes with those heads masked:
no replacement module is needed.  Other timm attention variants are not leaves:
their functional attention (``scaled_dot_product_attention``, ``matmul``) keeps
their projections whole, which is correct, only less prunable.

* ``StdConv2d``/``ScaledStdConv2d`` (+ ``Same`` variants; NFNets, BiT): the weight is
  standardised per output filter over its inputs, so removing input channels would
  change every kept filter: the inputs stay whole, the outputs (and ``gain``) are pruned.

The types are looked up in ``sys.modules`` only: analysing a model never imports
timm, and a timm model has imported it already.
"""
from __future__ import annotations

import sys

import numpy as np
from torch import nn

from compressor.engine.analysis.attention import _attention_macs, trace_head_projection, trace_output_projection
from compressor.engine.analysis.layers import ConvHandler, LayerHandler, _rows
from compressor.engine.analysis.records import ChannelMap


def _lookup(module_name: str, attr: str) -> tuple[type, ...]:
    module = sys.modules.get(module_name)
    found = getattr(module, attr, None) if module is not None else None
    return (found,) if isinstance(found, type) else ()


class _LazyTypes(LayerHandler):
    _where: tuple[tuple[str, str], ...] = ()
    _cached: tuple[type, ...] | None = None

    @property
    def types(self) -> tuple[type, ...]:
        if self._cached is None:
            found = tuple(t for where in self._where for t in _lookup(*where))
            if not found:
                return ()  # timm not imported (yet): look again next time
            self._cached = found
        return self._cached


class TimmAttentionHandler(_LazyTypes):
    _where = (("timm.layers.attention", "Attention"),)

    def trace(self, state, name, module, args, kwargs, out):
        x = args[0] if args else kwargs["x"]
        batch, tokens = x.shape[0], x.shape[1]
        rows_per_token = _rows(x, -1)
        in_atoms = state.channel_atoms(x, -1, f"'{name}' input features are not the last dim alone")
        heads = state.new_space(f"{name}.heads", module.num_heads)
        if not isinstance(module.norm, nn.Identity):
            state.table.freeze(heads, f"'{name}.norm' normalises across the heads")
        rows = np.repeat(heads, module.head_dim)
        trace_head_projection(state, f"{name}.qkv", module.qkv, np.tile(rows, 3), in_atoms, rows_per_token)
        if getattr(module, "gate", None) is not None:
            trace_head_projection(state, f"{name}.gate", module.gate, rows, in_atoms, rows_per_token)
        state.term(f"{name} attention", _attention_macs(batch, module.num_heads, tokens, tokens, module.head_dim), heads)
        out_atoms = trace_output_projection(state, f"{name}.proj", module.proj, rows, rows_per_token)
        state.set_map(out, ChannelMap((out.dim() - 1,), out_atoms))

    def refresh(self, module):
        module.num_heads = module.qkv.out_features // (3 * module.head_dim)
        if hasattr(module, "attn_dim"):
            module.attn_dim = module.num_heads * module.head_dim
        return None


class TimmWindowAttentionHandler(_LazyTypes):
    _where = (("timm.models.swin_transformer", "WindowAttention"),)

    def trace(self, state, name, module, args, kwargs, out):
        x = args[0] if args else kwargs["x"]
        windows, tokens = x.shape[0], x.shape[1]
        heads_n = module.num_heads
        head_dim = module.qkv.out_features // (3 * heads_n)
        rows_per_token = _rows(x, -1)
        in_atoms = state.channel_atoms(x, -1, f"'{name}' input features are not the last dim alone")
        heads = state.new_space(f"{name}.heads", heads_n)
        rows = np.repeat(heads, head_dim)
        trace_head_projection(state, f"{name}.qkv", module.qkv, np.tile(rows, 3), in_atoms, rows_per_token)
        state.slot(name, "relative_position_bias_table", 1, heads)
        state.term(f"{name} attention", _attention_macs(windows, heads_n, tokens, tokens, head_dim), heads)
        out_atoms = trace_output_projection(state, f"{name}.proj", module.proj, rows, rows_per_token)
        state.set_map(out, ChannelMap((out.dim() - 1,), out_atoms))

    def refresh(self, module):
        module.num_heads = module.relative_position_bias_table.shape[1]
        return None


class TimmStdConvHandler(_LazyTypes, ConvHandler):
    _where = tuple(
        ("timm.layers.std_conv", name) for name in ("StdConv2d", "StdConv2dSame", "ScaledStdConv2d", "ScaledStdConv2dSame")
    )

    def trace(self, state, name, module, args, kwargs, out):
        state.freeze_map(state.map_of(args[0]), f"'{name}' standardises its weight over the input channels")
        ConvHandler.trace(self, state, name, module, args, kwargs, out)
        cmap = state.map_of(out)
        gain = getattr(module, "gain", None)
        if cmap is not None and isinstance(gain, nn.Parameter) and gain.shape[0] == module.out_channels:
            state.slot(name, "gain", 0, cmap.atoms)

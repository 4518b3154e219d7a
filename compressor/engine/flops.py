"""Counting MACs and parameters the way users compare them with papers.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2) at the
model's native input size, batch 1.  A pass-through function mode is active while
counting so that modules with "fast paths" (``nn.MultiheadAttention`` in eval mode)
take the same, countable code path during counting as during tracing.

Attention is counted by this module's own table (``SDPA_OPS``), not by whatever
formulas the installed torch happens to ship, so the same model gives the same
number on every supported torch version and device.
"""
from __future__ import annotations

from math import prod
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode


def attention_macs(query: Sequence[int], key: Sequence[int], value: Sequence[int]) -> int:
    """MACs of ``softmax(q @ k^T) @ v`` for (..., L, E)-shaped q, k, v: batch·heads·Lq·Lk·(E + Ev).

    Each leading dim is the largest of q's, k's and v's: broadcast batches and grouped-query
    attention (fewer k/v heads) cost what the math path computes after expanding them."""
    rank = max(len(query), len(key), len(value))
    q, k, v = ((1,) * (rank - len(s)) + tuple(s) for s in (query, key, value))
    batch_heads = prod(max(dims) for dims in zip(q[:-2], k[:-2], v[:-2]))
    return batch_heads * q[-2] * k[-2] * (q[-1] + v[-1])


def _sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    # FlopCounterMode counts FLOPs (2 per MAC); causal masks and dropout are ignored,
    # as the math path computes (and counts) the full score matrix either way.
    return 2 * attention_macs(query, key, value)


# Which attention ops are counted how.  Every forward op whose name contains
# "scaled_dot_product" in torch 2.9-2.15 appears here exactly once.
#
# * SDPA_OPS: fused kernels, each one opaque dispatcher call with (B, H, L, E)
#   q/k/v.  Counted with ``attention_macs``, overriding torch's own formula (absent
#   for the CPU flash kernel before 2.15 and for MPS / "overrideable" in all versions).
SDPA_OPS: tuple[str, ...] = (
    "_scaled_dot_product_flash_attention",  # CUDA
    "_scaled_dot_product_flash_attention_for_cpu",  # CPU, F.scaled_dot_product_attention's default
    "_scaled_dot_product_efficient_attention",  # CUDA (memory-efficient)
    "_scaled_dot_product_cudnn_attention",  # CUDA (cuDNN)
    "_scaled_dot_product_fused_attention_overrideable",  # XPU / out-of-tree backends
    "_scaled_dot_product_attention_math_for_mps",  # MPS
)
# * COMPOSITE_SDPA_OPS: no formula.  They decompose (before the counter, or inside
#   it under inference_mode) into a fused op above or, on the math path, into the
#   bmm's of q @ k^T and attn @ v, which torch counts to the same closed form; so
#   the count is the same whichever path runs, and each MAC is counted once.
COMPOSITE_SDPA_OPS: tuple[str, ...] = (
    "scaled_dot_product_attention",
    "_scaled_dot_product_attention_math",
)
# * NON_COMPUTE_SDPA_OPS: pick a backend, compute nothing.
NON_COMPUTE_SDPA_OPS: tuple[str, ...] = ("_fused_sdp_choice",)
# Not in the table: the low-level kernels the fused ops call internally
# (_flash_attention_forward, _efficient_attention_forward, _cudnn_attention_forward):
# the counter never sees those inner calls.  flex_attention cannot run eagerly under
# a dispatch mode in these versions; counting a model that uses it raises, it never
# silently counts 0.


def _sdpa_mapping() -> dict[Any, Callable[..., int]]:
    """Formulas for the SDPA ops this torch has (``getattr`` skips ones it lacks)."""
    ops = (getattr(torch.ops.aten, name, None) for name in SDPA_OPS)
    return {op: _sdpa_flops for op in ops if op is not None}


class _PassThrough(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def macs_counter() -> FlopCounterMode:
    """A ``FlopCounterMode`` with this module's attention formulas (FLOPs; MACs = FLOPs / 2)."""
    return FlopCounterMode(display=False, custom_mapping=_sdpa_mapping())


def count_macs(model: nn.Module, inputs: torch.Tensor | Sequence[Any]) -> int:
    """Multiply-accumulates of one forward pass on ``inputs`` (eval mode, no grad)."""
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    was_training = model.training
    model.eval()
    try:
        counter = macs_counter()
        with torch.no_grad(), _PassThrough(), counter:
            model(*inputs)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

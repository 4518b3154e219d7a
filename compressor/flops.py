"""Counting MACs and parameters the way users compare them with papers.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2) at the
model's native input size, batch 1.  A pass-through function mode is active while
counting so that modules with "fast paths" (``nn.MultiheadAttention`` in eval mode)
take the same, countable code path during counting as during tracing.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode


class _PassThrough(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def count_macs(model: nn.Module, inputs: torch.Tensor | Sequence[Any]) -> int:
    """Multiply-accumulates of one forward pass on ``inputs`` (eval mode, no grad)."""
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), _PassThrough(), counter:
            model(*inputs)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

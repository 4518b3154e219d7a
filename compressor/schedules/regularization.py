"""Shrink the channels currently selected for removal, after each optimizer step.

``w <- w * (1 - lambda * lr)`` on the selected channels' slices of every weight
(producer rows, consumer columns, attention rows) and on BN gamma, not on biases:
decoupled L2 decay restricted to the channels the plan would remove, which is what
makes the pruning sub-network converge.  Index sets are computed once per plan,
so the per-step cost is a handful of indexed multiplies.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compressor.engine.analysis.graph import ChannelGraph
from compressor.engine.importance import WEIGHT_NAMES
from compressor.engine.plan import PruningPlan, kept_class_mask


@dataclass(frozen=True)
class _Target:
    param: torch.nn.Parameter
    dim: int
    index: torch.Tensor


class Shrinker:
    def __init__(self, model: nn.Module, graph: ChannelGraph, plan: PruningPlan):
        kept = kept_class_mask(graph, plan)
        params = dict(model.named_parameters())
        targets = []
        seen = set()
        for slot in graph.slots:
            if slot.tensor not in WEIGHT_NAMES or slot.key not in params or (slot.key, slot.dim) in seen:
                continue
            removed = (~kept[graph.labels[slot.atoms]]).nonzero()[0]
            if removed.size:
                seen.add((slot.key, slot.dim))
                param = params[slot.key]
                targets.append(_Target(param, slot.dim, torch.from_numpy(removed).to(param.device)))
        self.targets = targets

    def shrink(self, factor: float) -> None:
        with torch.no_grad():
            for target in self.targets:
                selected = target.param.index_select(target.dim, target.index)
                target.param.index_copy_(target.dim, target.index, selected * factor)

"""The masked reference: the original model with removed channels zeroed.

Every parameter slice that belongs to a removed channel is set to zero (a
producer's rows, a BN's scale and shift, a consumer's columns, an attention head's
q/k/v rows).  A removed channel then contributes nothing anywhere, which is what a
correct slice must reproduce with smaller tensors: the toolkit's central invariant.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from compressor.engine.analysis.graph import ChannelGraph
from compressor.engine.plan import PruningPlan, kept_class_mask


def apply_mask(model: nn.Module, graph: ChannelGraph, plan: PruningPlan) -> nn.Module:
    """Zero, in place, every parameter entry of the channels ``plan`` removes."""
    kept = kept_class_mask(graph, plan)
    params = {id(p) for p in model.parameters()}
    with torch.no_grad():
        for slot in graph.slots:
            removed = ~kept[graph.labels[slot.atoms]]
            if not removed.any():
                continue
            owner = model.get_submodule(slot.module) if slot.module else model
            tensor = getattr(owner, slot.tensor)
            if id(tensor) not in params:
                continue  # running statistics: a zero scale and shift already zero the BN output
            index = torch.from_numpy(removed.nonzero()[0]).to(tensor.device)
            tensor.index_fill_(slot.dim, index, 0.0)
    return model


def masked_copy(model: nn.Module, graph: ChannelGraph, plan: PruningPlan) -> nn.Module:
    return apply_mask(copy.deepcopy(model), graph, plan)

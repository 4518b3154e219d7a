"""Per-channel importance scores for channel groups.

Scores are indexed by class id (one value per prunable decision) so selection can
rank across groups.  This module starts with the normalised group L2 norm; the
prune command adds further criteria on the same interface.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from compressor.analysis.graph import ChannelGraph


def _slot_tensor(model: nn.Module, module: str, name: str) -> torch.Tensor:
    owner = model.get_submodule(module) if module else model
    return getattr(owner, name)


def group_l2(graph: ChannelGraph, model: nn.Module) -> np.ndarray:
    """Squared L2 norm of every parameter slice of a channel, summed over the group's
    slots, then divided by the group's mean so scores compare across groups."""
    params = {id(p) for p in model.parameters()}
    raw = np.zeros(graph.labels.size, dtype=np.float64)
    with torch.no_grad():
        for slot in graph.slots:
            tensor = _slot_tensor(model, slot.module, slot.tensor)
            if id(tensor) not in params:
                continue  # running statistics say nothing about importance
            other = [d for d in range(tensor.dim()) if d != slot.dim]
            per_index = tensor.detach().float().pow(2).sum(dim=other) if other else tensor.detach().float().pow(2)
            np.add.at(raw, graph.labels[slot.atoms], per_index.cpu().numpy().astype(np.float64))
    scores = np.zeros_like(raw)
    for group in graph.groups:
        values = raw[group.classes]
        mean = values.mean()
        scores[group.classes] = values / mean if mean > 0 else 1.0
    return scores

"""Predict MACs and parameters of a plan analytically, without touching the model.

Each MACs term scales with the kept fraction of its factors; each sliced parameter
with the kept fraction of its sliced dims.  Integer arithmetic keeps the prediction
exactly equal to what ``FlopCounterMode`` counts after slicing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from compressor.analysis.graph import ChannelGraph


@dataclass(frozen=True)
class _Scaled:
    dense: int
    factors: tuple[np.ndarray, ...]  # class ids per factor position

    def pruned(self, kept: np.ndarray) -> int:
        value, denominator = self.dense, 1
        for classes in self.factors:
            value *= int(np.count_nonzero(kept[classes]))
            denominator *= classes.size
        return value // denominator

    def reduction(self, kept: np.ndarray) -> int:
        return self.dense - self.pruned(kept)


class CostModel:
    """MACs/params of any plan on one analysed model."""

    def __init__(self, graph: ChannelGraph, model: nn.Module):
        labels = graph.labels
        self.dense_macs = graph.dense_macs
        self.dense_params = graph.dense_params
        self._macs = [
            _Scaled(t.macs, tuple(labels[f] for f in t.factors)) for t in graph.terms if t.factors and t.macs
        ]
        params = dict(model.named_parameters())
        by_param: dict[str, dict[int, np.ndarray]] = {}
        for slot in graph.slots:
            if slot.key in params:
                by_param.setdefault(slot.key, {}).setdefault(slot.dim, labels[slot.atoms])
        self._params = [_Scaled(params[k].numel(), tuple(dims.values())) for k, dims in by_param.items()]

    def macs(self, kept: np.ndarray) -> int:
        return self.dense_macs - sum(term.reduction(kept) for term in self._macs)

    def params(self, kept: np.ndarray) -> int:
        return self.dense_params - sum(term.reduction(kept) for term in self._params)

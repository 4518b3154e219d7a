"""Predict MACs and parameters of a plan analytically, without touching the model.

Each MACs term scales with the kept fraction of its factors; each sliced parameter
with the kept fraction of its sliced dims.  ``macs``/``params`` use exact integer
arithmetic, so the prediction equals what ``FlopCounterMode`` counts after slicing;
``macs_estimate`` is the vectorised float version the threshold search probes with.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from compressor.engine.analysis.graph import ChannelGraph, check_graph_and_model


@dataclass(frozen=True)
class _Scaled:
    dense: int
    factors: tuple[np.ndarray, ...]  # class ids per factor position

    def reduction(self, kept: np.ndarray) -> int:
        value, denominator = self.dense, 1
        for classes in self.factors:
            value *= int(np.count_nonzero(kept[classes]))
            denominator *= classes.size
        return self.dense - value // denominator


class _Vectorised:
    """All terms at once: one gather and one segmented sum per probe."""

    def __init__(self, terms: list[_Scaled]):
        flat = [classes for term in terms for classes in term.factors]
        self.classes = np.concatenate(flat) if flat else np.zeros(0, dtype=np.int64)
        lengths = np.array([c.size for c in flat], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if flat else lengths
        self.lengths = lengths.astype(np.float64)
        self.term_of_factor = np.repeat(np.arange(len(terms)), [len(t.factors) for t in terms])
        self.dense = np.array([t.dense for t in terms], dtype=np.float64)

    def reduction(self, kept: np.ndarray) -> float:
        if not self.classes.size:
            return 0.0
        fractions = np.add.reduceat(kept[self.classes].astype(np.float64), self.starts) / self.lengths
        per_term = np.ones_like(self.dense)
        np.multiply.at(per_term, self.term_of_factor, fractions)
        return float(np.sum(self.dense * (1.0 - per_term)))


class CostModel:
    """MACs/params of any plan on one analysed model."""

    def __init__(self, graph: ChannelGraph, model: nn.Module):
        check_graph_and_model(graph, model, "CostModel")
        labels = graph.labels
        self.dense_macs = graph.dense_macs
        self.dense_params = graph.dense_params
        self._macs = [
            _Scaled(t.macs, tuple(labels[f] for f in t.factors)) for t in graph.terms if t.factors and t.macs
        ]
        self._fast = _Vectorised(self._macs)
        params = dict(model.named_parameters())
        by_param: dict[str, dict[int, np.ndarray]] = {}
        for slot in graph.slots:
            if slot.key in params:
                by_param.setdefault(slot.key, {}).setdefault(slot.dim, labels[slot.atoms])
        self._params = [_Scaled(params[k].numel(), tuple(dims.values())) for k, dims in by_param.items()]

    def counts_decide_macs(self, groups) -> bool:
        """Whether the MACs of a plan depend only on how many channels each group keeps,
        not which: every MACs factor holds each group it touches whole, each of that
        group's channels equally often (plain convolution chains and residual sums do;
        a concatenation's part does not).  Channels in no group are never removed."""
        group_of = {int(c): i for i, group in enumerate(groups) for c in group.classes}
        for term in self._macs:
            for classes in term.factors:
                values, counts = np.unique(classes, return_counts=True)
                held: dict[int, list[int]] = {}  # group index -> how often each of its channels appears
                for value, count in zip(values.tolist(), counts.tolist()):
                    if value in group_of:
                        held.setdefault(group_of[value], []).append(count)
                if any(len(set(c)) > 1 or len(c) != groups[i].size for i, c in held.items()):
                    return False
        return True

    def macs(self, kept: np.ndarray) -> int:
        return self.dense_macs - sum(term.reduction(kept) for term in self._macs)

    def macs_estimate(self, kept: np.ndarray) -> float:
        return self.dense_macs - self._fast.reduction(kept)

    def params(self, kept: np.ndarray) -> int:
        return self.dense_params - sum(term.reduction(kept) for term in self._params)

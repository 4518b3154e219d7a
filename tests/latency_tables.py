"""Latency tables written by hand for tests: no runtime, known numbers.

``macs_table`` prices every layer the MACs cost model counts at ``ms_per_mac`` per MAC,
on a grid of (1, dense width) per factor: MACs are bilinear in the widths, so the grid
is exact and the table's speed-up of a plan is its MACs ratio (with ``fixed_ms`` 0): its
two anchors put the whole model at ``fixed_ms`` plus the sum of its layers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from compressor.engine.analysis.graph import ChannelGraph
from compressor.engine.latency import LatencyTable, LayerLatency

TARGET = {"backend": "onnxruntime", "device": "cpu", "precision": "fp32", "batch_size": 1, "threads": 1,
          "input_size": [3, 32, 32]}


def macs_table(graph: ChannelGraph, ms_per_mac: float = 1e-6, fixed_ms: float = 0.0, target: dict | None = None) -> LatencyTable:
    layers = []
    for term in graph.terms:
        if not term.factors:
            continue
        widths = tuple((1, f.size) for f in term.factors)
        per_unit = term.macs * ms_per_mac / np.prod([f.size for f in term.factors])
        grid = per_unit * np.prod(np.meshgrid(*[np.array(w, dtype=float) for w in widths], indexing="ij"), axis=0)
        layers.append(LayerLatency.monotone(term.op, widths, grid))
    layer_sum = sum(float(layer.ms.max()) for layer in layers)
    anchors = ((0.0, fixed_ms), (layer_sum, fixed_ms + layer_sum))
    return LatencyTable(dict(target or TARGET), tuple(layers), anchors, fixed_ms + layer_sum, 0.5)


def write_macs_table(graph: ChannelGraph, path: Path, **kwargs) -> Path:
    macs_table(graph, **kwargs).save(path)
    return path

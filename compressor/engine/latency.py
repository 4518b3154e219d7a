"""Predict the latency of a plan on a deploy target from a measured per-layer table.

The MACs cost model (``compressor.engine.cost``) counts work; this one prices it in
milliseconds on one runtime.  The table is *data*: for every conv/linear layer, its
latency measured on a grid of (output width, input width) points, and a few *anchors*:
whole models (the dense one, the narrowest plan the limits allow, and uniform cuts in
between) measured on the same target, each beside the sum of its layers' latencies::

    predicted_ms(plan) = the anchors' curve at (sum over layers of layer_ms(kept widths))

The layers say which channels cost time; the anchors turn their sum into what the whole
model takes, with everything a sum of lone layers misses (the session's overhead, the
ops between layers, caches shared along the network).  The curve is piecewise linear
through the anchors and made non-decreasing (exact at the dense anchor, and at every
anchor a wider one did not beat), so a
plan's prediction stays monotone in every width: a narrower layer is never predicted
slower, which the selection's refill pass relies on.  The engine never measures:
``compressor.bench.latency`` builds the table on the target and caches it; here it is
only read, interpolated and checked, so the engine stays free of runtimes.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compressor.engine.analysis.graph import ChannelGraph
from compressor.errors import CompressorError, one_line

FORMAT = "compressor.latency-table/2"


@dataclass(frozen=True)
class LayerLatency:
    """One layer's measured latency on a grid: ``widths[i]`` are the grid points of its
    i-th channel factor (the MACs term's order: output, then input), ``ms`` the
    latencies with one axis per factor."""

    op: str  # the MACs term it prices, e.g. "layer1.0.conv1 conv"
    widths: tuple[tuple[int, ...], ...]
    ms: np.ndarray

    def __post_init__(self) -> None:
        shape = tuple(len(w) for w in self.widths)
        if self.ms.shape != shape or not all(len(w) and list(w) == sorted(set(w)) for w in self.widths):
            raise ValueError(f"{self.op}: a grid of shape {self.ms.shape} for widths of lengths {shape}")
        if not np.all(np.isfinite(self.ms) & (self.ms >= 0)):
            raise ValueError(f"{self.op}: latencies must be finite and non-negative")

    @classmethod
    def monotone(cls, op: str, widths, ms) -> "LayerLatency":
        """The layer with its grid made non-decreasing along each width (running maximum):
        a measured dip at a wider width is noise or a kernel quirk the plan must not chase."""
        grid = np.asarray(ms, dtype=np.float64)
        for axis in range(grid.ndim):
            grid = np.maximum.accumulate(grid, axis=axis)
        return cls(op, tuple(tuple(int(v) for v in w) for w in widths), grid)

    def at(self, counts: tuple[float, ...]) -> float:
        """Multilinear interpolation at these widths (clamped to the grid)."""
        value = self.ms
        for points, count in zip(self.widths, counts):
            value = _interpolate_axis(value, points, count)
        return float(value)


def _interpolate_axis(grid: np.ndarray, points: tuple[int, ...], count: float) -> np.ndarray:
    if len(points) == 1:
        return grid[0]
    x = min(max(float(count), points[0]), points[-1])
    upper = min(int(np.searchsorted(points, x, side="left")), len(points) - 1)
    lower = max(upper - 1, 0)
    if points[upper] == points[lower]:
        return grid[upper]
    weight = (x - points[lower]) / (points[upper] - points[lower])
    return grid[lower] * (1.0 - weight) + grid[upper] * weight


@dataclass(frozen=True)
class LatencyTable:
    """A model's measured latency table on one target (see the module docstring)."""

    target: dict  # backend, device, precision, batch_size, threads, input_size, machine, versions, model
    layers: tuple[LayerLatency, ...]
    anchors: tuple[tuple[float, float], ...]  # (sum of the layers' ms, the whole model's ms), by sum
    dense_ms: float  # the whole dense model, measured
    measure_s: float  # what measuring the table took

    def __post_init__(self) -> None:
        points = np.asarray(self.anchors, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2 or not len(points) or not np.all(np.isfinite(points) & (points >= 0)):
            raise ValueError("its anchors must be finite non-negative (layer sum, model ms) pairs")
        order = np.argsort(points[:, 0], kind="stable")
        # Non-decreasing, keeping the widest anchor (the dense model: the speed-up's reference)
        # as measured: an anchor measured slower than a wider one is priced at the wider one's
        # time.  Lifting the wider one instead would inflate the dense latency and promise
        # speed-ups the runtime does not give (ONNX Runtime's INT8 kernels ran ResNet-20 at
        # half width slower than dense here).
        ms = np.minimum.accumulate(points[order, 1][::-1])[::-1]
        object.__setattr__(self, "anchors", tuple((float(x), float(y)) for x, y in zip(points[order, 0], ms)))

    def whole_ms(self, layer_sum: float) -> float:
        """The anchors' curve at ``layer_sum``: linear between anchors, and beyond the
        outer ones along the nearest segment (never below 0, never decreasing)."""
        xs, ys = (np.array(v) for v in zip(*self.anchors))
        if len(xs) == 1 or xs[-1] <= xs[0]:  # the layers did not tell plans apart: every plan costs the same
            return float(ys[-1])
        if layer_sum < xs[0]:
            return float(max(ys[0] - _slope(xs[:2], ys[:2]) * (xs[0] - layer_sum), 0.0))
        if layer_sum > xs[-1]:
            return float(ys[-1] + _slope(xs[-2:], ys[-2:]) * (layer_sum - xs[-1]))
        return float(np.interp(layer_sum, xs, ys))

    def describe(self) -> str:
        t = self.target
        return f"{t['backend']} on {t['device']}, {t['precision']}, batch {t['batch_size']}"

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "target": self.target, "anchors": [list(a) for a in self.anchors],
            "dense_ms": self.dense_ms, "measure_s": self.measure_s,
            "layers": [{"op": l.op, "widths": [list(w) for w in l.widths], "ms": l.ms.tolist()} for l in self.layers],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "LatencyTable":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        layers = tuple(LayerLatency.monotone(str(l["op"]), l["widths"], l["ms"]) for l in data["layers"])
        numbers = {k: float(data[k]) for k in ("dense_ms", "measure_s")}
        if not all(math.isfinite(v) and v >= 0 for v in numbers.values()):
            raise ValueError("its dense_ms or measure_s is not a finite non-negative number")
        if not isinstance(data["target"], dict):
            raise ValueError("its target is not a mapping")
        anchors = tuple((float(x), float(y)) for x, y in data["anchors"])
        return cls(dict(data["target"]), layers, anchors, **numbers)

    @classmethod
    def load(cls, path: Path, expected: dict | None = None) -> "LatencyTable":
        """Read a table file (JSON, never pickle).  A damaged file, or one measured for
        another target than ``expected``, is refused in one line naming it."""
        try:
            table = cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError, KeyError, AttributeError, IndexError) as error:
            raise CompressorError(f"the latency table {path} is corrupt ({one_line(str(error), 120)}); "
                                  "delete it to measure again") from error
        if expected is not None and table.target != expected:
            differs = sorted(k for k in set(expected) | set(table.target) if expected.get(k) != table.target.get(k))
            raise CompressorError(f"the latency table {path} was measured for another target "
                                  f"({', '.join(differs)} differ); delete it to measure again")
        return table

    def save(self, path: Path) -> None:
        from compressor.atomic import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1))


def _slope(xs: np.ndarray, ys: np.ndarray) -> float:
    return float((ys[1] - ys[0]) / (xs[1] - xs[0])) if xs[1] > xs[0] else 0.0


@dataclass(frozen=True)
class _Priced:
    layer: LayerLatency
    factors: tuple[np.ndarray, ...]  # class ids per atom of each factor


class LatencyModel:
    """Predicted latency (ms) of any plan of one analysed model, from its table."""

    def __init__(self, graph: ChannelGraph, table: LatencyTable):
        self.table = table
        by_op = {layer.op: layer for layer in table.layers}
        self._priced = []
        for term in graph.terms:
            if not term.factors:
                continue
            layer = by_op.get(term.op)
            if layer is None or len(layer.widths) != len(term.factors):
                raise CompressorError(f"the latency table ({table.describe()}) has no entry for '{term.op}': it was "
                                      "measured for another model; measure it for this one")
            self._priced.append(_Priced(layer, tuple(graph.labels[f] for f in term.factors)))
        self.dense_ms = self.estimate(np.ones(graph.labels.size, dtype=bool))

    def layer_sum(self, kept: np.ndarray) -> float:
        """The sum of the layers' latencies (ms) with the classes in ``kept`` kept."""
        return float(sum(p.layer.at(tuple(int(np.count_nonzero(kept[f])) for f in p.factors)) for p in self._priced))

    def estimate(self, kept: np.ndarray) -> float:
        """Predicted milliseconds of the whole model with the classes in ``kept`` kept."""
        return self.table.whole_ms(self.layer_sum(kept))

    def speedup(self, kept: np.ndarray) -> float:
        return self.dense_ms / self.estimate(kept)

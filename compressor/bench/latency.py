"""Measure a model's latency table on a deploy target: what ``--speedup`` prices plans with.

Every conv and linear layer the engine counts MACs for is timed alone, with the
runtime's own kernels (the ``--round-to auto`` sweep's hand-built one-layer ONNX
files, ``compressor.bench.rounding``), on a small grid of (output, input) widths from
the narrowest the plan may leave (``--max-prune-fraction``) to the dense width, at the
layer's real input size and the deploy batch.  The whole dense model and the
narrowest plan are timed in the same interleaved rounds; they fix the two numbers that
tie the sum of the layers to the model (``compressor.engine.latency``), so the table
predicts both ends exactly and interpolates between them.

What keeps it cheap (a table is a budget for one search, measured before training):

* each distinct layer shape is timed once, however many layers have it (a ResNet's
  stages repeat one block: ResNet-20 and ResNet-56 both come to 57 shapes);
* three widths per channel factor (the narrowest, one between, the dense one); the
  engine interpolates between them, multilinearly on a grid made non-decreasing, so
  the prediction stays monotone in every width;
* short timing loops, each subject's latency read as the lower quartile of its calls:
  on a shared CPU interference only ever lengthens a call, and a quartile of some
  hundred calls is steadier than their median there, without being the one luckiest
  call a minimum would be.  Every subject, the whole models too, is read the same way.

Tables are cached as JSON under ``~/.cache/onecycle-compress/latency/``, keyed by the
target (backend, device, precision, batch, threads, input size), the machine, the
package versions and the model's layer shapes.  A damaged or foreign cache file is
refused in one line naming it.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compressor.bench.backends import BACKENDS, Workload
from compressor.bench.environment import describe, usable_cores
from compressor.bench.rounding import ConvSubject, LayerShape, cache_dir
from compressor.bench.subjects import model_pair
from compressor.bench.timing import TimingConfig, measure
from compressor.choices import BENCH_PRECISIONS, DEFAULT_DEPLOY_BACKEND
from compressor.engine.analysis.graph import ChannelGraph, analyse
from compressor.engine.apply import apply_plan
from compressor.engine.latency import LatencyModel, LatencyTable, LayerLatency
from compressor.engine.plan import GroupPlan, PruningPlan, kept_class_mask
from compressor.engine.selection import kept_count_rules
from compressor.errors import CompressorError

log = logging.getLogger(__name__)

# The (backend, device, precision) a table can be measured for: the one place to add a
# target once its per-layer files can be built and timed there (fp16/int8 layers, CUDA).
SUPPORTED = (("onnxruntime", "cpu", "fp32"),)
# A 1x1 conv of one channel on one pixel: what one call costs the runtime with no work in it,
# taken off every layer alone (the whole model pays it once, not once per layer).
NULL_LAYER = LayerShape(1, 1, (1, 1), (1, 1), (1, 1), (0, 0))
# Short loops per subject (about 40 ms of calls each): the table is a budget for a search,
# not a paper's figure, and the whole models calibrate what the layers miss.
TABLE_TIMING = TimingConfig(warmup_s=0.01, warmup_runs=3, min_runs=15, min_time_s=0.03, rounds=3)
TABLE_QUANTILE = 25  # percent: each subject's latency is this percentile of its calls (see the docstring)
GRID_POINTS = 3  # per width: the narrowest allowed, one between, the dense one


@dataclass(frozen=True)
class DeployTarget:
    """Where the pruned model will run: what the table is measured on and keyed by."""

    backend: str = DEFAULT_DEPLOY_BACKEND
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 1
    threads: int | None = None  # None: every core this process may use (as compress bench)

    def __post_init__(self) -> None:
        if self.precision not in BENCH_PRECISIONS:
            raise CompressorError(f"unknown precision '{self.precision}'; choose from {', '.join(BENCH_PRECISIONS)}")
        if self.batch_size < 1:
            raise CompressorError(f"--deploy-batch must be >= 1, got {self.batch_size}")

    def check_supported(self) -> None:
        """Refuse, in one line, a target no table can be measured on yet."""
        if (self.backend, self.device, self.precision) not in SUPPORTED:
            supported = "; ".join(" ".join(t) for t in SUPPORTED)
            raise CompressorError(f"--speedup cannot measure {self.backend} on {self.device} in {self.precision} yet "
                                  f"(supported: {supported})")

    @property
    def resolved_threads(self) -> int:
        return self.threads or usable_cores()


@dataclass(frozen=True)
class _Layer:
    """A priced MACs term and how its factor widths become a layer to time."""

    op: str
    module: nn.Module
    spatial: tuple[int, ...]
    widths: tuple[tuple[int, ...], ...]  # grid points per factor

    def shape(self, counts: tuple[int, ...]) -> LayerShape:
        m = self.module
        if isinstance(m, nn.Linear):
            return LayerShape(counts[1] if len(counts) > 1 else m.in_features, counts[0], (), None)
        kernel, stride, padding = (tuple(int(v) for v in getattr(m, k)) for k in ("kernel_size", "stride", "padding"))
        if m.groups > 1:  # depthwise (checked in _layers): its one factor is in and out
            return LayerShape(counts[0], counts[0], self.spatial, kernel, stride, padding, depthwise=True)
        return LayerShape(counts[1] if len(counts) > 1 else m.in_channels, counts[0], self.spatial, kernel, stride, padding)

    def points(self) -> list[tuple[int, ...]]:
        return [tuple(int(v) for v in p) for p in np.array(np.meshgrid(*self.widths, indexing="ij")).reshape(len(self.widths), -1).T]


def grid(size: int, floor: int, step: int, points: int = GRID_POINTS) -> tuple[int, ...]:
    """At most ``points`` widths from ``floor`` to ``size``, evenly spaced among the widths a
    plan can leave (multiples of ``step``, and ``size``): the plan lands on grid points
    where it can, so interpolation only fills in between (a frozen factor: ``size`` alone)."""
    allowed = sorted({w for w in range(max(1, floor), size + 1) if w % step == 0} | {max(1, floor), size})
    picks = np.linspace(0, len(allowed) - 1, min(points, len(allowed)))
    return tuple(sorted({allowed[int(round(i))] for i in picks}))


def _floor_of(graph: ChannelGraph, round_to, max_prune_fraction: float, min_width: int) -> np.ndarray:
    """The kept mask of the narrowest plan the limits allow: every group at its floor."""
    return kept_class_mask(graph, _floor_plan(graph, round_to, max_prune_fraction, min_width))


def _floor_plan(graph: ChannelGraph, round_to, max_prune_fraction: float, min_width: int) -> PruningPlan:
    groups = {}
    for group in graph.groups:
        _, floor = kept_count_rules(group.size, round_to, max_prune_fraction, min_width)
        groups[group.name] = GroupPlan(group.size, tuple(range(floor)))
    return PruningPlan(groups)


def _layers(model: nn.Module, graph: ChannelGraph, input_size, floor: np.ndarray, round_to) -> list[_Layer]:
    spatial = _input_spatial(model, input_size)
    layers = []
    for term in graph.terms:
        if not term.factors:
            continue
        name, _, kind = term.op.rpartition(" ")
        module = model.get_submodule(name) if kind in ("conv", "linear") else None
        _check_priceable(term.op, module, spatial.get(name))
        widths = tuple(grid(f.size, int(np.count_nonzero(floor[graph.labels[f]])),
                            kept_count_rules(f.size, round_to, 1.0, 1)[0]) for f in term.factors)
        layers.append(_Layer(term.op, module, spatial[name], widths))
    return layers


def _check_priceable(op: str, module, spatial) -> None:
    plain_conv = isinstance(module, nn.Conv2d) and (module.groups == 1 or (
        module.groups == module.in_channels == module.out_channels))
    plain_linear = isinstance(module, nn.Linear) and spatial == ()
    if not (plain_conv or plain_linear):
        raise CompressorError(f"--speedup cannot price '{op}' yet: the latency table times 2-D convs (plain or "
                              "depthwise) and linear layers on flat features; use --flops-reduction")


def _input_spatial(model: nn.Module, input_size) -> dict[str, tuple[int, ...]]:
    """Each conv's input height and width (() for a linear layer on flat features)."""
    seen, handles = {}, []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            def hook(module, args, name=name):
                shape = tuple(args[0].shape)
                seen[name] = shape[2:] if isinstance(module, nn.Conv2d) else (() if len(shape) == 2 else shape[1:-1])
            handles.append(module.register_forward_pre_hook(hook))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return seen


def machine_name(device: str, environment: dict | None = None) -> str:
    """What runs a table's layers on ``device``: the GPU's name on cuda, else the CPU model."""
    environment = environment or describe(None)
    return environment["gpu"]["name"] if device == "cuda" and environment["gpu"] else environment["cpu"]


def target_key(target: DeployTarget, input_size, layers: list[_Layer], floor_widths: list[int],
               environment: dict | None = None) -> dict:
    """What a table is valid for; any difference means measuring again.  ``environment``
    (``describe()``'s machine and versions) is read here unless given."""
    environment = environment or describe(target.resolved_threads)
    machine = machine_name(target.device, environment)
    shapes = json.dumps([[l.op, l.shape(tuple(w[-1] for w in l.widths)).label, l.widths] for l in layers] + [floor_widths])
    return {
        **asdict(target), "threads": target.resolved_threads, "input_size": list(input_size), "machine": machine,
        "versions": environment["versions"], "model": hashlib.sha256(shapes.encode()).hexdigest()[:16],
    }


def cache_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return cache_dir() / "latency" / f"{digest}.json"


def latency_table(model: nn.Module, input_size, target: DeployTarget, *, round_to=None, max_prune_fraction: float = 0.75,
                  min_width: int = 1, ignore=(), refresh: bool = False,
                  timing: TimingConfig = TABLE_TIMING) -> tuple[LatencyTable, bool]:
    """The model's table on ``target``: read from the cache, or measured (and cached).
    Returns (table, cached)."""
    target.check_supported()
    model = copy.deepcopy(model).cpu().eval()  # timed on the target's runtime; the caller's model is left as it is
    example = torch.zeros(1, *input_size)
    graph = analyse(model, example, ignore=ignore)
    floor = _floor_of(graph, round_to, max_prune_fraction, min_width)
    layers = _layers(model, graph, input_size, floor, round_to)
    key = target_key(target, input_size, layers, [int(np.count_nonzero(floor[graph.labels[f]]))
                                                  for t in graph.terms for f in t.factors])
    path = cache_path(key)
    if path.is_file() and not refresh:
        return LatencyTable.load(path, expected=key), True
    table = measure_table(model, graph, layers, input_size, target, key, timing,
                          _floor_plan(graph, round_to, max_prune_fraction, min_width))
    try:
        table.save(path)
    except OSError as error:  # no cache: the next prune measures again, nothing is lost
        log.warning("could not cache the latency table in %s: %s", path, error)
    return table, False


def measure_table(model: nn.Module, graph: ChannelGraph, layers: list[_Layer], input_size, target: DeployTarget,
                  key: dict, timing: TimingConfig, floor_plan: PruningPlan) -> LatencyTable:
    """Time every grid point and the dense and narrowest models, interleaved; fit the table."""
    started = time.perf_counter()
    backend = BACKENDS[target.backend]
    reason = backend.unavailable(target.device, target.precision)
    if reason is not None:
        raise CompressorError(f"cannot measure {target.backend} on {target.device}: {reason}")
    with tempfile.TemporaryDirectory(prefix="latency-table-") as scratch:
        shapes = distinct_shapes(layers)
        log.debug("latency table: %d layers, %d grid points, %d distinct shapes to time",  # stdout is --json's
                 len(layers), sum(len(l.points()) for l in layers), len(shapes))
        subjects = [ConvSubject.of(shape, Path(scratch)) for shape in [*shapes, NULL_LAYER]]
        narrow = apply_plan(copy.deepcopy(model).eval(), graph, floor_plan, None)
        pair = model_pair("table", copy.deepcopy(model).eval(), narrow, input_size, Path(scratch) / "models")
        subjects += pair.subjects
        timed = _time(subjects, backend, target, timing)
    call_ms = timed[len(shapes)]
    by_shape = {shape: max(ms - call_ms, 0.0) for shape, ms in zip(shapes, timed)}
    measured = tuple(LayerLatency.monotone(l.op, l.widths, np.array([by_shape[l.shape(p)] for p in l.points()])
                                           .reshape([len(w) for w in l.widths])) for l in layers)
    dense_ms, narrow_ms = timed[-2], timed[-1]
    fixed_ms, scale = _fit(graph, measured, dense_ms, narrow_ms, kept_class_mask(graph, floor_plan), key)
    return LatencyTable(key, measured, fixed_ms, scale, dense_ms, time.perf_counter() - started)


def distinct_shapes(layers: list[_Layer]) -> list[LayerShape]:
    """Every shape the grid points of ``layers`` ask for, once (repeated blocks share them)."""
    return sorted({layer.shape(p) for layer in layers for p in layer.points()}, key=lambda s: s.label)


def _time(subjects, backend, target: DeployTarget, timing: TimingConfig) -> list[float]:
    prepared = []
    try:
        for subject in subjects:
            workload = Workload(target.batch_size, target.precision, target.device, target.resolved_threads,
                                tuple(subject.input_size))
            prepared.append(backend.prepare(subject, workload))
        measurement = measure(prepared, timing)
    finally:
        for runnable in prepared:
            runnable.close()
    return [robust_ms(samples) for samples in measurement.samples_ms]


def robust_ms(samples_ms) -> float:
    """One subject's latency from its calls: the ``TABLE_QUANTILE`` percentile."""
    samples = np.asarray(samples_ms, dtype=np.float64)
    if samples.size == 0 or not np.all(np.isfinite(samples)) or np.any(samples < 0):
        raise CompressorError("the latency table got no usable timings (empty, negative or non-finite)")
    return float(np.percentile(samples, TABLE_QUANTILE))


def _fit(graph: ChannelGraph, layers, dense_ms: float, narrow_ms: float, narrow: np.ndarray,
         key: dict) -> tuple[float, float]:
    """``fixed_ms`` and ``scale`` so that the table predicts the measured dense and narrowest
    models exactly.  A fit that would make the fixed part negative (noise) keeps it at 0
    and scales the layers to the dense model alone."""
    sums = LatencyModel(graph, LatencyTable(key, layers, 0.0, 1.0, dense_ms, 0.0))
    dense_sum, narrow_sum = sums.dense_ms, sums.estimate(narrow)
    if dense_sum <= 0:  # every layer timed at 0 ms (a tiny model on a quiet, fast CPU): nothing to scale
        log.warning("latency table: the layers were too fast to time apart; every plan is priced at the dense "
                    "model's %.3f ms", dense_ms)
        return dense_ms, 1.0
    scale = (dense_ms - narrow_ms) / (dense_sum - narrow_sum) if dense_sum > narrow_sum else 0.0
    fixed = dense_ms - scale * dense_sum
    if scale <= 0 or fixed < 0:
        log.warning("latency table: the layers and the whole models disagree (dense %.3f ms, narrowest %.3f ms); "
                    "scaling the layers to the dense model", dense_ms, narrow_ms)
        return 0.0, dense_ms / dense_sum
    return fixed, scale

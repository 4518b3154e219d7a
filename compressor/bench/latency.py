"""Measure a model's latency table on a deploy target: what ``--speedup`` prices plans with.

Every conv and linear layer the engine counts MACs for is timed alone, with the
runtime's own kernels (the ``--round-to auto`` sweep's hand-built one-layer ONNX
files, ``compressor.bench.rounding``), on a small grid of (output, input) widths from
the narrowest the plan may leave (``--max-prune-fraction``) to the dense width, at the
layer's real input size and the deploy batch.  The whole dense model and the
whole model at a few uniform cuts, from the narrowest plan to the dense one, is timed
in bench-like loops (warm, longer, interleaved rounds); these anchors map the sum of the
layers to the whole model (``compressor.engine.latency``), so the table predicts every
anchor exactly and interpolates between them.  Short loops shared with ~60 layer files
are enough to rank layers against each other, not to time a whole model: in the
table's first form, the whole models timed in those loops gave a 2x plan that measured
1.57x.

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
table format, the target (backend, device, precision, batch, threads, input size), the
machine, the package versions and the model's layer shapes.  A damaged or foreign cache file is
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
from compressor.bench.subjects import Subject
from compressor.bench.timing import TimingConfig, measure
from compressor.choices import BENCH_PRECISIONS, DEFAULT_DEPLOY_BACKEND
from compressor.engine.analysis.graph import ChannelGraph, analyse
from compressor.engine.apply import apply_plan
from compressor.engine.flops import count_macs, count_params
from compressor.engine.latency import FORMAT, LatencyModel, LatencyTable, LayerLatency
from compressor.engine.plan import GroupPlan, PruningPlan, kept_class_mask
from compressor.engine.selection import kept_count_rules
from compressor.errors import CompressorError

log = logging.getLogger(__name__)

# The (backend, device, precision) a table can be measured for: the one place to add a
# target once its per-layer files can be built and timed there (fp16/int8 layers, CUDA).
SUPPORTED = (("onnxruntime", "cpu", "fp32"), ("onnxruntime", "cpu", "int8"))
# A 1x1 conv of one channel on one pixel: what one call costs the runtime with no work in it,
# taken off every layer alone (the whole model pays it once, not once per layer).
NULL_LAYER = LayerShape(1, 1, (1, 1), (1, 1), (1, 1), (0, 0))
# Short loops per subject (about 40 ms of calls each): the table is a budget for a search,
# not a paper's figure, and the whole models calibrate what the layers miss.
TABLE_TIMING = TimingConfig(warmup_s=0.01, warmup_runs=3, min_runs=15, min_time_s=0.03, rounds=3)
TABLE_QUANTILE = 25  # percent: each subject's latency is this percentile of its calls (see the docstring)
GRID_POINTS = 3  # per width: the narrowest allowed, one between, the dense one
# Where the whole-model anchors cut every group, from its floor (0) to its dense width (1).
ANCHOR_CUTS = (0.0, 0.25, 0.5, 0.75, 1.0)
SLOWER_WARNING = 1.10  # a narrower anchor this much slower than a wider one is not noise
# Whole models are timed in bench-like loops (warm, five interleaved rounds), shorter than
# bench's (five models a table), and read like the layers (TABLE_QUANTILE).
ANCHOR_TIMING = TimingConfig(warmup_s=0.2, warmup_runs=5, min_runs=30, min_time_s=0.8, rounds=5)


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
    return kept_class_mask(graph, uniform_plan(graph, 0.0, round_to, max_prune_fraction, min_width))


def uniform_plan(graph: ChannelGraph, cut: float, round_to, max_prune_fraction: float, min_width: int) -> PruningPlan:
    """Every group kept at the same place between its floor (``cut`` 0) and its dense width
    (1), on the widths a plan can leave: the anchors' plans."""
    groups = {}
    for group in graph.groups:
        step, floor = kept_count_rules(group.size, round_to, max_prune_fraction, min_width)
        allowed = sorted({w for w in range(floor, group.size + 1) if w % step == 0} | {floor, group.size})
        kept = allowed[int(round(cut * (len(allowed) - 1)))]
        groups[group.name] = GroupPlan(group.size, tuple(range(kept)))
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
        "format": FORMAT, **asdict(target), "threads": target.resolved_threads, "input_size": list(input_size), "machine": machine,
        "versions": environment["versions"], "model": hashlib.sha256(shapes.encode()).hexdigest()[:16],
    }


def cache_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return cache_dir() / "latency" / f"{digest}.json"


def latency_table(model: nn.Module, input_size, target: DeployTarget, *, round_to=None, max_prune_fraction: float = 0.75,
                  min_width: int = 1, ignore=(), refresh: bool = False, timing: TimingConfig = TABLE_TIMING,
                  anchor_timing: TimingConfig = ANCHOR_TIMING) -> tuple[LatencyTable, bool]:
    """The model's table on ``target``: read from the cache, or measured (and cached).
    ``timing`` times the layers, ``anchor_timing`` the whole models.  Returns (table, cached)."""
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
    plans = [uniform_plan(graph, cut, round_to, max_prune_fraction, min_width) for cut in ANCHOR_CUTS]
    table = measure_table(model, graph, layers, input_size, target, key, (timing, anchor_timing), plans)
    try:
        table.save(path)
    except OSError as error:  # no cache: the next prune measures again, nothing is lost
        log.warning("could not cache the latency table in %s: %s", path, error)
    return table, False


def measure_table(model: nn.Module, graph: ChannelGraph, layers: list[_Layer], input_size, target: DeployTarget,
                  key: dict, timings: tuple[TimingConfig, TimingConfig], anchor_plans: list[PruningPlan]) -> LatencyTable:
    """Time every grid point (interleaved, short loops), then the whole model at each of
    ``anchor_plans`` (as compress bench times a model); tie the two together."""
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
        timed = [robust_ms(samples) for samples in _time(subjects, backend, target, timings[0])]
        models = _anchor_subjects(model, graph, anchor_plans, input_size, Path(scratch) / "models")
        whole = [robust_ms(samples) for samples in _time(models, backend, target, timings[1])]
    call_ms = timed[len(shapes)]
    by_shape = {shape: max(ms - call_ms, 0.0) for shape, ms in zip(shapes, timed)}
    measured = tuple(LayerLatency.monotone(l.op, l.widths, np.array([by_shape[l.shape(p)] for p in l.points()])
                                           .reshape([len(w) for w in l.widths])) for l in layers)
    sums = LatencyModel(graph, LatencyTable(key, measured, ((0.0, 0.0),), 0.0, 0.0))
    anchors = tuple((sums.layer_sum(kept_class_mask(graph, plan)), ms) for plan, ms in zip(anchor_plans, whole))
    _say_if_narrower_is_slower(target, whole)
    return LatencyTable(key, measured, anchors, whole[-1], time.perf_counter() - started)


def _say_if_narrower_is_slower(target: DeployTarget, whole: list[float]) -> None:
    """Anchors from the narrowest cut to dense: a cut measured well above a wider one means
    this runtime's kernels reward these widths less than the dense ones (ONNX Runtime's INT8
    on small convs did); the table then prices it at the wider one's time, and says so."""
    slowest = max(range(len(whole) - 1), key=lambda i: whole[i] / min(whole[i + 1:]))
    faster = min(whole[slowest + 1:])
    if whole[slowest] > SLOWER_WARNING * faster:
        log.warning("latency table: on %s %s batch %d the model with every group %.0f%% of the way from its "
                    "narrowest width to dense measured %.3f ms, a wider one %.3f ms: this runtime rewards these widths "
                    "less, plans there are priced at the wider one's time, and few speed-ups are reachable",
                    target.backend, target.precision, target.batch_size, 100 * ANCHOR_CUTS[slowest],
                    whole[slowest], faster)


def _anchor_subjects(model: nn.Module, graph: ChannelGraph, plans: list[PruningPlan], input_size,
                     cache: Path) -> list[Subject]:
    example = torch.zeros(1, *input_size)
    subjects = []
    for index, plan in enumerate(plans):
        cut = apply_plan(copy.deepcopy(model).eval(), graph, plan, None)
        subjects.append(Subject(f"anchor {index}", "pruned", tuple(input_size), count_macs(cut, example),
                                count_params(cut), cut, cache))
    return subjects


def distinct_shapes(layers: list[_Layer]) -> list[LayerShape]:
    """Every shape the grid points of ``layers`` ask for, once (repeated blocks share them)."""
    return sorted({layer.shape(p) for layer in layers for p in layer.points()}, key=lambda s: s.label)


def _time(subjects, backend, target: DeployTarget, timing: TimingConfig) -> list:
    """Each subject's timed calls (ms), measured together in interleaved rounds."""
    prepared = []
    try:
        for subject in subjects:
            workload = Workload(target.batch_size, target.precision, target.device, target.resolved_threads,
                                tuple(subject.input_size))
            prepared.append(backend.prepare(subject, workload))
        return measure(prepared, timing).samples_ms
    finally:
        for runnable in prepared:
            runnable.close()


def robust_ms(samples_ms) -> float:
    """One subject's latency from its calls: the ``TABLE_QUANTILE`` percentile."""
    samples = np.asarray(samples_ms, dtype=np.float64)
    if samples.size == 0 or not np.all(np.isfinite(samples)) or np.any(samples < 0):
        raise CompressorError("the latency table got no usable timings (empty, negative or non-finite)")
    return float(np.percentile(samples, TABLE_QUANTILE))

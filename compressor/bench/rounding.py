"""Which channel multiple does a backend reward?  Measured, not assumed.

A sweep times one 3x3 convolution (width w in, width w out) for every w in a
range, all widths interleaved in the same rounds.  Kernels vectorise over
channels, so latency steps: a width just below a multiple can cost as much as the
multiple, or more (a remainder loop).  Each width gets an *efficiency* against the
sweep's top width W, the same quantity ``compress bench`` reports for models:

    efficiency(w) = (MACs ratio) / (latency ratio) = (w / W)^2 / (t(w) / t(W))

1.0 means the MACs saved became speed.  For each candidate multiple m the score is
the mean efficiency of the widths that are multiples of m (at least two of them, so
the largest multiple a 32..64 sweep can judge is 16).  ``--round-to auto``
picks the *smallest* m whose score is within the tolerance of the best score: the
finest granularity (the most freedom for the pruner, so the least accuracy lost)
that still keeps the speed-up the backend can give.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from compressor.bench.backends import BACKENDS, Workload
from compressor.bench.environment import describe
from compressor.bench.stats import summarise
from compressor.bench.timing import TimingConfig, measure
from compressor.choices import DEFAULT_DEPLOY_BACKEND
from compressor.atomic import atomic_write_text
from compressor.errors import CompressorError

log = logging.getLogger(__name__)

MULTIPLES = (1, 2, 4, 8, 16, 32)
DEFAULT_TOLERANCE = 0.03


@dataclass(frozen=True)
class SweepConfig:
    backend: str = DEFAULT_DEPLOY_BACKEND
    device: str = "cpu"
    threads: int | None = None
    low: int = 32
    high: int = 64
    batch_size: int = 16
    spatial: int = 16
    tolerance: float = DEFAULT_TOLERANCE
    timing: TimingConfig = field(default_factory=lambda: TimingConfig(warmup_s=0.1, warmup_runs=5, min_runs=15, min_time_s=0.3, rounds=3))

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise CompressorError(f"unknown backend '{self.backend}'; choose from {', '.join(BACKENDS)}")
        if not 1 <= self.low < self.high:
            raise CompressorError("the sweep needs 1 <= low < high")
        if self.high % max(MULTIPLES):
            raise CompressorError(f"the sweep's top width must be a multiple of {max(MULTIPLES)}")


@dataclass(frozen=True)
class RoundingChoice:
    multiple: int
    scores: dict  # multiple -> mean efficiency of its widths
    latency_ms: dict  # width -> median ms
    config: dict
    environment: dict

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        lines = ["multiple  mean efficiency of its widths"]
        lines += [f"{m:>8}  {s:6.2f}" + ("   <- chosen" if m == self.multiple else "")
                  for m, s in self.scores.items() if not math.isnan(s)]
        return "\n".join(lines)


@dataclass(frozen=True)
class LayerShape:
    """One layer as the runtime sees it: a conv (``kernel`` set) or a linear layer, at the
    widths to time and the input it gets.  What the sweep and the latency table time."""

    in_channels: int
    out_channels: int
    spatial: tuple[int, ...] = ()  # the conv's input height and width; () for a linear layer
    kernel: tuple[int, int] | None = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (1, 1)
    depthwise: bool = False  # groups == channels (then in_channels == out_channels)

    @property
    def input_size(self) -> tuple[int, ...]:
        return (self.in_channels, *self.spatial)

    @property
    def label(self) -> str:
        """A file-name-safe name, unique per shape."""
        if self.kernel is None:
            return f"linear{self.in_channels}x{self.out_channels}"
        parts = [self.in_channels, self.out_channels, *self.spatial, *self.kernel, *self.stride, *self.padding]
        return ("dw" if self.depthwise else "conv") + "_".join(map(str, parts))

    def module(self) -> nn.Module:
        if self.kernel is None:
            return nn.Linear(self.in_channels, self.out_channels)
        groups = self.in_channels if self.depthwise else 1
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel, self.stride, self.padding, groups=groups)
        return nn.Sequential(conv, nn.ReLU())


class ConvSubject:
    """One layer of ``shape`` (the sweep's: a w -> w 3x3 convolution), as a module and as a
    tiny hand-built ONNX file."""

    variant = "sweep"

    def __init__(self, width: int, spatial: int, directory: Path, shape: LayerShape | None = None):
        self.shape = shape or LayerShape(width, width, (spatial, spatial))
        torch.manual_seed(self.shape.out_channels)
        self.width = self.shape.out_channels
        self.name = self.shape.label if shape is not None else f"conv{width}"
        self.input_size = self.shape.input_size
        self.model = self.shape.module().eval()
        self.directory = directory

    @classmethod
    def of(cls, shape: LayerShape, directory: Path) -> "ConvSubject":
        return cls(shape.out_channels, 0, directory, shape)

    def module(self) -> nn.Module:
        return self.model

    def onnx(self, precision: str) -> Path:
        """The layer's ONNX file in ``precision``: fp32, or INT8 quantized from it as bench
        quantizes a model it times (``int8``: symmetric QDQ; ``int8-asymmetric``: uint8
        activations, what ONNX Runtime's CPU provider runs)."""
        if precision not in ("fp32", "int8", "int8-asymmetric"):
            from compressor.bench.backends import BackendError

            raise BackendError(f"a one-layer file is timed in fp32 or INT8, not {precision}")
        path = self.directory / f"{self.name}.onnx"
        if not path.is_file():
            _write_layer_onnx(self.shape, self.model, path)
        if precision == "fp32":
            return path
        quantized = self.directory / f"{self.name}_{precision}.onnx"
        if not quantized.is_file():
            from compressor.export.int8 import quantize_for_timing

            quantize_for_timing(path, quantized, self.input_size, symmetric=precision == "int8")
        return quantized

    def engine(self, workload: Workload) -> Path:
        from compressor.export.tensorrt import EngineSpec, build_engine, default_timing_cache

        path = self.directory / f"{self.name}_b{workload.batch_size}.plan"
        if not path.is_file():
            build_engine(EngineSpec(self.onnx("fp32"), path, workload.batch_size, False, 1 << 30, 3, default_timing_cache()))
        return path


def _write_layer_onnx(shape: LayerShape, model: nn.Module, path: Path) -> None:
    """Conv + Relu (or Gemm) written directly with onnx.helper: exporting dozens of models
    through torch.onnx would take longer than the sweep itself."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    layer = model if shape.kernel is None else model[0]
    weight = numpy_helper.from_array(layer.weight.detach().numpy(), "weight")
    bias = numpy_helper.from_array(layer.bias.detach().numpy(), "bias")
    if shape.kernel is None:
        nodes = [helper.make_node("Gemm", ["input", "weight", "bias"], ["output"], transB=1)]
        dims_in, dims_out = ["batch", shape.in_channels], ["batch", shape.out_channels]
    else:
        pads = [shape.padding[0], shape.padding[1], shape.padding[0], shape.padding[1]]
        nodes = [
            helper.make_node("Conv", ["input", "weight", "bias"], ["conv"], pads=pads, kernel_shape=list(shape.kernel),
                             strides=list(shape.stride), group=shape.in_channels if shape.depthwise else 1),
            helper.make_node("Relu", ["conv"], ["output"]),
        ]
        dims_in, dims_out = ["batch", shape.in_channels, None, None], ["batch", shape.out_channels, None, None]
    graph = helper.make_graph(
        nodes, "layer_sweep",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims_in)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, dims_out)],
        [weight, bias],
    )
    model_proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model_proto.ir_version = min(model_proto.ir_version, 9)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model_proto, str(path))


def sweep(config: SweepConfig, directory: Path) -> dict[int, float]:
    """Median latency (ms) of the conv at every width in [low, high]."""
    backend = BACKENDS[config.backend]
    reason = backend.unavailable(config.device, "fp32")
    if reason is not None:
        raise CompressorError(f"cannot measure {config.backend} on {config.device}: {reason}")
    subjects = [ConvSubject(w, config.spatial, directory) for w in range(config.low, config.high + 1)]
    prepared = [
        backend.prepare(s, Workload(config.batch_size, "fp32", config.device, config.threads, s.input_size)) for s in subjects
    ]
    try:
        measurement = measure(prepared, config.timing)
    finally:
        for runnable in prepared:
            runnable.close()
    return {
        s.width: summarise(samples, config.batch_size).median_ms for s, samples in zip(subjects, measurement.samples_ms)
    }


def efficiency(latency_ms: dict[int, float], width: int) -> float:
    top = max(latency_ms)
    return (width / top) ** 2 / (latency_ms[width] / latency_ms[top])


MIN_WIDTHS = 2  # a multiple judged on one width alone is judged on noise


def score(latency_ms: dict[int, float], multiple: int) -> float:
    """Mean efficiency of the widths below the top that are multiples of ``multiple``
    (NaN when the sweep has fewer than two such widths: 32 in a 32..64 sweep)."""
    top = max(latency_ms)
    widths = [w for w in latency_ms if w % multiple == 0 and w != top]
    if len(widths) < MIN_WIDTHS:
        return float("nan")
    return float(sum(efficiency(latency_ms, w) for w in widths) / len(widths))


def choose(latency_ms: dict[int, float], tolerance: float = DEFAULT_TOLERANCE) -> tuple[int, dict[int, float]]:
    """The smallest multiple whose score is within ``tolerance`` of the best one."""
    scores = {m: score(latency_ms, m) for m in MULTIPLES}
    valid = {m: s for m, s in scores.items() if not math.isnan(s)}
    if not valid:
        raise CompressorError("the sweep has no width below its top one; widen it")
    best = max(valid.values())
    chosen = min(m for m, s in valid.items() if s >= best * (1 - tolerance))
    return chosen, scores


def measure_rounding(config: SweepConfig, directory: Path) -> RoundingChoice:
    latency = sweep(config, directory)
    multiple, scores = choose(latency, config.tolerance)
    settings = {**asdict(config), "timing": asdict(config.timing)}
    return RoundingChoice(multiple, scores, latency, settings, describe(config.threads))


# -- the cache behind --round-to auto ----------------------------------------------------------------
def cache_dir() -> Path:
    """This user's cache of measurements (the sweep's, the latency tables)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "onecycle-compress"


def _cache_key(config: SweepConfig, environment: dict) -> str:
    where = environment["gpu"]["name"] if config.device == "cuda" and environment["gpu"] else environment["cpu"]
    identity = json.dumps([config.backend, config.device, config.threads, config.low, config.high,
                           config.batch_size, config.spatial, config.tolerance, where, environment["versions"]],
                          sort_keys=True, default=str)
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def _read_cached(cache: Path) -> RoundingChoice | None:
    """The cached choice, or None (logged) when the entry is damaged or its multiple is not
    one this sweep can choose: "abc", 1.5, null or 0 would become a channel multiple."""
    try:
        data = json.loads(cache.read_text())
        data["scores"] = {int(k): v for k, v in data["scores"].items()}
        data["latency_ms"] = {int(k): v for k, v in data["latency_ms"].items()}
        choice = RoundingChoice(**data)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        log.warning("--round-to auto: the cached measurement %s is unreadable; measuring again", cache)
        return None
    multiple = choice.multiple
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple not in MULTIPLES:
        log.warning("--round-to auto: the cached multiple %r in %s is not one of %s; measuring again",
                    multiple, cache, ", ".join(map(str, MULTIPLES)))
        return None
    return choice


def auto_round_to(config: SweepConfig, refresh: bool = False) -> tuple[RoundingChoice, bool]:
    """The measured choice for this machine and backend; cached per machine, backend
    and library versions so each prune does not re-measure.  Returns (choice, cached)."""
    environment = describe(config.threads)
    cache = cache_dir() / "round-to" / f"{_cache_key(config, environment)}.json"
    if cache.is_file() and not refresh:
        choice = _read_cached(cache)
        if choice is not None:
            return choice, True
    import tempfile

    with tempfile.TemporaryDirectory(prefix="round-to-sweep-") as scratch:
        choice = measure_rounding(config, Path(scratch))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps(choice.to_dict(), indent=1))
    except OSError as error:  # no cache: the next prune measures again, nothing is lost
        log.warning("could not cache the --round-to auto measurement in %s: %s", cache, error)
    return choice, False

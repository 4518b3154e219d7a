"""ONNX -> serialized TensorRT engine (``model.plan``), and running it for the parity gate.

Written against the TensorRT Python API of 10.x and 11.x:

* 11.x builds strongly typed networks only and has no ``BuilderFlag.FP16``: an FP16
  engine is built from the FP16 ONNX (``model_fp16.onnx``).  10.x builds FP16 from the
  fp32 ONNX with the builder flag.  ``fp16_from_onnx()`` says which applies.
* One optimisation profile for the batch dim (min 1, opt = max = --max-batch; an ONNX
  whose batch is fixed at B gets min = opt = max = B, the only shape it can take), a
  workspace limit, a pinned builder optimisation level (engines of a pruned and a
  dense model are then built the same way), and a timing cache file reused across
  builds (it makes rebuilding many similar pruned variants much faster).
* TF32 is cleared for fp32 engines, so the fp32 parity gate compares IEEE fp32 to
  IEEE fp32 (TensorRT enables TF32 by default on Ampere and newer).

Everything needs an NVIDIA GPU and the TensorRT libraries; ``tensorrt_available()``
says whether both are there, and nothing else here is called when they are not.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compressor.atomic import atomic_write
from compressor.errors import CompressorError, one_line
from compressor.export.artifacts import make_readable
from compressor.export.parity import ParityReport, Top1Report, check_parity, check_top1, gate_cases, torch_runner

log = logging.getLogger(__name__)

INSTALL_HINT = "install it on a machine with an NVIDIA GPU and driver: pip install tensorrt"


def tensorrt_available() -> tuple[bool, str]:
    """(True, what was found) or (False, what is missing)."""
    try:
        import tensorrt as trt
    except Exception as error:  # noqa: BLE001 - a broken install is as unusable as a missing one
        return False, f"TensorRT is not installed (import tensorrt: {one_line(error, 120)})"
    if not torch.cuda.is_available():
        return False, f"TensorRT {trt.__version__} is installed but PyTorch sees no CUDA GPU"
    return True, f"TensorRT {trt.__version__} on {torch.cuda.get_device_name(0)}"


def tensorrt_version() -> str | None:
    try:
        import tensorrt as trt
    except Exception:  # noqa: BLE001
        return None
    return str(trt.__version__)


def fp16_from_onnx() -> bool:
    """True where FP16 must come from an FP16 ONNX (11.x: no BuilderFlag.FP16)."""
    import tensorrt as trt

    return not hasattr(trt.BuilderFlag, "FP16")


@dataclass(frozen=True)
class EngineSpec:
    onnx_path: Path
    plan_path: Path
    max_batch: int
    fp16: bool
    workspace_bytes: int
    optimization_level: int
    timing_cache: Path
    int8: bool = False  # the ONNX is INT8 QDQ (explicit quantization)


@dataclass(frozen=True)
class EngineBuild:
    """How an engine was built, for the manifest."""

    precision: str  # "fp32", "fp16" or "int8"
    fp16_route: str | None  # "fp16-onnx" (strongly typed) or "builder-flag" (10.x)
    tf32: bool
    profile: dict
    workspace_bytes: int
    optimization_level: int
    timing_cache: str
    timing_cache_reused: bool
    build_s: float
    tensorrt: str
    device: str

    def to_dict(self) -> dict:
        return asdict(self)


def build_key(tensorrt: str, gpu_name: str, capability: tuple[int, int]) -> str:
    """What a timing cache or an engine is only valid for: the TensorRT version and the GPU
    (its name, and its compute capability, which the kernels are compiled for)."""
    device = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower()
    return f"tensorrt-{tensorrt}-{device}-sm{capability[0]}{capability[1]}"


def current_build_key() -> str:
    """``build_key`` of this machine's TensorRT and first CUDA GPU."""
    import tensorrt as trt

    return build_key(str(trt.__version__), torch.cuda.get_device_name(0), tuple(torch.cuda.get_device_capability(0)))


def default_timing_cache() -> Path:
    """Per user, TensorRT version and GPU: a cache is only valid for that combination."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "onecycle-compress"
    return root / f"{current_build_key()}.timing-cache"


def build_engine(spec: EngineSpec) -> EngineBuild:
    """Parse the ONNX, configure the builder, write the serialized engine atomically."""
    import tensorrt as trt

    started = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = _builder(trt, logger)
    network = builder.create_network(0)  # explicit batch on 10.x, strongly typed on 11.x
    _parse(trt, network, logger, spec.onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_bytes)
    config.builder_optimization_level = spec.optimization_level
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    route = _fp16_route(trt, config, spec)
    _int8_flag(trt, config, spec)
    profile = _add_profile(builder, network, config, spec.max_batch, spec.onnx_path.name)
    cache, reused = _attach_timing_cache(config, spec.timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CompressorError(
            f"TensorRT could not build an engine from {spec.onnx_path.name} with a profile for batch "
            f"{profile['min'][0]}..{profile['max'][0]} (see its log above)"
        )
    make_readable(atomic_write(spec.plan_path, lambda stream: stream.write(serialized)))
    _save_timing_cache(cache, spec.timing_cache)
    return EngineBuild(
        precision="int8" if spec.int8 else "fp16" if spec.fp16 else "fp32",
        fp16_route=route,
        tf32=False,
        profile=profile,
        workspace_bytes=spec.workspace_bytes,
        optimization_level=spec.optimization_level,
        timing_cache=str(spec.timing_cache),
        timing_cache_reused=reused,
        build_s=time.perf_counter() - started,
        tensorrt=str(trt.__version__),
        device=torch.cuda.get_device_name(0),
    )


def _builder(trt, logger):
    try:
        return trt.Builder(logger)
    except TypeError as error:  # the bindings' way of saying CUDA could not initialise
        raise CompressorError(f"TensorRT could not initialise CUDA: {one_line(error)}") from error


def _parse(trt, network, logger, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = " | ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CompressorError(f"TensorRT's ONNX parser refused {onnx_path.name}: {one_line(errors, 400)}")


def _fp16_route(trt, config, spec: EngineSpec) -> str | None:
    """10.x: the builder flag on the fp32 ONNX.  11.x: the graph already is FP16."""
    if not spec.fp16:
        return None
    if hasattr(trt.BuilderFlag, "FP16"):
        config.set_flag(trt.BuilderFlag.FP16)
        return "builder-flag"
    return "fp16-onnx"


def _int8_flag(trt, config, spec: EngineSpec) -> None:
    """A QDQ graph is explicitly quantized.  10.x (weakly typed) still wants the INT8 flag
    to run its Q/DQ layers in int8; 11.x is strongly typed, has no such flag and takes the
    precision from the Q/DQ nodes."""
    if spec.int8 and hasattr(trt.BuilderFlag, "INT8"):
        config.set_flag(trt.BuilderFlag.INT8)


def profile_shapes(input_shape, max_batch: int, name: str = "the input") -> dict[str, tuple[int, ...]]:
    """min/opt/max shapes of the one profile, from the network input's shape (-1 = dynamic).

    A symbolic batch: min 1, opt = max = ``max_batch``.  A batch fixed at B in the ONNX:
    min = opt = max = B (a profile starting at 1 would not fit the network and the build
    fails); asking such a file for another batch is refused here, in one line."""
    dims = tuple(int(d) for d in input_shape)
    if len(dims) < 1 or any(d < 0 for d in dims[1:]):
        raise CompressorError(f"{name} has shape {list(dims)}; only its batch dimension may be dynamic for TensorRT")
    rest = dims[1:]
    if dims[0] >= 0:
        if dims[0] != max_batch:
            raise CompressorError(
                f"{name} has a fixed batch of {dims[0]}: its engine's profile allows batch {dims[0]} only, "
                f"not {max_batch}"
            )
        fixed = (dims[0], *rest)
        return {"min": fixed, "opt": fixed, "max": fixed}
    return {"min": (1, *rest), "opt": (max_batch, *rest), "max": (max_batch, *rest)}


def _add_profile(builder, network, config, max_batch: int, file_name: str) -> dict:
    tensor = network.get_input(0)
    shapes = profile_shapes(tuple(tensor.shape), max_batch, f"{file_name} (input '{tensor.name}')")
    profile = builder.create_optimization_profile()
    batches = f"batch {shapes['min'][0]}..{shapes['max'][0]}"
    # IOptimizationProfile.set_shape returns None in the Python API of 10.x and 11.x: the
    # bindings turn setDimensions' false into a RuntimeError ("... inconsistent ...").
    try:
        profile.set_shape(tensor.name, shapes["min"], shapes["opt"], shapes["max"])
    except (RuntimeError, TypeError, ValueError) as error:
        raise CompressorError(
            f"TensorRT refused the optimisation profile for {batches} of input '{tensor.name}': {one_line(error, 200)}"
        ) from error
    if config.add_optimization_profile(profile) < 0:  # -1: the profile is not valid for this network
        raise CompressorError(f"TensorRT refused the optimisation profile for {batches} of input '{tensor.name}'")
    return {"input": tensor.name, **{k: list(v) for k, v in shapes.items()}}


def _attach_timing_cache(config, path: Path):
    """Load the cache if it exists and matches this GPU/TensorRT; else start an empty one."""
    data = path.read_bytes() if path.is_file() else b""
    try:
        cache = config.create_timing_cache(data) if data else None
    except Exception:  # noqa: BLE001 - a damaged cache file is just a cold start
        cache = None
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache, True
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache, False


def _save_timing_cache(cache, path: Path) -> None:
    try:
        data = cache.serialize()
        atomic_write(path, lambda stream: stream.write(data))
    except OSError as error:  # a cache we cannot save costs build time later, nothing else
        log.warning("could not save the TensorRT timing cache to %s: %s", path, error)


def engine_provider() -> str:
    """Where an engine runs, as the gate's, eval's and bench's reports name it."""
    return f"TensorRT {tensorrt_version()} on {torch.cuda.get_device_name(0)}"


@dataclass(frozen=True)
class LoadedEngine:
    engine: object  # tensorrt.ICudaEngine
    inputs: list[str]
    outputs: list[str]


def load_engine(plan_path: Path) -> LoadedEngine:
    """A serialized engine read back (for the gate, ``compress eval`` and ``compress bench``),
    with its input and output tensor names; one ``CompressorError`` when TensorRT cannot."""
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        raise CompressorError(f"TensorRT could not load {plan_path.name} (built for another GPU or TensorRT version?)")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    modes = {name: engine.get_tensor_mode(name) for name in names}
    return LoadedEngine(engine, [n for n in names if modes[n] == trt.TensorIOMode.INPUT],
                        [n for n in names if modes[n] == trt.TensorIOMode.OUTPUT])


class EngineRunner:
    """Runs a serialized engine on torch CUDA tensors (``execute_async_v3``)."""

    def __init__(self, plan_path: Path, output_order: list[str] | None = None) -> None:
        import tensorrt as trt

        self.trt = trt
        loaded = load_engine(plan_path)
        self.engine = loaded.engine
        self.context = self.engine.create_execution_context()
        self.input = loaded.inputs[0]
        self.outputs = list(loaded.outputs)
        if output_order is not None and sorted(output_order) == sorted(self.outputs):
            self.outputs = list(output_order)  # the ONNX graph's order, which the parity gate compares in
        self.stream = torch.cuda.Stream()

    def _torch_dtype(self, name: str) -> torch.dtype:
        trt = self.trt
        table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32}
        if hasattr(trt, "bfloat16"):
            table[trt.bfloat16] = torch.bfloat16
        return table[self.engine.get_tensor_dtype(name)]

    def __call__(self, x: torch.Tensor) -> list[np.ndarray]:
        x = x.to("cuda", self._torch_dtype(self.input)).contiguous()
        if not self.context.set_input_shape(self.input, tuple(x.shape)):
            raise CompressorError(f"the engine's optimisation profile does not accept input shape {tuple(x.shape)}")
        self.context.set_tensor_address(self.input, x.data_ptr())
        ys = []
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            ys.append(torch.empty(shape, dtype=self._torch_dtype(name), device="cuda"))
            self.context.set_tensor_address(name, ys[-1].data_ptr())
        torch.cuda.current_stream().synchronize()  # x was written on torch's stream
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise CompressorError("TensorRT failed to execute the engine")
        self.stream.synchronize()
        return [y.float().cpu().numpy() for y in ys]


@contextlib.contextmanager
def strict_fp32():
    """PyTorch's CUDA reference without TF32, restored afterwards."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _labels(name: str) -> dict:
    return {"backend": "tensorrt", "provider": engine_provider(), "model_file": name}


def check_engine(model: nn.Module, plan_path: Path, input_size, batch_sizes, atol: float, rtol: float,
                 seed: int, name: str | None = None, scales=(), images=None,
                 output_order: list[str] | None = None, sweep=()) -> ParityReport:
    """The fp32 gate for an engine against PyTorch fp32 on the same GPU (TF32 off), on the
    ONNX gate's cases (``parity.gate_cases``), fed in chunks the profile accepts."""
    reference = torch_runner(copy.deepcopy(model), "cuda")
    labels = {**_labels(name or plan_path.name), "reference": "pytorch-fp32-cuda (TF32 off)"}
    cases = gate_cases(input_size, batch_sizes, seed, scales, images, sweep)
    with strict_fp32():
        engine = EngineRunner(plan_path, output_order)
        return check_parity(reference, engine, cases, atol, rtol, labels, chunk=max(batch_sizes))


def check_engine_top1(model: nn.Module, plan_path: Path, input_size, batch: int, max_batch: int, min_top1: float,
                      seed: int, name: str | None = None, output_order: list[str] | None = None,
                      class_scores: bool = True) -> Top1Report:
    """The FP16 engine's top-1 agreement with PyTorch fp32, fed in chunks of the max batch
    (``class_scores``: see parity.check_top1)."""
    reference = torch_runner(copy.deepcopy(model), "cuda")
    with strict_fp32():
        return check_top1(reference, EngineRunner(plan_path, output_order), input_size, batch, max_batch, min_top1,
                          seed, _labels(name or plan_path.name), class_scores)


def engine_agreement(plan_path: Path, images: torch.Tensor, reference: np.ndarray, max_batch: int,
                     output_order: list[str] | None = None) -> float:
    """Top-1 agreement of an engine's first output with ``reference`` on ``images``."""
    from compressor.export.int8 import top1_agreement

    engine = EngineRunner(plan_path, output_order)
    logits = np.concatenate([engine(batch)[0] for batch in images.split(max_batch)])
    return top1_agreement(logits, reference)

"""The TensorRT backend: a serialized engine run with ``execute_async_v3``.

Input and output buffers are torch CUDA tensors allocated once; the call enqueues
the engine on its own stream, timed like every GPU backend (host clock and a device
synchronise: ``compressor.bench.timing``).  The engine's optimisation profile
decides which batch sizes it accepts; any other is refused before timing.
"""
from __future__ import annotations

import torch

from compressor.bench.backends.base import BackendError, Workload, gpu_missing
from compressor.bench.timing import CUDA_WALL
from compressor.errors import CompressorError
from compressor.export.tensorrt import engine_provider, load_engine, tensorrt_available


class EngineRunnable:
    timer = CUDA_WALL  # timer_for("cuda"): engines only run on CUDA
    provider_options = None  # the engine's build settings are fixed when it is built
    session_config = None

    def __init__(self, plan_path, workload: Workload):
        import tensorrt as trt

        try:
            loaded = load_engine(plan_path)
        except CompressorError as error:  # a skipped cell, with the reason
            raise BackendError(str(error)) from error
        self.engine, inputs, outputs = loaded.engine, loaded.inputs, loaded.outputs
        self.context = self.engine.create_execution_context()
        check_profile(self.engine, inputs[0], workload.batch_size, plan_path.name)
        # set_input_shape returns False (it does not raise) for a shape the profile does not take
        if not self.context.set_input_shape(inputs[0], workload.shape):
            low, _, high = self.engine.get_tensor_profile_shape(inputs[0], 0)
            raise CompressorError(
                f"{plan_path.name} does not accept input shape {workload.shape}; its profile allows "
                f"{tuple(low)}..{tuple(high)}"
            )
        self.stream = torch.cuda.Stream()
        self.buffers = {}
        for name in inputs + outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = torch.float16 if self.engine.get_tensor_dtype(name) == trt.float16 else torch.float32
            self.buffers[name] = torch.randn(shape, device="cuda").to(dtype)
            self.context.set_tensor_address(name, self.buffers[name].data_ptr())
        torch.cuda.synchronize()
        self.provider = engine_provider()

    def __call__(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise BackendError("TensorRT failed to execute the engine")

    def close(self) -> None:
        self.context = None
        self.engine = None
        self.buffers = {}


def check_profile(engine, input_name: str, batch_size: int, label: str) -> None:
    """A batch outside the engine's profile is the user's mistake, not a skip."""
    low, _, high = engine.get_tensor_profile_shape(input_name, 0)
    if not low[0] <= batch_size <= high[0]:
        raise CompressorError(
            f"{label} was built for batch sizes {low[0]}..{high[0]}; --batch-size {batch_size} is outside its profile "
            f"(rebuild it with compress export --format tensorrt --max-batch {batch_size})"
        )


class TensorRT:
    name = "tensorrt"
    description = "TensorRT engine (execute_async_v3)"

    def unavailable(self, device: str, precision: str) -> str | None:
        if device != "cuda":
            return gpu_missing("TensorRT")
        ok, reason = tensorrt_available()
        return None if ok else reason

    def prepare(self, artifacts, workload: Workload) -> EngineRunnable:
        path = artifacts.engine(workload)
        runnable = EngineRunnable(path, workload)
        runnable.timed_file = path
        return runnable

"""PyTorch eager and ``torch.compile`` backends.

The input is allocated once on the target device (pinned on the host first, so
the one copy is fast); each call is one forward under ``inference_mode``.  FP16
means ``model.half()`` on CUDA; CPU FP16 is not a deployment mode and is
reported as unavailable rather than timed.
"""
from __future__ import annotations

import copy
import shutil

import torch

from compressor.bench.backends.base import BackendError, Workload
from compressor.bench.timing import CUDA_WALL, timer_for
from compressor.errors import one_line


class TorchRunnable:
    timed_file = None  # it runs the PyTorch module, no file
    provider_options = None  # no runtime options: PyTorch runs the module itself
    session_config = None

    def __init__(self, model, workload: Workload, provider: str):
        self.model = model
        self.provider = provider
        self.timer = timer_for(workload.device)
        dtype = torch.float16 if workload.precision == "fp16" else torch.float32
        host = torch.randn(workload.shape, generator=torch.Generator().manual_seed(0))
        if workload.device == "cuda":
            host = host.pin_memory()
            self.stream = torch.cuda.Stream()
        self.input = host.to(workload.device, dtype, non_blocking=True)
        if workload.device == "cuda":
            if self.input.dim() == 4:  # matches the channels_last model
                self.input = self.input.contiguous(memory_format=torch.channels_last)
            torch.cuda.synchronize()

    def __call__(self) -> None:
        with torch.inference_mode():
            if self.timer == CUDA_WALL:  # on CUDA: on the runnable's own stream
                with torch.cuda.stream(self.stream):
                    self.model(self.input)
            else:
                self.model(self.input)

    def close(self) -> None:
        self.model = None
        self.input = None


def _unavailable_device(device: str, precision: str) -> str | None:
    if device == "cuda" and not torch.cuda.is_available():
        return "PyTorch sees no CUDA device"
    if device == "cpu" and precision == "fp16":
        return "fp16 is a GPU precision here; on the CPU it is emulated, not deployed"
    if precision == "int8":
        return "int8 is the QDQ ONNX here (onnxruntime, onnxruntime-trt and tensorrt time it); PyTorch has no such path"
    return None


def _set_threads(workload: Workload) -> None:
    if workload.device == "cpu" and workload.threads:
        torch.set_num_threads(workload.threads)


def _placed_model(artifacts, workload: Workload):
    model = copy.deepcopy(artifacts.module()).eval()
    dtype = torch.float16 if workload.precision == "fp16" else torch.float32
    model = model.to(workload.device, dtype)
    if workload.device == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


class TorchEager:
    name = "torch"
    description = "PyTorch eager"

    def unavailable(self, device: str, precision: str) -> str | None:
        return _unavailable_device(device, precision)

    def prepare(self, artifacts, workload: Workload) -> TorchRunnable:
        _set_threads(workload)
        model = _placed_model(artifacts, workload)
        return TorchRunnable(model, workload, f"torch {torch.__version__} eager {workload.device}")


class TorchCompile:
    name = "torch-compile"
    description = "PyTorch torch.compile (inductor)"

    def unavailable(self, device: str, precision: str) -> str | None:
        reason = _unavailable_device(device, precision)
        if reason:
            return reason
        if device == "cpu" and not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
            return "torch.compile on the CPU needs a C++ compiler (g++/clang++) on PATH"
        if device == "cuda":
            try:
                import triton  # noqa: F401
            except ImportError:
                return "torch.compile on CUDA needs triton"
        return None

    def prepare(self, artifacts, workload: Workload) -> TorchRunnable:
        _set_threads(workload)
        model = _placed_model(artifacts, workload)
        try:
            compiled = torch.compile(model, dynamic=False)
            runnable = TorchRunnable(compiled, workload, f"torch {torch.__version__} inductor {workload.device}")
            runnable()  # compile now, so compile time never leaks into the warm-up estimate
        except BackendError:
            raise
        except Exception as error:  # noqa: BLE001 - inductor failures are many and version-specific
            raise BackendError(f"torch.compile failed: {one_line(str(error), 200)}") from error
        return runnable

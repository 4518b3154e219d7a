"""The backends ``compress bench --backend`` knows, by name."""
from __future__ import annotations

from compressor.bench.backends.base import BackendError, Workload
from compressor.bench.backends.onnxruntime import CPU, CUDA, TENSORRT, OnnxRuntime
from compressor.bench.backends.tensorrt import TensorRT
from compressor.bench.backends.torch_eager import TorchCompile, TorchEager
from compressor.choices import BENCH_BACKENDS, registry

BACKENDS = registry(BENCH_BACKENDS, {
    "torch": TorchEager(),
    "torch-compile": TorchCompile(),
    "onnxruntime": OnnxRuntime("onnxruntime", None),
    "onnxruntime-cuda": OnnxRuntime("onnxruntime-cuda", CUDA),
    "onnxruntime-trt": OnnxRuntime("onnxruntime-trt", TENSORRT),
    "tensorrt": TensorRT(),
}, "--backend")

__all__ = ["BACKENDS", "BackendError", "Workload", "CPU"]

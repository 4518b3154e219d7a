"""ONNX Runtime backends: the CPU, CUDA and TensorRT execution providers.

``onnxruntime`` follows ``--device`` (CPU provider on cpu, CUDA provider on
cuda); ``onnxruntime-cuda`` and ``onnxruntime-trt`` name their provider.  The
session must really get the provider asked for: ORT silently falls back to the
CPU when a GPU provider cannot load, and that fallback would be timed as if it
were the GPU.  Inputs are bound once through IOBinding (on the device for GPU
providers), so the timed call is the inference and not a host copy.
"""
from __future__ import annotations

import numpy as np

from compressor.bench.backends.base import BackendError, Workload, gpu_missing
from compressor.bench.timing import PERF_COUNTER
from compressor.errors import one_line

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


def _available_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except Exception:  # noqa: BLE001
        return []
    return list(ort.get_available_providers())


class OrtRunnable:
    # ORT's run_with_iobinding returns after the provider has finished (it synchronises
    # its own stream), so wall-clock timing is right on every provider.
    timer = PERF_COUNTER

    def __init__(self, session, workload: Workload, device_name: str):
        import onnxruntime as ort

        self.session = session
        self.provider = session.get_providers()[0]
        data = np.random.default_rng(0).standard_normal(workload.shape, dtype=np.float32)
        self.binding = session.io_binding()
        name = session.get_inputs()[0].name
        if device_name == "cpu":
            self.binding.bind_cpu_input(name, data)
        else:
            self.value = ort.OrtValue.ortvalue_from_numpy(data, device_name, 0)
            self.binding.bind_ortvalue_input(name, self.value)
        for output in session.get_outputs():
            self.binding.bind_output(output.name, device_name)

    def __call__(self) -> None:
        self.session.run_with_iobinding(self.binding)

    def close(self) -> None:
        self.binding = None
        self.session = None


class OnnxRuntime:
    def __init__(self, name: str, provider: str | None):
        self.name = name
        self.provider = provider  # None: chosen by the device
        self.description = f"ONNX Runtime ({provider or 'CPU or CUDA provider by --device'})"

    def provider_for(self, device: str) -> str:
        if self.provider is not None:
            return self.provider
        return CUDA if device == "cuda" else CPU

    def unavailable(self, device: str, precision: str) -> str | None:
        provider = self.provider_for(device)
        if provider != CPU and device != "cuda":
            return gpu_missing(provider)
        if provider == CPU and precision == "fp16":
            return "fp16 is a GPU precision here; on the CPU provider it is emulated, not deployed"
        available = _available_providers()
        if not available:
            return "onnxruntime is not installed"
        if provider not in available:
            return f"this onnxruntime build has no {provider} (it has {', '.join(available)})"
        return None

    def prepare(self, artifacts, workload: Workload) -> OrtRunnable:
        import onnxruntime as ort

        path = artifacts.onnx(workload.precision)
        provider = self.provider_for(workload.device)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if workload.threads:
            options.intra_op_num_threads = workload.threads
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=[provider])
        except Exception as error:  # noqa: BLE001 - load failures belong to the model/provider pair
            raise BackendError(f"ONNX Runtime could not load {path.name} with {provider}: {one_line(error, 200)}") from error
        got = session.get_providers()
        if not got or got[0] != provider:
            raise BackendError(f"ONNX Runtime gave providers {got} instead of {provider}; not timing a fallback")
        return OrtRunnable(session, workload, "cpu" if provider == CPU else "cuda")

"""ONNX Runtime backends: the CPU, CUDA and TensorRT execution providers.

``onnxruntime`` follows ``--device`` (CPU provider on cpu, CUDA provider on
cuda); ``onnxruntime-cuda`` and ``onnxruntime-trt`` name their provider.  The
session must really get the provider asked for: ORT silently falls back to the
CPU when a GPU provider cannot load, and that fallback would be timed as if it
were the GPU.  Inputs are bound once through IOBinding (on the device for GPU
providers), so the timed call is the inference and not a host copy.

What each session is given is decided by ``session_plan`` (a pure function) and
recorded in every bench record (``provider_options``, ``session_config``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from compressor.bench.backends.base import BackendError, Workload, gpu_missing
from compressor.bench.timing import timer_for
from compressor.errors import CompressorError
from compressor.export.ort import ORT_CPU as CPU, ORT_CUDA as CUDA, ORT_TENSORRT as TENSORRT
from compressor.export.ort import available_providers, open_session

# ORT's session option that makes a session refuse to load when some node would run on
# the CPU provider instead of the one asked for (onnxruntime_session_options_config_keys.h).
DISABLE_CPU_FALLBACK = "session.disable_cpu_ep_fallback"
TRT_WORKSPACE = 4 << 30  # as the native engines compress bench builds (subjects.ENGINE_WORKSPACE)
TRT_OPT_LEVEL = 3  # the builder optimisation level of the native engines


@dataclass(frozen=True)
class SessionPlan:
    """What an ONNX Runtime session is created with for one backend and precision."""

    provider: str
    provider_options: dict[str, str] = field(default_factory=dict)
    config_entries: dict[str, str] = field(default_factory=dict)
    onnx_precision: str = "fp32"  # which ONNX file the session loads


def session_plan(provider: str, precision: str) -> SessionPlan:
    """Provider options and session config for ``provider`` at ``precision``.

    * TensorRT provider: the fp32 ONNX (the INT8 QDQ one for int8, with ``trt_int8_enable``); fp16 reaches TensorRT as its FP16 builder
      flag (``trt_fp16_enable``), as the native fp16 engines are built, not as an
      fp16-cast graph (that would time ORT's casts, and TensorRT would build a different
      network).  The ORT TensorRT provider has no TF32 option (none among its trt_*
      provider options): TF32 stays at TensorRT's default there (on for Ampere and newer)
      while the native engines clear it; each record's ``provider_options`` says so.  No engine or timing cache: ORT names them without the TensorRT version and
      writes them into the current directory unless told otherwise; the engine is built in
      ``prepare``, outside the timed loop, so a cache would only save build time.  CPU
      fallback is disabled: a node TensorRT does not take would otherwise run on the CPU
      provider inside the timed call, and the cell would not measure TensorRT.
    * CUDA provider: the fp16 cell runs the FP16 ONNX (the CUDA provider has no precision
      flag).  Its CPU fallback stays allowed: ORT deliberately places small shape
      computations on the CPU for the CUDA provider, which disabling it would refuse.
    * CPU provider: defaults; int8 runs the asymmetric (uint8 activation) QDQ file, whose U8S8
      kernels are the fast ones on x86 (the symmetric S8S8 file TensorRT needs ran 2x slower
      than fp32 there).
    """
    if provider == TENSORRT:
        options = {
            "device_id": "0",
            "trt_fp16_enable": "1" if precision == "fp16" else "0",
            "trt_int8_enable": "1" if precision == "int8" else "0",  # the QDQ file's own scales, no calibration
            "trt_max_workspace_size": str(TRT_WORKSPACE),
            "trt_builder_optimization_level": str(TRT_OPT_LEVEL),
            "trt_engine_cache_enable": "0",
            "trt_timing_cache_enable": "0",
        }
        return SessionPlan(provider, options, {DISABLE_CPU_FALLBACK: "1"}, "int8" if precision == "int8" else "fp32")
    if provider == CUDA:
        return SessionPlan(provider, {"device_id": "0"}, {}, precision)
    if precision == "int8":  # the form one ships for ONNX Runtime on a CPU: its fast U8S8 kernels
        return SessionPlan(provider, {}, {}, "int8-asymmetric")
    return SessionPlan(provider, {}, {}, precision)


class OrtRunnable:
    def __init__(self, session, workload: Workload, device_name: str, plan: SessionPlan, name: str):
        import onnxruntime as ort

        from compressor.export.runlimit import RunLimit

        self.timer = timer_for(workload.device)
        # a foreign graph can run for ever; arming the limit costs a lock and a clock read per call
        self.limit = RunLimit(name)

        self.session = session
        self.provider = session.get_providers()[0]
        self.provider_options = dict(plan.provider_options)
        self.session_config = dict(plan.config_entries)
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
        self.limit(lambda options: self.session.run_with_iobinding(self.binding, options))

    def close(self) -> None:
        self.limit.close()
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
        if provider == CUDA and precision == "int8":
            return ("the CUDA provider runs a QDQ graph by dequantizing to float kernels, not as an INT8 deployment; "
                    "time int8 with onnxruntime-trt or tensorrt")
        available = available_providers()
        if not available:
            return "onnxruntime is not installed"
        if provider not in available:
            return f"this onnxruntime build has no {provider} (it has {', '.join(available)})"
        return None

    def prepare(self, artifacts, workload: Workload) -> OrtRunnable:
        provider = self.provider_for(workload.device)
        plan = session_plan(provider, workload.precision)
        path = artifacts.onnx(plan.onnx_precision)
        try:
            session = open_session(path, provider, timed=True, threads=workload.threads,
                                   config_entries=plan.config_entries, provider_options=plan.provider_options)
        except CompressorError as error:  # the model/provider pair's fault: a skipped cell, with the reason
            if plan.config_entries.get(DISABLE_CPU_FALLBACK) == "1" and "fallback" in str(error).lower():
                raise BackendError(
                    f"{provider} does not take every node of {path.name}; not timing a partial CPU fallback"
                ) from error
            raise BackendError(f"{error}; not timing {provider} on it") from error
        runnable = OrtRunnable(session, workload, "cpu" if provider == CPU else "cuda", plan, path.name)
        runnable.timed_file = path
        return runnable

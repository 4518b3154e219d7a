"""What the TensorRT paths decide before any GPU is involved: the engine's optimisation
profile, the keys that say which TensorRT and GPU a cached engine or timing cache is for,
and what an ONNX Runtime session is created with per backend and precision.  These are
the pure functions the GPU code calls; the GPU tests (tests/gpu) run them for real."""
from __future__ import annotations

import pytest

from compressor.bench.backends.onnxruntime import CPU, CUDA, DISABLE_CPU_FALLBACK, TENSORRT, session_plan
from compressor.bench.subjects import engine_key
from compressor.errors import CompressorError
from compressor.export.tensorrt import build_key, profile_shapes


def test_a_symbolic_batch_gets_a_profile_from_one_to_the_max_batch():
    shapes = profile_shapes((-1, 3, 32, 32), 8)
    assert shapes == {"min": (1, 3, 32, 32), "opt": (8, 3, 32, 32), "max": (8, 3, 32, 32)}


def test_a_fixed_batch_gets_exactly_that_batch():
    assert profile_shapes((4, 3, 32, 32), 4) == {"min": (4, 3, 32, 32), "opt": (4, 3, 32, 32), "max": (4, 3, 32, 32)}


def test_another_batch_for_a_fixed_batch_file_is_one_line_naming_the_batch_it_allows():
    with pytest.raises(CompressorError) as error:
        profile_shapes((4, 3, 32, 32), 8, "input 'x'")
    message = str(error.value)
    assert "\n" not in message and "allows batch 4 only" in message and "not 8" in message


def test_a_dynamic_non_batch_dimension_is_refused_in_one_line():
    with pytest.raises(CompressorError, match="only its batch dimension may be dynamic"):
        profile_shapes((-1, 3, -1, 32), 8)


def test_the_build_key_changes_with_the_tensorrt_version_and_the_gpu():
    base = build_key("10.3.0", "NVIDIA A100-SXM4-80GB", (8, 0))
    assert base == "tensorrt-10.3.0-nvidia-a100-sxm4-80gb-sm80"
    others = [build_key("10.4.0", "NVIDIA A100-SXM4-80GB", (8, 0)),
              build_key("10.3.0", "NVIDIA H100 80GB HBM3", (8, 0)),
              build_key("10.3.0", "NVIDIA A100-SXM4-80GB", (9, 0))]
    assert len({base, *others}) == 4


def test_the_engine_cache_key_changes_with_every_input():
    key = engine_key("ab" * 32, "fp32", 8, build_key("10.3.0", "NVIDIA A100", (8, 0)))
    changed = [engine_key("cd" * 32, "fp32", 8, build_key("10.3.0", "NVIDIA A100", (8, 0))),
               engine_key("ab" * 32, "fp16", 8, build_key("10.3.0", "NVIDIA A100", (8, 0))),
               engine_key("ab" * 32, "fp32", 16, build_key("10.3.0", "NVIDIA A100", (8, 0))),
               engine_key("ab" * 32, "fp32", 8, build_key("11.0.0", "NVIDIA A100", (8, 0))),
               engine_key("ab" * 32, "fp32", 8, build_key("10.3.0", "NVIDIA L4", (8, 0))),
               engine_key("ab" * 32, "fp32", 8, build_key("10.3.0", "NVIDIA A100", (8, 6)))]
    assert len({key, *changed}) == 7


@pytest.mark.parametrize("precision, flag", [("fp32", "0"), ("fp16", "1")])
def test_tensorrt_provider_gets_fp16_as_its_builder_flag_on_the_fp32_onnx_and_no_cpu_fallback(precision, flag):
    plan = session_plan(TENSORRT, precision)
    assert plan.provider == TENSORRT
    assert plan.onnx_precision == "fp32"  # never an fp16-cast graph
    assert plan.provider_options["trt_fp16_enable"] == flag
    assert plan.config_entries == {DISABLE_CPU_FALLBACK: "1"}
    # nothing written into the current directory: ORT's engine and timing caches stay off
    assert plan.provider_options["trt_engine_cache_enable"] == "0"
    assert plan.provider_options["trt_timing_cache_enable"] == "0"
    assert all(isinstance(v, str) for v in plan.provider_options.values())
    assert not any("tf32" in key for key in plan.provider_options)  # ORT has no such option


@pytest.mark.parametrize("provider", [CPU, CUDA])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cpu_and_cuda_providers_run_the_onnx_of_their_precision(provider, precision):
    plan = session_plan(provider, precision)
    assert plan.provider == provider and plan.onnx_precision == precision
    assert plan.config_entries == {}
    assert "trt_fp16_enable" not in plan.provider_options

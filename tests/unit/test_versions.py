"""One list of tool versions: what an export's manifest.json records and what a benchmark's
environment (bench.md, round_to.json, the --round-to auto cache key) records are the same."""
from __future__ import annotations

import platform

import onnx
import onnxruntime
import torch

import compressor
from compressor.bench import environment
from compressor.export import manifest


def test_bench_and_export_record_the_same_versions():
    versions = manifest.tool_versions()
    assert environment.describe(1)["versions"] == versions
    assert {"compressor", "python", "torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "onnxsim",
            "onnxconverter_common", "tensorrt"} == set(versions)
    assert (versions["compressor"], versions["python"]) == (compressor.__version__, platform.python_version())
    assert (versions["torch"], versions["onnx"]) == (torch.__version__, onnx.__version__)
    assert versions["onnxruntime"] == onnxruntime.__version__  # the build that loads, GPU or not
    assert not any(name.endswith("version") for name in vars(environment))  # no second collector


def test_a_missing_module_has_no_version():
    assert manifest._module_version("surely_no_such_module_here") is None
    assert manifest._distribution_version("surely-no-such-distribution") is None

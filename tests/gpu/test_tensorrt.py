"""TensorRT engines from the exported ONNX (needs CUDA and the TensorRT Python package).

Skipped without CUDA (tests/conftest.py) and without ``tensorrt``; on a GPU machine
with TensorRT 10.x or 11.x these build real engines for ResNet-20 and gate them
against PyTorch on the same GPU.
"""
from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import pytest
import torch

from compressor.engine.verify import make_informative
from compressor.export.config import ExportConfig
from compressor.export.pipeline import export_source
from compressor.export.sources import from_module
from compressor.models import build_model

pytestmark = pytest.mark.gpu
trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install tensorrt)")

CIFAR = (3, 32, 32)


@pytest.fixture(autouse=True)
def strict_fp32_reference():
    """PyTorch's CUDA reference in IEEE fp32, like the fp32 engines (built with TF32
    cleared): with TF32 on, the reference itself would be off by ~1e-3 and the
    comparisons below would measure PyTorch's rounding, not the engine's.  Restored after."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One fp32 + fp16 TensorRT export of ResNet-20, shared by the checks below."""
    from compressor.export.tensorrt import tensorrt_available

    available, found = tensorrt_available()
    if not available:
        pytest.skip(found)
    out = tmp_path_factory.mktemp("trt")
    model = make_informative(build_model("resnet20").eval())
    config = ExportConfig(out=out / "export", format="tensorrt", fp16=True, trt_timing_cache=out / "timing.cache")
    return export_source(from_module(model, "resnet20", CIFAR, False), config), model


def test_fp32_engine_passes_the_strict_parity_gate(exported):
    result, _ = exported
    manifest = result.manifest
    assert manifest["status"] == "ok" and manifest["format"] == "tensorrt"
    section = manifest["tensorrt"]
    assert section["status"] == "built"
    engine = section["engines"]["model.plan"]
    assert engine["precision"] == "fp32" and engine["tf32"] is False and engine["fp16_route"] is None
    assert engine["profile"]["min"][0] == 1 and engine["profile"]["max"][0] == 8
    assert engine["optimization_level"] == 3 and engine["tensorrt"] == trt.__version__
    parity = section["parity"]
    assert parity["passed"] and parity["backend"] == "tensorrt" and parity["batch_sizes"] == [1, 2, 3, 8]
    assert parity["max_abs_err"] <= 1e-4 and parity["top1_agreement"] == 1.0
    assert "TensorRT" in parity["provider"]


def test_fp16_engine_agrees_on_top1(exported):
    result, _ = exported
    section = result.manifest["tensorrt"]
    engine = section["engines"]["model_fp16.plan"]
    route = "builder-flag" if hasattr(trt.BuilderFlag, "FP16") else "fp16-onnx"
    assert engine["precision"] == "fp16" and engine["fp16_route"] == route
    assert engine["onnx_file"] == ("model.onnx" if route == "builder-flag" else "model_fp16.onnx")
    assert section["fp16_parity"]["passed"] and section["fp16_parity"]["top1_agreement"] >= 0.99


def test_manifest_lists_the_engines_with_hashes_and_the_timing_cache_is_reusable(exported, tmp_path):
    result, model = exported
    on_disk = json.loads((result.out / "manifest.json").read_text())
    for name in ("model.onnx", "model_fp16.onnx", "model.plan", "model_fp16.plan"):
        data = (result.out / name).read_bytes()
        assert on_disk["files"][name]["sha256"] == hashlib.sha256(data).hexdigest()
    assert on_disk["versions"]["tensorrt"] == trt.__version__
    cache = result.manifest["tensorrt"]["engines"]["model.plan"]["timing_cache"]
    again = export_source(
        from_module(model, "resnet20", CIFAR, False),
        ExportConfig(out=tmp_path / "again", format="tensorrt", trt_timing_cache=result.out.parent / "timing.cache"),
    )
    assert again.manifest["tensorrt"]["engines"]["model.plan"]["timing_cache_reused"] is True
    assert again.manifest["tensorrt"]["engines"]["model.plan"]["timing_cache"] == cache


def test_engine_runs_at_every_batch_size_up_to_the_profile_max(exported):
    from compressor.export.tensorrt import EngineRunner

    result, model = exported
    runner = EngineRunner(result.out / "model.plan")
    model = copy.deepcopy(model).cuda().eval()
    for batch in (1, 5, 8):
        x = torch.randn(batch, *CIFAR)
        with torch.no_grad():
            reference = model(x.cuda()).float().cpu().numpy()
        output = runner(x)[0]  # one array per engine output
        assert output.shape == reference.shape
        assert (output.argmax(1) == reference.argmax(1)).all()
        np.testing.assert_allclose(output, reference, atol=1e-3, rtol=1e-3)


def test_a_fixed_batch_onnx_builds_an_engine_for_exactly_that_batch(tmp_path):
    """An ONNX whose batch is fixed at 4 (compress bench accepts one): the profile is 4..4,
    and asking it for another batch is one line naming the batch it allows."""
    import onnx
    from onnx import TensorProto, helper

    from compressor.errors import CompressorError
    from compressor.export.tensorrt import EngineSpec, build_engine, tensorrt_available

    available, found = tensorrt_available()
    if not available:
        pytest.skip(found)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["output"])], "fixed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [4, 3, 8, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "fixed.onnx"))
    spec = lambda batch: EngineSpec(tmp_path / "fixed.onnx", tmp_path / f"b{batch}.plan", batch, False,  # noqa: E731
                                    1 << 28, 3, tmp_path / "timing.cache")
    build = build_engine(spec(4))
    assert build.profile["min"] == build.profile["opt"] == build.profile["max"] == [4, 3, 8, 8]
    with pytest.raises(CompressorError, match="allows batch 4 only"):
        build_engine(spec(8))

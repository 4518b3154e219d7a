"""The export pipeline's fallbacks and its gate's tolerances, provoked for real.

Faults are injected into the real code path (the dynamo exporter raises; onnxsim's
output is corrupted before the gate sees it); the exporters, onnxsim and ONNX Runtime
themselves run unmodified, and every result is re-checked from the written files.
Exports use opset 17 where the exporter does not matter: the TorchScript exporter is
several times faster than dynamo.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from compressor.errors import CompressorError
from compressor.export import onnx_export, pipeline
from compressor.export.config import ExportConfig
from compressor.export.parity import check_onnx
from compressor.export.pipeline import export_source
from compressor.export.sources import from_module
from tests.export_models import BIG_BATCH, INPUT_SIZE, doubles_past_four, small_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST_OPSET = 17  # TorchScript exporter


def export(tmp_path, model, **options):
    config = ExportConfig(out=tmp_path / "export", input_size=INPUT_SIZE, max_batch=BIG_BATCH, **options)
    return export_source(from_module(model, "doubles", INPUT_SIZE, False), config)


def assert_file_matches_torch(path, model, batch: int = 3) -> None:
    """ONNX Runtime on the written file against PyTorch, independently of the pipeline's gate."""
    x = torch.randn(batch, *INPUT_SIZE, generator=torch.Generator().manual_seed(11))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0], expected,
                               atol=1e-5, rtol=1e-4)


# -- the dynamo exporter raises: the TorchScript exporter writes the file, the manifest says why ------


def test_a_raising_dynamo_exporter_falls_back_to_torchscript(tmp_path, monkeypatch):
    calls = []

    def dynamo_fails(model, example, path, opset, names):
        calls.append(opset)
        raise RuntimeError("injected: torch.export cannot trace this model")

    monkeypatch.setattr(onnx_export, "_export_dynamo", dynamo_fails)
    model = small_cnn()
    result = export(tmp_path, model)  # the default opset: dynamo is tried first
    manifest = result.manifest
    assert calls == [manifest["opset"]], "the dynamo exporter was never tried"
    assert manifest["status"] == "ok" and manifest["exporter"] == "torchscript"
    assert manifest["exporter_fallback_reason"] == "dynamo: RuntimeError: injected: torch.export cannot trace this model"
    assert manifest["parity"]["passed"] and manifest["trace_warnings"] == [] and manifest["allow_trace"] is False
    written = onnx.load(str(result.path("model.onnx")))
    assert onnx_export.model_opset(written) == manifest["opset"] and onnx_export.batch_dim_is_symbolic(written)
    assert_file_matches_torch(result.path("model.onnx"), model)


def test_both_exporters_failing_is_one_error_naming_both(tmp_path, monkeypatch):
    def fails(name):
        def write(model, example, path, opset, names):
            raise RuntimeError(f"injected {name} failure")
        return write

    monkeypatch.setattr(onnx_export, "_export_dynamo", fails("dynamo"))
    monkeypatch.setattr(onnx_export, "_export_torchscript", fails("torchscript"))
    with pytest.raises(pipeline.CompressorError, match="dynamo: .*injected dynamo.*torchscript: .*injected torchscript"):
        export(tmp_path, small_cnn())
    assert not list((tmp_path / "export").glob("*.onnx*")), "a failed export left a model file"


# -- the simplified model fails the gate: the unsimplified one is kept, and the manifest says so ------


def test_a_simplified_model_that_fails_the_gate_is_not_kept(tmp_path, monkeypatch):
    def wrong_simplification(source, target):
        """The real onnxsim pass, then its largest weight scaled by 1.5."""
        simplified = real(source, target)
        assert simplified.applied, simplified.reason
        model = onnx.load(str(target))
        largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        largest.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(largest) * 1.5, largest.name))
        onnx.save(model, str(target))
        return simplified

    real = pipeline.simplify_onnx
    monkeypatch.setattr(pipeline, "simplify_onnx", wrong_simplification)
    model = small_cnn()
    result = export(tmp_path, model, opset=FAST_OPSET)
    manifest = result.manifest
    simplify = manifest["simplify"]
    assert manifest["status"] == "ok" and manifest["parity"]["passed"]
    assert simplify["applied"] is False
    assert simplify["reason"] == "the simplified model failed the parity gate; kept the unsimplified one"
    assert simplify["rejected_parity"]["passed"] is False and simplify["rejected_parity"]["max_abs_err"] > 1e-3
    # the file on disk is the unsimplified export, and it computes what the model computes
    assert len(onnx.load(str(result.path("model.onnx"))).graph.node) == simplify["nodes_before"]
    assert_file_matches_torch(result.path("model.onnx"), model)
    assert not list(result.out.glob(".*")), "the rejected simplified file was left behind"


def test_a_simplified_model_onnx_runtime_cannot_load_is_not_kept(tmp_path, monkeypatch):
    def unloadable(source, target):
        simplified = real(source, target)
        target.write_bytes(b"not an onnx model")
        return simplified

    real = pipeline.simplify_onnx
    monkeypatch.setattr(pipeline, "simplify_onnx", unloadable)
    model = small_cnn()
    result = export(tmp_path, model, opset=FAST_OPSET)
    simplify = result.manifest["simplify"]
    assert result.status == "ok" and simplify["applied"] is False
    assert simplify["reason"].endswith("; kept the unsimplified model"), simplify["reason"]
    assert_file_matches_torch(result.path("model.onnx"), model)


def test_simplify_applies_when_the_simplified_model_passes(tmp_path):
    """The other side of the two tests above: untouched, onnxsim's output is what gets written."""
    result = export(tmp_path, small_cnn(), opset=FAST_OPSET)
    simplify = result.manifest["simplify"]
    assert simplify["applied"] is True and simplify["reason"] is None
    assert len(onnx.load(str(result.path("model.onnx"))).graph.node) == simplify["nodes_after"]


# -- --atol / --rtol: |onnx - torch| <= atol + rtol * |torch|, each on its own ------------------------


@pytest.fixture(scope="module")
def wrong_past_four(tmp_path_factory):
    """An unverified export whose output is exactly half of PyTorch's at batch 8."""
    out = tmp_path_factory.mktemp("tolerance") / "export"
    model = doubles_past_four()
    config = ExportConfig(out=out, input_size=INPUT_SIZE, opset=FAST_OPSET, verify=False, simplify=False,
                          allow_trace=True)
    result = export_source(from_module(model, "doubles", INPUT_SIZE, False), config)
    return model, result.path("model.onnx")


def gate(wrong_past_four, atol: float, rtol: float, batch: int = 8):
    model, path = wrong_past_four
    return check_onnx(model, path, INPUT_SIZE, (batch,), atol, rtol, seed=0)


def test_the_gate_measures_the_error_it_checks(wrong_past_four):
    assert gate(wrong_past_four, 1e-5, 1e-4, batch=BIG_BATCH).passed  # the branch is not taken up to 4
    report = gate(wrong_past_four, 0.0, 0.0)
    assert not report.passed and report.max_rel_err == pytest.approx(0.5, abs=1e-6)  # |y - 2y| / |2y|


def test_atol_alone_decides(wrong_past_four):
    error = gate(wrong_past_four, 0.0, 0.0).max_abs_err
    assert gate(wrong_past_four, 1.01 * error, 0.0).passed
    assert not gate(wrong_past_four, 0.99 * error, 0.0).passed


def test_rtol_alone_decides(wrong_past_four):
    # |y - 2y| = |y| <= rtol * |2y| holds for rtol >= 0.5 and fails below it
    assert gate(wrong_past_four, 0.0, 0.51).passed
    assert not gate(wrong_past_four, 0.0, 0.49).passed


# -- --fp16: outputs that are not class scores are judged by relative error -------------------------


class OneScore(torch.nn.Module):
    """One score per sample (shape (N,)): top-1 cannot judge it."""

    def __init__(self) -> None:
        super().__init__()
        self.net = small_cnn(num_classes=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def scale_output(source, target, factor: float) -> None:
    """The FP16 file with its output multiplied by ``factor``: wrong, yet every sign is right."""
    model = onnx.load(str(source))
    output = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{name}_unscaled" if name == output else name for name in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(factor, dtype=np.float32), "factor"))
    model.graph.node.append(onnx.helper.make_node("Mul", [f"{output}_unscaled", "factor"], [output]))
    onnx.save(model, str(target))


def test_an_fp16_output_without_a_class_axis_is_judged_by_relative_error(tmp_path):
    from compressor.export.fp16 import convert_to_fp16
    from compressor.export.parity import FP16_MAX_REL_ERR, check_onnx_top1

    model = OneScore().eval()
    result = export(tmp_path, model, opset=FAST_OPSET)
    half = convert_to_fp16(result.path("model.onnx"), tmp_path / "half.onnx")
    right = check_onnx_top1(model, half, INPUT_SIZE, 100, 0.99, seed=0)
    assert right.passed and not right.top1_judged and right.max_rel_err < FP16_MAX_REL_ERR / 4, right
    for factor in (1.5, 1.05):  # a third off, and 5 % off: both beyond what fp16 rounding does
        scale_output(half, tmp_path / "wrong.onnx", factor)
        wrong = check_onnx_top1(model, tmp_path / "wrong.onnx", INPUT_SIZE, 100, 0.99, seed=0)
        # A positive factor keeps every sign the fp16 file had (not == 1.0: a score within fp16
        # rounding of zero may take either sign, depending on the CPU's kernels; tests/numeric.py)
        assert wrong.top1_agreement == right.top1_agreement >= 0.99, "the old rule would have caught this"
        assert not wrong.passed and wrong.max_rel_err > FP16_MAX_REL_ERR
        assert "judged by relative error" in wrong.failure() and "\n" not in wrong.failure()


def test_raw_detector_scores_are_judged_by_relative_error_not_top1(tmp_path):
    """class_scores=False (a detector's per-anchor outputs): a file 5 % off, whose every argmax
    still agrees, is refused; the plain fp16 file passes without top-1 being judged."""
    from compressor.export.fp16 import convert_to_fp16
    from compressor.export.parity import FP16_MAX_REL_ERR, RAW_DETECTOR_OUTPUTS, check_onnx_top1

    model = small_cnn().eval()
    result = export(tmp_path, model, opset=FAST_OPSET)
    half = convert_to_fp16(result.path("model.onnx"), tmp_path / "half.onnx")
    scale_output(half, tmp_path / "wrong.onnx", 1.05)
    as_classes = check_onnx_top1(model, tmp_path / "wrong.onnx", INPUT_SIZE, 100, 0.99, seed=0)
    unscaled = check_onnx_top1(model, half, INPUT_SIZE, 100, 0.99, seed=0)
    # scaling keeps every argmax the fp16 file had (not == 1.0: fp16 may flip a near-tie, by CPU)
    assert as_classes.passed and as_classes.top1_agreement == unscaled.top1_agreement, "scaling keeps every argmax"
    wrong = check_onnx_top1(model, tmp_path / "wrong.onnx", INPUT_SIZE, 100, 0.99, seed=0, class_scores=False)
    assert not wrong.passed and not wrong.top1_judged and wrong.max_rel_err > FP16_MAX_REL_ERR
    assert RAW_DETECTOR_OUTPUTS in wrong.failure() and "\n" not in wrong.failure()
    right = check_onnx_top1(model, half, INPUT_SIZE, 100, 0.99, seed=0, class_scores=False)
    assert right.passed and right.max_rel_err < FP16_MAX_REL_ERR / 4, right


# -- --fp16 on outputs it cannot convert: refused in one line, the verified fp32 file stays ---------


class ScoresAndClass(torch.nn.Module):
    """Logits and the class index (int64), or a mask of positive logits (bool)."""

    def __init__(self, second: str) -> None:
        super().__init__()
        self.net, self.second = small_cnn(), second

    def forward(self, x: torch.Tensor):
        logits = self.net(x)
        return logits, (logits.argmax(1) if self.second == "int64" else logits > 0)


class NestedFeatures(torch.nn.Module):
    """A nested output holding a tensor the model also computes with (the pooled features)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = small_cnn()

    def forward(self, x: torch.Tensor):
        features = self.net.net[:-1](x)
        return {"logits": self.net.net[-1](features), "aux": (features, features * 2)}


@pytest.mark.parametrize("dtype", ["int64", "bool"])
def test_fp16_refuses_a_non_float_output_in_one_line_and_keeps_the_verified_fp32_file(tmp_path, dtype):
    model = ScoresAndClass(dtype).eval()
    plain = export(tmp_path / "plain", model, opset=FAST_OPSET)
    with pytest.raises(CompressorError) as refused:  # the CLI prints any CompressorError as its one line
        export(tmp_path / "half", model, opset=FAST_OPSET, fp16=True)
    message = str(refused.value)
    assert "\n" not in message and "Traceback" not in message
    assert f"--fp16 supports float32 inputs and outputs only, and this model has output_1 ({dtype})" in message
    out = tmp_path / "half" / "export"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]
    assert (out / "model.onnx").read_bytes() == plain.path("model.onnx").read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and manifest["parity"]["passed"]
    assert manifest["fp16"]["status"] == "unsupported" and manifest["fp16"]["file"] is None
    assert manifest["files"] == plain.manifest["files"]


def test_fp16_converts_a_nested_output_the_model_also_computes_with(tmp_path):
    model = NestedFeatures().eval()
    result = export(tmp_path, model, opset=FAST_OPSET, fp16=True)
    assert result.status == "ok" and result.manifest["fp16"]["check"]["passed"]
    x = torch.randn(5, *INPUT_SIZE, generator=torch.Generator().manual_seed(2))
    session = ort.InferenceSession(str(result.path("model_fp16.onnx")), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x)
    for out, ref in zip(got, [expected["logits"], *expected["aux"]]):
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, ref.numpy(), rtol=1e-2, atol=1e-2 * float(ref.abs().max()))

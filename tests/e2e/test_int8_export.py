"""``compress export --int8`` and the manifest's bundle, end to end on CPU.

One real ``compress prune`` run on a small image folder whose classes a ResNet-20 learns
for certain in three epochs (a model that is not sure of its classes flips some under
any 8-bit rounding, so only a confident one can show the gate passing), exported
through the CLI in-process.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from compressor.cli import main
from compressor.export.calibration import CalibrationSets
from compressor.export.int8 import (
    MAX_FLOAT_FRACTION, Int8Settings, quantize_gated, reference_logits, run_onnx, top1_agreement,
)
from compressor.export.sources import resolve_source
from tests import hostile
from tests.cli_runs import COLOURS, colour_run
from tests.hostile import assert_one_line_error

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", name="colour_run")
def colour_run_fixture(tmp_path_factory) -> Path:
    return colour_run(tmp_path_factory.mktemp("int8"))


@pytest.fixture(scope="module")
def int8_export(colour_run) -> Path:
    out = colour_run / "export"
    result = invoke(str(colour_run), "--int8", "--calib-samples", "64")
    assert result.exit_code == 0, result.output
    return out


def invoke(*args) -> Result:
    return hostile.invoke("export", *args)


def listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def test_int8_of_a_trained_model_passes_its_gate(int8_export):
    manifest = json.loads((int8_export / "manifest.json").read_text())
    assert manifest["status"] == "ok"
    section = manifest["int8"]
    assert section["check"]["passed"] and section["check"]["agreement"] >= 0.99
    assert section["calibration"]["split"] == "train" and section["calibration"]["samples"] == 64
    assert section["calibration"]["check_images"] == 4 * 60 - 64  # every other training image, none reused
    assert set(manifest["files"]) == {"model.onnx", "model_int8.onnx"}
    graph = onnx.load(str(int8_export / "model_int8.onnx")).graph
    ops = [node.op_type for node in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) == ops.count("Conv")  # every conv's weights stored as int8
    assert graph.output[0].name == "logits" and ops[-1] != "DequantizeLinear"  # the logits stay float


def test_int8_agreement_in_the_manifest_is_what_the_file_does(int8_export, colour_run):
    """Recompute the gate's figure from the files: the manifest does not merely claim it."""
    import onnxruntime as ort

    from compressor.export.calibration import calibration_sets, data_config_for

    manifest = json.loads((int8_export / "manifest.json").read_text())
    source = resolve_source(str(colour_run))
    sets = calibration_sets(data_config_for(colour_run, None, None), 64, 500, source.input_size)
    session = ort.InferenceSession(str(int8_export / "model_int8.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": sets.check.numpy()})[0]
    expected = reference_logits(source.model, sets.check)
    agreement = float(np.mean(logits.argmax(1) == expected.argmax(1)))
    assert agreement == pytest.approx(manifest["int8"]["check"]["agreement"])


def test_one_calibration_image_is_refused_keeping_the_verified_fp32_model(colour_run, tmp_path):
    out = tmp_path / "one"
    result = invoke(str(colour_run), "--int8", "--calib-samples", "1", "--no-int8-fallback", "--out", str(out))
    assert_one_line_error(result, 1, "INT8 gate refused", "model_int8.onnx agrees with PyTorch fp32",
                          "calibrated on 1", "--calib-samples", "model.onnx (verified)")
    assert not (out / "model_int8.onnx").exists() and (out / "model_int8.onnx.failed").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and manifest["int8"]["check"]["agreement"] < 0.99
    assert manifest["parity"]["passed"] and set(manifest["files"]) == {"model.onnx", "model_int8.onnx.failed"}
    assert manifest["files"]["model.onnx"]["sha256"] == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()


def test_an_int8_refusal_refuses_that_file_alone_and_says_so(colour_run, tmp_path):
    """One rule for every INT8 artifact (``pipeline._Job._refuse_files``; a TensorRT INT8 engine
    follows it too): the refused file is ``.failed``, the fp32 and FP16 files whose gates passed
    stand, the manifest names the refusal, and the command fails in one line."""
    out = tmp_path / "fp16"
    result = invoke(str(colour_run), "--int8", "--fp16", "--calib-samples", "1", "--no-int8-fallback",
                    "--out", str(out))
    line = assert_one_line_error(result, 1, "INT8 gate refused model_int8.onnx", "renamed model_int8.onnx.failed",
                                 "model.onnx, model_fp16.onnx (verified)")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and manifest["fp16"]["check"]["passed"]
    assert set(manifest["files"]) == {"model.onnx", "model_fp16.onnx", "model_int8.onnx.failed"}
    assert list(manifest["int8"]["refused"]) == ["model_int8.onnx"]
    assert manifest["error"] == manifest["int8"]["refused"]["model_int8.onnx"] and manifest["error"] in line
    assert "int8" in result.stdout and "FAILED" in result.stdout  # the summary shows the failed gate


def test_constant_calibration_is_refused_even_with_the_fallback(colour_run, tmp_path):
    """Ranges fitted to one flat grey image clip every real activation: keeping the worst
    layers in float cannot save that, and the fallback stops at its cap instead of
    handing back a model that is mostly float."""
    source = resolve_source(str(colour_run))
    fp32 = tmp_path / "model.onnx"
    assert invoke(str(colour_run), "--out", str(tmp_path / "plain")).exit_code == 0
    fp32.write_bytes((tmp_path / "plain" / "model.onnx").read_bytes())
    from compressor.export.calibration import calibration_sets, data_config_for

    real = calibration_sets(data_config_for(colour_run, None, None), 64, 500, source.input_size)
    sets = CalibrationSets(torch.zeros(1, *source.input_size), real.check, {})
    reference = reference_logits(source.model, real.check)
    outcome = quantize_gated(fp32, tmp_path / "int8.onnx", lambda name: tmp_path / name, sets, reference,
                             Int8Settings())
    assert not outcome.passed
    assert top1_agreement(run_onnx(tmp_path / "int8.onnx", real.check), reference) == outcome.agreement
    layers = len(outcome.quantized_layers) + len(outcome.float_layers)
    assert len(outcome.auto_float_layers) <= MAX_FLOAT_FRACTION * layers
    assert outcome.sensitivity  # every layer was measured; float only where that raised the agreement
    ranked = sorted(outcome.sensitivity, key=outcome.sensitivity.get, reverse=True)
    order = [ranked.index(name) for name in outcome.auto_float_layers]
    assert order == sorted(order)
    assert outcome.agreement >= outcome.first_agreement
    assert "calibrated on 1" in outcome.failure("int8.onnx", {"samples": 1, "dataset": "flat"})


def test_excluded_layers_stay_float(colour_run, tmp_path):
    plain = tmp_path / "plain"
    assert invoke(str(colour_run), "--out", str(plain)).exit_code == 0
    first_conv = next(n.name for n in onnx.load(str(plain / "model.onnx")).graph.node if n.op_type == "Conv")
    out = tmp_path / "ex"
    result = invoke(str(colour_run), "--int8", "--calib-samples", "64", "--int8-exclude", first_conv, "--out", str(out))
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["int8"]["check"]["float_layers"] == [first_conv]
    graph = onnx.load(str(out / "model_int8.onnx")).graph
    weights = {t.name: t.data_type for t in graph.initializer}
    node = next(n for n in graph.node if n.name == first_conv)
    assert weights.get(node.input[1]) == onnx.TensorProto.FLOAT


def bad_int8_cases(run: Path, tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    (tmp / "empty").mkdir()
    return {
        "wrong size": ([str(run), "--int8", "--calib-data", "synthetic"], ["3x32x32", "3x16x16"]),
        "empty dir": ([str(run), "--int8", "--calib-data", "imagefolder", "--calib-data-dir", str(tmp / "empty")],
                      ["train"]),
        "no data for a name": (["resnet20", "--int8"], ["--calib-data"]),
        "unknown layer": ([str(run), "--int8", "--calib-samples", "64", "--int8-exclude", "no_such_conv"], ["no_such_conv", "its layers are"]),
        "calib without int8": ([str(run), "--calib-data", "synthetic"], ["--calib-data", "--int8"]),
        "too many samples": ([str(run), "--int8", "--calib-samples", str(10**9)], ["GiB", "lower --calib-samples"]),
        "nothing to quantize": (["tests.export_models:weightless", "--input-size", "3,32,32", "--int8",
                                 "--calib-data", "synthetic"], ["no Conv/ConvTranspose/Gemm/MatMul"]),
    }


@pytest.mark.parametrize("case", ["wrong size", "empty dir", "no data for a name", "unknown layer",
                                  "calib without int8", "too many samples", "nothing to quantize"])
def test_bad_int8_input_is_one_line_and_leaves_nothing_valid(case, colour_run, tmp_path):
    args, hints = bad_int8_cases(colour_run, tmp_path)[case]
    out = tmp_path / "out"
    before = listing(colour_run)
    assert_one_line_error(invoke(*args, "--out", str(out)), 1, *hints)
    assert listing(colour_run) == before
    assert not any(out.glob("model*.onnx")), listing(out) if out.exists() else None


def test_the_bundle_says_how_to_feed_the_model(int8_export):
    bundle = json.loads((int8_export / "manifest.json").read_text())["bundle"]
    assert bundle["input"] == {"name": "input", "shape": ["batch", 3, 16, 16], "dtype": "float32", "layout": "NCHW"}
    assert bundle["class_names"] == ["class0", "class1", "class2", "class3"]
    prep = bundle["preprocessing"]
    assert prep["resize_shorter_side"] == 18 and prep["center_crop"] == [16, 16]
    assert prep["mean"] == pytest.approx([0.485, 0.456, 0.406]) and prep["channel_order"] == "RGB"
    assert bundle["output"]["name"] == "logits"


def readme_bundle_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- bundle-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its bundle example"
    return match.group(1)


def test_the_readme_bundle_example_classifies_an_image_like_pytorch(int8_export, colour_run, tmp_path):
    """The README's snippet, run as written on a non-square image file, names the class the
    pruned PyTorch model picks for it through the run's own validation transform."""
    from torchvision import transforms

    script = tmp_path / "classify.py"
    script.write_text(readme_bundle_example())
    rng = np.random.default_rng(1)
    for label, colour in enumerate(COLOURS):
        image = tmp_path / f"photo{label}.png"
        Image.fromarray(np.clip(np.array(colour) + rng.normal(0, 40, (30, 44, 3)), 0, 255).astype(np.uint8)).save(image)
        done = subprocess.run([sys.executable, str(script), str(int8_export), str(image)], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        transform = transforms.Compose([transforms.Resize(18), transforms.CenterCrop(16), transforms.ToTensor(),
                                        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
        model = resolve_source(str(colour_run)).model
        with torch.no_grad():
            expected = int(model(transform(Image.open(image).convert("RGB"))[None]).argmax())
        assert done.stdout.strip() == f"class{expected}"


def _int8_section_and_activation_types(export: Path) -> tuple[dict, set[int]]:
    """The manifest's int8 section and the element types of the file's activation zero points."""
    section = json.loads((export / "manifest.json").read_text())["int8"]
    graph = onnx.load(str(export / "model_int8.onnx")).graph
    return section, {t.data_type for t in graph.initializer if t.name.endswith("zero_point") and not t.dims}


def _export_int8(colour_run: Path, out: Path, form: str) -> tuple[dict, set[int]]:
    result = invoke(str(colour_run), "--int8", "--calib-samples", "64", "--int8-activations", form, "--out", str(out))
    assert result.exit_code == 0, result.output
    return _int8_section_and_activation_types(out)


def test_the_default_activation_form_is_the_one_onnx_runtime_runs_fast(int8_export):
    """--format onnx ships to ONNX Runtime: auto picks uint8 activations (its fast U8S8 CPU kernels)."""
    section, activation_types = _int8_section_and_activation_types(int8_export)
    assert section["activations_chosen"] == "auto: asymmetric for --format onnx"
    assert section["consumers"] == ["onnxruntime"] and onnx.TensorProto.UINT8 in activation_types


def test_symmetric_int8_when_asked(colour_run, tmp_path):
    section, activation_types = _export_int8(colour_run, tmp_path / "s8", "symmetric")
    assert section["consumers"] == ["onnxruntime", "tensorrt"]
    assert section["activations_chosen"] == "--int8-activations symmetric"
    assert onnx.TensorProto.UINT8 not in activation_types and onnx.TensorProto.INT8 in activation_types


def test_asymmetric_int8_for_onnxruntime_cpu(colour_run, tmp_path):
    section, activation_types = _export_int8(colour_run, tmp_path / "u8", "asymmetric")
    assert section["consumers"] == ["onnxruntime"] and section["check"]["passed"]
    assert onnx.TensorProto.UINT8 in activation_types


def test_tensorrt_refuses_asymmetric_int8_before_anything_is_written(colour_run, tmp_path):
    out = tmp_path / "trt"
    result = invoke(str(colour_run), "--format", "tensorrt", "--int8", "--int8-activations", "asymmetric",
                    "--out", str(out))
    assert_one_line_error(result, 1, "--int8-activations symmetric")
    assert not out.exists() or not any(out.iterdir())


def test_bench_times_int8_beside_fp32_dense_and_pruned(colour_run, int8_export, tmp_path):
    fast = ["--warmup-s", "0", "--warmup-runs", "1", "--min-runs", "3", "--min-time-s", "0", "--rounds", "1",
            "--threads", "1"]
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["bench", str(colour_run), "--backend", "torch,onnxruntime,tensorrt",
                                       "--precision", "fp32,int8", "--batch-size", "1,4", "--out", str(out), *fast])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "bench.json").read_text())
    cells = {(r["variant"], r["backend"], r["precision"], r["batch_size"]) for r in report["records"]}
    for variant in ("dense", "pruned"):
        for batch in (1, 4):
            assert (variant, "onnxruntime", "int8", batch) in cells and (variant, "onnxruntime", "fp32", batch) in cells
    records = {(r["variant"], r["backend"], r["precision"], r["batch_size"]): r for r in report["records"]}
    for batch in (1, 4):
        dense_fp32 = records[("dense", "onnxruntime", "fp32", batch)]["median_ms"]
        pruned_int8 = records[("pruned", "onnxruntime", "int8", batch)]
        assert pruned_int8["speedup_vs_dense_fp32"] == pytest.approx(dense_fp32 / pruned_int8["median_ms"])
        assert "speedup_vs_dense_fp32" not in records[("pruned", "onnxruntime", "fp32", batch)]
    skipped = {(s["backend"], s["precision"]): s["reason"] for s in report["skipped"]}
    assert "PyTorch has no such path" in skipped[("torch", "int8")]
    assert "| int8 |" in (out / "bench.md").read_text() or " int8 " in result.output
    # the pruned model's INT8 is the export's verified file (the CPU's asymmetric form, by default);
    # the dense one, which no export made, is quantized for timing only, and the report says which is which
    made = sorted(p.name for p in (colour_run / "bench" / "cache").glob("*/*int8*.onnx"))
    assert made == ["resnet20-dense_int8-asymmetric.onnx"]
    shipped = json.loads((int8_export / "manifest.json").read_text())["files"]["model_int8.onnx"]["sha256"]
    for batch in (1, 4):
        pruned, dense = (records[(v, "onnxruntime", "int8", batch)]["file"] for v in ("pruned", "dense"))
        assert pruned["name"] == "model_int8.onnx" and pruned["sha256"] == shipped and pruned["verified"] is True
        assert pruned["calibration"]["samples"] == 64 and pruned["agreement"] >= 0.99
        assert dense["verified"] is False and "for timing only" in dense["source"]


def test_bench_int8_alone_still_times_the_fp32_baseline_and_skips_an_export_of_other_bytes(colour_run, int8_export,
                                                                                          tmp_path):
    """A manifest whose source names other model bytes (another prune into the same folder) is
    not the pruned model's INT8: bench quantizes its own and says so."""
    copy = tmp_path / "run"
    shutil.copytree(colour_run, copy, ignore=shutil.ignore_patterns("bench"))
    manifest = json.loads((copy / "export" / "manifest.json").read_text())
    manifest["source"]["sha256"] = "0" * 64
    (copy / "export" / "manifest.json").write_text(json.dumps(manifest))
    fast = ["--warmup-s", "0", "--warmup-runs", "1", "--min-runs", "3", "--min-time-s", "0", "--rounds", "1",
            "--threads", "1"]
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["bench", str(copy), "--backend", "onnxruntime", "--precision", "int8",
                                       "--batch-size", "1", "--out", str(out), *fast])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "bench.json").read_text())
    records = {(r["variant"], r["precision"]): r for r in report["records"]}
    assert set(records) == {(v, p) for v in ("dense", "pruned") for p in ("fp32", "int8")}
    assert report["config"]["precisions"] == ["int8"] and report["config"]["timed_precisions"] == ["fp32", "int8"]
    assert records[("pruned", "int8")]["speedup_vs_dense_fp32"] > 0
    assert records[("pruned", "int8")]["file"]["verified"] is False

"""``compress export`` end to end on CPU: the CLI in-process through click's CliRunner,
plus one real ``compress prune`` run whose directory gets exported."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import Result

from compressor.export.tensorrt import tensorrt_available
from tests import hostile
from tests.cli_runs import compress
from tests.hostile import assert_one_line_error

EXPORT_OPTIONS = ["--format", "--out", "--opset", "--max-batch", "--fp16", "--simplify", "--no-simplify",
                  "--atol", "--rtol", "--allow-trace", "--no-verify", "--overwrite"]
MANIFEST_KEYS = ["format", "opset", "inputs", "outputs", "macs", "params", "parity", "status", "files", "versions",
                 "exporter", "source"]
PARITY_KEYS = ["max_abs_err", "max_rel_err", "top1_agreement", "batch_sizes", "backend", "provider"]
VERSION_KEYS = ["torch", "onnx", "onnxruntime", "onnxsim", "tensorrt"]
TINY_PRUNE = [
    "--model", "resnet20", "--dataset", "synthetic", "--synthetic-train", "256", "--synthetic-val", "128", "--batch-size", "64",
    "--epochs", "2", "--max-prune-epoch", "1", "--monitor-start", "1", "--no-progress",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invoke(*args) -> Result:
    return hostile.invoke("export", *args)


def read_manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def assert_valid_export(out: Path, model: str, pruned: bool) -> dict:
    manifest = read_manifest(out)
    assert manifest["status"] == "ok", manifest.get("error")
    assert all(key in manifest for key in MANIFEST_KEYS)
    assert all(key in manifest["parity"] for key in PARITY_KEYS)
    assert all(key in manifest["versions"] for key in VERSION_KEYS)
    assert manifest["format"] == "onnx" and manifest["model"] == model and manifest["source"]["pruned"] is pruned
    assert manifest["parity"]["passed"] and manifest["parity"]["provider"] == "CPUExecutionProvider"
    assert manifest["parity"]["batch_sizes"] == [1, 2, 3, 8]
    assert manifest["inputs"][0]["shape"][0] == "batch" and manifest["outputs"][0]["shape"] == ["batch", 10]
    assert manifest["exporter"] in ("dynamo", "torchscript")
    data = (out / "model.onnx").read_bytes()
    assert manifest["files"]["model.onnx"] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    onnx.checker.check_model(onnx.load(str(out / "model.onnx")))
    return manifest


# -- the happy paths -----------------------------------------------------------------------------


def test_help_explains_every_option():
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    assert "SOURCE" in result.output
    missing = [option for option in EXPORT_OPTIONS if option not in result.output]
    assert not missing, result.output
    assert "export" in hostile.invoke("--help").output


def test_export_a_model_name_writes_model_onnx_and_the_manifest(tmp_path):
    out = tmp_path / "r20"
    result = invoke("resnet20", "--format", "onnx", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]
    manifest = assert_valid_export(out, "resnet20", pruned=False)
    assert manifest["source"]["kind"] == "zoo" and manifest["macs"] == 40_813_184
    assert "CPUExecutionProvider" in result.output and "model.onnx" in result.output and "status ok" in result.output


@pytest.fixture(scope="module")
def prune_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r20"
    compress("prune", *TINY_PRUNE, "--out", str(out))  # this tree's CLI in a subprocess
    return out


def test_export_a_prune_run_directory(prune_run):
    result = invoke(str(prune_run))  # default --out: RUN/export
    assert result.exit_code == 0, result.output
    manifest = assert_valid_export(prune_run / "export", "resnet20", pruned=True)
    summary = json.loads((prune_run / "summary.json").read_text())
    assert manifest["source"]["kind"] == "run" and manifest["source"]["path"] == str(prune_run)
    assert manifest["params"] == summary["pruned_params"] and manifest["macs"] == summary["pruned_macs"]
    # the gate also ran on the run's own validation images, and says which
    parity = manifest["parity"]
    assert parity["dataset_images"] == {"used": 32, "dataset": "synthetic", "split": "val", "data_dir": None}
    assert parity["inputs"] == ["randn", "randn x0.01", "randn x100", "uniform 0-1", "uniform 0-255", "dataset images"]
    assert "32 dataset images" in result.output
    # the summary names every kind of input the gate fed, the batch sweep included
    assert "randn at every batch 1-8, scaled x0.01/x100, uniform 0-1/0-255, 32 dataset images" in result.output


def test_the_gate_images_are_the_runs_first_validation_images(prune_run):
    """Read back from summary.json, rebuilt with the run's own preprocessing: the same tensors
    the run validated on (synthetic is normalised with the training set's statistics)."""
    from compressor.data.datasets import DataConfig, load_data
    from compressor.export.gate_images import run_images

    summary = json.loads((prune_run / "summary.json").read_text())
    images, note = run_images(prune_run, 40, (3, 32, 32))
    expected = next(iter(load_data(DataConfig(**summary["data"])).val_batches()))[0][:40]
    assert note["used"] == 40 and torch.equal(images, expected)


@pytest.mark.parametrize("data, reason", [
    ({"dataset": "imagefolder", "data_dir": "GONE"}, "gone"),
    ({"synthetic_train": 10**9}, "more than the 200000"),  # would allocate without bound
    ({"synthetic_train": 10**30}, "more than the 200000"),  # would overflow a tensor size
])
def test_a_run_whose_dataset_is_gone_or_tampered_is_gated_without_images(prune_run, tmp_path, data, reason):
    run = tmp_path / "run"
    shutil.copytree(prune_run, run, ignore=shutil.ignore_patterns("export"))
    summary = json.loads((run / "summary.json").read_text())
    summary["data"].update({k: str(tmp_path / "gone") if v == "GONE" else v for k, v in data.items()})
    (run / "summary.json").write_text(json.dumps(summary))
    result = invoke(str(run), "--opset", "17", "--out", str(tmp_path / "x"))
    assert result.exit_code == 0, result.output
    note = read_manifest(tmp_path / "x")["parity"]["dataset_images"]
    assert note["used"] == 0 and reason in note["reason"]


def test_tensorrt_without_tensorrt_writes_the_onnx_then_fails_with_one_line(tmp_path):
    available, found = tensorrt_available()
    if available:
        pytest.skip(f"{found}: the GPU tests build real engines")
    out = tmp_path / "trt"
    result = invoke("resnet20", "--format", "tensorrt", "--out", str(out), "--no-simplify")
    error = assert_one_line_error(result, 1, "--format tensorrt", "pip install tensorrt", "NVIDIA GPU")
    assert found.split(" (")[0] in error
    manifest = read_manifest(out)
    assert manifest["status"] == "incomplete" and manifest["tensorrt"]["status"] == "unavailable"
    assert manifest["parity"]["passed"] and (out / "model.onnx").is_file() and not (out / "model.plan").exists()


# -- bad input: one line, non-zero exit, nothing valid-looking left ------------------------------


def test_missing_source(tmp_path):
    out = tmp_path / "out"
    assert_one_line_error(invoke(str(tmp_path / "nope" / "model.pt"), "--out", str(out)), 1, "no such")
    assert_one_line_error(invoke("resnet2O", "--out", str(out)), 1, "unknown model", "resnet20")
    assert_one_line_error(invoke(str(tmp_path), "--out", str(out)), 1, "not a `compress prune` run directory")
    assert not out.exists()


def test_corrupt_source(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"this is not a checkpoint" * 40)
    out = tmp_path / "out"
    assert_one_line_error(invoke(str(bad), "--out", str(out)), 1, str(bad), "refused to load")
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"\x00" * 100)
    assert_one_line_error(invoke(str(run), "--out", str(out)), 1, "model.pt")
    assert not out.exists()


def test_unknown_format(tmp_path):
    assert_one_line_error(invoke("resnet20", "--format", "tflite", "--out", str(tmp_path / "o")), 2, "tflite")
    assert not (tmp_path / "o").exists()


def test_unwritable_output_directory(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert_one_line_error(invoke("resnet20", "--out", str(a_file / "sub")), 1, "cannot write", str(a_file / "sub"))
    assert_one_line_error(invoke("resnet20", "--out", str(a_file)), 1, "cannot write", "is a file")
    assert a_file.read_text() == "x"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert_one_line_error(invoke("resnet20", "--out", str(locked)), 1, "cannot write", "Permission denied")
    finally:
        locked.chmod(0o755)
    assert not list(locked.iterdir())


@pytest.mark.parametrize("opset", ["5", "99"])
def test_an_opset_the_exporter_cannot_produce(tmp_path, opset):
    out = tmp_path / "out"
    error = assert_one_line_error(invoke("resnet20", "--opset", opset, "--out", str(out)), 1, f"opset {opset}")
    assert "can produce opsets" in error
    assert not out.exists()


def test_refused_export_exits_non_zero_and_leaves_no_valid_looking_model(tmp_path):
    out = tmp_path / "out"
    result = invoke("resnet20", "--out", str(out), "--atol", "0", "--rtol", "0", "--no-simplify")
    assert_one_line_error(result, 1, "parity gate refused", "--no-verify")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx.failed"]
    assert read_manifest(out)["status"] == "failed"

"""The export is a table of steps (``compressor.export.pipeline.STEPS``): a new step is one
``register_step`` call, and the table applies its declared failure rule."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from torch import nn

from compressor.export import pipeline
from compressor.export.config import ExportConfig
from compressor.export.pipeline import FILES, ExportRefused, Step, StepFailed, export_source, register_step
from compressor.export.sources import from_module

SIZE = (3, 8, 8)
# The TorchScript exporter, no onnxsim, small batches: the fastest export that still runs the gate.
FAST = {"opset": 17, "simplify": False, "max_batch": 2, "parity_images": 0}


@pytest.fixture(autouse=True)
def own_table(monkeypatch):
    """Each test registers into its own copy of the table."""
    monkeypatch.setattr(pipeline, "STEPS", list(pipeline.STEPS))


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def export(tmp_path):
    return export_source(from_module(tiny(), "tiny", SIZE, False), ExportConfig(out=tmp_path / "out", **FAST))


def write_digest(job) -> None:
    """A step of the test's own: the fp32 file's sha256 beside it, and a manifest section."""
    digest = hashlib.sha256(job.onnx_path.read_bytes()).hexdigest()
    job.artifacts.stage("model.onnx.sha256").write_text(digest + "\n")
    job.sections["digest"] = {"file": "model.onnx.sha256", "sha256": digest}


def test_a_new_step_is_one_registration(tmp_path):
    register_step(Step("digest", write_digest, ("model.onnx.sha256",), "digest"), after="simplify")
    result = export(tmp_path)
    assert result.status == "ok"
    written = (result.out / "model.onnx.sha256").read_text().strip()
    assert written == hashlib.sha256((result.out / "model.onnx").read_bytes()).hexdigest()
    manifest = json.loads((result.out / "manifest.json").read_text())
    assert manifest["digest"]["sha256"] == written and "model.onnx.sha256" in manifest["files"]
    assert "model.onnx.sha256" in pipeline.artifact_names()
    with pytest.raises(ValueError, match="registered already"):
        register_step(Step("digest", write_digest))


def test_a_files_step_refuses_its_own_files_and_the_others_stand(tmp_path):
    """The INT8 rule, for any step declared ``FILES``: its file is .failed, model.onnx (verified)
    stands, the manifest says 'incomplete' and why, and the export raises ExportRefused."""

    def refused(job) -> None:
        job.artifacts.stage("extra.bin").write_bytes(b"x")
        job.sections["extra"] = {"file": "extra.bin"}
        raise StepFailed("extra.bin is wrong on purpose", "do not", "extra gate")

    register_step(Step("extra", refused, ("extra.bin",), "extra", FILES))
    with pytest.raises(ExportRefused, match=r"extra gate refused extra.bin: .*renamed extra.bin.failed, and "
                                            r"model.onnx \(verified\)") as caught:
        export(tmp_path)
    out = caught.value.result.out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and manifest["error"] == "extra.bin is wrong on purpose"
    assert set(manifest["files"]) == {"model.onnx", "extra.bin.failed"} and manifest["parity"]["passed"]
    assert manifest["extra"]["refused"] == {"extra.bin": "extra.bin is wrong on purpose"}
    assert (out / "model.onnx").is_file() and not (out / "extra.bin").exists()


def test_an_export_step_refuses_the_whole_export(tmp_path):
    def refused(job) -> None:
        raise StepFailed("wrong on purpose")

    register_step(Step("strict", refused))
    with pytest.raises(ExportRefused, match="parity gate refused the export: wrong on purpose") as caught:
        export(tmp_path)
    manifest = caught.value.result.manifest
    assert manifest["status"] == "failed" and set(manifest["files"]) == {"model.onnx.failed"}

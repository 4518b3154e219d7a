"""The pieces of ``compress eval`` that need no run: counting, chunking, the manifest's
file list read as data, the report's text and JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from compressor.errors import CompressorError
from compressor.evaluation.data import SPLITS, DataChoice
from compressor.evaluation.metrics import Tally
from compressor.evaluation.report import EvalReport, EvalRow
from compressor.evaluation.runners import Runner, _in_chunks, check_input_size
from compressor.evaluation.subjects import find_subjects, manifest_subjects
from compressor.export.manifest import FORMAT_VERSION


def test_tally_counts_like_the_training_loop():
    logits = np.array([[3, 2, 1, 0, -1, -2], [0, 1, 2, 3, 4, 5], [5, 0, 0, 0, 0, 1]], dtype=np.float32)
    labels = torch.tensor([0, 0, 5])
    tally = Tally()
    predictions = tally.add(logits, labels)
    assert predictions.tolist() == [0, 5, 0]
    assert tally.correct_top1 == 1 and tally.top1 == pytest.approx(100 / 3)
    assert tally.correct_top5 == 2  # label 0 is 6th of row 1; label 5 is 2nd of row 2
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(logits), labels, reduction="sum").item() / 3
    assert tally.loss == pytest.approx(expected)
    assert tally.agreement is None
    other = Tally()
    other.add(logits[:, ::-1].copy(), labels, reference=predictions)
    assert other.agreement == pytest.approx(0.0) and other.compared == 3


def test_tally_without_top5_or_loss():
    tally = Tally()
    tally.add(np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32), torch.tensor([0, 7]))
    assert tally.top5 is None  # two classes
    assert tally.loss is None  # label 7 is not one of the model's classes
    assert tally.top1 == 50.0


def test_fixed_batch_models_get_full_chunks():
    seen = []

    def run_once(x):
        seen.append(len(x))
        return x.reshape(len(x), -1)[:, :2] * 2

    x = np.arange(7 * 4, dtype=np.float32).reshape(7, 4)
    out = _in_chunks(run_once, x, 3)
    assert seen == [3, 3, 3] and out.shape == (7, 2)
    np.testing.assert_array_equal(out, x[:, :2] * 2)


def test_input_size_check():
    runner = Runner("m.onnx", "onnxruntime", "CPUExecutionProvider", (3, None, None), lambda x: x)
    check_input_size(runner, (3, 32, 32))
    with pytest.raises(CompressorError, match=r"the images are 1x32x32 .* m.onnx takes 3x\?x\?"):
        check_input_size(runner, (1, 32, 32))


@pytest.mark.parametrize("kwargs, message", [
    ({"limit": 0}, "--limit must be >= 1"), ({"batch_size": 0}, "--batch-size must be >= 1"),
    ({"split": "test"}, "--split must be one of"),
])
def test_data_choice_refuses(kwargs, message):
    with pytest.raises(CompressorError, match=message):
        DataChoice(**kwargs)


def test_the_cli_offers_the_library_splits():
    from compressor.cli import evaluate as cli

    assert cli.SPLITS == SPLITS


def test_manifest_names_are_plain_file_names(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    manifest = {"manifest": FORMAT_VERSION, "files": {
        "../elsewhere.onnx": {"sha256": "0" * 64}, "model.onnx": {"sha256": "0" * 64},
        "model.onnx.failed": {}, "notes.txt": {},
    }}
    subjects = {s.name: s for s in manifest_subjects(tmp_path, manifest)}
    assert set(subjects) == {"../elsewhere.onnx", "model.onnx"}  # only .onnx/.plan files
    assert "not a file name" in subjects["../elsewhere.onnx"].skip_reason
    assert subjects["model.onnx"].skip_reason is None and "sha256 differs" in subjects["model.onnx"].note


def test_an_export_listing_no_model_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"manifest": FORMAT_VERSION, "files": {"a.txt": {}}}))
    with pytest.raises(CompressorError, match="lists no .onnx or .plan file"):
        find_subjects([str(tmp_path)])


def test_several_sources_must_all_be_onnx(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"x")
    (tmp_path / "b.pt").write_bytes(b"x")
    with pytest.raises(CompressorError, match="must all be .onnx"):
        find_subjects([str(tmp_path / "a.onnx"), str(tmp_path / "b.pt")])


def test_report_text_and_json():
    rows = [
        EvalRow("pytorch", "pytorch", "cpu", "m.pt", images=4, top1=50.0, top5=100.0, loss=float("nan"),
                correct_top1=2, correct_top5=4),
        EvalRow("model.plan", "tensorrt", None, "model.plan", "skipped", "no GPU"),
    ]
    data = {"dataset": "synthetic", "data_dir": None, "split": "val", "images": 4, "batch_size": 2,
            "num_classes": 10, "input_size": [3, 32, 32], "from": "run", "split_size": 4}
    report = EvalReport("run", "run", data, rows, "2026-01-01T00:00:00+00:00", recorded_top1=50.0)
    text = report.table()
    assert "model.plan skipped: no GPU" in text and "50.00%" in text and "reproduced" in text
    encoded = json.dumps(report.to_dict(), allow_nan=False)  # nan loss becomes a string
    assert json.loads(encoded)["rows"][0]["loss"] == "nan"
    assert report.manifest_section()["rows"][1]["status"] == "skipped"

"""``compress eval`` end to end on CPU: one real tiny ``compress prune`` run, exported with
``compress export``, evaluated as a run, an export directory, a model file and ONNX files;
every user mistake is one line and writes nothing."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import Result
from onnx import TensorProto, helper, numpy_helper

from compressor.evaluation import EvalReport, evaluate
from compressor.export.tensorrt import tensorrt_available
from tests import hostile
from tests.cli_runs import compress
from tests.hostile import assert_one_line_error

SYNTHETIC_TRAIN, SYNTHETIC_VAL = 256, 128
TINY_PRUNE = [
    "--model", "resnet20", "--dataset", "synthetic", "--synthetic-train", str(SYNTHETIC_TRAIN), "--synthetic-val", str(SYNTHETIC_VAL),
    "--batch-size", "64", "--epochs", "2", "--max-prune-epoch", "1", "--monitor-start", "1", "--no-progress",
]
EVAL_OPTIONS = ["--data", "--data-dir", "--split", "--limit", "--batch-size", "--json", "--trust-code"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invoke(*args) -> Result:
    return hostile.invoke("eval", *args)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(root: Path) -> dict:
    """Every file and folder under ``root`` with its size, mtime and content hash."""
    found = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        content = sha256(path) if path.is_file() and not path.is_symlink() else None
        found[str(path.relative_to(root))] = (stat.st_mode, stat.st_size, stat.st_mtime_ns, content)
    return found


def classifier_onnx(path: Path, classes: int = 10, size: int = 32, batch="batch") -> Path:
    """A tiny classifier as an ONNX file (global average pool, then a linear layer): made with
    onnx.helper, so no export is needed; ``batch`` an int fixes the batch dimension."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((3, classes)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Gemm", ["flat", "w", "b"], ["logits"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])], [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def table_rows(output: str) -> dict[str, list[str]]:
    """The table's lines by their first cell (the row's name): the lines between the header
    (model backend provider ...) and the first line that is not a row."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["model", "backend"])
    rows = {}
    for line in lines[start + 1:]:
        cells = line.split()
        if len(cells) < 8 or cells[0].endswith(":") or cells[0] in ("note:", "the"):
            break
        rows[cells[0]] = cells
    return rows


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real tiny prune run (about 10 s) and its export in RUN/export (about 10 s)."""
    out = tmp_path_factory.mktemp("eval") / "r20"
    compress("prune", *TINY_PRUNE, "--out", str(out))
    compress("export", str(out), "--max-batch", "2")
    assert (out / "export" / "manifest.json").is_file()
    return out


@pytest.fixture
def export_copy(run_dir, tmp_path) -> Path:
    """RUN/export copied elsewhere: its manifest still names the run (for the PyTorch row)."""
    copy = tmp_path / "export"
    shutil.copytree(run_dir / "export", copy)
    return copy


# -- the happy paths -----------------------------------------------------------------------------


def test_help_explains_every_option():
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    missing = [option for option in EVAL_OPTIONS if option not in result.output]
    assert not missing, result.output
    assert "SOURCE" in result.output and "manifest.json" in result.output
    assert "eval" in hostile.invoke("--help").output


def test_a_run_reproduces_its_recorded_top1_and_writes_nothing(run_dir, tmp_path):
    before = listing(run_dir)
    report_file = tmp_path / "report.json"
    result = invoke(run_dir, "--json", report_file)
    assert result.exit_code == 0, result.output
    assert listing(run_dir) == before  # eval of a run writes nothing but --json
    summary = json.loads((run_dir / "summary.json").read_text())
    report = json.loads(report_file.read_text())
    assert report["format"] == "compressor.eval/1" and report["source_kind"] == "run"
    assert report["dataset"] == "synthetic" and report["split"] == "val" and report["images"] == SYNTHETIC_VAL
    torch_row, onnx_row = report["rows"]
    assert torch_row["name"] == "pytorch" and torch_row["backend"] == "pytorch" and torch_row["provider"].startswith("cpu")
    assert torch_row["top1"] == pytest.approx(summary["top1"], abs=1e-9)  # the run's own final val top-1
    assert torch_row["images"] == SYNTHETIC_VAL and torch_row["top1_agreement"] is None
    assert report["recorded_top1"] == summary["top1"]
    assert "reproduced" in result.output
    # RUN/export is evaluated too, on the same batches
    assert onnx_row["name"] == "model.onnx" and onnx_row["provider"] == "CPUExecutionProvider"
    assert onnx_row["images"] == SYNTHETIC_VAL and onnx_row["top1_agreement"] >= 0.99
    assert "evaluation" not in json.loads((run_dir / "export" / "manifest.json").read_text())


def test_the_json_matches_the_table(run_dir, tmp_path):
    report_file = tmp_path / "r.json"
    result = invoke(run_dir, "--limit", "50", "--batch-size", "16", "--json", report_file)
    assert result.exit_code == 0, result.output
    report = json.loads(report_file.read_text())
    assert report["images"] == 50 and report["data"]["batch_size"] == 16
    shown = table_rows(result.stdout)
    assert set(shown) == {row["name"] for row in report["rows"]}
    for row in report["rows"]:
        name, backend, provider, images, top1, top5, loss, agree = (
            shown[row["name"]][:2] + [" ".join(shown[row["name"]][2:-5])] + shown[row["name"]][-5:])
        assert (backend, provider, int(images)) == (row["backend"], row["provider"], row["images"])
        assert top1 == f"{row['top1']:.2f}%" and top5 == f"{row['top5']:.2f}%" and loss == f"{row['loss']:.4f}"
        assert agree == ("-" if row["top1_agreement"] is None else f"{100 * row['top1_agreement']:.2f}%")
    assert "compare on the whole split" in result.stdout  # --limit: no claim about the recorded top-1


def test_an_export_directory_agrees_with_pytorch_and_records_the_evaluation(run_dir, export_copy):
    manifest_before = json.loads((export_copy / "manifest.json").read_text())
    hashes = {name: sha256(export_copy / name) for name in manifest_before["files"]}
    result = invoke(export_copy)
    assert result.exit_code == 0, result.output
    manifest = json.loads((export_copy / "manifest.json").read_text())
    evaluation = manifest.pop("evaluation")
    assert manifest == manifest_before  # every other key, the files section included, as it was
    assert {name: sha256(export_copy / name) for name in manifest["files"]} == hashes
    assert all(manifest["files"][name]["sha256"] == digest for name, digest in hashes.items())
    assert sorted(evaluation) == ["data_dir", "dataset", "images", "measured_at", "rows", "split"]
    assert evaluation["dataset"] == "synthetic" and evaluation["split"] == "val" and evaluation["images"] == SYNTHETIC_VAL
    rows = {row["name"]: row for row in evaluation["rows"]}
    assert set(rows) == {"pytorch", "model.onnx"}
    assert rows["model.onnx"]["top1_agreement"] >= 0.99
    assert abs(rows["model.onnx"]["correct_top1"] - rows["pytorch"]["correct_top1"]) <= 1
    assert rows["model.onnx"]["loss"] == pytest.approx(rows["pytorch"]["loss"], rel=1e-4)
    assert "recorded in" in result.stdout and str(export_copy / "manifest.json") in result.stdout


def test_every_artifact_the_manifest_lists_gets_a_row(run_dir, export_copy):
    """A second ONNX file (as an int8 export would add) is evaluated; an engine is skipped
    with the reason when this machine has no TensorRT; a listed file that is gone is a
    skipped row, not an error."""
    from compressor.export.artifacts import file_record
    from compressor.export.manifest import read_manifest, write_manifest

    shutil.copy(export_copy / "model.onnx", export_copy / "model_int8.onnx")
    (export_copy / "model.plan").write_bytes(b"not an engine")
    manifest = read_manifest(export_copy)
    manifest["files"]["model_int8.onnx"] = file_record(export_copy / "model_int8.onnx")
    manifest["files"]["model.plan"] = file_record(export_copy / "model.plan")
    manifest["files"]["model_gone.onnx"] = {"sha256": "0" * 64, "size": 1}
    write_manifest(export_copy, manifest)
    available, why = tensorrt_available()
    if available:
        pytest.skip("TensorRT is available here: the fake engine would be loaded")
    report = evaluate(export_copy, limit=20, record=False)
    assert isinstance(report, EvalReport)
    # the manifest's order, PyTorch first
    assert [row.name for row in report.rows] == ["pytorch", "model.onnx", "model_int8.onnx", "model.plan",
                                                 "model_gone.onnx"]
    # a copy of model.onnx agrees with PyTorch exactly as model.onnx does (not == 1.0: ONNX Runtime's
    # and PyTorch's kernels may order a near-tie differently on another CPU; tests/numeric.py)
    copy_row, original = report.row("model_int8.onnx"), report.row("model.onnx")
    assert copy_row.top1_agreement == original.top1_agreement >= 0.9 and copy_row.images == 20
    assert report.row("model.plan").status == "skipped" and report.row("model.plan").reason == why
    assert report.row("model_gone.onnx").status == "skipped" and "missing" in report.row("model_gone.onnx").reason
    assert "model.plan skipped:" in report.table()
    json.dumps(report.to_dict(), allow_nan=False)
    assert "evaluation" not in read_manifest(export_copy)  # record=False


def test_a_model_file_and_onnx_files_with_data_options(run_dir, tmp_path):
    alone = tmp_path / "pruned.pt"
    shutil.copy(run_dir / "model.pt", alone)
    result = invoke(alone, "--data", "synthetic", "--limit", "40")
    assert result.exit_code == 0, result.output
    assert set(table_rows(result.stdout)) == {"pytorch"}
    # ONNX files directly; a fixed batch of 3 is fed in chunks, the last one padded
    fixed = classifier_onnx(tmp_path / "fixed.onnx", batch=3)
    dynamic = classifier_onnx(tmp_path / "dynamic.onnx")
    report = evaluate([fixed, dynamic], data="synthetic", limit=40, batch_size=8, record=False)
    a, b = report.rows
    assert a.images == b.images == 40 and a.correct_top1 == b.correct_top1 and a.loss == pytest.approx(b.loss)
    assert a.top1_agreement is None  # no PyTorch row to agree with


def test_the_train_split_is_read_without_augmentation(run_dir):
    first = evaluate(run_dir / "model.pt", split="train", record=False)
    second = evaluate(run_dir / "model.pt", split="train", batch_size=100, record=False)
    assert first.data["split"] == "train" and first.data["images"] == SYNTHETIC_TRAIN
    assert first.rows[0].correct_top1 == second.rows[0].correct_top1  # the same images both times
    assert first.rows[0].loss == pytest.approx(second.rows[0].loss, rel=1e-5)


def test_an_imagefolder_dataset_with_fewer_than_five_classes(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    model = classifier_onnx(tmp_path / "two.onnx", classes=2, size=32)
    result = invoke(model, "--data", "imagefolder", "--data-dir", tmp_path / "images")
    assert result.exit_code == 0, result.output
    cells = table_rows(result.stdout)[model.name]
    assert cells[-3] == "-"  # no top-5 with two classes
    assert "6 val images of imagefolder" in result.stdout


# -- mistakes: one line, exit 1 (2 for malformed options), nothing written -----------------------


@pytest.fixture
def sandbox(run_dir, tmp_path) -> Path:
    """Bad inputs of every kind, in one folder."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "notjson").mkdir()
    (tmp_path / "notjson" / "manifest.json").write_text("{ not json")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "manifest.json").write_text(json.dumps({"files": {"model.onnx": {}}}))
    (tmp_path / "broken.onnx").write_bytes(b"this is not a protobuf")
    (tmp_path / "notes.txt").write_text("hello")
    classifier_onnx(tmp_path / "big.onnx", size=64)
    classifier_onnx(tmp_path / "good.onnx")
    orphan = tmp_path / "orphan-export"
    shutil.copytree(run_dir / "export", orphan)
    manifest = json.loads((orphan / "manifest.json").read_text())
    manifest["source"]["path"] = str(tmp_path / "gone")
    (orphan / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


BAD_INPUTS = {
    "missing path": (["{t}/nothing-here"], 1, ["no such file or directory"]),
    "neither run nor export": (["{t}/empty"], 1, ["neither", "run directory", "export"]),
    "manifest not json": (["{t}/notjson"], 1, ["not a readable JSON manifest"]),
    "manifest not ours": (["{t}/foreign"], 1, ["not a manifest written by `compress export`"]),
    "not a model": (["{t}/notes.txt"], 1, ["not something eval runs"]),
    "ort cannot load": (["{t}/broken.onnx", "--data", "synthetic"], 1, ["ONNX Runtime cannot load broken.onnx"]),
    "onnx without data": (["{t}/good.onnx"], 1, ["no data to evaluate on", "--data"]),
    "orphan export without data": (["{t}/orphan-export"], 1, ["no data to evaluate on"]),
    "image size": (["{t}/big.onnx", "--data", "synthetic"], 1, ["the images are 3x32x32", "takes 3x64x64"]),
    "empty imagefolder": (["{t}/good.onnx", "--data", "imagefolder", "--data-dir", "{t}/empty"], 1, ["train"]),
    "empty cifar dir": (["{t}/good.onnx", "--data", "cifar10", "--data-dir", "{t}/empty"], 1, ["cifar10 not found"]),
    "cifar without dir": (["{t}/good.onnx", "--data", "cifar10"], 1, ["needs --data-dir"]),
    "synthetic with a dir": (["{t}/good.onnx", "--data", "synthetic", "--data-dir", "{t}/empty"], 1, ["--data-dir"]),
    "json in a missing folder": (["{run}", "--json", "{t}/no/such/report.json"], 1, ["does not exist"]),
    "json is a folder": (["{run}", "--json", "{t}/empty"], 2, ["is a directory"]),
    "limit zero": (["{run}", "--limit", "0"], 2, ["--limit"]),
    "batch size zero": (["{run}", "--batch-size", "0"], 2, ["--batch-size"]),
    "unknown split": (["{run}", "--split", "test"], 2, ["--split"]),
    "unknown dataset": (["{run}", "--data", "mnist"], 2, ["--data"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_are_one_line_and_write_nothing(case, sandbox, run_dir):
    args, code, hints = BAD_INPUTS[case]
    args = [a.format(t=sandbox, run=run_dir) for a in args]
    before, run_before = listing(sandbox), listing(run_dir)
    result = invoke(*args)
    assert_one_line_error(result, code, *hints)
    assert listing(sandbox) == before and listing(run_dir) == run_before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_json_in_an_unwritable_folder(run_dir, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert_one_line_error(invoke(run_dir, "--json", locked / "r.json"), 1, "not writable")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_the_library_refuses_a_limit_below_one(run_dir):
    from compressor.errors import CompressorError

    with pytest.raises(CompressorError, match="--limit must be >= 1"):
        evaluate(run_dir, limit=0)


FACTORY = '''
from pathlib import Path

from torch import nn

Path(__file__).with_name("IMPORTED").write_text("imported")


def make(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
'''


def test_a_model_file_naming_python_code_needs_trust_code(tmp_path, monkeypatch):
    """The stored model name ``module:factory`` is data: without --trust-code the module is
    not imported (its import would write IMPORTED) and the refusal is one line."""
    import sys
    import uuid

    import torch
    from torch import nn

    from compressor.engine.plan import PruningPlan
    from compressor.runfiles.modelfile import ModelSpec, save_pruned

    module = f"evalnet_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(FACTORY)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    spec = ModelSpec(f"{module}:make", 10, (3, 32, 32))
    torch.manual_seed(0)
    save_pruned(tmp_path / "custom.pt", model, spec, PruningPlan.dense(spec.analyse(model)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # importable, so only the check can keep it out
    before = listing(tmp_path)
    assert_one_line_error(invoke("custom.pt", "--data", "synthetic"), 1, "--trust-code", module)
    assert not (tmp_path / "IMPORTED").exists() and module not in sys.modules
    assert listing(tmp_path) == before
    result = invoke("custom.pt", "--data", "synthetic", "--limit", "20", "--trust-code")
    assert result.exit_code == 0, result.output
    assert table_rows(result.stdout)["pytorch"][-5] == "20"  # images

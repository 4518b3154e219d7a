"""The effect of ``compress export`` and ``compress bench`` options that no other test exercises.

Through the CLI in-process (click's CliRunner, this checkout's ``compressor.cli``), on
``tests.export_models`` factories: a model whose ONNX file is wrong past batch 4 makes
``--max-batch``, ``--atol``/``--rtol`` and ``--no-verify`` visible; a two-layer MLP keeps
``torch.compile`` as cheap as it gets.
"""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner, Result

from compressor import CostModel, ModelSpec, SelectionConfig, analyse, apply_plan, group_l2, save_pruned, select_plan
from compressor.cli import main
from compressor.models.zoo import build
from tests.export_models import BIG_BATCH, INPUT_SIZE
from tests.hostile import assert_one_line_error

DOUBLES = "tests.export_models:doubles_past_four"
SMALL = "tests.export_models:small_cnn"
TRACE = "--allow-trace"  # DOUBLES branches on the batch size: only a trace can export it
MLP = "tests.export_models:tiny_mlp"
FAST_EXPORT = ["--opset", "17"]  # the TorchScript exporter: seconds faster where the exporter does not matter
FAST_BENCH = ["--warmup-s", "0", "--min-time-s", "0", "--threads", "1", "--device", "cpu"]
# The fp16 model against the fp32 one, both in ONNX Runtime: half precision keeps ~3 significant
# digits per operation; a few layers stay well inside 1 % of the logits' scale.
FP16_RTOL_OF_SCALE = 1e-2

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def manifest(out) -> dict:
    return json.loads((out / "manifest.json").read_text())


def run_onnx(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def torch_model():
    return build(DOUBLES, 4).eval()


def batch(n: int, seed: int = 3) -> np.ndarray:
    return torch.randn(n, *INPUT_SIZE, generator=torch.Generator().manual_seed(seed)).numpy()


# -- export --max-batch and --fp16 (one export: the default opset, simplified) -----------------------


@pytest.fixture(scope="module")
def export_4(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "max4"
    result = invoke("export", DOUBLES, TRACE, "--max-batch", str(BIG_BATCH), "--fp16", "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_max_batch_sets_the_batches_the_gate_checks(export_4):
    data = manifest(export_4)
    assert data["status"] == "ok" and data["max_batch"] == BIG_BATCH
    assert data["parity"]["batch_sizes"] == [1, 2, 3, BIG_BATCH]
    assert data["simplify"]["applied"] is True  # --simplify is the default
    with torch.no_grad():
        for size in (1, BIG_BATCH):
            np.testing.assert_allclose(run_onnx(export_4 / "model.onnx", batch(size)),
                                       torch_model()(torch.from_numpy(batch(size))).numpy(), atol=1e-4, rtol=1e-3)
    # documented: the batch dimension itself stays symbolic, so a larger batch still runs
    assert run_onnx(export_4 / "model.onnx", batch(9)).shape == (9, 4)


def test_the_default_max_batch_checks_batch_8_and_refuses(tmp_path):
    """The same model at the default --max-batch 8: the gate runs batch 8, where the ONNX
    file is wrong, so --max-batch really decides which batches are checked."""
    out = tmp_path / "max8"
    result = invoke("export", DOUBLES, TRACE, *FAST_EXPORT, "--no-simplify", "--out", str(out))
    assert result.exit_code == 1, result.output
    assert "parity gate refused" in result.output and "at batch 8" in result.output
    data = manifest(out)
    assert data["status"] == "failed" and data["parity"]["batch_sizes"] == [1, 2, 3, 8]
    assert data["simplify"] == {**data["simplify"], "applied": False, "reason": "disabled (--no-simplify)"}


def test_fp16_writes_a_half_precision_model_that_agrees_with_fp32(export_4):
    data = manifest(export_4)
    assert data["fp16"]["file"] == "model_fp16.onnx" and data["fp16"]["check"]["passed"]
    assert "model_fp16.onnx" in data["files"]
    half = onnx.load(str(export_4 / "model_fp16.onnx"))
    weights = [t for t in half.graph.initializer if len(t.dims) >= 2]  # conv and linear weights
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights), \
        [(t.name, t.data_type) for t in weights]
    x = batch(64, seed=8)
    full, reduced = run_onnx(export_4 / "model.onnx", x), run_onnx(export_4 / "model_fp16.onnx", x)
    assert reduced.dtype == np.float32  # float32 in and out, as documented
    assert np.abs(reduced - full).max() <= FP16_RTOL_OF_SCALE * np.abs(full).max()
    assert np.abs(reduced - full).max() > 0, "no half precision anywhere: the fp16 file computes in float32"
    assert (reduced.argmax(1) == full.argmax(1)).mean() >= 0.95


def test_without_fp16_no_half_precision_file(tmp_path):
    out = tmp_path / "fp32"
    assert invoke("export", SMALL, *FAST_EXPORT, "--max-batch", "4", "--out", str(out)).exit_code == 0
    assert not (out / "model_fp16.onnx").exists() and manifest(out)["fp16"] is None


# -- export --atol / --rtol / --no-verify / --input-size reach the gate ------------------------------


@pytest.mark.parametrize("tolerance, refused", [(["--atol", "0", "--rtol", "0.6"], "--rtol"),
                                                (["--atol", "100", "--rtol", "0"], "--atol")])
def test_a_tolerance_loose_enough_to_pass_the_wrong_batch_is_refused(tmp_path, tolerance, refused):
    """At batch 8 the ONNX output is half of PyTorch's: |err| = |y| <= 0.6 * |2y|, and <= 100.
    Tolerances that loose pass a wrong file, so they are refused before anything is written
    (the gate's arithmetic at any tolerance is tested in tests/unit/test_export_options.py)."""
    out = tmp_path / "tol"
    result = invoke("export", DOUBLES, TRACE, *FAST_EXPORT, "--no-simplify", *tolerance, "--out", str(out))
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert f"{refused} must be between 0 and" in result.output and not out.exists()


@pytest.mark.parametrize("tolerance", [["--atol", "inf"], ["--rtol", "nan"]])
def test_a_tolerance_that_is_no_number_is_refused_as_a_usage_error(tmp_path, tolerance):
    out = tmp_path / "tol"
    result = invoke("export", DOUBLES, TRACE, *FAST_EXPORT, "--no-simplify", *tolerance, "--out", str(out))
    assert_one_line_error(result, 2, tolerance[0], "must be finite")
    assert not out.exists()


def test_atol_and_rtol_reach_the_gate_and_the_manifest(tmp_path):
    out = tmp_path / "tol"
    result = invoke("export", SMALL, *FAST_EXPORT, "--no-simplify", "--atol", "0.5", "--rtol", "0.05", "--out", str(out))
    assert result.exit_code == 0, result.output
    parity = manifest(out)["parity"]
    assert parity["passed"] and (parity["atol"], parity["rtol"]) == (0.5, 0.05)
    assert all(b["worst_ratio"] <= 1 for b in parity["per_batch"])


def test_no_verify_writes_the_model_the_gate_would_refuse(tmp_path):
    out = tmp_path / "unverified"
    result = invoke("export", DOUBLES, TRACE, *FAST_EXPORT, "--no-verify", "--input-size", "3,12,12",
                    "--out", str(out))
    assert result.exit_code == 0, result.output
    data = manifest(out)
    assert data["status"] == "unverified" and data["parity"] == {"checked": False, "reason": "--no-verify"}
    assert data["input_size"] == [3, 12, 12] and data["inputs"][0]["shape"] == ["batch", 3, 12, 12]
    assert (out / "model.onnx").is_file() and "status unverified" in result.output


# -- bench --backend torch-compile, and the timing options ------------------------------------------


@pytest.fixture(scope="module")
def pruned_mlp(tmp_path_factory):
    model = build(MLP, 4).eval()
    example = torch.zeros(1, 3, 2, 2)
    graph = analyse(model, example)
    plan = select_plan(graph, CostModel(graph, model), group_l2(graph, model), SelectionConfig(0.5))
    path = tmp_path_factory.mktemp("bench") / "mlp-pruned.pt"
    save_pruned(path, apply_plan(model, graph, plan), ModelSpec(MLP, 4, (3, 2, 2)), plan)
    return path


def has_cxx() -> bool:
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def test_torch_compile_backend_times_on_cpu_or_says_why_not(pruned_mlp, tmp_path):
    """Documented: torch-compile (inductor) is a CPU backend, listed as skipped with the reason
    where it cannot run (no C++ compiler).  Also the timing options' effect on the records."""
    import torch._inductor.config as inductor

    paths = {name: tmp_path / f"r.{name}" for name in ("json", "md", "png")}
    # No compile worker pool on a 2-core machine. inductor's own patch(), not monkeypatch: undoing a
    # monkeypatch deletes the config entry, and every later torch.compile in this process then fails
    # with "compile_threads does not exist" (it broke test_prune_options' compile test under xdist).
    with inductor.patch(compile_threads=1):
        result = invoke("bench", str(pruned_mlp), "--trust-code", "--backend", "torch-compile", "--batch-size", "2",
                        "--precision", "fp32,fp16", "--warmup-runs", "2", "--min-runs", "4", "--rounds", "2",
                        "--json", str(paths["json"]), "--markdown", str(paths["md"]), "--plot", str(paths["png"]),
                        *FAST_BENCH)
    report = json.loads(paths["json"].read_text())
    skipped = {(s["backend"], s.get("precision")): s["reason"] for s in report["skipped"]}
    assert any("fp16" in reason for reason in skipped.values()), skipped  # CPU fp16 is listed, not timed
    if not has_cxx():
        assert result.exit_code == 1 and any("C++ compiler" in r for r in skipped.values()), skipped
        return
    assert result.exit_code == 0, result.output
    records = report["records"]
    assert {(r["variant"], r["backend"], r["precision"], r["batch_size"]) for r in records} == {
        ("dense", "torch-compile", "fp32", 2), ("pruned", "torch-compile", "fp32", 2)}
    for record in records:
        assert "inductor cpu" in record["provider"] and record["threads"] == 1
        assert record["runs"] >= 4 and record["warmup_runs"] >= 2
        assert 0 < record["min_ms"] <= record["median_ms"] and math.isfinite(record["p99_ms"])
    assert report["config"]["timing"]["rounds"] == 2
    assert "torch-compile" in paths["md"].read_text()
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"

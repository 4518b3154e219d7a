"""``compress bench`` end to end on this CPU: real timings of a tiny pruned model
through PyTorch and ONNX Runtime, every report format, skipped backends, bad input."""
from __future__ import annotations

import json
import math
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner, Result
from onnx import TensorProto, helper

from compressor.bench.rounding import SweepConfig, auto_round_to, choose
from compressor.bench.subjects import resolve
from compressor.bench.timing import TimingConfig
from compressor import CostModel, ModelSpec, SelectionConfig, analyse, apply_plan, group_l2, save_pruned, select_plan
from compressor.cli import main
from compressor.models.zoo import build

# One thread: two OpenMP threads per test worker on a 2-core CI machine spin against each other.
FAST = ["--warmup-s", "0", "--warmup-runs", "1", "--min-runs", "3", "--min-time-s", "0", "--rounds", "1", "--threads", "1"]
RECORD_KEYS = ["model", "variant", "backend", "provider", "device", "precision", "batch_size", "threads", "timer",
               "median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "throughput", "runs", "macs", "params"]
PAIR_KEYS = ["speedup", "macs_ratio", "efficiency", "baseline"]


@pytest.fixture(scope="module")
def pruned_file(tmp_path_factory) -> Path:
    """ResNet-20 pruned to half its MACs, saved the way `compress prune` saves it."""
    torch.manual_seed(0)
    model = build("resnet20", 10).eval()
    example = torch.zeros(1, 3, 32, 32)
    graph = analyse(model, example)
    plan = select_plan(graph, CostModel(graph, model), group_l2(graph, model), SelectionConfig(0.5))
    pruned = apply_plan(model, graph, plan)
    path = tmp_path_factory.mktemp("bench") / "resnet20-pruned.pt"
    save_pruned(path, pruned, ModelSpec("resnet20", 10, (3, 32, 32)), plan)
    return path


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["bench", *args])


def one_error_line(result: Result, exit_code: int, *hints: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for hint in hints:
        assert hint in errors[0], errors[0]


def test_real_cpu_bench_writes_every_report(pruned_file, tmp_path):
    out = tmp_path / "out"
    result = invoke(str(pruned_file), "--backend", "torch,onnxruntime,onnxruntime-cuda,onnxruntime-trt,tensorrt",
                    "--device", "cpu", "--batch-size", "1,3", "--out", str(out), *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "bench.json").read_text())
    assert report["format"] == "compressor.bench/1"
    records = report["records"]
    assert len(records) == 2 * 2 * 2  # (torch, onnxruntime) x (batch 1, 3) x (dense, pruned)
    for record in records:
        for key in RECORD_KEYS:
            assert key in record, key
        assert record["runs"] >= 3 and record["threads"] == 1
        assert record["min_ms"] <= record["median_ms"] <= record["p90_ms"] <= record["p99_ms"]
    providers = {r["backend"]: r["provider"] for r in records}
    assert providers["onnxruntime"] == "CPUExecutionProvider"
    assert providers["torch"].startswith("torch ")
    pruned = [r for r in records if r["variant"] == "pruned"]
    for record in pruned:
        dense = next(r for r in records if r["variant"] == "dense" and r["backend"] == record["backend"]
                     and r["batch_size"] == record["batch_size"])
        assert record["speedup"] == pytest.approx(dense["median_ms"] / record["median_ms"])
        assert record["macs_ratio"] == pytest.approx(dense["macs"] / record["macs"])
        assert 1.9 < record["macs_ratio"] < 2.2
        assert record["efficiency"] == pytest.approx(record["speedup"] / record["macs_ratio"])
        assert record["baseline"] == "resnet20 dense"
    skipped = {s["backend"]: s["reason"] for s in report["skipped"]}
    if not torch.cuda.is_available():
        assert set(skipped) == {"onnxruntime-cuda", "onnxruntime-trt", "tensorrt"}
        assert all("GPU" in reason for reason in skipped.values())
        assert "skipped: tensorrt" in result.output
    environment = report["environment"]
    assert environment["cpu"] and environment["usable_cores"] >= 1 and environment["versions"]["torch"]
    markdown = (out / "bench.md").read_text()
    assert "| model | backend |" in markdown and "resnet20 pruned" in markdown and "Skipped" in markdown
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "efficiency" in result.output and "resnet20 pruned" in result.output
    cached = list((pruned_file.parent / "resnet20-pruned-bench" / "cache").glob("*/*.onnx"))
    assert sorted(p.name for p in cached) == ["resnet20-dense.onnx", "resnet20-pruned.onnx"]


def test_onnx_files_compare_with_the_first(pruned_file, tmp_path):
    cache = next((pruned_file.parent / "resnet20-pruned-bench" / "cache").glob("*"), None)
    if cache is None:  # the full bench test did not run first (e.g. -k); make the files
        invoke(str(pruned_file), "--backend", "onnxruntime", "--batch-size", "1", "--out", str(tmp_path / "x"), *FAST)
        cache = next((pruned_file.parent / "resnet20-pruned-bench" / "cache").glob("*"))
    json_path, md_path, png_path = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png"
    result = invoke(str(cache / "resnet20-dense.onnx"), str(cache / "resnet20-pruned.onnx"), "--backend", "onnxruntime,torch",
                    "--batch-size", "2", "--json", str(json_path), "--markdown", str(md_path), "--plot", str(png_path),
                    "--out", str(tmp_path / "unused"), *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads(json_path.read_text())
    dense, pruned = report["records"]
    assert [dense["model"], pruned["model"]] == ["resnet20-dense.onnx", "resnet20-pruned.onnx"]
    assert pruned["baseline"] == "resnet20-dense.onnx" and pruned["speedup"] == pytest.approx(dense["median_ms"] / pruned["median_ms"])
    # No manifest beside them: their MACs are counted from the ONNX graphs, and say so.
    assert dense["macs_source"] == pruned["macs_source"] == "onnx-graph"
    assert pruned["macs_ratio"] == pytest.approx(dense["macs"] / pruned["macs"]) and 1.9 < pruned["macs_ratio"] < 2.2
    assert pruned["efficiency"] == pytest.approx(pruned["speedup"] / pruned["macs_ratio"])
    assert "counted from their ONNX graphs" in result.output and "counted from their ONNX graphs" in md_path.read_text()
    assert any("PyTorch backends need a model file" in s["reason"] for s in report["skipped"])
    assert md_path.is_file() and png_path.is_file() and not (tmp_path / "unused").exists()


def test_a_bare_onnx_file_reports_the_macs_its_manifest_would(pruned_file, tmp_path):
    """The same exported file, benched with its manifest.json and then without it: the
    MACs reported from the graph alone equal the manifest's (the PyTorch count)."""
    from compressor.runfiles.modelfile import load_pruned
    from compressor.export.config import ExportConfig
    from compressor.export.pipeline import export_source
    from compressor.export.sources import from_module

    model, spec, _ = load_pruned(pruned_file)
    exported = export_source(from_module(model, "resnet20", spec.input_size, True),
                             ExportConfig(out=tmp_path / "export", verify=False))
    onnx_file, manifest = exported.out / "model.onnx", exported.out / "manifest.json"
    claimed = json.loads(manifest.read_text())["macs"]
    reported = []
    for again in ([], ["--overwrite"]):  # with the manifest, then bare (replacing the first report)
        result = invoke(str(onnx_file), "--backend", "onnxruntime", "--batch-size", "1",
                        "--json", str(tmp_path / "r.json"), "--out", str(tmp_path / "r"), *FAST, *again)
        assert result.exit_code == 0, result.output
        record = json.loads((tmp_path / "r.json").read_text())["records"][0]
        reported.append((record["macs"], record["macs_source"]))
        manifest.unlink(missing_ok=True)  # the second run: the bare file
    assert reported == [(claimed, "onnx-graph")] * 2


def test_missing_source_is_one_line(tmp_path):
    one_error_line(invoke(str(tmp_path / "nope.pt")), 1, "no such run directory", "nope.pt")
    (tmp_path / "notes.txt").write_text("x")
    one_error_line(invoke(str(tmp_path / "notes.txt")), 1, "not a run directory")
    (tmp_path / "empty").mkdir()
    one_error_line(invoke(str(tmp_path / "empty")), 1, "has no model.pt")


def test_unknown_backend_and_bad_batch_sizes(pruned_file):
    one_error_line(invoke(str(pruned_file), "--backend", "torch,openvino"), 2, "openvino", "onnxruntime-trt")
    one_error_line(invoke(str(pruned_file), "--batch-size", "1,zero"), 2, "--batch-size")
    one_error_line(invoke(str(pruned_file), "--batch-size", "0"), 2, "integers in 1..")


def _fixed_batch_onnx(path: Path, batch: int) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["output"])], "fixed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 3, 8, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # what every supported ONNX Runtime reads
    onnx.save(model, str(path))
    return path


def test_batch_size_the_file_cannot_take(tmp_path):
    fixed = _fixed_batch_onnx(tmp_path / "fixed.onnx", 1)
    one_error_line(invoke(str(fixed), "--batch-size", "1,32", "--backend", "onnxruntime", *FAST),
                   1, "fixed batch size of 1", "--batch-size 32")
    ok = invoke(str(fixed), "--batch-size", "1", "--backend", "onnxruntime", "--out", str(tmp_path / "o"), *FAST)
    assert ok.exit_code == 0, ok.output
    # An engine's profile is read from its export manifest, so the check works without TensorRT.
    engine_dir = tmp_path / "export"
    engine_dir.mkdir()
    (engine_dir / "model.plan").write_bytes(b"engine")
    manifest = {"input_size": [3, 32, 32], "max_batch": 8, "files": {"model.plan": {}},
                "tensorrt": {"engines": {"model.plan": {"profile": {"min": [1, 3, 32, 32], "max": [8, 3, 32, 32]}}}}}
    (engine_dir / "manifest.json").write_text(json.dumps(manifest))
    one_error_line(invoke(str(engine_dir / "model.plan"), "--backend", "tensorrt", "--batch-size", "16"),
                   1, "batch sizes 1..8", "--batch-size 16", "--max-batch 16")


def test_an_onnx_file_given_directly_writes_nothing_beside_it_nor_in_the_current_directory(tmp_path, monkeypatch):
    """Derived files (an FP16 ONNX, an engine) of a file given directly go to bench's own
    cache, never beside the user's file or into the working directory."""
    source, work = tmp_path / "models", tmp_path / "work"
    source.mkdir()
    work.mkdir()
    fixed = _fixed_batch_onnx(source / "fixed.onnx", 2)  # a fixed batch B > 1 is accepted at B
    monkeypatch.chdir(work)
    source.chmod(0o555)  # read-only: a write there fails loudly (unless run as root; the listing checks then)
    try:
        result = invoke(str(fixed), "--batch-size", "2", "--precision", "fp32,fp16",
                        "--backend", "onnxruntime,onnxruntime-cuda,onnxruntime-trt,tensorrt",
                        "--out", str(tmp_path / "reports"), *FAST)
    finally:
        source.chmod(0o755)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in source.iterdir()) == ["fixed.onnx"]
    assert list(work.iterdir()) == []
    record = json.loads((tmp_path / "reports" / "bench.json").read_text())["records"][0]
    assert record["batch_size"] == 2 and record["provider"] == "CPUExecutionProvider"
    # where the GPU cells' derived files (an FP16 ONNX, engines) would go: bench's own folder
    (subject,) = resolve([str(fixed)])[0].subjects
    folder = subject.cache_folder().resolve()
    assert folder not in (source.resolve(), work.resolve()) and source.resolve() not in folder.parents
    assert record["provider_options"] == {} and record["session_config"] == {}


def test_nothing_runnable_fails(pruned_file, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the GPU backends can run")
    result = invoke(str(pruned_file), "--backend", "tensorrt", "--out", str(tmp_path / "o"), *FAST)
    one_error_line(result, 1, "nothing could be timed")


def test_help_explains_every_option():
    result = CliRunner().invoke(main, ["bench", "--help"])
    assert result.exit_code == 0
    for option in ["--backend", "--device", "--batch-size", "--precision", "--threads", "--warmup-s", "--min-runs",
                   "--json", "--markdown", "--plot", "--rounds", "--out"]:
        assert option in result.output


def test_round_to_auto_measures_once_then_uses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    timing = TimingConfig(warmup_s=0.0, warmup_runs=1, min_runs=2, min_time_s=0.0, rounds=1)
    config = SweepConfig(backend="onnxruntime", device="cpu", threads=1, low=24, high=32, batch_size=1, spatial=4,
                         timing=timing)
    first, cached = auto_round_to(config)
    assert not cached
    assert sorted(first.latency_ms) == list(range(24, 33))
    multiple, scores = choose(first.latency_ms, config.tolerance)  # the choice follows from the sweep
    assert first.multiple == multiple and not math.isnan(scores[multiple])
    assert [(m, None if math.isnan(v) else v) for m, v in first.scores.items()] == [
        (m, None if math.isnan(v) else pytest.approx(v)) for m, v in scores.items()
    ]
    second, cached = auto_round_to(config)
    assert cached and second.multiple == first.multiple and second.latency_ms == first.latency_ms
    assert "<- chosen" in second.table()


def test_round_to_auto_with_an_unusable_cache_location_measures_and_says_so(tmp_path, monkeypatch, caplog):
    import logging

    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    timing = TimingConfig(warmup_s=0.0, warmup_runs=1, min_runs=2, min_time_s=0.0, rounds=1)
    config = SweepConfig(backend="onnxruntime", device="cpu", threads=1, low=30, high=32, batch_size=1, spatial=4,
                         timing=timing)
    with caplog.at_level(logging.WARNING):
        choice, cached = auto_round_to(config)
    assert not cached and sorted(choice.latency_ms) == [30, 31, 32]
    assert any("could not cache" in r.getMessage() and str(blocker) in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"] and blocker.read_text() == "not a folder"


def test_prune_with_round_to_auto_uses_the_measured_multiple(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = ["prune", "--dataset", "synthetic", "--synthetic-train", "128", "--synthetic-val", "64", "--batch-size", "64", "--epochs", "1",
            "--schedule", "oneshot", "--round-to", "auto", "--deploy-backend", "onnxruntime", "--deploy-device", "cpu",
            "--no-progress", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    choice = json.loads((out / "round_to.json").read_text())
    multiple = choice["multiple"]
    assert f"--round-to auto -> {multiple}" in result.output and "<- chosen" in result.output
    assert json.loads((out / "summary.json").read_text())["macs_reduction"] > 0.45
    plan = json.loads((out / "plan.json").read_text())[-1]
    for group in plan["groups"].values():
        kept, size = len(group["kept"]), group["size"]
        if size >= 16 and kept != size:
            assert kept % math.gcd(multiple, size) == 0, (kept, size, multiple)
    bad = CliRunner().invoke(main, ["prune", "--round-to", "eight", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "'auto'" in bad.output

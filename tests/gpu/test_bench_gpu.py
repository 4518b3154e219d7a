"""``compress bench`` on a GPU: CUDA-event timing, fp16, and the GPU backends that
this machine has (skipped without CUDA; TensorRT cells skip without TensorRT)."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from compressor.bench.backends import BACKENDS, Workload
from compressor.bench.timing import CUDA_WALL, TimingConfig, measure
from compressor import CostModel, ModelSpec, SelectionConfig, analyse, apply_plan, group_l2, save_pruned, select_plan
from compressor.cli import main
from compressor.models import build_model

pytestmark = pytest.mark.gpu
FAST = ["--warmup-s", "0.1", "--warmup-runs", "3", "--min-runs", "10", "--min-time-s", "0.1", "--rounds", "2"]


@pytest.fixture(scope="module")
def pruned_file(tmp_path_factory):
    model = build_model("resnet20").eval()
    graph = analyse(model, torch.zeros(1, 3, 32, 32))
    plan = select_plan(graph, CostModel(graph, model), group_l2(graph, model), SelectionConfig(0.5))
    path = tmp_path_factory.mktemp("gpu-bench") / "r20.pt"
    save_pruned(path, apply_plan(model, graph, plan), ModelSpec("resnet20", 10, (3, 32, 32)), plan)
    return path


def test_cuda_events_time_gpu_work():
    class Model:
        def module(self):
            return torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU())

    runnable = BACKENDS["torch"].prepare(Model(), Workload(8, "fp32", "cuda", None, (64, 56, 56)))
    assert runnable.timer == CUDA_WALL
    result = measure([runnable], TimingConfig(warmup_s=0.05, warmup_runs=3, min_runs=20, min_time_s=0.0, rounds=2))
    assert len(result.samples_ms[0]) >= 20 and min(result.samples_ms[0]) > 0


def test_gpu_bench_fp32_and_fp16(pruned_file, tmp_path):
    result = CliRunner().invoke(main, ["bench", str(pruned_file), "--device", "cuda", "--backend",
                                       "torch,onnxruntime,onnxruntime-trt,tensorrt", "--precision", "fp32,fp16",
                                       "--batch-size", "1,8", "--out", str(tmp_path), *FAST])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "bench.json").read_text())
    torch_records = [r for r in report["records"] if r["backend"] == "torch"]
    assert {(r["precision"], r["batch_size"]) for r in torch_records} == {("fp32", 1), ("fp32", 8), ("fp16", 1), ("fp16", 8)}
    assert all(r["timer"] == CUDA_WALL for r in report["records"])  # one method for every GPU backend
    assert report["environment"]["gpu"]["name"]
    for record in report["records"]:
        if record["backend"] == "onnxruntime":  # --device cuda: the CUDA provider, never a silent CPU fallback
            assert record["provider"] == "CUDAExecutionProvider"
        if record["backend"] == "onnxruntime-trt":  # fp16 as TensorRT's flag, no per-node CPU fallback
            assert record["provider_options"]["trt_fp16_enable"] == ("1" if record["precision"] == "fp16" else "0")
            assert record["session_config"] == {"session.disable_cpu_ep_fallback": "1"}
    covered = {r["backend"] for r in report["records"]} | {s["backend"] for s in report["skipped"]}
    assert covered == {"torch", "onnxruntime", "onnxruntime-trt", "tensorrt"}

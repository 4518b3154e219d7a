"""A bench never aborts on one cell: an export the gate refuses, or a subject that fails
while it is timed, is listed as skipped with its reason and every other cell is timed."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from compressor.bench.bench import BenchConfig, run_bench
from compressor.bench.subjects import model_pair
from compressor.bench.timing import TimingConfig
from compressor.errors import CompressorError

QUICK = TimingConfig(warmup_s=0, warmup_runs=1, min_runs=2, min_time_s=0, rounds=1)


class BranchOnPixels(nn.Module):
    """Branches on the input's values: torch.export refuses it and the trace that would
    stand in freezes the branch, so the ONNX export is refused (TraceRefused)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x) if x.mean() > 0.5 else -self.conv(x)


class FailsWhenTimed(nn.Module):
    """Runs once (the warm-up), then fails the way a broken engine does: with our error."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 1:
            raise CompressorError("the engine failed to execute")
        return self.conv(x)


def test_a_refused_export_skips_only_its_cells(tmp_path: Path):
    group = model_pair("branchy", BranchOnPixels(), BranchOnPixels(), (3, 16, 16), tmp_path)
    config = BenchConfig(backends=("torch", "onnxruntime"), device="cpu", batch_sizes=(1, 2), timing=QUICK)
    result = run_bench([group], config)
    assert {(r["backend"], r["batch_size"]) for r in result.records} == {("torch", 1), ("torch", 2)}
    assert {(s["backend"], s["batch_size"]) for s in result.skipped} == {("onnxruntime", 1), ("onnxruntime", 2)}
    assert all("refused" in s["reason"] and "\n" not in s["reason"] for s in result.skipped)


def test_a_subject_that_fails_while_timed_is_skipped_with_its_reason(tmp_path: Path):
    group = model_pair("flaky", nn.Sequential(nn.Conv2d(3, 4, 3)), FailsWhenTimed(), (3, 16, 16), tmp_path)
    config = BenchConfig(backends=("torch",), device="cpu", batch_sizes=(1,), timing=QUICK)
    result = run_bench([group], config)
    assert result.records == []
    assert [s["model"] for s in result.skipped] == ["flaky dense", "flaky pruned"]
    assert all(s["reason"] == "failed while timed: the engine failed to execute" for s in result.skipped)


class ReturnsNone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x), None


def test_an_output_onnx_cannot_hold_is_a_skip_with_one_line_not_a_traceback(tmp_path: Path):
    """bench exports without compress export's pipeline; the output rule must hold there too."""
    group = model_pair("none", ReturnsNone(), ReturnsNone(), (3, 16, 16), tmp_path)
    config = BenchConfig(backends=("onnxruntime",), device="cpu", batch_sizes=(1,), timing=QUICK)
    result = run_bench([group], config)
    assert result.records == [] and len(result.skipped) == 2
    assert all("NoneType, not a tensor" in s["reason"] for s in result.skipped)


def test_every_backend_on_a_device_is_timed_one_way_and_bench_md_says_which(tmp_path: Path):
    from compressor.bench.report import format_markdown
    from compressor.bench.timing import CUDA_WALL, PERF_COUNTER, timer_for

    assert (timer_for("cpu"), timer_for("cuda")) == (PERF_COUNTER, CUDA_WALL)
    group = model_pair("small", nn.Sequential(nn.Conv2d(3, 4, 3)), nn.Sequential(nn.Conv2d(3, 2, 3)), (3, 16, 16),
                       tmp_path)
    config = BenchConfig(backends=("torch", "onnxruntime"), device="cpu", batch_sizes=(1,), timing=QUICK)
    result = run_bench([group], config)
    assert {r["backend"] for r in result.records} == {"torch", "onnxruntime"}
    assert {r["timer"] for r in result.records} == {PERF_COUNTER}
    assert "Clock: host clock (perf_counter) around each call." in format_markdown(result)

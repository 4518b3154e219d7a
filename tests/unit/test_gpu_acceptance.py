"""The GPU acceptance run (benchmarks/gpu_acceptance.py), checked without a GPU.

Every real step runs once on the CPU at the dry run's tiny sizes (in this process, so the
suite pays for torch's import once); the child-process path is checked on the cheap
steps: a result that comes back, a step killed at its budget, a child that dies without
a result.  A step that fails is recorded and the rest still run; without CUDA the
command refuses in one line before it creates anything.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_acceptance as ga

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """Every step of the table, on the CPU, in order: (report, [markdown, json])."""
    root = tmp_path_factory.mktemp("gpu-acceptance")
    job = ga.Job(ga.DRY_RUN, root / "work", dry_run=True)
    return ga.run_all(job, ga.STEPS, root / "out", "python -m benchmarks.gpu_acceptance --dry-run", launch=ga.run_here)


def steps_of(report: dict) -> dict[str, dict]:
    return {step["name"]: step for step in report["steps"]}


def test_the_budgets_add_up_to_less_than_eight_minutes():
    assert sum(step.budget_s for step in ga.STEPS) + ga.STARTUP_MARGIN_S <= ga.RUN_BUDGET_S == 480
    assert len(ga.STEP_NAMES) == len(ga.STEPS)


def test_the_dry_run_runs_every_step_and_writes_one_markdown_and_one_json(dry_run):
    report, (md_path, json_path) = dry_run
    assert [s["name"] for s in report["steps"]] == [s.name for s in ga.STEPS]
    assert (md_path.name, json_path.name) == ("gpu_acceptance_dry-run-cpu.md", "gpu_acceptance_dry-run-cpu.json")
    assert sorted(p.name for p in md_path.parent.iterdir()) == sorted([md_path.name, json_path.name])
    written = json.loads(json_path.read_text())
    assert written == json.loads(json.dumps(report, default=str))
    assert written["format"] == ga.FORMAT and written["dry_run"] is True and written["failed"] == []
    assert written["environment"]["versions"]["torch"] and "gpu" in written["environment"]
    for step in written["steps"]:
        assert step["status"] in ("ok", "skipped"), step
        assert step["detail"] and 0 <= step["seconds"] and step["budget_s"] == ga.STEP_NAMES[step["name"]].budget_s
    markdown = md_path.read_text()
    for step in written["steps"]:
        assert f"| {step['name']} | {step['status']} |" in markdown
    assert "## bench-torch" in markdown and "## train-amp" in markdown and "Machine: " in markdown


def test_each_step_does_its_work_at_tiny_sizes(dry_run):
    steps = steps_of(dry_run[0])
    assert steps["environment"]["status"] == "ok"
    assert steps["prune"]["data"]["pruned_macs"] < steps["prune"]["data"]["dense_macs"]
    assert steps["pytest-gpu"]["data"]["command"].startswith("-m pytest -q -p no:cacheprovider -m gpu")
    train = steps["train-amp"]["data"]
    assert [r["model"] for r in train["rows"]] == ["resnet20 dense", "resnet20 pruned"]
    assert all(r["images_per_s"] > 0 for r in train["rows"])
    for name in ("bench-torch", "bench-onnxruntime-cuda"):
        records = steps[name]["data"]["records"]
        assert steps[name]["status"] == "ok"
        cells = {(v, b) for v in ("dense", "pruned") for b in (1, 2)}
        assert {(r["variant"], r["batch_size"]) for r in records} == cells
        assert all(s["precision"] == "fp16" for s in steps[name]["data"]["skipped"])  # a GPU precision, skipped here
    for name in ("bench-tensorrt-fp16", "bench-tensorrt-int8"):
        assert steps[name]["status"] == "skipped" and "TensorRT" in steps[name]["detail"]
    table = steps["latency-table"]
    assert table["status"] == "ok" and table["data"]["layers"] == 22  # ResNet-20's convs and its linear layer
    assert table["data"]["target"]["device"] == "cpu" and table["data"]["dense_ms"] > 0


def boom(ctx):
    raise RuntimeError("the engine\nfailed to build")


FAKE = (ga.Step("first", 5, lambda ctx: ga.Outcome("ok", "fine"), "a step that works"),
        ga.Step("broken", 5, boom, "a step that raises"),
        ga.Step("after", 5, lambda ctx: ga.Outcome("skipped", "nothing to do here"), "a step after it"))


def test_a_step_that_says_it_failed_keeps_its_data_and_its_message():
    def judged(ctx):
        raise ga.StepFailed("pytest exit 1: 1 failed, 9 passed", {"summary": "1 failed, 9 passed"})

    result = ga.run_here(ga.Step("pytest-gpu", 5, judged, "x"), ga.Job(ga.DRY_RUN, Path("unused"), True))
    assert (result.status, result.detail, result.data) == (
        "failed", "pytest exit 1: 1 failed, 9 passed", {"summary": "1 failed, 9 passed"})


def test_a_failing_step_is_recorded_in_one_line_and_the_others_still_run(tmp_path):
    job = ga.Job(ga.DRY_RUN, tmp_path / "work", dry_run=True)
    report, (md_path, _) = ga.run_all(job, FAKE, tmp_path, "test", launch=ga.run_here)
    assert [(s["name"], s["status"], s["detail"]) for s in report["steps"]] == [
        ("first", "ok", "fine"), ("broken", "failed", "RuntimeError: the engine failed to build"),
        ("after", "skipped", "nothing to do here")]
    assert report["failed"] == ["broken"]
    assert "1 step(s) failed: broken" in md_path.read_text()


def test_the_exit_code_is_non_zero_when_a_step_failed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ga, "STEPS", FAKE)
    monkeypatch.setattr(ga, "STEP_NAMES", {s.name: s for s in FAKE})
    monkeypatch.setattr(ga, "run_isolated", ga.run_here)
    assert ga.main(["--dry-run", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]) == 1
    assert ga.main(["--dry-run", "--steps", "first,after", "--out", str(tmp_path / "out"), "--work",
                    str(tmp_path / "work")]) == 0
    assert "failed: broken" in capsys.readouterr().out


def test_a_step_runs_in_its_own_process_and_reports_back(tmp_path):
    job = ga.Job(ga.DRY_RUN, tmp_path, dry_run=True)
    result = ga.run_isolated(ga.STEP_NAMES["environment"], job)
    assert result.status == "ok" and result.data["versions"]["torch"]
    assert job.log_file("environment").is_file()


def test_a_step_over_its_budget_is_killed_and_recorded(tmp_path):
    """Unscaled, so the child is killed long before it could import torch, loaded machine or not."""
    job = ga.Job(dataclasses.replace(ga.DRY_RUN, budget_scale=1.0), tmp_path, dry_run=True)
    result = ga.run_isolated(dataclasses.replace(ga.STEP_NAMES["environment"], budget_s=0.3), job)
    assert (result.status, result.detail) == ("failed", "over its 0.3 s budget (killed)")


def test_a_child_that_dies_without_a_result_is_a_failure_naming_its_last_log_line(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("loading the engine\nSegmentation fault (core dumped)\n")
    result = ga.collect(FAKE[0], tmp_path / "missing.json", log, -11, 1.5)
    assert (result.status, result.detail) == (
        "failed", "exited with code -11 and no result; log: Segmentation fault (core dumped)")


def test_a_killed_bench_step_keeps_the_batches_it_finished(tmp_path):
    ctx = ga.Context(ga.Job(ga.DRY_RUN, tmp_path, True), "first", 5)
    ctx.save_partial({"records": [1]})
    result = ga.collect(FAKE[0], ctx.job.result_file("first"), tmp_path / "none.log", None, 5.0)
    assert (result.status, result.data) == ("failed", {"records": [1]})
    assert result.detail == "over its 5 s budget (killed; its finished part kept)"


def test_a_cell_the_backend_could_run_but_did_not_fails_the_step():
    cell = {"backend": "torch", "batch_size": 1, "model": "resnet20 pruned", "device": "cpu"}
    broken = {"config": {"device": "cpu"}, "records": [], "skipped": [{**cell, "precision": "fp32", "reason": "boom"}]}
    with pytest.raises(ga.StepFailed, match="^resnet20 pruned fp32 batch 1: boom$") as failed:
        ga.bench_outcome(broken)
    assert failed.value.data is broken  # what it did time stays in the report
    unavailable = {**broken, "skipped": [{**cell, "precision": "fp16", "reason": "fp16 is a GPU precision here"}]}
    assert ga.bench_outcome(unavailable).status == "skipped"


def test_the_latency_table_step_says_why_a_target_is_not_measured_yet(tmp_path):
    """On a GPU the step asks for ONNX Runtime CUDA fp16, which --speedup cannot measure yet:
    skipped with the tool's own reason, not a crash and not a silent pass."""
    settings = dataclasses.replace(ga.DRY_RUN, device="cuda")
    result = ga.step_latency_table(ga.Context(ga.Job(settings, tmp_path, True), "latency-table", 10.0))
    assert result.status == "skipped" and result.detail.startswith("--speedup cannot measure onnxruntime on cuda in fp16")


def test_without_cuda_it_refuses_in_one_line_before_creating_anything(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_acceptance", "--out", str(tmp_path / "out")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)  # a hang guard, not a speed check
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("Error: no CUDA device: PyTorch ")
    assert not (tmp_path / "out").exists()

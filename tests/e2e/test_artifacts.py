"""Every JSON artifact a real run, export and bench write matches its one typed definition
(``compressor.artifacts``): no key missing, none undeclared, every value of its type."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from compressor.artifacts import BenchReport, ExportManifest, PlanFile, RunSummary, problems
from compressor.cli import main
from tests.hostile import TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST_BENCH = ["--backend", "torch,onnxruntime", "--batch-size", "1", "--warmup-s", "0", "--warmup-runs", "1",
              "--min-runs", "3", "--min-time-s", "0", "--rounds", "1", "--threads", "1"]


def invoke(*args: str) -> None:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    run = tmp_path_factory.mktemp("artifacts") / "run"
    invoke("prune", *TINY, "--out", str(run))
    invoke("export", str(run), "--opset", "17")
    invoke("bench", str(run), *FAST_BENCH)
    return run


def load(path):
    return json.loads(path.read_text())


def test_summary_json(written):
    assert problems(RunSummary, load(written / "summary.json")) == []


def test_plan_json(written):
    plans = load(written / "plan.json")
    assert isinstance(plans, list) and plans
    assert [p for plan in plans for p in problems(PlanFile, plan)] == []


def test_manifest_json(written):
    assert problems(ExportManifest, load(written / "export" / "manifest.json")) == []


def test_bench_json(written):
    report = load(written / "bench" / "bench.json")
    assert {r["variant"] for r in report["records"]} == {"dense", "pruned"}
    assert problems(BenchReport, report) == []


def test_problems_names_what_is_missing_undeclared_or_mistyped(written):
    summary = load(written / "summary.json")
    del summary["top1"]
    summary["surprise"] = 1
    summary["epochs"] = "2"
    summary["data"]["seed"] = True
    found = problems(RunSummary, summary)
    assert found == ["RunSummary: missing 'top1'", "RunSummary: 'surprise' is not in RunSummary",
                     "RunSummary.data.seed: expected int, got True", "RunSummary.epochs: expected int, got '2'"]
    manifest = load(written / "export" / "manifest.json")
    manifest["status"] = "fine"
    assert problems(ExportManifest, manifest) == ["ExportManifest.status: 'fine' is not one of "
                                                  "['ok', 'unverified', 'incomplete', 'failed']"]

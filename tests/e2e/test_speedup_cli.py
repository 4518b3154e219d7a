"""``--speedup X`` at the command line: refused with --flops-reduction, for a target no table
can be measured on, with a damaged table, and, before any training, when the speed-up is
out of reach (naming the best reachable); ``compress info --speedup`` prices a plan.  The
tables here are written by hand (tests/latency_tables.py); tests/e2e/test_speedup_measured.py
measures one with ONNX Runtime."""
from __future__ import annotations

import json

import pytest
import torch

from compressor.engine.analysis.graph import analyse
from compressor.models import build_model
from tests.hostile import assert_one_line_error, invoke, one_line_error
from tests.latency_tables import write_macs_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["prune", "--model", "resnet20", "--dataset", "synthetic", "--synthetic-train", "64", "--synthetic-val", "32",
        "--batch-size", "32", "--epochs", "2", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    graph = analyse(build_model("resnet20"), torch.zeros(1, 3, 32, 32))
    return write_macs_table(graph, tmp_path_factory.mktemp("tables") / "resnet20.json", fixed_ms=0.01)


def test_speedup_and_flops_reduction_together_are_refused(tmp_path):
    one_line_error(invoke(*TINY, "--speedup", "2", "--flops-reduction", "0.3", "--out", tmp_path / "run"),
                   "--speedup and --flops-reduction are exclusive")
    one_line_error(invoke("info", "resnet20", "--speedup", "2", "--flops-reduction", "0.3"), "exclusive")


def test_a_config_file_flops_reduction_with_speedup_is_refused(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("flops_reduction: 0.3\n")
    one_line_error(invoke(*TINY, "--config", config, "--speedup", "2", "--out", tmp_path / "run"), "exclusive")


def test_an_unreachable_speedup_is_refused_before_training(tmp_path, table):
    out = tmp_path / "run"
    line = one_line_error(invoke(*TINY, "--speedup", "50", "--latency-table", table, "--out", out),
                          "50.00x speed-up", "unreachable", "best reachable is")
    best = float(line.split("best reachable is ")[1].split("x")[0])
    assert 2 < best < 50
    assert not (out / "metrics.jsonl").exists() and not (out / "checkpoint.pt").exists()


def test_a_corrupt_latency_table_is_refused_in_one_line(tmp_path, table):
    broken = tmp_path / "broken.json"
    broken.write_text(table.read_text()[:200])
    one_line_error(invoke(*TINY, "--speedup", "2", "--latency-table", broken, "--out", tmp_path / "run"),
                   str(broken), "corrupt")
    one_line_error(invoke("info", "resnet20", "--speedup", "2", "--latency-table", broken), str(broken), "corrupt")


def test_a_table_of_another_model_is_refused(tmp_path, table):
    one_line_error(invoke(*TINY, "--model", "resnet32", "--speedup", "2", "--latency-table", table, "--out", tmp_path / "r"),
                   "measured for another model")


@pytest.mark.parametrize("flags, exit_code, hint", [
    (["--deploy-backend", "torch"], 1, "cannot measure torch on cpu in fp32 yet"),
    (["--deploy-precision", "fp16"], 1, "cannot measure onnxruntime on cpu in fp16 yet"),
    (["--schedule", "gradual"], 1, "--schedule gradual"),
    # the option types' own checks: usage errors stating the bound
    (["--speedup", "1"], 2, "--speedup"),
    (["--speedup", "nan"], 2, "must be finite"),
    (["--speedup", "inf"], 2, "must be finite"),
    (["--deploy-batch", str(2**40)], 2, "1<=x<=2147483647"),
])
def test_unsupported_combinations_are_refused_in_one_line(tmp_path, flags, exit_code, hint):
    args = [*TINY, "--out", tmp_path / "run", *flags]
    if "--speedup" not in flags:
        args += ["--speedup", "2"]
    result = invoke(*args)
    if exit_code == 1:
        one_line_error(result, hint)  # and nothing on stdout either
    else:
        assert_one_line_error(result, 2, hint)
    assert not (tmp_path / "run").exists()


def test_info_prices_a_plan_with_the_table(table):
    result = invoke("info", "resnet20", "--speedup", "3", "--latency-table", table, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["speedup_target"] == 3 and 3 <= report["predicted_speedup"] <= 3.3
    assert report["flops_reduction_target"] is None


def test_a_speedup_run_prunes_to_the_predicted_speedup_and_measures_it(tmp_path, table):
    """The whole path: the given table priced the plan, is kept with the run, and the run ends
    with dense vs pruned timed on the table's target (the number itself is this CPU's, not checked)."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "run"
    result = invoke(*TINY, "--schedule", "oneshot", "--speedup", "1.6", "--latency-table", table, "--out", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["speedup_target"] == 1.6 and 1.6 <= summary["predicted_speedup"] <= 1.8
    assert summary["measured_speedup"] > 0 and summary["measured"]["backend"] == "onnxruntime"
    assert summary["measured"]["machine"]  # where it was measured: the table may be from another machine
    assert json.loads((out / "latency_table.json").read_text()) == json.loads(table.read_text())
    assert "speed-up asked 1.60x" in result.output
    before = {path: path.read_bytes() for path in out.iterdir() if path.is_file()}
    one_line_error(invoke("prune", "--resume", out, "--latency-table", table), "--latency-table", "refused")
    one_line_error(invoke("prune", "--resume", out, "--deploy-batch", "8"), "--deploy-batch", "refused")
    assert {path: path.read_bytes() for path in out.iterdir() if path.is_file()} == before


@pytest.mark.parametrize("flags, reader", [
    (["--deploy-batch", "8"], "only --speedup reads"),
    (["--deploy-precision", "int8", "--deploy-threads", "1"], "only --speedup reads"),
    (["--deploy-device", "cpu"], "only --speedup or --round-to auto read"),
    (["--deploy-backend", "onnxruntime", "--deploy-batch", "2"], "only --speedup reads"),
])
def test_deploy_options_nothing_would_read_are_refused(tmp_path, flags, reader, table):
    """Without --speedup no plan is priced on the deploy target, so its options would be ignored."""
    line = one_line_error(invoke(*TINY, "--out", tmp_path / "run", *flags), reader, "refused", "add --speedup")
    assert all(flag in line for flag in flags if flag.startswith("--"))
    assert not (tmp_path / "run").exists()
    one_line_error(invoke("info", "resnet20", *flags), "only --speedup reads it")  # info has no --round-to auto
    one_line_error(invoke(*TINY, "--out", tmp_path / "run", "--latency-table", table), "--latency-table", "only --speedup")


"""A latency table measured for real with ONNX Runtime on this CPU (a tiny model, few runs):
every layer priced on its grid, the dense model predicted as measured, monotone in width,
cached as JSON on a second call, and a damaged cache file refused in one line naming it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compressor.bench.latency import ANCHOR_CUTS, DeployTarget, latency_table
from compressor.bench.timing import TimingConfig
from compressor.engine.analysis.graph import analyse
from compressor.engine.latency import LatencyModel
from compressor.errors import CompressorError

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = TimingConfig(warmup_s=0.0, warmup_runs=2, min_runs=3, min_time_s=0.0, rounds=2)


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()


def test_a_measured_table_is_cached_and_a_damaged_cache_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model, target = tiny(), DeployTarget(threads=1)
    table, cached = latency_table(model, (3, 8, 8), target, timing=FAST, anchor_timing=FAST)
    assert not cached and table.measure_s > 0 and table.dense_ms > 0
    assert len(table.anchors) == len(ANCHOR_CUTS) and table.anchors[-1][1] == table.dense_ms
    assert {layer.op for layer in table.layers} == {"0 conv", "2 conv", "6 linear"}
    graph = analyse(model, torch.zeros(1, 3, 8, 8))
    latency = LatencyModel(graph, table)
    assert latency.dense_ms == pytest.approx(table.dense_ms)  # the dense model is an anchor: predicted as measured
    kept = np.ones(graph.labels.size, dtype=bool)
    narrower = kept.copy()
    narrower[graph.groups[0].classes[8:]] = False
    assert latency.estimate(narrower) <= latency.estimate(kept)

    again, cached = latency_table(model, (3, 8, 8), target, timing=FAST, anchor_timing=FAST)
    assert cached and again.to_dict() == table.to_dict()
    [path] = (tmp_path / "onecycle-compress" / "latency").glob("*.json")
    path.write_text(path.read_text()[:-40])
    with pytest.raises(CompressorError) as caught:
        latency_table(model, (3, 8, 8), target, timing=FAST, anchor_timing=FAST)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_info_measures_a_table_and_keeps_its_json_clean(tmp_path, monkeypatch):
    """compress info --speedup --json measuring a table: stdout is the JSON alone (what the
    measurement says goes to stderr), the plan priced at least at the asked speed-up (a small one:
    at 8x8 pixels the runtime's per-call overhead bounds what any plan gains)."""
    import json

    from tests.hostile import invoke

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    result = invoke("info", "resnet20", "--input-size", "3,8,8", "--speedup", "1.05", "--deploy-threads", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["predicted_speedup"] >= 1.05 and report["timings"]["latency_table_s"] > 0
    assert "latency table of 22 layers" in result.stderr
    [table] = (tmp_path / "onecycle-compress" / "latency").glob("*.json")
    assert json.loads(table.read_text())["target"]["threads"] == 1  # --deploy-threads is the table's target


def test_an_int8_table_times_the_layers_and_models_quantized(tmp_path, monkeypatch):
    """--deploy-precision int8 on ONNX Runtime's CPU: every layer and anchor timed as the
    uint8-activation QDQ file the provider runs; a table of its own (another cache key)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model = tiny()
    fp32, _ = latency_table(model, (3, 8, 8), DeployTarget(threads=1), timing=FAST, anchor_timing=FAST)
    int8, cached = latency_table(model, (3, 8, 8), DeployTarget(precision="int8", threads=1), timing=FAST,
                                 anchor_timing=FAST)
    assert not cached and int8.target["precision"] == "int8" and int8.target != fp32.target
    assert len(int8.anchors) == len(ANCHOR_CUTS) and int8.dense_ms > 0
    assert len(list((tmp_path / "onecycle-compress" / "latency").glob("*.json"))) == 2


def test_a_one_layer_file_in_int8_is_the_uint8_activation_qdq_form(tmp_path):
    import onnx

    from compressor.bench.rounding import ConvSubject, LayerShape

    subject = ConvSubject.of(LayerShape(8, 16, (8, 8)), tmp_path)
    graph = onnx.load(str(subject.onnx("int8-asymmetric"))).graph
    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert quantize and any(n.op_type == "Conv" for n in graph.node)
    zero_points = {i.name: i.data_type for i in graph.initializer}
    assert zero_points[quantize[0].input[2]] == onnx.TensorProto.UINT8


def test_an_unusable_cache_location_measures_anyway_and_says_so(tmp_path, monkeypatch, caplog):
    """A file where the cache folder should be (or a read-only home): the table is measured
    and used, a warning names the path, and nothing is written anywhere else."""
    import logging

    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    before = sorted(p.name for p in tmp_path.iterdir())
    with caplog.at_level(logging.WARNING):
        table, cached = latency_table(tiny(), (3, 8, 8), DeployTarget(threads=1), timing=FAST, anchor_timing=FAST)
    assert not cached and table.dense_ms > 0
    assert any("could not cache the latency table" in r.getMessage() and str(blocker) in r.getMessage()
               for r in caplog.records)
    assert sorted(p.name for p in tmp_path.iterdir()) == before and blocker.read_text() == "not a folder"

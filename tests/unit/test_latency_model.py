"""The latency cost model (compressor.engine.latency) and the --speedup budget in selection:
monotone in width, tables read as data and refused in one line when damaged or foreign,
cache keys that tell targets apart, a speed-up target met and an unreachable one refused."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from compressor.bench.latency import (DeployTarget, _floor_of, _Layer, _layers, cache_path, distinct_shapes, grid,
                                      robust_ms, target_key)
from compressor.engine.analysis.graph import analyse
from compressor.engine.cost import CostModel
from compressor.engine.latency import LatencyModel, LatencyTable, LayerLatency
from compressor.engine.plan import kept_class_mask
from compressor.engine.selection import SelectionConfig, UnreachableSpeedupError, select_plan
from compressor.errors import CompressorError
from compressor.models import build_model
from compressor.schedules.onecycle import OneCyclePruner, PruneConfig
from tests.latency_tables import macs_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def resnet20():
    model = build_model("resnet20")
    graph = analyse(model, torch.zeros(1, 3, 32, 32))
    return model, graph


def test_a_noisy_grid_is_made_monotone_and_interpolation_keeps_it():
    rng = np.random.default_rng(0)
    noisy = np.add.outer(np.arange(4.0), np.arange(4.0)) + rng.normal(0, 2.0, (4, 4))  # dips where noise wins
    layer = LayerLatency.monotone("c conv", ((8, 16, 24, 32), (8, 16, 24, 32)), noisy)
    widths = np.arange(1, 40)
    for fixed in widths:
        along_out = [layer.at((w, fixed)) for w in widths]
        along_in = [layer.at((fixed, w)) for w in widths]
        assert np.all(np.diff(along_out) >= 0) and np.all(np.diff(along_in) >= 0)
    assert layer.at((8, 8)) == pytest.approx(layer.ms[0, 0]) and layer.at((32, 32)) == pytest.approx(layer.ms[-1, -1])


def test_the_model_is_monotone_in_every_width(resnet20):
    """Removing channels never makes a plan slower in the model (random removal orders)."""
    _, graph = resnet20
    model = LatencyModel(graph, macs_table(graph, fixed_ms=0.1))
    rng = np.random.default_rng(1)
    for _ in range(3):
        kept = np.ones(graph.labels.size, dtype=bool)
        previous = model.estimate(kept)
        assert previous == pytest.approx(model.dense_ms)
        for index in rng.permutation(graph.labels.size)[:60]:
            kept[index] = False
            now = model.estimate(kept)
            assert now <= previous + 1e-12
            previous = now


def test_a_speedup_target_is_met_on_the_predicted_latency(resnet20):
    model, graph = resnet20
    latency = LatencyModel(graph, macs_table(graph, fixed_ms=0.05))
    scores = np.random.default_rng(0).random(graph.labels.size)
    for speedup in (1.5, 2.0, 3.0):
        plan = select_plan(graph, CostModel(graph, model), scores, SelectionConfig(0.5, speedup=speedup), latency)
        reached = latency.speedup(kept_class_mask(graph, plan))
        assert speedup <= reached <= speedup * 1.1


def test_an_unreachable_speedup_names_the_best_reachable(resnet20):
    model, graph = resnet20
    latency = LatencyModel(graph, macs_table(graph))
    with pytest.raises(UnreachableSpeedupError) as caught:
        select_plan(graph, CostModel(graph, model), np.zeros(graph.labels.size), SelectionConfig(0.5, speedup=50), latency)
    best = caught.value.reachable
    assert 2 < best < 50 and f"best reachable is {best:.2f}x" in str(caught.value) and "\n" not in str(caught.value)


def test_the_pruner_refuses_an_unreachable_speedup_before_training(resnet20):
    _, graph = resnet20
    model = build_model("resnet20")
    with pytest.raises(UnreachableSpeedupError):
        OneCyclePruner(model, torch.zeros(1, 3, 32, 32), PruneConfig(speedup=50, epochs=4), latency=macs_table(graph))
    with pytest.raises(CompressorError, match="needs the deploy target's latency table"):
        OneCyclePruner(model, torch.zeros(1, 3, 32, 32), PruneConfig(speedup=2, epochs=4))
    with pytest.raises(CompressorError, match="--schedule gradual"):
        PruneConfig(speedup=2, schedule="gradual")


def test_a_speedup_budget_asks_for_no_macs_fraction(resnet20, caplog):
    """A 3x speed-up removes about two thirds of the MACs; the default --flops-reduction
    (0.5) is not what was asked, so no "asked for 50% fewer MACs" warning may follow."""
    _, graph = resnet20
    pruner = OneCyclePruner(build_model("resnet20"), torch.zeros(1, 3, 32, 32),
                            PruneConfig(speedup=3, epochs=1, schedule="oneshot"), latency=macs_table(graph))
    with caplog.at_level("WARNING", logger="compressor"):
        pruner.epoch_start(0)
    assert pruner.flops_reduction > 0.51 + 0.01
    assert not [r for r in caplog.records if "fewer MACs" in r.getMessage()]


def test_a_table_round_trips_as_json(resnet20, tmp_path):
    _, graph = resnet20
    table = macs_table(graph, fixed_ms=0.2)
    table.save(tmp_path / "t.json")
    again = LatencyTable.load(tmp_path / "t.json", expected=table.target)
    kept = np.random.default_rng(2).random(graph.labels.size) > 0.3
    assert LatencyModel(graph, again).estimate(kept) == pytest.approx(LatencyModel(graph, table).estimate(kept))


@pytest.mark.parametrize("damage", [
    lambda text: text[: len(text) // 2],  # cut short
    lambda text: text.replace('"anchors": [', '"anchors": [[0.0, -1.0], ', 1),
    lambda text: text.replace('"ms": [', '"ms": "x", "old": [', 1),
    lambda text: json.dumps({"format": "compressor.latency-table/2"}),
    lambda text: text.replace("latency-table/2", "latency-table/1"),  # the first form: no anchors
    lambda text: "\x80\x04pickle",
])
def test_a_corrupt_table_is_refused_in_one_line_naming_the_file(resnet20, tmp_path, damage):
    _, graph = resnet20
    path = tmp_path / "cache.json"
    macs_table(graph).save(path)
    path.write_text(damage(path.read_text()))
    with pytest.raises(CompressorError) as caught:
        LatencyTable.load(path)
    message = str(caught.value)
    assert str(path) in message and "corrupt" in message and "\n" not in message


def test_a_foreign_table_is_refused_in_one_line(resnet20, tmp_path):
    _, graph = resnet20
    path = tmp_path / "cache.json"
    table = macs_table(graph)
    table.save(path)
    with pytest.raises(CompressorError, match="another target .*batch_size") as caught:
        LatencyTable.load(path, expected={**table.target, "batch_size": 32})
    assert str(path) in str(caught.value)
    other = analyse(build_model("resnet32"), torch.zeros(1, 3, 32, 32))
    with pytest.raises(CompressorError, match="measured for another model"):
        LatencyModel(other, table)


ENVIRONMENT = {"cpu": "Test CPU", "gpu": {"name": "Test GPU"}, "versions": {"onnxruntime": "1.0", "torch": "2.0"}}


def _key(target: DeployTarget, environment=ENVIRONMENT) -> dict:
    layer = _Layer("c conv", torch.nn.Conv2d(16, 16, 3, padding=1), (8, 8), ((8, 16), (8, 16)))
    return target_key(target, (3, 32, 32), [layer], [8, 8], environment)


def test_cache_keys_differ_by_backend_device_precision_batch_and_versions():
    base = DeployTarget(threads=2)
    variants = [dataclasses.replace(base, backend="tensorrt"), dataclasses.replace(base, device="cuda"),
                dataclasses.replace(base, precision="int8"), dataclasses.replace(base, batch_size=32),
                dataclasses.replace(base, threads=1)]
    keys = [_key(base)] + [_key(t) for t in variants]
    keys.append(_key(base, {**ENVIRONMENT, "versions": {"onnxruntime": "1.1", "torch": "2.0"}}))
    paths = {cache_path(k) for k in keys}
    assert len(paths) == len(keys)
    assert cache_path(_key(base)) == cache_path(_key(DeployTarget(threads=2)))  # and the same target, the same file


def test_unsupported_targets_are_refused_in_one_line():
    for target in (DeployTarget(backend="tensorrt", device="cuda"), DeployTarget(precision="fp16")):
        with pytest.raises(CompressorError, match="cannot measure .* yet .*supported: onnxruntime cpu fp32; "
                                                  "onnxruntime cpu int8") as caught:
            target.check_supported()
        assert "\n" not in str(caught.value)


def test_the_grid_covers_the_plan_widths():
    assert grid(64, 16, 8) == (16, 40, 64)  # the narrowest, a multiple of 8 between, the dense one
    assert grid(64, 16, 8, points=4) == (16, 32, 48, 64)
    assert grid(16, 8, 8) == (8, 16)
    assert grid(10, 10, 1) == (10,)  # a frozen factor


def test_repeated_blocks_share_their_timed_shapes():
    """ResNet-56 repeats ResNet-20's blocks: the same shapes to time, however many layers."""
    shapes = {}
    for name in ("resnet20", "resnet56"):
        model = build_model(name).eval()
        graph = analyse(model, torch.zeros(1, 3, 32, 32))
        layers = _layers(model, graph, (3, 32, 32), _floor_of(graph, None, 0.75, 1), None)
        assert all(len(w) <= 3 and w[-1] == f.size for l, t in zip(layers, [t for t in graph.terms if t.factors])
                   for w, f in zip(l.widths, t.factors))
        shapes[name] = distinct_shapes(layers)
        assert len(shapes[name]) < sum(len(l.points()) for l in layers) / 2
    assert shapes["resnet20"] == shapes["resnet56"]


def test_a_subjects_latency_is_the_lower_quartile_of_its_calls():
    """Interference only lengthens calls: a quarter of them preempted moves nothing."""
    assert robust_ms([1.0] * 75 + [40.0] * 25) == pytest.approx(1.0)
    assert robust_ms([2.0, 1.0, 3.0, 4.0, 5.0]) == pytest.approx(2.0)
    for bad in ([], [1.0, float("nan")], [-1.0]):
        with pytest.raises(CompressorError, match="no usable timings"):
            robust_ms(bad)


def test_layers_too_fast_to_time_price_every_plan_at_the_dense_latency(resnet20):
    """A tiny model on a quiet CPU can time every layer at 0 ms: every anchor then sits at
    the same layer sum, and the curve must price every plan at the dense model, not divide by 0."""
    _, graph = resnet20
    zero = macs_table(graph, ms_per_mac=0.0)
    table = dataclasses.replace(zero, anchors=((0.0, 0.033), (0.0, 0.034)), dense_ms=0.034)
    model = LatencyModel(graph, table)
    narrow = np.zeros(graph.labels.size, dtype=bool)
    assert model.estimate(narrow) == model.dense_ms == pytest.approx(0.034)


def test_the_anchors_curve_is_exact_at_each_anchor_and_never_decreasing():
    """Whole models timed at uniform cuts: the prediction passes through each of them; one
    measured slower than a wider one is priced at the wider one's time, never the dense
    model lifted (which would promise speed-ups); past the outer anchors the curve follows
    the nearest segment without going below 0."""
    layer = LayerLatency.monotone("c conv", ((1, 8),), np.array([0.0, 1.0]))
    table = LatencyTable({}, (layer,), ((1.0, 0.5), (3.0, 0.9), (2.0, 0.8), (4.0, 0.85)), 0.85, 0.0)
    assert table.anchors == ((1.0, 0.5), (2.0, 0.8), (3.0, 0.85), (4.0, 0.85))
    for x, y in (*table.anchors[:2], table.anchors[-1]):
        assert table.whole_ms(x) == pytest.approx(y)
    sums = np.linspace(0.0, 5.0, 51)
    curve = [table.whole_ms(x) for x in sums]
    assert np.all(np.diff(curve) >= 0) and min(curve) >= 0
    assert table.whole_ms(0.5) == pytest.approx(0.35) and table.whole_ms(5.0) == pytest.approx(0.85)
    with pytest.raises(ValueError, match="anchors"):
        LatencyTable({}, (layer,), ((1.0, float("nan")),), 0.9, 0.0)


def test_a_target_where_narrower_runs_slower_promises_no_speed_up(resnet20):
    """INT8 on ONNX Runtime's CPU ran ResNet-20 at half width slower than dense: anchors that
    never beat the dense model make every speed-up unreachable, not a plan that is slower."""
    model, graph = resnet20
    base = macs_table(graph)
    layer_sum = base.anchors[-1][0]
    table = dataclasses.replace(base, anchors=((0.2 * layer_sum, 4.9), (0.5 * layer_sum, 10.4), (layer_sum, 3.6)),
                                dense_ms=3.6)
    assert [ms for _, ms in table.anchors] == [3.6, 3.6, 3.6]
    with pytest.raises(UnreachableSpeedupError, match="best reachable is 1.00x"):
        select_plan(graph, CostModel(graph, model), np.zeros(graph.labels.size), SelectionConfig(speedup=1.5),
                    LatencyModel(graph, table))


def test_a_latency_budget_alone_is_a_whole_selection_config(resnet20):
    """SelectionConfig(speedup=2) plans under the latency budget without a MACs fraction;
    with neither budget it still says what is missing."""
    model, graph = resnet20
    from compressor import plan_once

    planned = plan_once(model, torch.zeros(1, 3, 32, 32), SelectionConfig(speedup=2), latency=LatencyModel(graph, macs_table(graph)))
    assert 0.5 - 0.02 <= 1 - planned.predicted_macs / planned.dense_macs <= 0.6
    with pytest.raises(TypeError, match="'flops_reduction' \\(or 'speedup'\\)"):
        SelectionConfig()
    with pytest.raises(CompressorError, match="--speedup must be a number > 1"):
        SelectionConfig(speedup=0.5)


def test_a_narrower_anchor_measured_slower_is_said(caplog):
    from compressor.bench.latency import _say_if_narrower_is_slower

    with caplog.at_level("WARNING", logger="compressor"):
        _say_if_narrower_is_slower(DeployTarget(precision="int8", batch_size=32), [4.9, 5.6, 10.4, 3.7, 3.6])
        _say_if_narrower_is_slower(DeployTarget(batch_size=32), [2.6, 3.3, 5.2, 5.8, 6.6])
        _say_if_narrower_is_slower(DeployTarget(), [0.130, 0.150, 0.148, 0.22, 0.24])  # within noise
    [warned] = [r.getMessage() for r in caplog.records]
    assert "int8 batch 32" in warned and "50% of the way" in warned and "10.400 ms" in warned and "3.600 ms" in warned

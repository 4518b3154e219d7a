"""What each ``compress prune`` option *does*, checked in-process on tiny models.

Every option of ``compress prune`` becomes a field of TrainConfig / PruneConfig (the
CLI passes its options straight to ``configs_from_dict``; tests/e2e/test_prune_options_cli.py
checks that mapping).  Here each field is set on the library objects the CLI run builds
(``make_optimizer``, ``OneCyclePruner``, ``Trainer``, ``run_prune``) and its effect is
asserted: the optimizer that steps, the LR of every step, the loss value, which channels
a criterion removes, the widths the prune leaves, the weights a run starts from.
"""
from __future__ import annotations

import copy
import json
import sys
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compressor.engine.analysis.graph import analyse
from compressor.engine.cost import CostModel
from compressor.data.datasets import DataBundle, DataConfig, load_data
from compressor.errors import CompressorError
from compressor.engine.importance import score_channels
from compressor.schedules.onecycle import OneCyclePruner, PruneConfig
from compressor.engine.plan import GroupPlan, PruningPlan
from compressor.training.run import RunSpec, run_prune
from compressor.runfiles.modelfile import load_pruned
from compressor.schedules.stability import EpiIndicator, JaccardIndicator
from compressor.training.loop import RunContext, TrainConfig, Trainer, make_optimizer, resolve_device
from compressor.models import build_model
from tests.fixed_split import FixedSplit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 8  # input side: every model here is fully convolutional up to a global pool


# -- tiny runs -----------------------------------------------------------------------------------
def bundle(train: int = 16, val: int = 8, batch_size: int = 8, seed: int = 0) -> DataBundle:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(train + val, 3, SIZE, SIZE, generator=generator)
    labels = torch.randint(0, 10, (train + val,), generator=generator)
    return DataBundle(10, (3, SIZE, SIZE), train, val, batch_size, seed,
                      FixedSplit(images[:train], labels[:train]), FixedSplit(images[train:], labels[train:]))


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


def trainer(tmp_path: Path, model: nn.Module, data: DataBundle, train: TrainConfig, prune: PruneConfig) -> Trainer:
    """What ``run_prune`` builds, on given data and model."""
    optimizer = make_optimizer(train, model)
    pruner = OneCyclePruner(model, torch.zeros(1, *data.input_size), prune, optimizer)
    return Trainer(pruner, optimizer, data, train, RunContext(tmp_path), lambda: {})


def train_config(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "device": "cpu", "progress": False, **overrides})


def dense(epochs: int) -> PruneConfig:
    return PruneConfig(epochs=epochs, schedule="dense")


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def step_lrs(tmp_path: Path, epochs: int, steps: int, **overrides) -> tuple[list[float], list[float]]:
    """The LR of every optimizer step of a run, and the per-epoch LR metrics.jsonl records."""
    data = bundle(train=4 * steps, batch_size=4)
    config = train_config(epochs=epochs, **overrides)
    run = trainer(tmp_path, small_cnn(), data, config, dense(epochs))
    seen = []
    run.optimizer.register_step_pre_hook(lambda optimizer, args, kwargs: seen.append(optimizer.param_groups[0]["lr"]))
    run.run()
    return seen, [r["lr"] for r in records(tmp_path)]


# -- LR schedules, --lr, --milestones/--gamma ------------------------------------------------------
def test_step_schedule_drops_by_gamma_at_each_milestone_fraction(tmp_path):
    # 4 epochs x 4 steps; milestones at 25 % and 75 % of the run.
    lrs, per_epoch = step_lrs(tmp_path, 4, 4, lr=0.4, milestones=(0.25, 0.75), gamma=0.5)
    assert lrs == pytest.approx([0.4] * 4 + [0.2] * 8 + [0.1] * 4)
    assert per_epoch == pytest.approx([0.2, 0.2, 0.1, 0.1])  # the LR at each epoch's end


def test_step_schedule_defaults_are_milestones_30_60_80_90_percent_and_gamma_0_2(tmp_path):
    lrs, _ = step_lrs(tmp_path, 3, 3)  # steps at 0, 1/9, ..., 8/9 of the run
    assert lrs == pytest.approx([0.1] * 3 + [0.02] * 3 + [0.004] * 2 + [0.0008])


def test_cosine_schedule_is_torchs_cosine_annealing_over_every_step(tmp_path):
    lrs, per_epoch = step_lrs(tmp_path, 3, 4, lr=0.3, lr_schedule="cosine")
    reference_optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.3)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(reference_optimizer, T_max=12)
    expected = []
    for _ in range(12):
        expected.append(reference_optimizer.param_groups[0]["lr"])
        reference_optimizer.step()
        cosine.step()
    assert lrs == pytest.approx(expected, abs=1e-12)
    assert per_epoch == pytest.approx([0.15 * (1 + math.cos(math.pi * e / 3)) for e in (1, 2, 3)], abs=1e-12)


def test_onecycle_schedule_warms_up_linearly_from_lr_over_25_then_anneals_to_lr_over_1e4(tmp_path):
    lr, epochs, steps = 0.5, 5, 4
    lrs, per_epoch = step_lrs(tmp_path, epochs, steps, lr=lr, lr_schedule="onecycle")

    def expected(t: float) -> float:
        if t < 0.3:
            return lr / 25 + (lr - lr / 25) * t / 0.3
        return lr / 1e4 + (lr - lr / 1e4) * 0.5 * (1 + math.cos(math.pi * (t - 0.3) / 0.7))

    assert lrs == pytest.approx([expected(k / (epochs * steps)) for k in range(epochs * steps)])
    assert lrs[0] == pytest.approx(lr / 25) and max(lrs) <= lr
    peak = lrs.index(max(lrs))
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))  # rising, then falling
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1:]))
    assert per_epoch[-1] == pytest.approx(lr / 1e4)


# -- --optimizer, --momentum, --nesterov, --weight-decay --------------------------------------------
def test_sgd_gets_momentum_nesterov_and_weight_decay():
    model = small_cnn()
    optimizer = make_optimizer(train_config(momentum=0.7, nesterov=True, weight_decay=0.01, lr=0.2), model)
    assert type(optimizer) is torch.optim.SGD
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"], group["lr"]) == (0.7, True, 0.01, 0.2)
    assert optimizer.param_groups[0]["params"] == list(model.parameters())
    assert make_optimizer(train_config(nesterov=False), model).param_groups[0]["nesterov"] is False
    # Nesterov needs momentum: --momentum 0 runs plain SGD instead of failing.
    plain = make_optimizer(train_config(momentum=0.0, nesterov=True), model).param_groups[0]
    assert (plain["momentum"], plain["nesterov"]) == (0.0, False)


def _first_step_change(tmp_path: Path, optimizer: str) -> tuple[Trainer, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = small_cnn()
    before = model[3].weight.detach().clone()
    config = train_config(epochs=1, optimizer=optimizer, lr=0.01, weight_decay=0.0, momentum=0.0)
    run = trainer(tmp_path, model, bundle(train=8, batch_size=8), config, dense(1))
    run.run()
    return run, (model[3].weight.detach() - before).abs(), model[3].weight.grad.abs()


def test_adamw_is_the_optimizer_that_steps(tmp_path):
    run, change, grad = _first_step_change(tmp_path / "adamw", "adamw")
    assert type(run.optimizer) is torch.optim.AdamW
    state = run.optimizer.state[run.pruner.model[3].weight]
    assert {"exp_avg", "exp_avg_sq"} <= set(state) and int(state["step"]) == 1
    # Adam's first step moves every weight with a clear gradient by lr, whatever the gradient's size.
    clear = grad > 1e-5
    assert clear.sum() > 100 and torch.allclose(change[clear], torch.full_like(change[clear], 0.01), rtol=1e-2)
    sgd, sgd_change, sgd_grad = _first_step_change(tmp_path / "sgd", "sgd")
    assert type(sgd.optimizer) is torch.optim.SGD
    assert torch.allclose(sgd_change, 0.01 * sgd_grad, atol=1e-8)  # plain SGD: lr x gradient
    assert not torch.allclose(sgd_change[clear], torch.full_like(sgd_change[clear], 0.01), rtol=1e-2)


def test_adamw_weight_decay_is_decoupled(tmp_path):
    model = small_cnn()
    optimizer = make_optimizer(train_config(optimizer="adamw", lr=0.1, weight_decay=0.5), model)
    assert type(optimizer) is torch.optim.AdamW and optimizer.param_groups[0]["weight_decay"] == 0.5
    weight = model[0].weight
    before = weight.detach().clone()
    weight.grad = torch.zeros_like(weight)  # no gradient: only the decay moves the weight
    optimizer.step()
    assert torch.allclose(weight.detach(), before * (1 - 0.1 * 0.5))


# -- --label-smoothing ------------------------------------------------------------------------------
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_label_smoothing_is_the_training_loss(tmp_path, smoothing):
    data = bundle(train=8, batch_size=8)  # one step: the loss is the untrained model's
    model = small_cnn()
    reference = copy.deepcopy(model).train()
    images, labels = data.train_split.images, data.train_split.labels
    with torch.no_grad():
        logits = reference(images)
    run = trainer(tmp_path, model, data, train_config(epochs=1, label_smoothing=smoothing), dense(1))
    run.run()
    loss = records(tmp_path)[0]["train_loss"]
    assert loss == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=smoothing).item(), rel=1e-5)
    other = 0.3 - smoothing
    assert loss != pytest.approx(F.cross_entropy(logits, labels, label_smoothing=other).item(), rel=1e-3)


# -- --reset-optimizer -----------------------------------------------------------------------------
@pytest.mark.parametrize("reset", [False, True])
def test_reset_optimizer_drops_the_state_at_the_prune(reset):
    model = build_model("resnet20")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.randn(4, 3, SIZE, SIZE), torch.randint(0, 10, (4,))
    F.cross_entropy(model(images), labels).backward()
    optimizer.step()
    config = PruneConfig(epochs=2, schedule="oneshot", flops_reduction=0.5, reset_optimizer=reset)
    pruner = OneCyclePruner(model, torch.zeros(1, 3, SIZE, SIZE), config, optimizer)
    assert pruner.epoch_start(0).pruned and pruner.flops_reduction >= 0.5
    if reset:
        assert len(optimizer.state) == 0
    else:
        assert len(optimizer.state) == len(list(model.parameters()))
        for param in model.parameters():  # kept, and sliced with the parameter
            assert optimizer.state[param]["momentum_buffer"].shape == param.shape
    # Either way the same optimizer keeps training the pruned model.
    optimizer.zero_grad()
    F.cross_entropy(model(images), labels).backward()
    optimizer.step()
    assert all(optimizer.state[p]["momentum_buffer"].shape == p.shape for p in model.parameters())


# -- --criterion ------------------------------------------------------------------------------------
def criterion_net() -> nn.Sequential:
    """One prunable group of 4 channels (conv rows, BN, linear columns) with hand-set
    weights, so each criterion's least important channel is known (linear columns all 0.5):

    channel  conv row (27 entries)          gamma   weakest under
    0        one entry 0.4                  1.0     l1  (small L1, but not the smallest L2)
    1        27 entries, sum of squares .05 0.98    l2  (tiny row, gamma near 1)
    2        one entry sqrt(20)             0.5     bn-scale (large row)
    3        one entry sqrt(0.5)            0.8     ocs (gamma² counts as much as a whole row)
    """
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        rows = torch.zeros(4, 27)
        rows[0, 0], rows[1] = 0.4, math.sqrt(0.05 / 27)
        rows[2, 0], rows[3, 0] = math.sqrt(20), math.sqrt(0.5)
        net[0].weight.copy_(rows.reshape(4, 3, 3, 3))
        net[1].weight.copy_(torch.tensor([1.0, 0.98, 0.5, 0.8]))
        net[5].weight.fill_(0.5)
    return net


def hand_scores(net: nn.Sequential, criterion: str) -> np.ndarray:
    """The criteria as the module docstring of importance.py states them, in plain numpy."""
    rows = net[0].weight.detach().reshape(4, -1).numpy().astype(np.float64)
    gamma = net[1].weight.detach().numpy().astype(np.float64)
    cols = net[5].weight.detach().T.numpy().astype(np.float64)
    slices = [rows, gamma[:, None], cols]
    if criterion == "ocs":  # per slot: sum of squares / sqrt(numel) (BN: gamma²), averaged over slots
        return np.mean([(s ** 2).sum(1) / (1 if s.shape[1] == 1 else math.sqrt(s.shape[1])) for s in slices], 0)
    if criterion in ("l1", "l2"):
        raw = sum((np.abs(s) if criterion == "l1" else s ** 2).sum(1) for s in slices)
        return raw / raw.mean()
    if criterion == "bn-scale":
        return np.abs(gamma) / np.abs(gamma).mean()
    raise AssertionError(criterion)


EXPECTED_WEAKEST = {"l1": 0, "l2": 1, "bn-scale": 2, "ocs": 3}


@pytest.mark.parametrize("criterion", list(EXPECTED_WEAKEST))
def test_each_norm_criterion_scores_and_removes_the_channel_it_should(criterion):
    net = criterion_net()
    graph = analyse(net, torch.zeros(1, 3, SIZE, SIZE))
    assert len(graph.groups) == 1
    group = graph.groups[0]
    scores = score_channels(criterion, graph, net)[group.classes]
    expected = hand_scores(net, criterion)
    assert scores == pytest.approx(expected, rel=1e-5)
    assert int(np.argmin(expected)) == EXPECTED_WEAKEST[criterion]
    # The prune removes exactly that channel: one of four channels is ~25 % of the MACs.
    rows = net[0].weight.detach().clone()
    config = PruneConfig(epochs=1, schedule="oneshot", criterion=criterion, flops_reduction=0.2)
    pruner = OneCyclePruner(net, torch.zeros(1, 3, SIZE, SIZE), config)
    assert pruner.epoch_start(0).pruned
    kept = [i for i in range(4) if any(torch.equal(rows[i], r) for r in net[0].weight.detach())]
    assert kept == [i for i in range(4) if i != EXPECTED_WEAKEST[criterion]]


def test_the_norm_criteria_disagree_on_the_hand_made_net():
    """Otherwise the test above could not tell one criterion from another."""
    assert len(set(EXPECTED_WEAKEST.values())) == 4
    net = criterion_net()
    orders = {c: tuple(np.argsort(hand_scores(net, c))) for c in EXPECTED_WEAKEST}
    assert len(set(orders.values())) == 4


def test_taylor_scores_the_squared_sum_of_weight_times_gradient():
    net = criterion_net()
    graph = analyse(net, torch.zeros(1, 3, SIZE, SIZE))
    with pytest.raises(CompressorError, match="gradients"):
        score_channels("taylor", graph, net)
    for param in net.parameters():
        param.grad = torch.zeros_like(param)
    # Only channel 2's conv row and channel 1's linear column get a gradient.
    net[0].weight.grad[2] = 1.0  # sum(w * g) = sqrt(20)
    net[5].weight.grad[:, 1] = torch.tensor([2.0, -1.0])  # 0.5 * 2 - 0.5 * 1 = 0.5
    raw = np.array([0.0, 0.25, 20.0, 0.0])
    scores = score_channels("taylor", graph, net)[graph.groups[0].classes]
    assert scores == pytest.approx(raw / raw.mean())


def test_random_criterion_ignores_the_weights_and_follows_the_seed():
    net = criterion_net()
    graph = analyse(net, torch.zeros(1, 3, SIZE, SIZE))
    first = score_channels("random", graph, net, seed=3)
    with torch.no_grad():
        net[0].weight.mul_(-7)
    assert np.array_equal(score_channels("random", graph, net, seed=3), first)
    assert not np.array_equal(score_channels("random", graph, net, seed=4), first)
    assert np.array_equal(first, np.random.default_rng(3).random(first.size))


def test_taylor_and_random_run_inside_a_training_run(tmp_path):
    """taylor needs the gradients of the last step; the loop must leave them in place."""
    for criterion in ("taylor", "random"):
        prune = PruneConfig(epochs=2, schedule="three-stage", prune_epoch=1, criterion=criterion, flops_reduction=0.3)
        run = trainer(tmp_path / criterion, small_cnn(), bundle(), train_config(epochs=2), prune)
        run.run()
        assert run.pruner.state.prune_epochs == [0] and run.pruner.flops_reduction >= 0.3


# -- --cost-weighting --------------------------------------------------------------------------------
def cost_net() -> nn.Sequential:
    """Two 16-channel groups on a 128x128 input: ``early`` (conv 0's outputs) costs
    ~0.59M MACs a channel (made at 128x128, read at 32x32), ``late`` (conv 4's) ~0.15M.
    Equal weights, and BN gammas that rank ``late`` a little lower under plain ocs."""
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(4),
        nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10, bias=False),
    )
    with torch.no_grad():
        for index in (0, 4, 9):
            net[index].weight.fill_(0.1)
        for index in (1, 5):  # a spread inside each group, so the ranking is strict
            net[index].weight.copy_(1.0 + torch.linspace(0, 0.01, 16))
    return net


def test_cost_weighting_prunes_the_expensive_channels_first():
    example = torch.zeros(1, 3, 128, 128)
    net = cost_net()
    graph = analyse(net, example)
    cost = CostModel(graph, net)
    early, late = (next(g for g in graph.groups if g.name == name) for name in ("0", "4"))
    plain = score_channels("ocs", graph, net, cost=cost)
    weighted = score_channels("ocs", graph, net, cost=cost, cost_weighting=True)
    factor = {g.name: weighted[g.classes] / plain[g.classes] for g in (early, late)}
    for values in factor.values():  # one factor per group, in (0, 1)
        assert np.allclose(values, values[0]) and 0 < values[0] < 1
    assert factor["0"][0] < factor["4"][0]  # the expensive group's channels are weighted down more
    assert plain[late.classes].max() < plain[early.classes].min()
    assert weighted[early.classes].max() < weighted[late.classes].min()  # the ranking flips
    widths = {}
    for weighting in (False, True):
        net = cost_net()
        config = PruneConfig(epochs=1, schedule="oneshot", flops_reduction=0.2, cost_weighting=weighting, round_to=1)
        assert OneCyclePruner(net, example, config).epoch_start(0).pruned
        widths[weighting] = (net[0].out_channels, net[4].out_channels)
    # Without weighting the cheap, slightly less important late channels go too; with it only early ones.
    assert widths[False][1] < 16
    assert widths[True][1] == 16 and widths[True][0] < widths[False][0]


# -- --indicator, --epi-threshold, --epi-window --------------------------------------------------------
def _end_epochs(config: PruneConfig, model: nn.Module, epochs: int) -> tuple[OneCyclePruner, list]:
    pruner = OneCyclePruner(model, torch.zeros(1, 3, SIZE, SIZE), config, torch.optim.SGD(model.parameters(), lr=0.1))
    events = []
    for epoch in range(epochs):
        events.append(pruner.epoch_end(epoch))
        if events[-1].pruned:
            break
    return pruner, events


def test_indicator_epi_compares_channel_counts_and_prunes_once_stable():
    # The fixed shrink: stability alone decides when ocs prunes.
    common = dict(epochs=6, monitor_start=1, max_prune_epoch=6, flops_reduction=0.3, reg_schedule="fixed")
    jaccard, j_events = _end_epochs(PruneConfig(**common), small_cnn(), 6)
    epi, e_events = _end_epochs(PruneConfig(indicator="epi", **common), small_cnn(), 6)
    assert isinstance(jaccard.indicator, JaccardIndicator) and isinstance(epi.indicator, EpiIndicator)
    # Same target, same counts every epoch: EPI's similarity is 1 from the second search on,
    # while Jaccard needs three plans; EPI is stable (1 > 0) and prunes at once.
    assert [e.stability for e in e_events] == [0.0, 1.0]
    assert e_events[-1].pruned and epi.prune_epoch == 1
    assert [e.stability for e in j_events][:2] == [0.0, 0.0] and jaccard.prune_epoch != 1


def test_epi_window_and_threshold_decide_what_counts_as_stable():
    def counts(n: int) -> PruningPlan:
        return PruningPlan({"a": GroupPlan(10, tuple(range(n)))})

    def indicator(**overrides) -> EpiIndicator:
        config = PruneConfig(epochs=4, indicator="epi", **overrides)
        pruner = OneCyclePruner(small_cnn(), torch.zeros(1, 3, SIZE, SIZE), config)
        for n in (2, 6, 4, 4):
            pruner.indicator.update(counts(n))
        return pruner.indicator

    # The last plan (4 channels) vs the previous --epi-window plans: similarity 1 - |a - b| / (a + b).
    assert indicator(epi_window=2).smoothed[-1] == pytest.approx((0.8 + 1.0) / 2)  # vs 6, 4
    assert indicator(epi_window=5).smoothed[-1] == pytest.approx((1 - 2 / 6 + 0.8 + 1.0) / 3)  # vs 2, 6, 4
    assert indicator(epi_window=2, epi_threshold=0.85).stable()  # 0.9, above every earlier value
    assert not indicator(epi_window=2, epi_threshold=0.95).stable()
    assert not indicator(epi_window=5, epi_threshold=0.85).stable()  # 0.82


# -- --monitor-start, --reg-start, --reg-lambda, --reg-delta, --reg-interval ------------------------------
def test_monitor_start_is_the_first_searched_epoch():
    _, events = _end_epochs(PruneConfig(epochs=6, monitor_start=4, max_prune_epoch=6, criterion="random"), small_cnn(), 5)
    assert [e.searched for e in events] == [False, False, False, True, True]


@pytest.mark.parametrize("interval,delta,expected", [
    (1, 1e-4, [1, 2, 3, 4, 5, 6, 7]),
    (3, 1e-4, [1, 1, 1, 2, 2, 2, 3]),
    (2, 5e-4, [1, 1, 6, 6, 11, 11, 16]),
])
def test_lambda_grows_by_reg_delta_every_reg_interval_epochs(interval, delta, expected):
    # random scores change the plan every epoch, so stability never triggers the prune early.
    config = PruneConfig(epochs=9, monitor_start=1, reg_start=1, reg_lambda=1e-4, reg_delta=delta, reg_schedule="fixed",
                         reg_interval=interval, max_prune_epoch=9, criterion="random")
    pruner, events = _end_epochs(config, small_cnn(), 7)
    assert not pruner.pruned
    assert [e.reg_lambda for e in events] == pytest.approx([1e-4 * k for k in expected])


def test_reg_start_auto_switches_on_halfway_from_monitor_start_to_the_cap_at_the_latest():
    # No training: the plans repeat, the Jaccard curve is still rising at epoch 3, so only
    # the "halfway to --max-prune-epoch" bound, by loop index (0 + 8) // 2 = 4, starts the shrinking.
    config = PruneConfig(epochs=10, monitor_start=1, max_prune_epoch=9, reg_lambda=1e-3, reg_schedule="fixed")
    pruner = OneCyclePruner(small_cnn(), torch.zeros(1, 3, SIZE, SIZE), config)
    lambdas = [pruner.epoch_end(epoch, prune=False).reg_lambda for epoch in range(5)]
    assert lambdas == [0.0, 0.0, 0.0, 0.0, 1e-3] and pruner.state.reg_on_epoch == 4
    fixed = OneCyclePruner(small_cnn(), torch.zeros(1, 3, SIZE, SIZE), replace(config, reg_start=3))
    assert [fixed.epoch_end(epoch, prune=False).reg_lambda for epoch in range(3)] == [0.0, 0.0, 1e-3]


def test_shrink_starts_at_reg_start_and_scales_by_one_minus_lambda_lr():
    model = small_cnn()
    config = PruneConfig(epochs=6, monitor_start=1, reg_start=2, reg_lambda=0.1, max_prune_epoch=6, criterion="random",
                         reg_schedule="fixed")
    pruner = OneCyclePruner(model, torch.zeros(1, 3, SIZE, SIZE), config)
    pruner.epoch_end(0, prune=False)
    before = model[3].weight.detach().clone()
    pruner.after_step(lr=0.5)
    assert torch.equal(model[3].weight, before)  # searched, but regularisation is not on yet
    pruner.epoch_end(1, prune=False)
    pruner.after_step(lr=0.5)
    # Each entry of the middle conv shrinks by 1 - 0.1 * 0.5 once per pruned side (row, column).
    ratios = {round(r, 6) for r in (model[3].weight.detach() / before).flatten().tolist()}
    assert ratios <= {1.0, 0.95, 0.9025} and 0.95 in ratios and 1.0 in ratios


# -- --laasp-group-fraction (the other laasp options: tests/unit/test_laasp.py, tests/e2e/test_laasp_cli.py) -----
def _laasp_steps(**overrides) -> list[dict]:
    torch.manual_seed(0)
    model = small_cnn()
    config = PruneConfig(epochs=2, schedule="laasp", prune_epoch=1, recover_epochs=0, flops_reduction=0.3,
                         round_to=1, **overrides)
    selection = [(torch.randn(8, 3, SIZE, SIZE), torch.randint(0, 10, (8,)))]
    pruner = OneCyclePruner(model, torch.zeros(1, 3, SIZE, SIZE), config, selection_data=selection)
    assert pruner.epoch_end(0).pruned and pruner.flops_reduction >= 0.3
    return pruner.schedule.steps


def test_laasp_group_fraction_removes_that_share_of_a_groups_channels_per_step():
    steps = _laasp_steps(laasp_group_fraction=0.25)
    # A quarter of the 16 kept channels, except where a smaller step already meets the target.
    assert steps[0]["removed"] == 4 and all(s["removed"] <= 4 for s in steps)
    assert max(s["removed"] for s in _laasp_steps()) < 4  # the default: ~1 % of the MACs a step


def test_selection_samples_is_a_fixed_training_subset_of_that_many_images():
    data = load_data(DataConfig(dataset="synthetic", synthetic_train=32, synthetic_val=8, batch_size=8, seed=0))
    subset = data.selection_batches(12)
    assert sum(len(labels) for _, labels in subset) == 12
    again = data.selection_batches(12)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(subset, again))


# -- --ignore, --min-width, --max-prune-fraction ---------------------------------------------------------
def _oneshot_resnet(**overrides) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet20")
    config = PruneConfig(**{"epochs": 1, "schedule": "oneshot", "flops_reduction": 0.5, **overrides})
    assert OneCyclePruner(model, torch.zeros(1, 3, SIZE, SIZE), config).epoch_start(0).pruned
    return model


def _internal_widths(model: nn.Module) -> dict[str, int]:
    """Width of each block's inner channels (the groups that do not touch the residual path)."""
    return {name: m.out_channels for name, m in model.named_modules() if name.endswith(".conv1")}


def test_ignore_keeps_the_named_modules_channels():
    plain = _internal_widths(_oneshot_resnet())
    assert plain["layer2.0.conv1"] < 32 and plain["layer3.2.conv1"] < 64
    ignored = _internal_widths(_oneshot_resnet(ignore=("layer2.0.conv1", "layer3.2.conv1")))
    assert ignored["layer2.0.conv1"] == 32 and ignored["layer3.2.conv1"] == 64
    assert sum(ignored.values()) < sum(_internal_widths(build_model("resnet20")).values())  # the rest still prunes
    with pytest.raises(CompressorError, match="no module"):
        _oneshot_resnet(ignore=("layer9.conv1",))


def _group_widths(model: nn.Module) -> list[int]:
    graph = analyse(model, torch.zeros(1, 3, SIZE, SIZE))
    return [g.size for g in graph.groups]


def test_min_width_bounds_every_group():
    loose = _group_widths(_oneshot_resnet(round_to=1, max_prune_fraction=0.95, flops_reduction=0.6))
    assert min(loose) < 10
    bounded = _group_widths(_oneshot_resnet(round_to=1, max_prune_fraction=0.95, flops_reduction=0.6, min_width=10))
    assert min(bounded) >= 10


def test_max_prune_fraction_caps_every_group():
    original = _group_widths(build_model("resnet20"))
    pruned = _group_widths(_oneshot_resnet(round_to=1, max_prune_fraction=0.4))
    assert all(p >= math.ceil(0.6 * o) for p, o in zip(pruned, original))
    assert any(p == math.ceil(0.6 * o) for p, o in zip(pruned, original))  # the cap binds somewhere


# -- --seed (through run_prune, as the CLI calls it; --weights: tests/e2e/test_prune_options_cli.py) --------------------------------------------
def _tiny_spec(out: Path, seed: int = 0) -> RunSpec:
    data = DataConfig(dataset="synthetic", synthetic_train=16, synthetic_val=8, batch_size=16, augment=False, seed=seed)
    train = TrainConfig(epochs=1, lr=1e-30, weight_decay=0.0, device="cpu", progress=False, seed=seed)
    return RunSpec("resnet20", out, data, train, PruneConfig(epochs=1, schedule="dense"))


def test_seed_sets_the_initial_weights(tmp_path):
    # lr 1e-30: the one step leaves the weights where the seed put them.
    models = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        run_prune(_tiny_spec(tmp_path / name, seed=seed))
        models[name] = load_pruned(tmp_path / name / "model.pt")[0]
    assert torch.equal(models["a"].conv1.weight, models["b"].conv1.weight)
    assert records(tmp_path / "a")[0]["train_loss"] == records(tmp_path / "b")[0]["train_loss"]
    assert not torch.allclose(models["a"].conv1.weight, models["c"].conv1.weight, atol=1e-3)


# -- --compile, --device, --progress --------------------------------------------------------------------
def test_compile_wraps_the_model_and_rewraps_it_after_the_prune(tmp_path):
    model = small_cnn()
    prune = PruneConfig(epochs=1, schedule="oneshot", flops_reduction=0.3)
    run = trainer(tmp_path, model, bundle(), train_config(compile=True), prune)
    assert isinstance(run._network, torch._dynamo.eval_frame.OptimizedModule) and run._network._orig_mod is model
    run._prune(0, run.pruner.epoch_start(0, prune=False), before_training=True)
    assert isinstance(run._network, torch._dynamo.eval_frame.OptimizedModule)
    assert run._network._orig_mod is run.pruner.model and run.pruner.flops_reduction >= 0.3
    plain = trainer(tmp_path / "plain", small_cnn(), bundle(), train_config(), dense(1))
    assert isinstance(plain._network, nn.Sequential)


def test_device_cpu_and_a_missing_cuda_is_one_clear_error():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(CompressorError, match="CUDA is not available"):
            resolve_device("cuda")
        assert resolve_device("auto") == torch.device("cpu")


def test_amp_and_channels_last_are_cuda_only_and_change_nothing_on_the_cpu(tmp_path):
    """--help: "Mixed precision on CUDA", "channels_last memory format on CUDA"."""
    losses = {}
    for name, options in (("plain", {}), ("cuda-only", {"amp": "fp16", "channels_last": True})):
        torch.manual_seed(0)
        run = trainer(tmp_path / name, small_cnn(), bundle(), train_config(epochs=1, **options), dense(1))
        assert not run.scaler.is_enabled()
        run.run()
        assert run.pruner.model[0].weight.is_contiguous()  # not channels_last
        losses[name] = [(r["train_loss"], r["val_loss"]) for r in records(tmp_path / name)]
    assert losses["plain"] == losses["cuda-only"]


@pytest.mark.parametrize("progress, terminal", [(True, True), (False, True), (True, False)])
def test_progress_draws_a_bar_per_epoch_on_stderr_when_it_is_a_terminal(tmp_path, capsys, monkeypatch,
                                                                         progress, terminal):
    """A log file or a pipe gets the epoch lines, not the bar's redraws."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    run = trainer(tmp_path, small_cnn(), bundle(), train_config(epochs=2, progress=progress), dense(2))
    run.run()
    err = capsys.readouterr().err
    assert ("epoch 2/2" in err) == (progress and terminal)


# -- the training step's host syncs -------------------------------------------------------------
SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")


def test_a_training_step_reads_the_device_once(tmp_path, monkeypatch):
    """Every read of a tensor's value by the host (a sync on a GPU) is counted over one epoch of
    4 steps: the loss, its NaN check and the hits come back together, once per step."""
    run = trainer(tmp_path, small_cnn(), bundle(train=32), train_config(epochs=1), dense(1))
    reads = []
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    run._train_epoch(0)
    assert run.data.batches_per_epoch(1) == 4 and reads == ["tolist"] * 4

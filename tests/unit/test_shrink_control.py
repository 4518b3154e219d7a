"""The target shrink keeps the method's promise at any run length: the channels selected
for removal reach ε of their norm by the prune, the kept ones are never touched by it,
and slicing them then changes the logits by no more than a bound that follows from ε."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compressor.engine.plan import kept_class_mask
from compressor.schedules.onecycle import OneCyclePruner, PruneConfig
from compressor.schedules.shrink_control import AIM, MIN_STEP_FACTOR, TargetShrink, selected_norm_ratio

EPSILON = 1e-2


def small_net() -> nn.Module:
    """Two prunable groups: conv1's channels (into conv2) and conv2's (into the head)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )


def head_net() -> nn.Module:
    """One prunable group whose channels feed the linear head directly, so the logits
    a slice removes are exactly the head's columns times those channels' activations
    (no ReLU: BN's unshrunk β keeps the removed channels' activations non-zero, so the
    bound is tested on a real contribution)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )


def run(epochs: int, steps: int, net=small_net, *, lr_drop: bool = True, stop_after: int | None = None, **overrides):
    """SGD with momentum on a fixed random task; the LR drops 10x twice (a step schedule),
    which a controller planning with the learning rate would miss."""
    torch.manual_seed(0)
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    settings = dict(flops_reduction=0.5, epochs=epochs, monitor_start=1, reg_target=EPSILON, round_to=None)
    config = PruneConfig(**{**settings, **overrides})
    pruner = OneCyclePruner(model, torch.zeros(1, 3, 8, 8), config, optimizer)
    images, labels = torch.randn(64, 3, 8, 8), torch.randint(0, 4, (64,))
    events = []
    for epoch in range(epochs):
        lr = 0.1 * (0.1 ** sum(epoch >= f * epochs for f in (0.3, 0.6))) if lr_drop else 0.1
        for group in optimizer.param_groups:
            group["lr"] = lr
        for step in range(steps):
            batch = slice((step * 8) % 64, (step * 8) % 64 + 8)
            optimizer.zero_grad()
            F.cross_entropy(pruner.model(images[batch]), labels[batch]).backward()
            optimizer.step()
            pruner.after_step(lr)
        event = pruner.epoch_end(epoch, prune=False)
        events.append(event)
        if event.prune_due or epoch == stop_after:
            return pruner, events
    return pruner, events


@pytest.mark.parametrize("epochs", [5, 20, 100])
@pytest.mark.parametrize("steps", [10, 400])
def test_the_selected_channels_reach_epsilon_by_the_cap(epochs, steps):
    pruner, events = run(epochs, steps)
    last = events[-1]
    assert last.prune_due and len(events) <= pruner.config.last_prune_epoch
    assert last.selected_norm is not None and last.selected_norm <= EPSILON, (last.selected_norm, last.prune_reason)
    assert "shrink" not in last.prune_reason  # the cap, if it came, was not waiting for the shrink
    lambdas = [e.reg_lambda for e in events]
    assert all(0.0 <= value <= -math.log(MIN_STEP_FACTOR) for value in lambdas)


def test_kept_channels_are_never_touched_by_the_shrink():
    pruner, events = run(5, 10, reg_start=1, stop_after=0)
    assert pruner.state.reg_lambda > 0 and not events[-1].prune_due
    plan = pruner.plan
    kept = kept_class_mask(pruner.graph, plan)
    before = copy.deepcopy(pruner.model.state_dict())
    pruner.after_step(0.1)  # a shrink with no optimizer step: only the selected slices may move
    params = dict(pruner.model.named_parameters())
    selected = {name: torch.zeros_like(p, dtype=torch.bool) for name, p in params.items()}
    for slot in pruner.graph.slots:  # an entry is selected if any of its dims indexes a removed class
        if slot.key in params and slot.tensor == "weight":
            removed = torch.from_numpy(~kept[pruner.graph.labels[slot.atoms]])
            shape = [1] * params[slot.key].dim()
            shape[slot.dim] = -1
            selected[slot.key] |= removed.view(shape).expand_as(params[slot.key])
    assert any(mask.any() for mask in selected.values())
    for name, param in params.items():
        now, then = param.detach(), before[name]
        assert torch.equal(now[~selected[name]], then[~selected[name]]), f"{name}: a kept entry moved"
        shrunk = now[selected[name]].abs() < then[selected[name]].abs()
        assert torch.all(shrunk | (then[selected[name]] == 0)), f"{name}: a selected entry did not shrink"


def test_slicing_at_epsilon_changes_the_logits_by_at_most_the_bound_epsilon_gives():
    """With the channels feeding the head directly, the slice removes exactly
    ``W_head[:, sel] @ a_sel``.  The head columns are part of what ``selected_norm`` measures,
    so ``|W_head[:, sel]| <= r * N_ref`` (N_ref: the selected classes' norm at the
    regularisation start) and ``|Δlogits| <= r * N_ref * |a_sel| <= ε * N_ref * |a_sel|``."""
    pruner, events = run(20, 50, net=head_net)
    r = events[-1].selected_norm
    assert r is not None and r <= EPSILON
    model = pruner.model.eval()
    removed = ~kept_class_mask(pruner.graph, pruner.plan)
    reference = np.asarray(pruner.state.reg_reference)
    n_ref = math.sqrt(float(reference[removed].sum()))
    x = torch.randn(32, 3, 8, 8)
    with torch.no_grad():
        before = model(x)
        features = model[:4](x)  # the pooled activations the head reads
    sel = torch.from_numpy(np.flatnonzero(removed[pruner.graph.labels[_head_slot(pruner).atoms]]))
    pruner.prune(len(events) - 1)
    with torch.no_grad():
        after = pruner.model.eval()(x)
    change = (after - before).norm(dim=1)
    bound = EPSILON * n_ref * features[:, sel].norm(dim=1)
    rounding = 1e-5 * before.norm(dim=1)  # float32 sums in another order
    assert torch.all(change <= bound + rounding), (change.max(), bound.min())
    assert torch.all(change > rounding)  # the slice did remove a contribution, not just rounding


def _head_slot(pruner):
    return next(s for s in pruner.graph.slots if s.key == "4.weight" and s.dim == 1)


def test_ocs_prunes_at_the_first_epoch_that_is_stable_and_at_epsilon():
    pruner, events = run(20, 100, lr_drop=False, reg_start=1, stability_threshold=0.5)
    last = events[-1]
    assert last.prune_reason.startswith("ready") and last.selected_norm <= EPSILON and last.stability >= 0.5
    assert len(events) <= pruner.config.last_prune_epoch
    for earlier in events[:-1]:  # not ready before
        assert earlier.stability < 0.5 or earlier.selected_norm is None or earlier.selected_norm > EPSILON


def test_at_the_cap_the_reason_names_what_was_missing():
    """One step per epoch cannot shrink by 100x in one epoch (each step is bounded): the
    cap comes first and says so."""
    pruner, events = run(5, 1, stability_threshold=1.0)
    reason = events[-1].prune_reason
    assert reason.startswith("cap (epoch 3)") and "stability" in reason and "shrink" in reason


def test_the_fixed_schedule_prunes_on_stability_alone():
    pruner, events = run(20, 10, lr_drop=False, reg_schedule="fixed", stability_threshold=0.5)
    assert events[-1].prune_reason == "ready: stable"
    assert events[-1].selected_norm > EPSILON  # the authors' λ barely shrinks in 200 steps


def test_the_controller_plans_exactly_when_nothing_pushes_back():
    controller = TargetShrink(EPSILON)
    steps_left = TargetShrink.steps_left(epochs_left=4, steps_per_epoch=25, steps_done=0)
    assert steps_left == 100
    assert 0.8 * math.exp(-controller.reg_lambda(0.8, steps_left) * 100) == pytest.approx(AIM * EPSILON)
    assert TargetShrink.steps_left(2, 25, 30) == 20  # re-planned within the epoch
    assert TargetShrink.steps_left(0, 25, 0) == 0  # at the cap nothing is left to plan
    assert controller.reg_lambda(AIM * EPSILON / 2, 30) == 0.0  # already there: no shrink
    assert controller.reg_lambda(1.0, 1) == pytest.approx(-math.log(MIN_STEP_FACTOR))  # bounded
    assert controller.reg_lambda(1.0, 0) == 0.0


def test_the_ratio_is_over_the_selected_classes_only():
    now, reference = np.array([4.0, 1.0, 0.0]), np.array([4.0, 100.0, 0.0])
    assert selected_norm_ratio(now, reference, np.array([False, True, False])) == pytest.approx(0.1)
    assert selected_norm_ratio(now, reference, np.array([False, False, True])) == 1.0  # nothing to measure


def test_a_step_the_gradient_scaler_skips_is_not_a_step_for_the_shrink():
    """fp16 training skips steps whose gradients overflowed; the loop must then neither
    shrink nor count the step (the controller plans with the steps that happened)."""
    from compressor.training.loop import scaled_step

    weight = nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    scaler.scale((weight * torch.tensor([1.0, float("inf"), 1.0])).sum()).backward()
    assert scaled_step(scaler, optimizer) is False and torch.equal(weight.detach(), torch.ones(3))
    optimizer.zero_grad()
    scaler.scale(weight.sum()).backward()
    assert scaled_step(scaler, optimizer) is True and torch.all(weight.detach() < 1)
    plain = torch.amp.GradScaler("cpu", enabled=False)
    optimizer.zero_grad()
    weight.sum().backward()
    assert scaled_step(plain, optimizer) is True


@pytest.mark.parametrize("tamper", [lambda r: r[:-1], lambda r: [float("nan")] * len(r), lambda r: [-1.0] * len(r)])
def test_a_tampered_shrink_reference_in_a_checkpoint_is_refused_on_load(tamper):
    """A resumed run must not fail (or steer on garbage) epochs later: the reference is checked when loaded."""
    from compressor.errors import CompressorError

    pruner, _ = run(5, 10, reg_start=1, stop_after=0)
    saved = pruner.state_dict()
    saved["state"]["reg_reference"] = tamper(saved["state"]["reg_reference"])
    with pytest.raises(CompressorError, match="shrink reference"):
        OneCyclePruner(copy.deepcopy(pruner.model), torch.zeros(1, 3, 8, 8), pruner.config, state=saved)
    OneCyclePruner(copy.deepcopy(pruner.model), torch.zeros(1, 3, 8, 8), pruner.config, state=pruner.state_dict())

"""The controller in a plain loop: each schedule prunes when it should, the model keeps
training with the same optimizer, and the searched plan meets the target."""
import pytest
import torch
import torch.nn.functional as F

from compressor.errors import CompressorError
from compressor.schedules.onecycle import OneCyclePruner, PruneConfig
from compressor.engine.selection import UnreachableTargetError
from compressor.models import build_model


def train(schedule: str, epochs: int = 4, **overrides):
    torch.manual_seed(0)
    model = build_model("resnet20")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    config = PruneConfig(flops_reduction=0.5, epochs=epochs, schedule=schedule, monitor_start=1, **overrides)
    pruner = OneCyclePruner(model, torch.zeros(1, 3, 32, 32), config, optimizer)
    events = []
    data = [(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))) for _ in range(2)]
    for epoch in range(epochs):
        if pruner.epoch_start(epoch, prune=False).prune_due:
            pruner.prune(epoch)
        for images, labels in data:
            optimizer.zero_grad()
            F.cross_entropy(pruner.model(images), labels).backward()
            optimizer.step()
            pruner.after_step(0.05)
        event = pruner.epoch_end(epoch, prune=False)
        if event.prune_due:
            pruner.prune(epoch)
        events.append(event)
    return pruner, events


@pytest.mark.parametrize(
    "schedule,expected_epoch",
    [("oneshot", 0), ("three-stage", 1), ("ocs", 2)],
)
def test_schedules_prune_once_at_the_expected_epoch(schedule, expected_epoch):
    pruner, events = train(schedule, epochs=4, max_prune_epoch=3, prune_epoch=2)
    assert pruner.state.prune_epochs == [expected_epoch]
    assert abs(1 - pruner.macs / pruner.dense_macs - 0.5) <= 0.01


def test_epi_prunes_once_its_count_indicator_is_reached():
    pruner, events = train("epi", epochs=4, max_prune_epoch=4)
    epoch = pruner.state.prune_epochs[0]
    assert len(pruner.state.prune_epochs) == 1
    assert epoch == 3 or events[epoch].stability >= 0.983


def test_dense_never_prunes():
    pruner, _ = train("dense")
    assert not pruner.pruned and pruner.macs == pruner.dense_macs


def test_gradual_prunes_in_steps_up_to_the_target():
    pruner, _ = train("gradual", epochs=5)
    assert len(pruner.state.prune_epochs) >= 2
    assert 0.5 <= 1 - pruner.macs / pruner.dense_macs <= 0.52  # each step rounds up on a tiny net


def test_ocs_searches_every_epoch_and_regularises_from_reg_start():
    # The authors' fixed schedule: λ starts at reg_lambda and grows by reg_delta per epoch.
    pruner, events = train("ocs", epochs=4, max_prune_epoch=4, reg_start=2, stability_threshold=1.0,
                           reg_schedule="fixed")
    assert all(e.searched for e in events[:3])
    assert [e.reg_lambda for e in events[:3]] == pytest.approx([0.0, 1e-4, 2e-4])
    for event in events:
        if event.plan_macs is not None:
            assert 0.5 <= 1 - event.plan_macs / pruner.dense_macs <= 0.51  # 8-channel blocks on ResNet-20


def test_stable_structure_triggers_the_prune_before_the_cap():
    # A threshold of 0.5 is reached once plans repeat: well before the cap at epoch 7.  Under
    # the fixed shrink stability alone decides (the target shrink also waits for ε:
    # tests/unit/test_shrink_control.py).
    pruner, events = train("ocs", epochs=8, max_prune_epoch=8, stability_threshold=0.5, reg_schedule="fixed")
    assert pruner.state.prune_epochs and pruner.state.prune_epochs[0] < 7
    assert events[pruner.state.prune_epochs[0]].stability >= 0.5


def test_unreachable_target_fails_before_training():
    with pytest.raises(UnreachableTargetError):
        OneCyclePruner(build_model("resnet20"), torch.zeros(1, 3, 32, 32), PruneConfig(flops_reduction=0.95, max_prune_fraction=0.5))


def test_prune_epoch_beyond_the_run_is_refused():
    with pytest.raises(CompressorError, match="outside the run"):
        PruneConfig(epochs=5, max_prune_epoch=10)


def test_a_pruner_resumed_on_a_pruned_model_keeps_the_original_sizes():
    """On resume the model handed over is already pruned; MACs, params, the reduction
    and the reachability check must still refer to the original network."""
    import copy

    pruner, _ = train("oneshot", epochs=2)
    saved = pruner.state_dict()
    config = PruneConfig(flops_reduction=0.5, epochs=2, schedule="oneshot", monitor_start=1)
    resumed = OneCyclePruner(copy.deepcopy(pruner.model), torch.zeros(1, 3, 32, 32), config, state=saved)
    assert (resumed.dense_macs, resumed.dense_params) == (pruner.dense_macs, pruner.dense_params)
    assert resumed.macs == pruner.macs and resumed.flops_reduction == pytest.approx(pruner.flops_reduction)
    assert 0.49 <= resumed.flops_reduction <= 0.51
    # 80 % of the original is reachable from the pruned model, though 80 % of *it* is not.
    deep = PruneConfig(flops_reduction=0.8, epochs=2, schedule="three-stage", max_prune_fraction=0.75)
    with pytest.raises(UnreachableTargetError):  # without the state, the pruned model counts as dense
        OneCyclePruner(copy.deepcopy(pruner.model), torch.zeros(1, 3, 32, 32), deep)
    saved_unpruned = {**saved, "state": {**saved["state"], "applied": [], "prune_epochs": []}}
    OneCyclePruner(copy.deepcopy(pruner.model), torch.zeros(1, 3, 32, 32), deep, state=saved_unpruned)

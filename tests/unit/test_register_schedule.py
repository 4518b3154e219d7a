"""Schedules as an extension point: a schedule defined here, in this one file, becomes
selectable by name with one ``register_schedule`` call -- in ``PruneConfig``, in the
pruner, in a checkpoint's state and in ``compress prune --schedule`` -- and its hooks see
the pruner only through ``PrunerView``.  Bad registrations are refused in one line."""
from __future__ import annotations

import click
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from compressor import (CompressorError, OneCyclePruner, PruneConfig, PrunerView, Schedule, register_schedule,
                        unregister_schedule)
from compressor.cli import main
from compressor.cli.prune import prune_command
from compressor.schedules.registry import schedule_names

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NAME = "halves"


class Halves(Schedule):
    """Half the target at the end of the first epoch, the rest at the end of the second."""

    def __init__(self, config):
        super().__init__(config)
        self.views: list[type] = []  # what the hooks were given

    def epoch_end(self, epoch, pruner, event):
        self.views.append(type(pruner))
        if epoch < 2 and pruner.prunes == epoch:
            pruner.search(event, self.config.flops_reduction * (epoch + 1) / 2)
            event.prune_due = True

    def state(self):
        return {"views": len(self.views)}

    def load_state(self, state):
        self.views = [PrunerView] * state["views"]


@pytest.fixture(autouse=True)
def registered():
    register_schedule(NAME, Halves)
    yield
    unregister_schedule(NAME)
    assert NAME not in schedule_names()


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))


def test_a_registered_schedule_runs_through_the_pruner():
    model = tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    config = PruneConfig(flops_reduction=0.5, epochs=3, schedule=NAME, round_to=1)
    pruner = OneCyclePruner(model, torch.zeros(1, 3, 16, 16), config, optimizer)
    assert isinstance(pruner.schedule, Halves)
    images, labels = torch.randn(4, 3, 16, 16), torch.randint(0, 4, (4,))
    events = []
    for epoch in range(3):
        pruner.epoch_start(epoch)
        optimizer.zero_grad()
        F.cross_entropy(pruner.model(images), labels).backward()
        optimizer.step()
        pruner.after_step()
        events.append(pruner.epoch_end(epoch))
    assert [e.pruned for e in events] == [True, True, False]
    assert events[0].prune_reason == f"{NAME} schedule" and events[0].searched and events[0].plan_macs
    assert pruner.state.prune_epochs == [0, 1]
    assert abs(pruner.flops_reduction - 0.5) <= 0.02
    assert pruner.schedule.views == [PrunerView] * 3  # the narrow view, never the pruner itself
    assert pruner.state_dict()["schedule"] == {"views": 3}  # checkpointed like a built-in's


def test_the_name_is_a_choice_only_while_registered():
    PruneConfig(epochs=3, schedule=NAME)
    unregister_schedule(NAME)
    try:
        with pytest.raises(CompressorError, match=f"unknown schedule '{NAME}'; choose from ocs, "):
            PruneConfig(epochs=3, schedule=NAME)
    finally:
        register_schedule(NAME, Halves)


def test_the_cli_offers_the_registered_name():
    option = next(p for p in prune_command.params if p.name == "schedule")
    assert NAME in option.type.choices and option.type.choices[:2] == ("ocs", "dense")
    context = prune_command.make_context("prune", ["--schedule", NAME])
    assert context.params["schedule"] == NAME
    with pytest.raises(click.BadParameter, match=NAME):
        prune_command.make_context("prune", ["--schedule", "no-such-schedule"])
    result = CliRunner().invoke(main, ["prune", "--help"], terminal_width=200)
    assert result.exit_code == 0 and NAME in result.output


def test_a_speedup_target_needs_a_schedule_that_searches_once():
    with pytest.raises(CompressorError, match=f"--schedule {NAME} steps through MACs fractions"):
        PruneConfig(epochs=3, schedule=NAME, speedup=2.0)
    register_schedule("halves-once", Halves, searches_once=True)
    try:
        assert PruneConfig(epochs=3, schedule="halves-once", speedup=2.0).speedup == 2.0
    finally:
        unregister_schedule("halves-once")


@pytest.mark.parametrize("name,factory,message", [
    ("ocs", Halves, "a schedule named 'ocs' is already registered"),
    ("two words", Halves, "the name must be a non-empty word"),
    ("", Halves, "the name must be a non-empty word"),
    ("mine", "Halves", "the factory must be callable"),
])
def test_bad_registrations_are_refused(name, factory, message):
    with pytest.raises(CompressorError, match=message):
        register_schedule(name, factory)


def test_a_factory_must_build_a_schedule():
    register_schedule("not-a-schedule", lambda config: object())
    try:
        with pytest.raises(CompressorError, match="returned object, not a compressor.schedules.Schedule"):
            OneCyclePruner(tiny(), torch.zeros(1, 3, 16, 16), PruneConfig(epochs=3, schedule="not-a-schedule"))
    finally:
        unregister_schedule("not-a-schedule")

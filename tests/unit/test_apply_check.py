"""apply_plan with the example input: checked on a copy first, refused whole when it breaks.

The analysis can get a model's channel coupling wrong (a module shared in a way its
trace did not show); slicing by such a graph would hand back a model that cannot run.
The check is forced here by slicing a model with the graph of a look-alike whose layers
are not coupled the same way: the same failure, made on purpose.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compressor import CostModel, analyse, apply_plan, group_l2
from compressor.engine.apply import ApplyRefused
from compressor.engine.selection import SelectionConfig, select_plan
from compressor.models.zoo import build


class Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c3(torch.relu(self.c2(torch.relu(self.c1(x))))).mean(dim=(2, 3))


class Skip(Chain):
    """Same layers, but c1's output is added to c2's: their channels are one group here."""

    def forward(self, x):
        a = torch.relu(self.c1(x))
        return self.c3(torch.relu(self.c2(a) + a)).mean(dim=(2, 3))


def plan_for(model: nn.Module, example: torch.Tensor, reduction: float = 0.5):
    graph = analyse(model, example)
    return graph, select_plan(graph, CostModel(graph, model), group_l2(graph, model), SelectionConfig(reduction))


def test_a_plan_that_breaks_the_model_is_refused_naming_the_group_and_leaves_it_unchanged():
    torch.manual_seed(0)
    example = torch.randn(1, 3, 8, 8)
    graph, plan = plan_for(Chain(), example)  # c1 and c2 cut differently: wrong for Skip
    model = Skip()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(example).sum().backward()
    optimizer.step()
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ApplyRefused) as refused:
        apply_plan(model, graph, plan, optimizer, example_input=example)
    message = str(refused.value)
    assert "cannot run on the example input" in message and "left unpruned" in message
    cut = [n for n, g in plan.groups.items() if len(g.kept) < g.size]
    assert any(f"group {name!r}" in message for name in cut), message
    assert "\n" not in message
    after = model.state_dict()
    assert all(torch.equal(state_before[k], after[k]) for k in state_before)  # nothing sliced
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())
    assert model(example).shape == (1, 4)  # and it still runs
    assert any(not torch.equal(before[k], state_before[k]) for k in before)  # (the step did change it)


def test_without_the_example_the_same_plan_breaks_the_model():
    """What the check prevents: the unchecked path slices and hands back a broken model."""
    example = torch.randn(1, 3, 8, 8)
    graph, plan = plan_for(Chain(), example)
    broken = apply_plan(Skip(), graph, plan)
    with pytest.raises(RuntimeError):
        broken(example)


def test_a_correct_plan_passes_the_check_and_slices_as_before():
    torch.manual_seed(0)
    example = torch.randn(1, 3, 32, 32)
    model = build("resnet20", 10).eval()
    graph, plan = plan_for(model, example)
    reference = apply_plan(copy.deepcopy(model), graph, plan)  # unchecked
    checked = apply_plan(model, graph, plan, example_input=example)
    assert checked(example).shape == (1, 10)
    assert torch.allclose(checked(example), reference(example))
    assert sum(p.numel() for p in checked.parameters()) == sum(p.numel() for p in reference.parameters())


def test_training_goes_on_while_a_graph_from_before_the_slice_is_alive():
    """A loop that still holds its last ``loss`` keeps that graph, and with it autograd's cached
    gradient accumulators that remember the old shapes: the next backward must still work."""
    torch.manual_seed(0)
    example = torch.randn(1, 3, 8, 8)
    model = Chain()
    graph, plan = plan_for(model, example)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = model(torch.randn(4, 3, 8, 8)).pow(2).sum()
    loss.backward()
    optimizer.step()
    model = apply_plan(model, graph, plan, optimizer, example_input=example)
    optimizer.zero_grad()
    model(torch.randn(4, 3, 8, 8)).pow(2).sum().backward()  # 'loss' is still referenced here
    assert all(p.grad.shape == p.shape for p in model.parameters())
    optimizer.step()
    assert loss.grad_fn is not None


def test_the_check_runs_each_model_once_and_the_float64_probe_once():
    """The original, its masked copy and the sliced copy run once each, plus one float64 run of
    the masked copy to tell rounding from a wrong slice: four forward passes in all, whatever
    the model's size (the check runs at the prune, where a big model's extra passes are felt)."""
    torch.manual_seed(0)
    example = torch.randn(1, 3, 32, 32)
    model = build("resnet20", 10).eval()
    graph, plan = plan_for(model, example)
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(output.dtype))  # copies share it
    apply_plan(model, graph, plan, example_input=example)
    assert sorted(map(str, calls)) == ["torch.float32"] * 3 + ["torch.float64"]

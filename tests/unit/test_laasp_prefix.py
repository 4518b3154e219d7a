"""LAASP with prefix reuse makes the choices of the whole forward per candidate.

The reference is ``MaskedEvaluator(reuse_prefix=False)``: every candidate runs the
whole model.  Losses are compared with a tolerance, never bit for bit; a winner is
compared only where its margin over the runner-up exceeds that tolerance, so a
near-tie that rounding may flip on another CPU does not fail the test."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compressor.engine.analysis.graph import analyse
from compressor.engine.cost import CostModel
from compressor.engine.verify import make_informative
from compressor.models import build_model
from compressor.schedules.laasp import GroupLimits, MaskedEvaluator, Selector, StepSettings, prune_chunk
from compressor.schedules.prefix_cache import PrefixRunner

POOL = ("l1", "l2", "euclidean", "cosine")
LOSS_TOL = 1e-5  # losses of the two paths agree within float rounding
MARGIN = 1e-4  # a winner this far ahead of the runner-up must be the same on both paths


class Branchy(nn.Module):
    """A stem, a concat of two branches, a residual add over the concat and an in-place
    ReLU after the cut points: the topologies a prefix must get right."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.left, self.bn_left = nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.right, self.bn_right = nn.Conv2d(8, 10, 1), nn.BatchNorm2d(10)
        self.mix, self.bn_mix = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.inner, self.bn_inner = nn.Conv2d(16, 12, 3, padding=1), nn.BatchNorm2d(12)
        self.back, self.bn_back = nn.Conv2d(12, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        x = torch.cat([F.relu(self.bn_left(self.left(x))), F.relu(self.bn_right(self.right(x)))], dim=1)
        x = F.relu(self.bn_mix(self.mix(x)))
        y = self.relu(self.bn_inner(self.inner(x)))
        x = self.relu(x + self.bn_back(self.back(y)))
        return self.fc(x.mean(dim=(2, 3)))


class Branching(Branchy):
    """Data-dependent control flow: ``torch.fx`` cannot trace it."""

    def forward(self, x):
        return super().forward(x) if x.sum() > -1e9 else x


def _setup(build, classes, size=32, seed=0, images=16):
    torch.manual_seed(seed)  # before the model is built: its initial weights are part of the fixed case
    model = make_informative(build()).eval()
    graph = analyse(model, torch.zeros(1, 3, size, size))
    batches = [(torch.randn(images // 2, 3, size, size), torch.randint(0, classes, (images // 2,))) for _ in range(2)]
    return model, graph, CostModel(graph, model), batches


def _limits(graph):
    return {g.name: GroupLimits.of(g.size, None, 0.75, 1) for g in graph.groups}


# model, classes, input size, a chunk of a few steps, and a seed on which its winners are clear
MODELS = {
    "resnet20": lambda: (lambda: build_model("resnet20"), 10, 32, StepSettings(POOL, target=0.12, step=0.04), 0),
    "branchy": lambda: (Branchy, 5, 12, StepSettings(POOL, target=0.5, group_fraction=0.1), 4),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_step_evaluates_the_same_losses_and_picks_the_same_pair(name):
    """Both selectors step in lockstep; each step applies the reference's choice, so
    one near-tie cannot make the rest of the comparison diverge."""
    built, classes, size, settings, seed = MODELS[name]()
    model, graph, cost, batches = _setup(built, classes, size, seed)
    selectors = [
        Selector(model, graph, cost, graph.dense_macs, _limits(graph), MaskedEvaluator(model, graph, batches, reuse_prefix=reuse), settings)
        for reuse in (False, True)
    ]
    reference, fast = selectors
    assert reference.evaluator.runner is None and fast.evaluator.runner is not None
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compared = 0
    while reference.reduction() < settings.target - 1e-12:
        candidates = reference.candidates()
        assert [(c.group, c.removed) for c in candidates] == [(c.group, c.removed) for c in fast.candidates()]
        removals = [~reference._kept_after(c) for c in candidates]
        loss_before, expected = reference.evaluator.losses(~reference.kept, removals)
        fast_before, got = fast.evaluator.losses(~fast.kept, removals)
        assert fast_before == pytest.approx(loss_before, abs=LOSS_TOL)
        np.testing.assert_allclose(got, expected, rtol=0, atol=LOSS_TOL)
        ranked = np.sort(expected)
        if len(ranked) == 1 or ranked[1] - ranked[0] > MARGIN:
            assert int(np.argmin(got)) == int(np.argmin(expected))
            compared += 1
        step = reference.step()
        fast.kept = reference.kept.copy()
        assert step is not None
    assert compared >= 2  # the test compared real choices, not only near-ties
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[key]), key  # every zeroed slice written back


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_chunk_chooses_the_same_pairs_and_plan_as_the_whole_forward(name):
    built, classes, size, settings, seed = MODELS[name]()
    model, graph, cost, batches = _setup(built, classes, size, seed)
    def chunk(**evaluation):
        return prune_chunk(model, graph, cost, graph.dense_macs, _limits(graph), batches, settings, settings.target,
                           **evaluation)

    plan, steps = chunk(reuse_prefix=False, early_exit=False)  # every loss exact: the margins below are real
    fast_plan, fast_steps = chunk()
    margins = [np.diff(np.sort([e["loss"] for e in s["evaluated"]])[:2]) for s in steps]
    assert all(m.size == 0 or m[0] > MARGIN for m in margins), "a near-tie on this seed: pick another seed"
    assert [(s["group"], s["criterion"]) for s in fast_steps] == [(s["group"], s["criterion"]) for s in steps]
    assert fast_plan == plan and len(steps) >= 3


def test_a_model_torch_fx_cannot_trace_falls_back_to_the_whole_forward():
    model, graph, cost, batches = _setup(Branching, 5, 12)
    evaluator = MaskedEvaluator(model, graph, batches)
    assert evaluator.runner is None
    removed = np.zeros(graph.labels.size, dtype=bool)
    removed[graph.groups[0].classes[:2]] = True
    before, (loss,) = evaluator.losses(np.zeros_like(removed), [removed])
    assert loss == evaluator.loss(removed) and before == evaluator.loss(np.zeros_like(removed))


def test_a_suffix_leaves_the_cached_activations_as_they_were():
    """The in-place ReLU after the cut must not write into the cached live values."""
    model, graph, _, batches = _setup(Branchy, 5, 12)
    runner = PrefixRunner.build(model, batches[0][0])
    position = runner.start(batches[0][0])
    runner.advance(position, runner.cut([model.inner.weight]))
    cached = {i: v.clone() for i, v in position.values.items()}
    with torch.no_grad():
        first, second, whole = runner.finish(position), runner.finish(position), model(batches[0][0])
    assert all(torch.equal(position.values[i], v) for i, v in cached.items())
    torch.testing.assert_close(first, whole)
    torch.testing.assert_close(second, whole)


def test_the_cut_is_the_first_layer_that_reads_a_tensor():
    model, _, _, batches = _setup(Branchy, 5, 12)
    runner = PrefixRunner.build(model, batches[0][0])
    order = [n.target for n in runner.nodes]
    assert order[runner.cut([model.right.weight, model.back.weight])] == "right"
    assert order[runner.cut([model.fc.bias])] == "fc"
    assert runner.cut([torch.zeros(1)]) == 1  # unknown tensor: the whole model

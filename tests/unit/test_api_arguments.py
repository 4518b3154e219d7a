"""The public API checks its arguments at the entry points: a wrong one is a CompressorError that
is also a TypeError and names the function and the argument, not an AttributeError from deep
inside (issue 26)."""
from __future__ import annotations

import pytest
import torch

from compressor import (CompressorError, CostModel, OneCyclePruner, PruneConfig, SelectionConfig, analyse, apply_plan,
                        group_l2, select_plan)
from compressor.models import build_model

X = torch.zeros(1, 3, 32, 32)


@pytest.fixture(scope="module")
def model():
    return build_model("resnet20").eval()


@pytest.fixture(scope="module")
def graph(model):
    return analyse(model, X)


CASES = [
    ("build_model(123)", lambda m, g: build_model(123), "build_model: name must be a model name"),
    ("build_model(num_classes='10')", lambda m, g: build_model("resnet20", num_classes="10"),
     "build_model: num_classes must be an int"),
    ("analyse('resnet20', x)", lambda m, g: analyse("resnet20", X), "analyse: model must be a torch.nn.Module"),
    ("analyse(m, 'x')", lambda m, g: analyse(m, "x"), "analyse: example_input must be a tensor"),
    ("analyse(m, x, ignore='conv1')", lambda m, g: analyse(m, X, ignore="conv1"), "analyse: ignore must be"),
    ("PruneConfig(epochs='x')", lambda m, g: PruneConfig(epochs="x"), "PruneConfig: epochs must be int"),
    ("PruneConfig(epochs=True)", lambda m, g: PruneConfig(epochs=True), "PruneConfig: epochs must be int"),
    ("PruneConfig(lr nan)", lambda m, g: PruneConfig(flops_reduction=float("nan")),
     "PruneConfig: flops_reduction must be finite"),
    ("SelectionConfig('x')", lambda m, g: SelectionConfig("x"), "SelectionConfig: flops_reduction must be float"),
    ("select_plan(None, None, None, cfg)", lambda m, g: select_plan(None, None, None, PruneConfig()),
     "select_plan: graph must be a ChannelGraph"),
    ("select_plan(g, cost, scores, PruneConfig)",
     lambda m, g: select_plan(g, CostModel(g, m), group_l2(g, m), PruneConfig()), "select_plan: config must be a SelectionConfig"),
    ("select_plan(g, None, ...)", lambda m, g: select_plan(g, None, None, SelectionConfig(0.5)),
     "select_plan: cost must be a CostModel"),
    ("apply_plan(model, None, None)", lambda m, g: apply_plan(m, None, None), "apply_plan: graph must be a ChannelGraph"),
    ("apply_plan('m', g, None)", lambda m, g: apply_plan("m", g, None), "apply_plan: model must be a torch.nn.Module"),
    ("apply_plan(m, g, None)", lambda m, g: apply_plan(m, g, None), "apply_plan: plan must be a PruningPlan"),
    ("OneCyclePruner('resnet20', x, cfg, None)", lambda m, g: OneCyclePruner("resnet20", X, PruneConfig(), None),
     "OneCyclePruner: model must be a torch.nn.Module (build one with compressor.models.build_model('resnet20'))"),
    ("OneCyclePruner(m, x, 'cfg')", lambda m, g: OneCyclePruner(m, X, "cfg", None),
     "OneCyclePruner: config must be a PruneConfig"),
    ("CostModel(None, m)", lambda m, g: CostModel(None, m), "CostModel: graph must be a ChannelGraph"),
    ("group_l2(g, 'm')", lambda m, g: group_l2(g, "m"), "group_l2: model must be a torch.nn.Module"),
]


@pytest.mark.parametrize("call, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_wrong_argument_is_named_at_the_entry_point(model, graph, call, words):
    with pytest.raises(CompressorError) as caught:
        call(model, graph)
    assert isinstance(caught.value, TypeError), "a wrong argument is a TypeError to a Python caller too"
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_right_arguments_still_work(model, graph):
    """The checks take what the API promises: a list for a tuple field, a tuple of inputs."""
    config = PruneConfig(epochs=2, ignore=["fc"], flops_reduction=0.3)
    assert config.epochs == 2
    assert analyse(model, (X,)).groups
    plan = select_plan(graph, CostModel(graph, model), group_l2(graph, model), SelectionConfig(0.3))
    assert plan.groups

"""Selection: targets met within tolerance, caps, rounding, minimum width, errors."""
import numpy as np
import pytest
import torch

from compressor import CostModel, SelectionConfig, UnreachableTargetError, analyse, group_l2, select_plan
from compressor.errors import CompressorError
from compressor.engine.plan import kept_class_mask
from compressor.models import build_model


@pytest.fixture(scope="module")
def resnet56():
    model = build_model("resnet56")
    graph = analyse(model, torch.randn(1, 3, 32, 32))
    return model, graph, CostModel(graph, model), group_l2(graph, model)


@pytest.mark.parametrize("target", [0.2, 0.3, 0.5, 0.6])
def test_reduction_lands_within_half_a_point(resnet56, target):
    model, graph, cost, scores = resnet56
    plan = select_plan(graph, cost, scores, SelectionConfig(target))
    achieved = 1 - cost.macs(kept_class_mask(graph, plan)) / cost.dense_macs
    assert target <= achieved <= target + 0.005


def test_caps_rounding_and_min_width(resnet56):
    model, graph, cost, scores = resnet56
    plan = select_plan(graph, cost, scores, SelectionConfig(0.5, round_to=4, max_prune_fraction=0.5, min_width=4))
    for group in graph.groups:
        kept = len(plan.groups[group.name].kept)
        assert kept >= max(4, group.size * 0.5)
        assert kept % 4 == 0 or kept == group.size


def test_default_rounding_is_eight_for_wide_groups(resnet56):
    model, graph, cost, scores = resnet56
    plan = select_plan(graph, cost, scores, SelectionConfig(0.4))
    for group in graph.groups:
        kept = len(plan.groups[group.name].kept)
        if group.size >= 16:
            assert kept % 8 == 0 or kept == group.size


def test_groups_narrower_than_the_multiple_keep_hardware_friendly_widths(resnet56):
    """ResNet-56 has 16-, 32- and 64-channel groups; at --round-to 32 the 16-channel
    ones may only keep all 16 (gcd), never an arbitrary width."""
    model, graph, cost, scores = resnet56
    plan = select_plan(graph, cost, scores, SelectionConfig(0.2, round_to=32))
    widths = {group.size: set() for group in graph.groups}
    for group in graph.groups:
        widths[group.size].add(len(plan.groups[group.name].kept))
    assert widths[16] == {16}
    assert widths[32] <= {32} and widths[64] <= {32, 64}


def test_kept_channels_are_the_most_important(resnet56):
    model, graph, cost, scores = resnet56
    plan = select_plan(graph, cost, scores, SelectionConfig(0.5, round_to=1))
    for group in graph.groups:
        kept = np.array(plan.groups[group.name].kept)
        removed = np.setdiff1d(np.arange(group.size), kept)
        if removed.size:
            assert scores[group.classes[kept]].min() >= scores[group.classes[removed]].max()


def test_unreachable_target_names_the_maximum(resnet56):
    model, graph, cost, scores = resnet56
    with pytest.raises(UnreachableTargetError, match=r"maximum reachable is \d+\.\d%"):
        select_plan(graph, cost, scores, SelectionConfig(0.95, max_prune_fraction=0.5))


@pytest.mark.parametrize(
    "kwargs", [{"flops_reduction": 0.0}, {"flops_reduction": 1.0}, {"flops_reduction": 0.5, "round_to": 0}]
)
def test_invalid_config_is_refused(kwargs):
    with pytest.raises(CompressorError):
        SelectionConfig(**kwargs)

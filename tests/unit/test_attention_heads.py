"""Removing whole attention heads keeps the function (heads masked == heads sliced),
for the zoo's ViT, torchvision's nn.MultiheadAttention ViT and Swin V1/V2."""
import copy

import pytest
import torch
from torchvision.models import swin_t, swin_v2_t
from torchvision.models.vision_transformer import VisionTransformer

from compressor import CostModel, GroupPlan, PruningPlan, analyse, apply_plan, count_macs
from compressor.engine.masking import masked_copy
from compressor.engine.plan import kept_class_mask
from compressor.engine.verify import compare, make_informative
from compressor.models import build_model


def small_vit():
    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=96, num_classes=5)


CASES = {
    "vit_tiny_cifar": (lambda: build_model("vit_tiny_cifar"), (3, 32, 32)),
    "torchvision_vit": (small_vit, (3, 32, 32)),
    "swin_t": (lambda: swin_t(num_classes=5), (3, 64, 64)),
    "swin_v2_t": (lambda: swin_v2_t(num_classes=5), (3, 64, 64)),
}


def drop_heads(graph) -> PruningPlan:
    """Remove the first and last head of every heads group, keep everything else."""
    groups = {}
    for group in graph.groups:
        kept = tuple(range(group.size))
        if group.name.endswith(".heads") and group.size > 2:
            kept = kept[1:-1]
        groups[group.name] = GroupPlan(group.size, kept)
    return PruningPlan(groups)


@pytest.mark.parametrize("case", list(CASES))
def test_removing_heads_keeps_the_function(case):
    factory, size = CASES[case]
    model = make_informative(factory().eval())
    example = torch.randn(1, *size)
    graph = analyse(model, example)
    assert any(g.name.endswith(".heads") for g in graph.groups)
    plan = drop_heads(graph)
    cost = CostModel(graph, model)
    dense, masked = copy.deepcopy(model), masked_copy(model, graph, plan)
    pruned = apply_plan(model, graph, plan)
    result = compare(dense, masked, pruned, (torch.randn(2, *size),))
    assert result.changed and result.ok(), result
    assert count_macs(pruned, example) == cost.macs(kept_class_mask(graph, plan)) < graph.dense_macs
    # A pruned model can be analysed and pruned again.
    again = analyse(pruned, example)
    assert any(g.name.endswith(".heads") for g in again.groups)

"""timm models (random init, reduced input sizes): the invariant on a subset across
families, whole-head pruning of timm's attention, and the timm: names."""
from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("timm")

from compressor import CompressorError, CostModel, ModelSpec, analyse, apply_plan, count_macs  # noqa: E402
from compressor.engine.masking import masked_copy  # noqa: E402
from compressor.engine.plan import kept_class_mask  # noqa: E402
from compressor.engine.verify import compare, make_informative  # noqa: E402
from compressor.models.zoo import build, entry  # noqa: E402
from compressor.models import build_model, get_entry  # noqa: E402
from tests.helpers import assert_invariants, assert_round_trip, prune_and_check  # noqa: E402
from tests.unit.test_attention_heads import drop_heads  # noqa: E402

SMALL = (3, 64, 64)
SUBSET = [
    "resnet18d",  # ResNet-D: avg-pool downsample shortcut
    "efficientnet_b0",  # SE, BatchNormAct2d, DropPath
    "tf_efficientnet_b0",  # Conv2dSame ('SAME' padding)
    "mobilenetv3_small_050",  # hard-swish SE
    "regnetx_002",  # grouped convs
    "convnext_atto",  # LayerNorm2d, LayerScale
    "cspresnet50",  # cross-stage split by a fixed width (kept whole)
    "vit_tiny_patch16_224",  # timm Attention (fused qkv), rebuilt with img_size=64
    "deit_tiny_patch16_224",
    "swin_tiny_patch4_window7_224",  # timm WindowAttention, relative position bias per head
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", SUBSET)
def test_timm_model_prunes_exactly(name, tmp_path):
    model = build_model(f"timm:{name}", num_classes=10, input_size=SMALL)
    result = prune_and_check(model, SMALL, 0.3)
    assert_invariants(result, 0.3)
    if name in ("vit_tiny_patch16_224", "convnext_atto"):
        assert_round_trip(result, ModelSpec(f"timm:{name}", 10, SMALL), tmp_path)  # rebuilt by name at 64x64


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "swin_tiny_patch4_window7_224"])
def test_removing_timm_attention_heads_keeps_the_function(name):
    model = make_informative(build_model(f"timm:{name}", num_classes=5, input_size=SMALL).eval())
    example = torch.randn(1, *SMALL)
    graph = analyse(model, example)
    heads = [g for g in graph.groups if g.name.endswith(".heads")]
    assert heads and all(g.size >= 3 for g in heads)
    before = {n: m.num_heads for n, m in model.named_modules() if type(m).__name__ in ("Attention", "WindowAttention")}
    plan = drop_heads(graph)
    cost = CostModel(graph, model)
    dense, masked = copy.deepcopy(model), masked_copy(model, graph, plan)
    pruned = apply_plan(model, graph, plan)
    result = compare(dense, masked, pruned, (torch.randn(2, *SMALL),))
    assert result.changed and result.ok(), result
    assert count_macs(pruned, example) == cost.macs(kept_class_mask(graph, plan)) < graph.dense_macs
    after = {n: m.num_heads for n, m in pruned.named_modules() if n in before}
    assert after == {n: h - 2 for n, h in before.items()}  # attributes refreshed, no hand fixes
    again = analyse(pruned, example)  # analysable, and prunable again where more than one head is left
    assert any(g.name.endswith(".heads") for g in again.groups) or set(after.values()) == {1}


def test_split_by_a_fixed_width_is_kept_whole_not_sliced_wrong():
    """skresnet splits by a width stored in the module: pruning it would mis-slice."""
    model = build_model("timm:skresnet18", num_classes=10)
    graph = analyse(model, torch.randn(1, *SMALL))
    assert any("splits channels at fixed offsets" in reason for reason in graph.frozen_reasons.values())


def test_weight_standardised_convs_keep_their_inputs():
    model = build_model("timm:nf_resnet26", num_classes=10)
    graph = analyse(model, torch.randn(1, *SMALL))
    assert any("standardises its weight" in reason for reason in graph.frozen_reasons.values())


def test_timm_names_in_the_registry():
    info = get_entry("timm:efficientnet_b3")
    assert info.family == "timm" and info.input_size == (3, 288, 288) and info.num_classes == 1000
    model = build("timm:resnet18d", num_classes=7)
    assert model(torch.randn(1, *SMALL)).shape == (1, 7)
    with pytest.raises(CompressorError, match=r"unknown timm model 'resnet18dd'; did you mean: timm:resnet18d"):
        entry("timm:resnet18dd")

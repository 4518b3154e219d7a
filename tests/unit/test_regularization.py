"""The shrink touches exactly the selected channels' weight slices and BN gamma."""
import copy

import torch

from compressor import CostModel, SelectionConfig, analyse, select_plan
from compressor.engine.importance import score_channels
from compressor.engine.masking import masked_copy
from compressor.schedules.regularization import Shrinker
from compressor.models import build_model


def test_shrink_scales_only_what_the_plan_removes():
    model = build_model("resnet20")
    graph = analyse(model, torch.randn(1, 3, 32, 32))
    plan = select_plan(graph, CostModel(graph, model), score_channels("ocs", graph, model), SelectionConfig(0.5))
    before = copy.deepcopy(model)
    Shrinker(model, graph, plan).shrink(0.5)
    # Entries the plan removes are exactly those the masked reference zeroes.
    removed = masked_copy(before, graph, plan)
    after, original, masked = (dict(m.named_parameters()) for m in (model, before, removed))
    touched = 0
    for name, param in after.items():
        selected = masked[name] != original[name]
        if name.endswith(".bias"):
            assert torch.equal(param, original[name]), f"{name}: biases are not shrunk"
            continue
        assert torch.equal(param[~selected], original[name][~selected]), f"{name}: kept entries changed"
        # Selected entries shrink by 0.5 (twice where a row and a column are both selected).
        ratio = param[selected] / original[name][selected]
        assert torch.all(((ratio - 0.5).abs() < 1e-6) | ((ratio - 0.25).abs() < 1e-6)), name
        touched += int(selected.sum())
    assert touched > 0

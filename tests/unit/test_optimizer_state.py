"""Pruning mid-training keeps the optimizer: one step after apply equals the same
step on the masked model, restricted to the kept slices."""
import copy

import pytest
import torch
import torch.nn.functional as F

from compressor import CostModel, SelectionConfig, analyse, apply_plan, group_l2, select_plan
from compressor.apply import slice_indices
from compressor.masking import apply_mask
from models import build_model

OPTIMIZERS = {
    "sgd-nesterov": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05),
}


def _step(model, optimizer, batch):
    images, labels = batch
    optimizer.zero_grad()
    F.cross_entropy(model(images), labels).backward()
    optimizer.step()


@pytest.mark.parametrize("name", ["resnet20", "vit_tiny_cifar"])
@pytest.mark.parametrize("optimizer_name", list(OPTIMIZERS))
def test_step_after_apply_equals_masked_step(name, optimizer_name):
    model = build_model(name)
    optimizer = OPTIMIZERS[optimizer_name](model.parameters())
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(2)]
    model.train()
    _step(model, optimizer, batches[0])  # populate momentum / Adam moments

    graph = analyse(model, torch.randn(1, 3, 32, 32))
    plan = select_plan(graph, CostModel(graph, model), group_l2(graph, model), SelectionConfig(0.4))
    masked_model, masked_optimizer = copy.deepcopy((model, optimizer))
    apply_mask(masked_model, graph, plan)
    indices = slice_indices(graph, plan)
    params_before = [id(p) for p in model.parameters()]
    pruned = apply_plan(model, graph, plan, optimizer)
    assert [id(p) for p in pruned.parameters()] == params_before, "parameters must keep their identity"

    _step(pruned, optimizer, batches[1])
    _step(masked_model, masked_optimizer, batches[1])
    masked_params = dict(masked_model.named_parameters())
    sliced = 0
    for key, param in pruned.named_parameters():
        expected = masked_params[key].detach()
        module, _, tensor = key.rpartition(".")
        for dim, index in indices.get((module, tensor), {}).items():
            expected = expected.index_select(dim, index)
            sliced += 1
        torch.testing.assert_close(param.detach(), expected, atol=1e-6, rtol=1e-5, msg=key)
    assert sliced > 0


def test_optimizer_state_is_sliced_with_the_parameter():
    model = build_model("resnet20")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    _step(model, optimizer, (torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))))
    graph = analyse(model, torch.randn(1, 3, 32, 32))
    plan = select_plan(graph, CostModel(graph, model), group_l2(graph, model), SelectionConfig(0.5))
    apply_plan(model, graph, plan, optimizer)
    for param in model.parameters():
        assert optimizer.state[param]["momentum_buffer"].shape == param.shape

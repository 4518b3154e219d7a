"""Pruning mid-training keeps the optimizer: one step after apply equals the same
step on the masked model, restricted to the kept slices."""
import copy

import pytest
import torch
import torch.nn.functional as F

from compressor import CostModel, SelectionConfig, analyse, apply_plan, group_l2, select_plan
from compressor.engine.apply import slice_indices
from compressor.engine.masking import apply_mask
from compressor.models import build_model

OPTIMIZERS = {
    "sgd-nesterov": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05),
}


# The masked and the sliced model sum the same products in different orders, so their
# gradients agree only to float32 rounding: measured, within 3e-6 of each tensor's
# largest gradient, and ~2e-10 absolute where softmax cancels a gradient to ~0 (key
# biases, against a largest gradient of ~1).  The bounds leave a 7x and 50x margin.
GRAD_RTOL_OF_TENSOR_MAX = 2e-5
GRAD_ATOL_OF_MODEL_MAX = 1e-8
# Where the tolerance derived below exceeds this fraction of the LR, the step is noise
# (e.g. a key bias: softmax cancels its gradient to ~1e-10) and says nothing.
ILL_POSED_OF_LR = 0.1


def _step(model, optimizer, batch):
    images, labels = batch
    optimizer.zero_grad()
    F.cross_entropy(model(images), labels).backward()
    optimizer.step()


def _sensitivity(optimizer, param) -> torch.Tensor:
    """How far ``param``'s last step moves, per element, per unit of gradient error.

    SGD with momentum is linear in the gradient: nesterov's step is lr * (1 + momentum)
    * g.  Adam divides by sqrt(v_hat) + eps, so where v_hat is tiny the step amplifies
    any rounding in the gradient: to first order by lr * 2 / (sqrt(v_hat) + eps) (the
    first moment's weight (1 - beta1) / (1 - beta1^t) plus the second moment's change,
    each at most about 1 at step 2).
    """
    group = next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))
    if isinstance(optimizer, torch.optim.SGD):
        return torch.full_like(param, group["lr"] * (1 + group["momentum"]))
    state = optimizer.state[param]
    beta2, step = group["betas"][1], float(state["step"])
    v_hat = state["exp_avg_sq"] / (1 - beta2**step)
    return group["lr"] * 2 / (v_hat.sqrt() + group["eps"])


def _sliced(tensor: torch.Tensor, dims: dict) -> torch.Tensor:
    for dim, index in dims.items():
        tensor = tensor.index_select(dim, index)
    return tensor


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
    floor = GRAD_ATOL_OF_MODEL_MAX * max(float(p.grad.abs().max()) for p in masked_model.parameters())
    lr = optimizer.param_groups[0]["lr"]
    sliced, checked, ill_posed = 0, 0, 0
    for key, param in pruned.named_parameters():
        module, _, tensor = key.rpartition(".")
        dims = indices.get((module, tensor), {})
        sliced += len(dims)
        reference = masked_params[key]
        expected_grad = _sliced(reference.grad, dims)
        grad_atol = floor + GRAD_RTOL_OF_TENSOR_MAX * float(expected_grad.abs().max())
        torch.testing.assert_close(param.grad, expected_grad, atol=grad_atol, rtol=0, msg=lambda m: f"{key} grad: {m}")
        # The steps may differ by what the gradients may differ by, carried through the update.
        atol = 1e-6 + grad_atol * _sliced(_sensitivity(masked_optimizer, reference), dims)
        expected = _sliced(reference.detach(), dims)
        difference = (param.detach() - expected).abs()
        bad = difference > atol + 1e-5 * expected.abs()
        assert not bad.any(), f"{key}: {int(bad.sum())} elements off, worst {float(difference.max()):.3g}"
        checked += atol.numel()
        ill_posed += int((atol > ILL_POSED_OF_LR * lr).sum())
    assert sliced > 0
    assert ill_posed < 0.01 * checked, f"{ill_posed} of {checked} elements have no meaningful step to compare"


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

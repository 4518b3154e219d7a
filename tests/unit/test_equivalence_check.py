"""The engine tests' equivalence check can fail: in ResNet-110 (whose output reached
~2e8 under random BN statistics, hiding errors of 1e3) a slice that takes one wrong
channel of one tensor must be caught, while the correct slice passes."""
import copy

import pytest
import torch

from compressor import CostModel, SelectionConfig, analyse, apply_plan, group_l2, select_plan
from compressor.engine.apply import slice_indices
from compressor.engine.masking import masked_copy
from compressor.engine.verify import calibrate_batch_norm, compare, make_informative
from compressor.models import build_model
from tests.helpers import CALIBRATION_BATCH, EQUIVALENCE_ATOL, EQUIVALENCE_DTYPE

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = (3, 32, 32)


@pytest.fixture(scope="module")
def resnet110():
    torch.manual_seed(0)
    model = make_informative(build_model("resnet110").eval())
    calibrate_batch_norm(model, torch.randn(CALIBRATION_BATCH, *SIZE))
    graph = analyse(model, torch.randn(1, *SIZE))
    plan = select_plan(graph, CostModel(graph, model), group_l2(graph, model), SelectionConfig(0.5))
    return model, graph, plan, masked_copy(model, graph, plan), (torch.randn(2, *SIZE),)


def _check(resnet110, pruned):
    model, _, _, masked, inputs = resnet110
    return compare(model, masked, pruned, inputs, dtype=EQUIVALENCE_DTYPE)


def test_the_correct_slice_passes_with_outputs_at_a_sane_scale(resnet110):
    model, graph, plan, _, _ = resnet110
    result = _check(resnet110, apply_plan(copy.deepcopy(model), graph, plan))
    assert result.changed and result.max_abs_diff <= EQUIVALENCE_ATOL, result
    assert result.reference_scale < 100, result  # calibrated statistics: no explosion


@pytest.mark.parametrize(
    "module,tensor,dim",
    [
        ("layer2.4.conv1", "weight", 0),  # a producer's output rows
        ("layer2.4.conv2", "weight", 1),  # a consumer's input columns
        ("layer2.4.bn1", "weight", 0),
        ("layer2.4.bn1", "running_mean", 0),  # a buffer the masked reference never zeroes
        ("layer3.8.bn1", "running_var", 0),
    ],
)
def test_one_wrong_channel_in_one_tensor_fails(resnet110, module, tensor, dim):
    model, graph, plan, _, _ = resnet110
    dims = dict(slice_indices(graph, plan)[(module, tensor)])
    kept = dims[dim]
    removed = sorted(set(range(getattr(model.get_submodule(module), tensor).shape[dim])) - set(kept.tolist()))
    dims[dim] = torch.cat([kept[:-1], torch.tensor([removed[0]])])  # last kept index off by a removed one
    pruned = apply_plan(copy.deepcopy(model), graph, plan)
    wrong = getattr(model.get_submodule(module), tensor).detach()
    for d, index in dims.items():
        wrong = wrong.index_select(d, index)
    with torch.no_grad():
        getattr(pruned.get_submodule(module), tensor).copy_(wrong)
    result = _check(resnet110, pruned)
    assert result.max_abs_diff > 1e3 * EQUIVALENCE_ATOL, result

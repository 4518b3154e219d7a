"""Helpers the engine tests share: prune a model and check the invariants."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from compressor import (
    CostModel,
    ModelSpec,
    PruningPlan,
    SelectionConfig,
    analyse,
    apply_plan,
    count_macs,
    group_l2,
    load_pruned,
    save_pruned,
    select_plan,
)
from compressor.engine.masking import masked_copy
from compressor.engine.plan import kept_class_mask
from compressor.engine.verify import Equivalence, calibrate_batch_norm, compare, make_informative

# The equivalence check runs in float64 after calibrating BN statistics (outputs of
# scale 0.2..2e3 over the zoo), where rounding leaves at most ~5e-12 (measured); a
# wrong slice moves the output by 1e-3 or more.  A fixed bound: it does not grow
# with the output, so an exploding output cannot hide an error.
EQUIVALENCE_DTYPE = torch.float64
EQUIVALENCE_ATOL = 1e-9
# Four images set BN statistics: with two, Inception-V3's 1x1/2x2 late layers get
# near-zero variances and its output reaches 3e7 again.  Float64 runs on one image:
# the check is about channels, more images would only cost time.
CALIBRATION_BATCH = 4


@dataclass
class PruneResult:
    plan: PruningPlan
    equivalence: Equivalence
    predicted_macs: int
    counted_macs: int
    dense_macs: int
    predicted_params: int
    counted_params: int
    pruned: nn.Module
    inputs: tuple

    @property
    def reduction(self) -> float:
        return 1 - self.counted_macs / self.dense_macs


def prune_and_check(
    model: nn.Module, input_size, reduction: float, batch: int = 2, ignore=(), **selection
) -> PruneResult:
    model = make_informative(model.eval())
    calibrate_batch_norm(model, torch.randn(CALIBRATION_BATCH, *input_size))
    example = torch.randn(1, *input_size)
    graph = analyse(model, example, ignore=ignore)
    cost = CostModel(graph, model)
    plan = select_plan(graph, cost, group_l2(graph, model), SelectionConfig(reduction, **selection))
    kept = kept_class_mask(graph, plan)
    dense = copy.deepcopy(model)
    masked = masked_copy(model, graph, plan)
    pruned = apply_plan(model, graph, plan)
    inputs = (torch.randn(batch, *input_size),)
    # Converted in place, not copied (copies of a large model cost as much as running
    # it); pruned goes back to float32 exactly, as every float32 is a float64.
    dense, masked, pruned = (m.to(EQUIVALENCE_DTYPE) for m in (dense, masked, pruned))
    equivalence = compare(dense, masked, pruned, (inputs[0][:1],), dtype=EQUIVALENCE_DTYPE)
    pruned.to(torch.float32)
    return PruneResult(
        plan=plan,
        equivalence=equivalence,
        predicted_macs=cost.macs(kept),
        counted_macs=count_macs(pruned, example),
        dense_macs=graph.dense_macs,
        predicted_params=cost.params(kept),
        counted_params=sum(p.numel() for p in pruned.parameters()),
        pruned=pruned,
        inputs=inputs,
    )


def assert_round_trip(result: PruneResult, spec: ModelSpec, directory) -> None:
    """Saving and loading the pruned model gives the same outputs."""
    path = save_pruned(directory / f"{spec.name}.pt", result.pruned, spec, result.plan)
    loaded, loaded_spec, loaded_plan = load_pruned(path)
    assert loaded_spec == spec and loaded_plan == result.plan
    with torch.no_grad():
        assert torch.equal(result.pruned.eval()(*result.inputs), loaded(*result.inputs))


def assert_invariants(result: PruneResult, target: float, tolerance: float = 0.01) -> None:
    assert result.equivalence.changed, "the plan did not change the output: the check would be vacuous"
    assert result.equivalence.max_abs_diff <= EQUIVALENCE_ATOL, result.equivalence
    assert result.predicted_macs == result.counted_macs
    assert result.predicted_params == result.counted_params
    assert abs(result.reduction - target) <= tolerance, result.reduction

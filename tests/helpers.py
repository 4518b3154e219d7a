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
from compressor.masking import masked_copy
from compressor.plan import kept_class_mask
from compressor.verify import Equivalence, compare, make_informative


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
    example = torch.randn(1, *input_size)
    graph = analyse(model, example, ignore=ignore)
    cost = CostModel(graph, model)
    plan = select_plan(graph, cost, group_l2(graph, model), SelectionConfig(reduction, **selection))
    kept = kept_class_mask(graph, plan)
    dense = copy.deepcopy(model)
    masked = masked_copy(model, graph, plan)
    pruned = apply_plan(model, graph, plan)
    inputs = (torch.randn(batch, *input_size),)
    equivalence = compare(dense, masked, pruned, inputs)
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
    assert result.equivalence.ok(atol=1e-5, rtol=1e-5), result.equivalence
    assert result.predicted_macs == result.counted_macs
    assert result.predicted_params == result.counted_params
    assert abs(result.reduction - target) <= tolerance, result.reduction

"""Analyse -> plan -> apply in one call: prune a model once, with no training.

``compress info --flops-reduction``, the README's engine example and the benchmark
scripts all want the same four steps (trace the channel groups, score the channels,
find the plan that meets the budget, slice); this is their one home, so a rule of the
sequence (which criterion by default, that the slice is checked on the example first,
what the plan is predicted to cost) is written once.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compressor.arguments import check_type
from compressor.engine.analysis.graph import ChannelGraph, analyse, check_model_and_input
from compressor.engine.apply import apply_plan
from compressor.engine.cost import CostModel
from compressor.engine.importance import score_channels
from compressor.engine.plan import PruningPlan, kept_class_mask
from compressor.engine.selection import SelectionConfig, select_plan

DEFAULT_CRITERION = "l2"  # the foundation's normalised group L2 (what group_l2 scores)


@dataclass(frozen=True)
class PlannedPrune:
    """A plan for ``model`` and what it is predicted to cost, before anything is sliced."""

    graph: ChannelGraph
    cost: CostModel
    plan: PruningPlan
    predicted_macs: int

    @property
    def dense_macs(self) -> int:
        return self.graph.dense_macs


@dataclass(frozen=True)
class PrunedOnce(PlannedPrune):
    """The sliced model beside its plan.  ``model`` is the caller's module, sliced in place."""

    model: nn.Module | None = None


def plan_once(model: nn.Module, example_input, config: SelectionConfig, criterion: str = DEFAULT_CRITERION, *,
              ignore: tuple[str, ...] = (), graph: ChannelGraph | None = None, latency=None) -> PlannedPrune:
    """Score ``model``'s channels with ``criterion`` and find the plan that meets ``config``
    (``graph``: a ready analysis of this model, else it is traced on ``example_input``;
    ``latency``: the deploy target's latency model, for a ``config.speedup`` budget)."""
    check_model_and_input(model, example_input, "plan_once")
    check_type(config, SelectionConfig, "config", "plan_once", "a SelectionConfig")
    graph = graph if graph is not None else analyse(model, example_input, ignore=ignore)
    cost = CostModel(graph, model)
    plan = select_plan(graph, cost, score_channels(criterion, graph, model, cost=cost), config, latency)
    return PlannedPrune(graph, cost, plan, cost.macs(kept_class_mask(graph, plan)))


def prune_once(model: nn.Module, example_input, config: SelectionConfig, criterion: str = DEFAULT_CRITERION, *,
               ignore: tuple[str, ...] = (), optimizer=None, graph: ChannelGraph | None = None,
               latency=None) -> PrunedOnce:
    """``plan_once``, then slice ``model`` in place to the plan, checked on a copy first (a plan
    that breaks the model raises ``ApplyRefused`` and leaves ``model`` as it was).  With
    ``optimizer`` its state (momentum) is sliced along."""
    planned = plan_once(model, example_input, config, criterion, ignore=ignore, graph=graph, latency=latency)
    sliced = apply_plan(model, planned.graph, planned.plan, optimizer, example_input=example_input)
    return PrunedOnce(planned.graph, planned.cost, planned.plan, planned.predicted_macs, sliced)

"""One-cycle structured pruning toolkit: analyse -> plan -> apply.

The public API.  Pruning inside your own training loop::

    pruner = OneCyclePruner(model, example_input, PruneConfig(flops_reduction=0.5, epochs=E), optimizer)
    for epoch in range(E):
        for x, y in data:
            ...; optimizer.step()
            pruner.after_step()                  # shrink the channels selected for removal
        event = pruner.epoch_end(epoch)          # search, stability; prunes in place when stable

(``compressor.lightning.PruningCallback`` does the same inside Lightning's ``Trainer.fit``.)
The engine underneath::

    graph = analyse(model, example_input)            # channel groups
    cost = CostModel(graph, model)                   # analytic MACs/params
    plan = select_plan(graph, cost, group_l2(graph, model), SelectionConfig(0.5))
    model = apply_plan(model, graph, plan, optimizer)  # a smaller dense model
"""
__version__ = "0.1.0"

from compressor.analysis.graph import ChannelGraph, ChannelGroup, analyse  # noqa: E402
from compressor.apply import apply_plan  # noqa: E402
from compressor.cost import CostModel  # noqa: E402
from compressor.errors import CompressorError  # noqa: E402
from compressor.flops import count_macs, count_params  # noqa: E402
from compressor.importance import group_l2  # noqa: E402
from compressor.masking import masked_copy  # noqa: E402
from compressor.onecycle import EpochEvent, OneCyclePruner, PruneConfig  # noqa: E402
from compressor.plan import GroupPlan, PruningPlan  # noqa: E402
from compressor.selection import SelectionConfig, UnreachableTargetError, select_plan  # noqa: E402
from compressor.serialization import ModelSpec, load_pruned, save_pruned  # noqa: E402

__all__ = [
    "ChannelGraph",
    "ChannelGroup",
    "CompressorError",
    "CostModel",
    "EpochEvent",
    "GroupPlan",
    "ModelSpec",
    "OneCyclePruner",
    "PruneConfig",
    "PruningCallback",
    "PruningPlan",
    "SelectionConfig",
    "UnreachableTargetError",
    "analyse",
    "apply_plan",
    "count_macs",
    "count_params",
    "group_l2",
    "load_pruned",
    "masked_copy",
    "save_pruned",
    "select_plan",
]


def __getattr__(name: str):
    """``compressor.PruningCallback`` imports Lightning only when asked for."""
    if name == "PruningCallback":
        from compressor.lightning import PruningCallback

        return PruningCallback
    raise AttributeError(f"module 'compressor' has no attribute {name!r}")

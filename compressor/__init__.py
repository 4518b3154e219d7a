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

# Each public name and the module that defines it.  They are imported on first use
# (PEP 562), so that ``import compressor`` -- which every ``compress`` command,
# ``compress --help`` included, does -- costs nothing until torch is really needed.
_EXPORTS = {
    "ChannelGraph": "compressor.analysis.graph",
    "ChannelGroup": "compressor.analysis.graph",
    "analyse": "compressor.analysis.graph",
    "apply_plan": "compressor.apply",
    "CostModel": "compressor.cost",
    "CompressorError": "compressor.errors",
    "count_macs": "compressor.flops",
    "count_params": "compressor.flops",
    "group_l2": "compressor.importance",
    "masked_copy": "compressor.masking",
    "EpochEvent": "compressor.onecycle",
    "OneCyclePruner": "compressor.onecycle",
    "PruneConfig": "compressor.onecycle",
    "GroupPlan": "compressor.plan",
    "PruningPlan": "compressor.plan",
    "SelectionConfig": "compressor.selection",
    "UnreachableTargetError": "compressor.selection",
    "select_plan": "compressor.selection",
    "ModelSpec": "compressor.serialization",
    "load_pruned": "compressor.serialization",
    "save_pruned": "compressor.serialization",
    "PruningCallback": "compressor.lightning",  # imports Lightning
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'compressor' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

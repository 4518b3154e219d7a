"""One-cycle structured pruning toolkit: analyse -> plan -> apply.

The public API.  Pruning inside your own training loop::

    pruner = OneCyclePruner(model, example_input, PruneConfig(flops_reduction=0.5, epochs=E), optimizer)
    for epoch in range(E):
        for x, y in data:
            ...; optimizer.step()
            pruner.after_step()                  # shrink the channels selected for removal
        event = pruner.epoch_end(epoch)          # search, stability; prunes in place when stable

(``compressor.integrations.lightning.PruningCallback`` does the same inside Lightning's ``Trainer.fit``.)
The engine underneath, in one call or step by step::

    pruned = prune_once(model, example_input, SelectionConfig(0.5))  # analyse -> plan -> apply
    graph = analyse(model, example_input)            # channel groups
    cost = CostModel(graph, model)                   # analytic MACs/params
    plan = select_plan(graph, cost, group_l2(graph, model), SelectionConfig(0.5))
    model = apply_plan(model, graph, plan, optimizer, example_input)  # a smaller dense model, checked first

A layer of your own is taught to the engine with ``register_handler(MyHandler())``, where
``MyHandler`` subclasses ``LayerHandler`` (README, "Your own layer"); a schedule of your own
(when to search and prune) with ``register_schedule("name", MySchedule)``, where ``MySchedule``
subclasses ``Schedule``.
"""
__version__ = "0.1.0"

# Each public name and the module that defines it.  They are imported on first use
# (PEP 562), so that ``import compressor`` -- which every ``compress`` command,
# ``compress --help`` included, does -- costs nothing until torch is really needed.
_EXPORTS = {
    "ChannelGraph": "compressor.engine.analysis.graph",
    "ChannelGroup": "compressor.engine.analysis.graph",
    "analyse": "compressor.engine.analysis.graph",
    "ChannelMap": "compressor.engine.analysis.records",  # what LayerHandler.trace records
    "LayerHandler": "compressor.engine.analysis.layers",  # the extension point: your own layer
    "register_handler": "compressor.engine.analysis.registry",
    "unregister_handler": "compressor.engine.analysis.registry",
    "apply_plan": "compressor.engine.apply",
    "CostModel": "compressor.engine.cost",
    "CompressorError": "compressor.errors",
    "count_macs": "compressor.engine.flops",
    "count_params": "compressor.engine.flops",
    "group_l2": "compressor.engine.importance",
    "masked_copy": "compressor.engine.masking",
    "EpochEvent": "compressor.schedules.base",
    "OneCyclePruner": "compressor.schedules.pruner",
    "PruneConfig": "compressor.schedules.config",
    "PrunerView": "compressor.schedules.pruner",  # what a schedule's hooks see of the pruner
    "Schedule": "compressor.schedules.base",  # the extension point: your own schedule
    "register_schedule": "compressor.schedules.registry",
    "unregister_schedule": "compressor.schedules.registry",
    "GroupPlan": "compressor.engine.plan",
    "PruningPlan": "compressor.engine.plan",
    "SelectionConfig": "compressor.engine.selection",
    "UnreachableTargetError": "compressor.engine.selection",
    "select_plan": "compressor.engine.selection",
    "prune_once": "compressor.engine.oneshot",  # analyse -> plan -> apply in one call
    "plan_once": "compressor.engine.oneshot",
    "PrunedOnce": "compressor.engine.oneshot",
    "ModelSpec": "compressor.runfiles.modelfile",
    "load_pruned": "compressor.runfiles.modelfile",
    "save_pruned": "compressor.runfiles.modelfile",
    "PruningCallback": "compressor.integrations.lightning",  # imports Lightning
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

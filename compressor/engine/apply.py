"""Apply a plan: slice parameters, buffers, gradients and optimizer state in place.

Parameters keep their identity (``param.data`` is replaced), so an optimizer built
on the unpruned model keeps working: its per-parameter state (SGD momentum, Adam
moments) is sliced with the same indices.  Module attributes are refreshed by the
layer handlers afterwards, which may swap a module for an equivalent one that can
hold the new shape (reusing the same parameter objects).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch import nn

from compressor.engine.analysis.graph import ChannelGraph, handler_for
from compressor.engine.plan import PruningPlan, kept_class_mask

SliceIndex = dict[tuple[str, str], dict[int, torch.Tensor]]


def slice_indices(graph: ChannelGraph, plan: PruningPlan) -> SliceIndex:
    """For every tensor dim that loses entries under ``plan``: the indices it keeps."""
    kept = kept_class_mask(graph, plan)
    result: SliceIndex = defaultdict(dict)
    for slot in graph.slots:
        keep = kept[graph.labels[slot.atoms]]
        if keep.all() or slot.dim in result.get((slot.module, slot.tensor), {}):
            continue
        result[(slot.module, slot.tensor)][slot.dim] = torch.from_numpy(np.flatnonzero(keep))
    return dict(result)


def apply_plan(
    model: nn.Module,
    graph: ChannelGraph,
    plan: PruningPlan,
    optimizer: torch.optim.Optimizer | None = None,
) -> nn.Module:
    """Slice ``model`` in place to the channels ``plan`` keeps and return it.

    ``graph`` must come from analysing this model (or an identical copy).
    """
    for (module_name, tensor_name), dims in slice_indices(graph, plan).items():
        owner = model.get_submodule(module_name) if module_name else model
        _slice_tensor(owner, tensor_name, dims, optimizer)
    return refresh_modules(model)


def _index(tensor: torch.Tensor, dims: dict[int, torch.Tensor]) -> torch.Tensor:
    for dim, index in dims.items():
        tensor = tensor.index_select(dim, index.to(tensor.device))
    return tensor.contiguous()


def _slice_tensor(owner: nn.Module, name: str, dims: dict[int, torch.Tensor], optimizer) -> None:
    if name in owner._parameters:
        param = owner._parameters[name]
        old_shape = param.shape
        with torch.no_grad():
            if optimizer is not None:
                state = optimizer.state.get(param, {})
                for key, value in state.items():
                    if isinstance(value, torch.Tensor) and value.shape == old_shape:
                        state[key] = _index(value, dims)
            grad = _index(param.grad, dims) if param.grad is not None else None
            param.grad = None
            param.data = _index(param.data, dims)
            param.grad = grad
    elif name in owner._buffers:
        owner._buffers[name] = _index(owner._buffers[name], dims)
    else:
        raise KeyError(f"{type(owner).__name__} has no parameter or buffer '{name}'")


def refresh_modules(model: nn.Module) -> nn.Module:
    """Let each layer handler update attributes; swap modules that need it."""
    named = list(model.named_modules())
    for name, module in reversed(named):  # children before parents
        handler = handler_for(module)
        if handler is None:
            continue
        replacement = handler.refresh(module)
        if replacement is not None:
            if not name:
                return replacement
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, replacement)
    return model

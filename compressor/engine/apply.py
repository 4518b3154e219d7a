"""Apply a plan: slice parameters, buffers, gradients and optimizer state in place.

Parameters keep their identity (``param.data`` is replaced), so an optimizer built
on the unpruned model keeps working: its per-parameter state (SGD momentum, Adam
moments) is sliced with the same indices.  Module attributes are refreshed by the
layer handlers afterwards, which may swap a module for an equivalent one that can
hold the new shape (reusing the same parameter objects).

Given the example input, the plan is first applied to a copy and checked there: the
sliced copy must run and compute what the masked original computes.  A plan that fails
(a graph the analysis got wrong: a module shared in a way it did not see) is refused
with the group that breaks it, and the model passed in is never touched, so no path
hands back a model that cannot run.
"""
from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np
import torch
from torch import nn

from compressor.engine.analysis.graph import ChannelGraph, handler_for
from compressor.engine.plan import PruningPlan, kept_class_mask
from compressor.engine.verify import Equivalence
from compressor.arguments import check_type
from compressor.errors import CompressorError, one_line

# The sliced copy may differ from the masked original by float32 rounding of sums taken in
# another order; a mis-sliced model is off by the output's own magnitude.
CHECK_ATOL, CHECK_RTOL = 1e-4, 1e-3
# On a failure, groups are tried one at a time to name the culprit; past this many, the
# error names none rather than spend minutes on it.
MAX_BLAME_GROUPS = 200


class ApplyRefused(CompressorError):
    """The plan, applied to a copy, gave a model that cannot run or computes something else;
    the model passed in is unchanged."""

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
    example_input=None,
) -> nn.Module:
    """Slice ``model`` in place to the channels ``plan`` keeps and return it.

    ``graph`` must come from analysing this model (or an identical copy).  With
    ``example_input`` (what ``analyse`` was given) the plan is checked on a copy first
    (``check_plan``); ``ApplyRefused`` then leaves ``model`` as it was.
    """
    check_type(model, nn.Module, "model", "apply_plan", "a torch.nn.Module")
    check_type(graph, ChannelGraph, "graph", "apply_plan", "a ChannelGraph (from analyse)")
    check_type(plan, PruningPlan, "plan", "apply_plan", "a PruningPlan (from select_plan)")
    if example_input is not None:
        check_plan(model, graph, plan, example_input)
    return _slice_model(model, graph, plan, optimizer)


def check_plan(model: nn.Module, graph: ChannelGraph, plan: PruningPlan, example_input) -> None:
    """Raise ``ApplyRefused`` unless ``plan`` sliced into a copy of ``model`` runs on
    ``example_input`` and matches the masked original there (shapes and values)."""
    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    problem = _problem(model, graph, plan, inputs)
    if problem is None:
        return
    group = _blame(model, graph, plan, inputs)
    where = f"slicing group {group!r} alone already breaks it" if group else "no single group breaks it alone"
    raise ApplyRefused(
        f"the pruned model {problem} ({where}); the model was left unpruned. The analysis got this model's "
        "channel coupling wrong: keep that group's layers out with ignore=[...] (--ignore) and report it"
    )


def _problem(model: nn.Module, graph: ChannelGraph, plan: PruningPlan, inputs: tuple) -> str | None:
    from compressor.engine.masking import masked_copy

    # Each model runs once; shapes, values and the smoothness probe all read these outputs
    # (on a large model every extra forward pass at the prune is felt).
    try:
        sliced = _slice_model(copy.deepcopy(model), graph, plan, None)
        masked = masked_copy(model, graph, plan)
        dense_out, masked_out, sliced_out = (_eval_outputs(m, inputs) for m in (model, masked, sliced))
    except Exception as error:  # noqa: BLE001 - whatever the broken model raises is the finding
        return f"cannot run on the example input ({one_line(error, 240)})"
    masked_shapes = [tuple(t.shape) for t in masked_out]
    sliced_shapes = [tuple(t.shape) for t in sliced_out]
    if masked_shapes != [tuple(t.shape) for t in dense_out]:
        # Output sizes that follow the values (a detector's boxes after score threshold and NMS):
        # rounding alone may change them, so only running is checked.
        return None
    if sliced_shapes != masked_shapes:
        return f"returns outputs of shape {sliced_shapes} where the original returns {masked_shapes}"
    if not masked_out or any(0 in shape for shape in masked_shapes):
        return None
    if _not_smooth(masked, inputs, masked_out[0]):
        return None
    reference, result = masked_out[0].double(), sliced_out[0].double()
    equivalence = Equivalence(float((reference - result).abs().max()), float(reference.abs().max()), True)
    if not equivalence.ok(CHECK_ATOL, CHECK_RTOL):
        return (f"differs from the masked original by {equivalence.max_abs_diff:.3g} "
                f"(output scale {equivalence.reference_scale:.3g})")
    return None


def _not_smooth(model: nn.Module, inputs: tuple, output: torch.Tensor) -> bool:
    """True when rounding alone moves the output past the check's tolerance: ``model`` run in
    float64 gives another answer than ``output`` (its own first output, as computed).  Discrete
    post-processing (top-k, score thresholds, NMS: a detector's boxes) reorders or swaps
    near-tied results on rounding, and slicing changes the rounding, so the final values cannot
    judge the slicing there."""
    try:
        model64 = copy.deepcopy(model).to(torch.float64)
        double = _eval_outputs(model64, _map_tensors(inputs, _to_float64))[0].double()
    except Exception:  # noqa: BLE001 - a model that cannot run in float64: judge it by its values
        return False
    if output.shape != double.shape:
        return True
    moved = Equivalence(float((output.double() - double).abs().max()), float(double.abs().max()), True)
    return not moved.ok(CHECK_ATOL, CHECK_RTOL)


def _to_float64(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.float64) if torch.is_floating_point(tensor) else tensor


def _eval_outputs(model: nn.Module, inputs: tuple) -> list[torch.Tensor]:
    """Every output tensor of ``model`` run once in eval mode without gradients."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _tensors(model(*inputs))
    finally:
        model.train(was_training)


def _map_tensors(value, fn):
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_map_tensors(item, fn) for item in value)
    if isinstance(value, dict):
        return {key: _map_tensors(item, fn) for key, item in value.items()}
    return value


def _tensors(output) -> list[torch.Tensor]:
    """Every tensor in a (nested) tuple/list/dict output, in order."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _tensors(item)]
    return []


def _blame(model: nn.Module, graph: ChannelGraph, plan: PruningPlan, inputs: tuple) -> str | None:
    """The first group whose slicing alone (every other group kept whole) breaks the model."""
    cut = [name for name, group in plan.groups.items() if len(group.kept) < group.size]
    if len(cut) > MAX_BLAME_GROUPS:
        return None
    dense = PruningPlan.dense(graph)
    for name in cut:
        alone = PruningPlan({**dense.groups, name: plan.groups[name]})
        if _problem(model, graph, alone, inputs) is not None:
            return name
    return None


def _slice_model(model: nn.Module, graph: ChannelGraph, plan: PruningPlan, optimizer) -> nn.Module:
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
            data = _index(param.data, dims)
            _forget_grad_accumulator(param)
            param.data = data
            param.grad = grad
    elif name in owner._buffers:
        owner._buffers[name] = _index(owner._buffers[name], dims)
    else:
        raise KeyError(f"{type(owner).__name__} has no parameter or buffer '{name}'")


def _forget_grad_accumulator(param: nn.Parameter) -> None:
    """Drop the gradient accumulator autograd caches on a parameter.  It records the shape the
    parameter had when a graph was built, and while any graph from before the slice is alive (a
    training loop's last ``loss`` still referenced) every later backward reuses it and fails with
    "returned an invalid gradient ... expected shape compatible with" the old shape.  Assigning
    ``.data`` resets it only on a dtype or device change, so take a detour through another dtype."""
    other = torch.float64 if param.dtype != torch.float64 else torch.float32
    param.data = torch.empty(0, dtype=other, device=param.device)


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

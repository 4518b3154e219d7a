"""One small handler per layer type.

A handler is used in two places:

* ``trace``: while analysing, a module of its type is a leaf.  The handler reads
  the channel maps of the inputs, declares which parameter dims follow which atoms
  (slots), declares the MACs terms of the ops the module runs, and sets the map of
  the output.
* ``refresh``: after slicing, it brings the module's attributes (``in_channels``,
  ``num_heads`` ...) in line with the new parameter shapes, or returns an
  equivalent module that can hold them.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from compressor.engine.analysis.records import ChannelMap
from compressor.engine.analysis.tracer import TraceState


def _rows(tensor: torch.Tensor, dim: int) -> int:
    """Elements per position of ``dim``, times the other leading dims (the op's rows)."""
    return tensor.numel() // tensor.shape[dim]


def _extra_parameters(module: nn.Module) -> list[str]:
    """Parameters a conv/linear subclass adds (a gain, a mask, an adapter ...)."""
    return [n for n, p in module.named_parameters(recurse=False) if n not in ("weight", "bias") and p is not None]


def _freeze_unknown_variant(state: TraceState, name: str, module: nn.Module, x, out) -> bool:
    """A subclass with parameters of its own computes something this handler cannot
    slice safely: keep its inputs and outputs whole (a correct, if less prunable, model)."""
    extra = _extra_parameters(module)
    if not extra:
        return False
    reason = f"'{name}' ({type(module).__name__}) has parameters of its own ({', '.join(extra)}), kept whole"
    state.freeze_map(state.map_of(x), reason)
    return True  # the output gets no channel map: its consumers see fixed channels


class LayerHandler:
    """How one layer type's parameters follow channels: subclass it and ``register_handler``
    an instance to prune through a layer of your own (README, "Your own layer").

    ``types``
        A tuple of ``nn.Module`` classes.  A module is handled by the handler of the most
        specific class in its MRO, so a handler for a ``Conv2d`` subclass wins over the
        built-in conv handler.  A handled module is a *leaf*: the ops inside its forward
        are not traced, so ``trace`` has to say everything they do to channels.

    ``trace(state, name, module, args, kwargs, out)``
        Called after each call of the module in the analysis pass (eval mode, no grad),
        with its inputs and output; ``name`` is its name in ``model.named_modules()``.
        Through ``state`` it records:

        * where the input channels come from: ``state.channel_atoms(x, dim, reason)`` gives
          one atom per position of ``dim`` of input ``x``, or None when those channels are
          fixed anyway (the image) or laid out in a way it cannot follow (then it has
          kept them whole, with ``reason``).  Inputs the layer cannot follow at all are
          kept whole with ``state.freeze_map(state.map_of(x), reason)``.
        * the channels it creates: ``state.new_space(name, size)`` returns fresh atoms
          (a layer that keeps its input channels, like a norm, reuses the input's atoms).
        * every parameter or buffer dim that follows channels: ``state.slot(name, tensor,
          dim, atoms)``.  Applying a plan keeps exactly the entries of the kept atoms along
          that dim, and the masked reference (``masked_copy``) zeroes the others.  A dim
          that follows channels but has no slot keeps its old size: the sliced model then
          fails, or differs from the masked one (the check the tests make).
        * the output's channels: ``state.set_map(out, ChannelMap(dims, atoms))``, so that
          the consumers slice their inputs to match.  An output with no map reaches them as
          fixed channels: then the atoms behind it must not be pruned either (freeze them
          with ``state.table.freeze(atoms, reason)``, or record no slots for them).
        * the MACs of the ops its forward runs: ``state.term(label, macs, *factors)``, with
          ``macs`` the dense count as ``count_macs`` counts it on the traced input and
          ``factors`` the atom arrays it scales with (a conv: outputs and inputs; a None
          factor is skipped).  ``macs`` must be a multiple of the product of the factors'
          lengths.  Without a term the cost model predicts the op's MACs never shrink.
        * couplings, where channels must be kept or removed together:
          ``state.table.union(atoms_a, atoms_b)`` (position by position) or
          ``state.couple_rows(grid)`` (every row of a 2-D grid with the first: equal groups).

    ``refresh(module)``
        Called by ``apply_plan`` after it has sliced every slot (parameters keep their
        identity, only their data shrinks), for each module with a handler, children
        before parents, whether or not the plan touched that module.  It brings the
        module's own attributes (``in_channels``, ``num_heads`` ...) in line with the new
        tensor shapes, read from those shapes, so that the forward computes on the kept
        channels what the original computed on them.  It returns None, or an equivalent
        module built around the same parameter objects, which replaces the module in its
        parent.  The handler must still be registered when a plan is applied, and when
        ``load_pruned`` rebuilds the model: register it where the layer is defined.
    """

    types: tuple[type, ...] = ()

    def trace(self, state: TraceState, name: str, module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        raise NotImplementedError

    def refresh(self, module: nn.Module) -> nn.Module | None:
        return None


class ConvHandler(LayerHandler):
    """Conv1d/2d/3d, including depthwise and grouped convs."""

    types = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

    def trace(self, state, name, module, args, kwargs, out):
        x = args[0]
        if type(self) is ConvHandler and _freeze_unknown_variant(state, name, module, x, out):
            state.term(f"{name} conv", module.weight.numel() * _rows(out, 1))
            return
        in_atoms = state.channel_atoms(x, 1, f"'{name}' input channels are not a plain channel dim")
        groups, c_in, c_out = module.groups, module.in_channels, module.out_channels
        in_factor = None
        if groups == 1:
            out_atoms = state.new_space(name, c_out)
            if in_atoms is not None:
                state.slot(name, "weight", 1, in_atoms)
                in_factor = in_atoms
        elif groups == c_in:
            # Depthwise: each output channel reads one input channel, so they share atoms.
            out_atoms = None if in_atoms is None else np.repeat(in_atoms, c_out // c_in)
        else:
            # Grouped: every group must keep the same positions, so rows are coupled.
            out_atoms = state.new_space(name, c_out)
            state.couple_rows(out_atoms.reshape(groups, -1))
            if in_atoms is not None:
                grid = in_atoms.reshape(groups, -1)
                state.couple_rows(grid)
                state.slot(name, "weight", 1, grid[0])
                in_factor = grid[0]
        if out_atoms is not None:
            state.slot(name, "weight", 0, out_atoms)
            if module.bias is not None:
                state.slot(name, "bias", 0, out_atoms)
            state.set_map(out, ChannelMap((1,), out_atoms))
        state.term(f"{name} conv", module.weight.numel() * _rows(out, 1), out_atoms, in_factor)

    def refresh(self, module):
        weight = module.weight
        if module.groups > 1 and module.groups == module.in_channels:
            module.groups = weight.shape[0] // (module.out_channels // module.in_channels)
        module.out_channels = weight.shape[0]
        module.in_channels = weight.shape[1] * module.groups
        return None


class LinearHandler(LayerHandler):
    types = (nn.Linear,)

    def trace(self, state, name, module, args, kwargs, out):
        x = args[0]
        if _freeze_unknown_variant(state, name, module, x, out):
            state.term(f"{name} linear", module.weight.numel() * _rows(x, -1))
            return
        in_atoms = state.channel_atoms(x, -1, f"'{name}' input features are not the last dim alone")
        if in_atoms is not None:
            state.slot(name, "weight", 1, in_atoms)
        out_atoms = state.new_space(name, module.out_features)
        state.slot(name, "weight", 0, out_atoms)
        if module.bias is not None:
            state.slot(name, "bias", 0, out_atoms)
        state.set_map(out, ChannelMap((out.dim() - 1,), out_atoms))
        state.term(f"{name} linear", module.weight.numel() * _rows(x, -1), out_atoms, in_atoms)

    def refresh(self, module):
        module.out_features, module.in_features = module.weight.shape
        return None


class BatchNormHandler(LayerHandler):
    types = (nn.modules.batchnorm._BatchNorm,)

    def trace(self, state, name, module, args, kwargs, out):
        atoms = state.channel_atoms(args[0], 1, f"'{name}' input channels are not a plain channel dim")
        if atoms is None:
            return
        for tensor_name in ("weight", "bias", "running_mean", "running_var"):
            if getattr(module, tensor_name, None) is not None:
                state.slot(name, tensor_name, 0, atoms)
        state.set_map(out, ChannelMap((1,), atoms))

    def refresh(self, module):
        reference = module.weight if module.weight is not None else module.running_mean
        if reference is not None:
            module.num_features = reference.shape[0]
        return None


class ChannelNormHandler(LayerHandler):
    """LayerNorm/GroupNorm normalise across channels: pruning would change the
    statistics of the kept channels, so the channels they see stay fixed."""

    types = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)

    def trace(self, state, name, module, args, kwargs, out):
        cmap = state.map_of(args[0])
        state.freeze_map(cmap, f"normalised together by {type(module).__name__} '{name}'")
        if cmap is not None and isinstance(out, torch.Tensor) and out.shape == args[0].shape:
            state.set_map(out, cmap)


class OpaqueHandler(LayerHandler):
    """Modules kept whole: their inputs are frozen and their outputs are fixed.

    Used for ``--ignore`` and for attention variants whose heads we do not prune yet
    (torchvision's MaxViT attention reshapes its output back to the input width, so
    removing heads needs a replacement forward).
    """

    def __init__(self, reason: str):
        self.reason = reason

    def trace(self, state, name, module, args, kwargs, out):
        for value in list(args) + list(kwargs.values()):
            state.freeze_map(state.map_of(value), f"{self.reason} '{name}'")


def _opaque_attention_types() -> tuple[type, ...]:
    found: list[type] = []
    try:
        from torchvision.models import maxvit
    except ImportError:
        return ()
    for owner, names in ((maxvit, ("RelativePositionalMultiHeadAttention",)),):
        for attr in names:
            cls = getattr(owner, attr, None)
            if cls is not None:
                found.append(cls)
    return tuple(found)


OPAQUE_ATTENTION_TYPES = _opaque_attention_types()

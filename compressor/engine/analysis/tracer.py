"""Trace one forward pass and record how channels flow.

The tracer runs the model eagerly (so data-dependent control flow is fine) under a
``TorchFunctionMode``.  Modules with a layer handler (conv, linear, norms,
attention) are treated as leaves: module hooks hand their inputs and outputs to
the handler and the functional calls inside them are not followed.  Every other
op is routed to a rule in :mod:`compressor.engine.analysis.ops` that maps the channel
maps of its inputs to its outputs and records couplings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from compressor.engine.analysis.atoms import AtomTable
from compressor.engine.analysis.errors import UnsupportedOperationError
from compressor.engine.analysis.records import ChannelMap, MacsTerm, Slot


@dataclass
class TraceState:
    """Everything the rules and layer handlers read and write while tracing."""

    model: nn.Module
    table: AtomTable = field(default_factory=AtomTable)
    slots: list[Slot] = field(default_factory=list)
    _slot_atoms: dict[tuple[str, str, int], np.ndarray] = field(default_factory=dict)
    terms: list[MacsTerm] = field(default_factory=list)
    leaf_modules: dict[str, str] = field(default_factory=dict)
    module_stack: list[tuple[str, nn.Module]] = field(default_factory=list)
    _maps: dict[int, tuple[torch.Tensor, ChannelMap]] = field(default_factory=dict)
    _tensor_names: dict[int, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for module_name, module in self.model.named_modules():
            for tensor_name, tensor in list(module.named_parameters(recurse=False)) + list(
                module.named_buffers(recurse=False)
            ):
                if tensor is not None:
                    self._tensor_names.setdefault(id(tensor), (module_name, tensor_name))

    # -- channel maps -------------------------------------------------------------
    def map_of(self, value: Any) -> ChannelMap | None:
        if not isinstance(value, torch.Tensor):
            return None
        entry = self._maps.get(id(value))
        if entry is None or entry[0] is not value:
            return None
        return entry[1]

    def set_map(self, tensor: torch.Tensor, cmap: ChannelMap | None) -> None:
        if not isinstance(tensor, torch.Tensor):
            return
        if cmap is None or cmap.atoms.size == 0:
            self._maps.pop(id(tensor), None)
            return
        # Holding the tensor keeps its id from being reused during the trace.
        self._maps[id(tensor)] = (tensor, cmap)

    def channel_atoms(self, tensor: Any, dim: int, reason: str) -> np.ndarray | None:
        """1-D atoms of ``tensor`` along ``dim``; any other layout is frozen."""
        cmap = self.map_of(tensor)
        if cmap is None:
            return None
        atoms = cmap.single(dim % tensor.dim())
        if atoms is None:
            self.freeze_map(cmap, reason)
        return atoms

    def freeze_map(self, cmap: ChannelMap | None, reason: str) -> None:
        if cmap is not None:
            self.table.freeze(cmap.atoms, reason)

    # -- records --------------------------------------------------------------------
    def new_space(self, name: str, size: int) -> np.ndarray:
        atoms = self.table.new_space(name, size)
        if size <= 1:
            self.table.freeze(atoms, f"'{name}' has a single channel")
        return atoms

    def slot(self, module: str, tensor_name: str, dim: int, atoms: np.ndarray) -> None:
        """``atoms`` index dim ``dim`` of the module's tensor.  A module called more than once
        (a detection head shared by every pyramid level) records its tensors once per call:
        one weight serves them all, so channel i of every call is one channel and their atoms
        are coupled; calls that disagree on the width freeze them all."""
        atoms = np.asarray(atoms, dtype=np.int64)
        key = (module, tensor_name, dim)
        earlier = self._slot_atoms.get(key)
        if earlier is None:
            self._slot_atoms[key] = atoms
        elif earlier.shape == atoms.shape:
            self.table.union(earlier, atoms)
        else:
            reason = f"'{module}' is called with {earlier.size} and with {atoms.size} channels on its {tensor_name}"
            self.table.freeze(earlier, reason)
            self.table.freeze(atoms, reason)
        self.slots.append(Slot(module, tensor_name, dim, atoms))

    def tensor_slot(self, tensor: torch.Tensor, dim: int, atoms: np.ndarray) -> bool:
        """Record a slot for a parameter/buffer used directly in a functional op."""
        owner = self._tensor_names.get(id(tensor))
        if owner is None:
            return False
        self.slot(owner[0], owner[1], dim, atoms)
        return True

    def term(self, op: str, macs: int, *factors: np.ndarray | None) -> None:
        kept = tuple(np.asarray(f, dtype=np.int64) for f in factors if f is not None)
        self.terms.append(MacsTerm(op, int(macs), kept))

    def couple_rows(self, grid: np.ndarray) -> None:
        """Couple every row of a 2-D atom grid with the first row (equal-width groups)."""
        grid = grid.reshape(grid.shape[0], -1)
        for row in grid[1:]:
            self.table.union(grid[0], row)

    # -- context for errors ---------------------------------------------------------------
    @property
    def current_module(self) -> tuple[str, str]:
        if not self.module_stack:
            return "", type(self.model).__name__
        name, module = self.module_stack[-1]
        return name, type(module).__name__

    def unsupported(self, op: str) -> UnsupportedOperationError:
        name, kind = self.current_module
        return UnsupportedOperationError(op, name, kind)


OpRule = Callable[[TraceState, Any, tuple, dict, Any], None]


class ChannelTracer(TorchFunctionMode):
    """Routes every torch call made outside leaf modules to its channel rule."""

    def __init__(self, state: TraceState, rules: dict[Any, OpRule], suspended: Callable[[], bool]):
        super().__init__()
        self.state = state
        self.rules = rules
        self.suspended = suspended

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.suspended():
            return out
        flat_in, _ = tree_flatten((args, kwargs))
        if not any(self.state.map_of(t) is not None for t in flat_in):
            return out
        rule = self.rules.get(func) or self.rules.get(getattr(func, "__self__", None))
        flat_out, _ = tree_flatten(out)
        if rule is None and not any(isinstance(t, torch.Tensor) for t in flat_out):
            return out  # metadata reads: size(), shape, dtype ...
        if rule is None:
            raise self.state.unsupported(_op_name(func))
        rule(self.state, func, args, kwargs, out)
        return out


def _op_name(func: Any) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    module = getattr(func, "__module__", None) or ""
    if module.startswith("torch.nn.functional"):
        return f"F.{name}"
    return name

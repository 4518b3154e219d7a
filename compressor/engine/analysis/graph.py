"""``analyse``: trace a model once and return its channel groups.

A *group* is a set of producer spaces that share channels (a residual stage, a conv
with its BN and consumers, an attention module's heads).  Its prunable units are
the free classes of atoms it contains, listed in the order of the group's first
space, so "kept indices" in a plan mean the same thing on every run.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from compressor.engine.analysis.errors import ModelRunError
from compressor.engine.analysis.layers import LayerHandler, OpaqueHandler
from compressor.engine.analysis.ops import RULES
from compressor.engine.analysis.records import MacsTerm, Slot
from compressor.engine.analysis.registry import handler_for
from compressor.engine.analysis.tracer import ChannelTracer, TraceState
from compressor.arguments import check_type
from compressor.errors import CompressorError, one_line
from compressor.engine.flops import count_macs

IGNORED = OpaqueHandler("kept whole by --ignore:")


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are kept or removed together, with one decision per index."""

    name: str
    classes: np.ndarray  # class id of each prunable index, in the group's order
    width: int  # channels of the group's first producer (frozen ones included)
    members: tuple[str, ...]  # parameter slots that follow this group

    @property
    def size(self) -> int:
        return int(self.classes.size)


@dataclass
class ChannelGraph:
    """Result of ``analyse``: everything planning and slicing need, no model copy."""

    groups: list[ChannelGroup]
    slots: list[Slot]
    terms: list[MacsTerm]
    labels: np.ndarray  # class id per atom
    frozen: np.ndarray  # per class id
    dense_macs: int
    dense_params: int
    ignore: tuple[str, ...] = ()
    frozen_reasons: dict[str, str] = field(default_factory=dict)

    @property
    def prunable_channels(self) -> int:
        return sum(g.size for g in self.groups)

    def group(self, name: str) -> ChannelGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)


def check_model_and_input(model, example_input, where: str) -> None:
    """The two arguments every entry point that traces a model takes (analyse, OneCyclePruner)."""
    hint = f" (build one with compressor.models.build_model({model!r}))" if isinstance(model, str) else ""
    check_type(model, nn.Module, "model", where, "a torch.nn.Module" + hint)
    check_type(example_input, (torch.Tensor, tuple, list), "example_input", where,
               "a tensor (or a tuple of the model's inputs)")


def check_graph_and_model(graph, model, where: str) -> None:
    """The pair every cost and importance entry point takes (CostModel, group_l2)."""
    check_type(graph, ChannelGraph, "graph", where, "a ChannelGraph (from analyse)")
    check_type(model, nn.Module, "model", where, "a torch.nn.Module")


def analyse(
    model: nn.Module, example_input: torch.Tensor | Sequence[Any], ignore: Sequence[str] = ()
) -> ChannelGraph:
    """Trace ``model`` once on ``example_input`` (batch 1 is enough) and group its channels."""
    check_model_and_input(model, example_input, "analyse")
    check_type(ignore, (tuple, list, set, frozenset), "ignore", "analyse", "a sequence of module names")
    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    ignore = tuple(ignore)
    _check_ignore(model, ignore)
    state = TraceState(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = _run_traced(model, inputs, state, ignore)
    except (RuntimeError, ValueError, TypeError, AssertionError, IndexError) as error:
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs if isinstance(t, torch.Tensor))
        raise ModelRunError(f"the model cannot run on an input of shape {shapes}: {one_line(str(error), 200)}") from error
    finally:
        model.train(was_training)
    for value in tree_flatten(outputs)[0]:
        state.freeze_map(state.map_of(value), "model output")
    labels, frozen = state.table.resolve()
    groups, reasons = _build_groups(state, labels, frozen)
    return ChannelGraph(
        groups=groups,
        slots=state.slots,
        terms=state.terms,
        labels=labels,
        frozen=frozen,
        dense_macs=count_macs(model, inputs),
        dense_params=sum(p.numel() for p in model.parameters()),
        ignore=ignore,
        frozen_reasons=reasons,
    )


def _check_ignore(model: nn.Module, ignore: Sequence[str]) -> None:
    names = [n for n, _ in model.named_modules() if n]
    for name in ignore:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            hint = f"; did you mean: {', '.join(close)}?" if close else ""
            raise CompressorError(f"--ignore: the model has no module '{name}'{hint}")


def _run_traced(model: nn.Module, inputs: tuple, state: TraceState, ignore: tuple[str, ...]) -> Any:
    leaf_depth = [0]
    hooks = []
    for name, module in model.named_modules():
        handler = IGNORED if name in ignore else handler_for(module)
        hooks.append(module.register_forward_pre_hook(_pre_hook(state, name, handler, leaf_depth), with_kwargs=True))
        hooks.append(module.register_forward_hook(_post_hook(state, name, handler, leaf_depth), with_kwargs=True))
    try:
        with ChannelTracer(state, RULES, suspended=lambda: leaf_depth[0] > 0):
            return model(*inputs)
    finally:
        for hook in hooks:
            hook.remove()


def _pre_hook(state: TraceState, name: str, handler: LayerHandler | None, leaf_depth: list[int]):
    def hook(module, args, kwargs):
        if leaf_depth[0] == 0:
            state.module_stack.append((name, module))
        if handler is not None:
            leaf_depth[0] += 1

    return hook


def _post_hook(state: TraceState, name: str, handler: LayerHandler | None, leaf_depth: list[int]):
    def hook(module, args, kwargs, output):
        if handler is not None:
            leaf_depth[0] -= 1
        if leaf_depth[0] > 0:
            return None
        if handler is not None:
            handler.trace(state, name, module, args, kwargs, output)
            state.leaf_modules[name] = type(handler).__name__
        state.module_stack.pop()
        return None

    return hook


def _build_groups(state: TraceState, labels: np.ndarray, frozen: np.ndarray):
    """Connected spaces (via shared classes) form groups; list each group's free classes."""
    spaces = state.table.spaces
    space_of_atom = np.empty(labels.size, dtype=np.int64)
    for index, space in enumerate(spaces):
        space_of_atom[space.start : space.start + space.size] = index
    # Union spaces that share a class: label the class by its first space.
    parent = list(range(len(spaces)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_space_of_class = {}
    for atom, cls in enumerate(labels.tolist()):
        space = int(space_of_atom[atom])
        owner = first_space_of_class.setdefault(cls, space)
        if owner != space:
            a, b = find(owner), find(space)
            if a != b:
                parent[max(a, b)] = min(a, b)
    members: dict[int, list[str]] = {}
    for slot in state.slots:
        if slot.atoms.size:
            root = find(int(space_of_atom[slot.atoms.flat[0]]))
            members.setdefault(root, []).append(f"{slot.key}[{slot.dim}]")
    groups: list[ChannelGroup] = []
    reasons: dict[str, str] = {}
    seen_roots: dict[int, list[int]] = {}
    for index in range(len(spaces)):
        seen_roots.setdefault(find(index), []).append(index)
    for root, space_ids in seen_roots.items():
        ordered: list[int] = []
        seen: set[int] = set()
        for sid in space_ids:
            space = spaces[sid]
            for cls in labels[space.start : space.start + space.size].tolist():
                if cls not in seen:
                    seen.add(cls)
                    ordered.append(cls)
        classes = np.array([c for c in ordered if not frozen[c]], dtype=np.int64)
        name = spaces[root].name
        if classes.size == 0:
            reason = state.table.reason_for(labels, ordered[0]) if ordered else None
            if reason and root in members:
                reasons[name] = reason
            continue
        groups.append(ChannelGroup(name, classes, spaces[root].size, tuple(dict.fromkeys(members.get(root, [])))))
    return groups, reasons

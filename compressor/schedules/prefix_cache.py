"""Run a model in two pieces: the layers before a cut once, the layers after it per variant.

LAASP evaluates many variants of one model that differ only in a few layers'
parameters (one group's channels zeroed).  Every layer that runs before the first
layer a variant touches computes the same values for all variants, so the
selection subset's activations are computed once up to each cut and only the
rest of the network runs per variant.

The model is traced with ``torch.fx`` into a node list in execution order.  A
node's value depends on a parameter only if that node, or one before it, reads
it; so the *cut* of a set of parameters is the first node that reads any of them,
and the values needed after the cut (the *live* values: computed before it, read
at or after it) are all a suffix needs.  The nodes run the same modules and
functions on the same inputs as the model's own forward, so a suffix computes
what the full forward would, bit for bit on a deterministic backend; the runner
checks this on real data before it is used (``PrefixRunner.build``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

log = logging.getLogger(__name__)


@dataclass
class Position:
    """One batch's activations at a cut: the live values, by node index."""

    cut: int
    values: dict[int, Any] = field(default_factory=dict)


class PrefixRunner:
    """The traced nodes of ``model`` with, for each, the parameters it reads and its last reader."""

    def __init__(self, model: nn.Module, graph: fx.Graph):
        self.model = model
        self.nodes = list(graph.nodes)
        if [n.op for n in self.nodes].count("placeholder") != 1 or self.nodes[0].op != "placeholder":
            raise ValueError("the forward must take exactly one input")  # a batch of images
        self._index = {node: i for i, node in enumerate(self.nodes)}
        self._last_use = [max((self._index[u] for u in node.users), default=i) for i, node in enumerate(self.nodes)]
        self._first_read: dict[int, int] = {}
        for i, node in enumerate(self.nodes):
            for tensor in self._reads(node):
                self._first_read.setdefault(id(tensor), i)

    @classmethod
    def build(cls, model: nn.Module, probe: torch.Tensor) -> "PrefixRunner | None":
        """A runner for ``model``, or None where it cannot be traced or the trace does
        not reproduce the model's eval-mode output on ``probe`` (the callers then run
        the whole model per variant, as before)."""
        was_training = model.training
        model.eval()
        try:
            runner = cls(model, fx.Tracer().trace(model))
            with torch.no_grad():
                same = torch.allclose(runner.finish(runner.start(probe)), model(probe), rtol=1e-4, atol=1e-5)
        except Exception as error:  # noqa: BLE001 - any tracing failure means: no prefix reuse
            log.info("prefix reuse off: %s cannot be traced (%s)", type(model).__name__, error)
            return None
        finally:
            model.train(was_training)
        if not same:
            log.warning("prefix reuse off: the traced %s does not reproduce its forward", type(model).__name__)
            return None
        return runner

    def cut(self, tensors: list[torch.Tensor]) -> int:
        """Index of the first node that reads any of ``tensors``: 1, the whole model,
        for a tensor no node reads directly (nothing is assumed about it); the
        output node for none."""
        return min((self._first_read.get(id(t), 1) for t in tensors), default=len(self.nodes) - 1)

    def start(self, inputs: torch.Tensor) -> Position:
        """A batch at the model's input (node 0 is the one placeholder)."""
        return Position(1, {0: inputs})

    def advance(self, position: Position, cut: int) -> None:
        """Run the nodes up to ``cut`` in place of ``position``, keeping only the live values."""
        values = position.values
        for i in range(position.cut, cut):
            values[i] = self._run(self.nodes[i], values)
        position.cut = max(position.cut, cut)
        for i in [i for i in values if self._last_use[i] < position.cut]:
            del values[i]

    def finish(self, position: Position) -> Any:
        """The model's output from ``position``, which stays as it was: its tensors are
        cloned first, so an in-place op after the cut cannot change them."""
        values = {i: v.clone() if isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter) else v
                  for i, v in position.values.items()}
        for i in range(position.cut, len(self.nodes)):
            node = self.nodes[i]
            if node.op == "output":
                return fx.node.map_arg(node.args[0], lambda n: values[self._index[n]])
            values[i] = self._run(node, values)
            for j in [j for j in values if self._last_use[j] <= i and j != i]:
                del values[j]
        raise RuntimeError("the traced graph has no output node")

    # -- one node ---------------------------------------------------------------------------------
    def _run(self, node: fx.Node, values: dict[int, Any]) -> Any:
        args = fx.node.map_arg(node.args, lambda n: values[self._index[n]])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: values[self._index[n]])
        if node.op == "call_module":
            return self.model.get_submodule(node.target)(*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        if node.op == "get_attr":
            return _attribute(self.model, node.target)
        raise RuntimeError(f"cannot run a {node.op!r} node after the input")

    def _reads(self, node: fx.Node) -> list[torch.Tensor]:
        if node.op == "call_module":
            module = self.model.get_submodule(node.target)
            return [*module.parameters(), *module.buffers()]
        if node.op == "get_attr":
            value = _attribute(self.model, node.target)
            return [value] if isinstance(value, torch.Tensor) else [*value.parameters(), *value.buffers()]
        return []


def _attribute(model: nn.Module, target: str) -> Any:
    owner, _, name = target.rpartition(".")
    return getattr(model.get_submodule(owner) if owner else model, name)

"""The loss each LAASP candidate leaves on the selection subset, as cheaply as the choice allows.

A candidate is a set of channels to remove from the current model.  Its loss is
measured on the live model: the removed channels' parameter slices are zeroed in
place, the subset runs in eval mode under ``no_grad``, and the saved slices are
written back bit for bit (the masked model computes what the sliced one would).

Three ways to evaluate a step's candidates, each giving the choice of the one before:

* ``losses`` with ``reuse_prefix=False``: the whole forward per candidate, the
  reference (the authors' evaluation, without the model copy).
* ``losses`` with ``reuse_prefix=True``: the layers before the first one a
  candidate touches run once per step (``compressor.schedules.prefix_cache``), so
  every loss is the same number at about half the cost on a ResNet.
* ``evaluate`` (the default, ``early_exit=True``): the subset runs in small slices
  and a candidate stops as soon as its running sum of per-image losses exceeds the
  total of the best candidate completed so far.  Cross-entropy is never negative,
  so a running sum only grows: a candidate stopped there can neither win nor tie,
  and the argmin (ties: the first candidate) is the one every candidate's full loss
  would give.  Which candidate completes first decides how early the others stop:
  every candidate runs the first slice, and the lowest there completes first.
  The images are raced hardest first: ordered by their loss with only the step's
  base removed (one forward a step, which also gives the loss before the step).  On
  a network in training most of the loss sits on a few images, and a candidate's
  removal moves those most, so a loser's running sum passes the bound after a few
  slices instead of most of them.  The order changes which images a slice holds,
  never which losses are summed, so the choice is the one of any order.  The
  winner ran every image, and its per-image losses are the next step's (its
  removal is the next base): inside a chunk that forward comes free.

``estimates`` is the first-order (Taylor) guess of each candidate's loss, for the
optional shortlist (``StepSettings.shortlist``): it is an approximation, and the
shortlist's choice can differ from the exhaustive one.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compressor.engine.analysis.graph import ChannelGraph
from compressor.errors import CompressorError
from compressor.schedules.prefix_cache import PrefixRunner

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SLICES = 16  # the subset is raced in about this many slices: the first one is every candidate's minimum cost
SCOUTS = 16  # the lowest on the first slice run a second one before the leader is picked
MIN_SLICE = 8  # images; smaller slices lose more to the per-layer overhead than early exit saves


@dataclass(frozen=True)
class Evaluation:
    """One step's evaluation: the loss before it and each candidate's mean loss."""

    before: float
    losses: tuple[float | None, ...]  # exact; None where the candidate stopped early
    bounds: tuple[float, ...]  # a lower bound of each loss (the loss itself where exact)

    def best(self) -> int:
        """The index of the lowest exact loss, the first of equal ones (``np.argmin``'s rule)."""
        return int(np.argmin([math.inf if loss is None else loss for loss in self.losses]))


class MaskedEvaluator:
    """The loss of the current model with some channels removed, without copying it.

    ``losses`` evaluates every candidate to the end; ``evaluate`` stops candidates
    that cannot win (when ``early_exit`` and the loss is the default cross-entropy,
    whose values are never negative: a user's ``loss_fn`` gets every candidate
    evaluated to the end).  With ``reuse_prefix`` (and a model that
    ``PrefixRunner`` can trace) the layers before the first one a candidate touches
    run once per step instead of once per candidate.
    """

    def __init__(
        self,
        model: nn.Module,
        graph: ChannelGraph,
        batches: Batches,
        loss_fn: LossFn | None = None,
        reuse_prefix: bool = True,
        early_exit: bool = True,
    ):
        self.model = model
        self.loss_fn = loss_fn or F.cross_entropy
        self.early_exit = early_exit and loss_fn is None  # the bound needs losses that are never negative
        device = next(model.parameters()).device
        self.batches = [(x.to(device), y.to(device)) for x, y in batches]
        if not self.batches:
            raise CompressorError("loss-aware selection needs at least one batch of selection data")
        self.images = sum(len(y) for _, y in self.batches)
        # One copy of the subset on the device: the batches become views of it.
        self.inputs = torch.cat([x for x, _ in self.batches])
        self.targets = torch.cat([y for _, y in self.batches])
        edges = np.cumsum([0, *(len(y) for _, y in self.batches)]).tolist()
        self.batches = [(self.inputs[a:b], self.targets[a:b]) for a, b in zip(edges, edges[1:])]
        params = {id(p) for p in model.parameters()}
        self.slots = []  # (tensor, dim, class id per index)
        for slot in graph.slots:
            owner = model.get_submodule(slot.module) if slot.module else model
            tensor = getattr(owner, slot.tensor)
            if id(tensor) in params:  # running statistics need no zeroing: scale and shift are zero
                self.slots.append((tensor, slot.dim, graph.labels[slot.atoms.ravel()]))
        self.runner = PrefixRunner.build(model, self.batches[0][0]) if reuse_prefix else None
        self.carried: _Known | None = None  # the last winner's per-image losses
        self.forwards = 0  # passes over one batch or slice, whole or from a cut

    # -- every candidate to the end -------------------------------------------------------------
    @torch.no_grad()
    def loss(self, removed: np.ndarray) -> float:
        """Mean loss over the batches with the classes where ``removed`` is True zeroed."""
        with self._zeroed(removed), self._eval():
            return self._mean(lambda index: self.model(self.batches[index][0]))

    def losses(self, base: np.ndarray, removals: Sequence[np.ndarray]) -> tuple[float, list[float]]:
        """The loss with ``base`` removed, and with each of ``removals`` (supersets of ``base``)."""
        if self.runner is None:
            return self.loss(base), [self.loss(removed) for removed in removals]
        return self._losses_from_cuts(base, removals)

    @torch.no_grad()
    def _losses_from_cuts(self, base: np.ndarray, removals: Sequence[np.ndarray]) -> tuple[float, list[float]]:
        """Candidates in the order of their cuts: every batch is advanced (with ``base``
        zeroed) to the next cut once, then each candidate there zeroes its own extra
        channels and runs only the rest of the network."""
        runner = self.runner
        cuts = [runner.cut(self._touched(removed & ~base)) for removed in removals]
        losses = [0.0] * len(removals)
        with self._zeroed(base), self._eval():
            positions = [runner.start(inputs) for inputs, _ in self.batches]
            for index in sorted(range(len(removals)), key=cuts.__getitem__):
                for position in positions:
                    runner.advance(position, cuts[index])
                with self._zeroed(removals[index] & ~base):
                    losses[index] = self._mean(lambda b: runner.finish(positions[b]))
            for position in positions:
                runner.advance(position, len(runner.nodes) - 1)
            before = self._mean(lambda b: runner.finish(positions[b]))
        return before, losses

    def _mean(self, outputs: Callable[[int], torch.Tensor]) -> float:
        """The mean loss over the batches, batch ``b`` giving ``outputs(b)``: one sum in
        batch order for every path, so the paths round alike."""
        total = 0.0
        for index, (_, targets) in enumerate(self.batches):
            total += self._summed(outputs(index), targets)
        return total / self.images

    def _summed(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        """The loss summed over the images of one batch or slice."""
        self.forwards += 1
        return float(self.loss_fn(outputs, targets)) * len(targets)

    # -- stopping candidates that cannot win ------------------------------------------------
    def evaluate(self, base: np.ndarray, removals: Sequence[np.ndarray]) -> Evaluation:
        """Each candidate's loss, or a lower bound where it was stopped early; the argmin
        is the one ``losses`` gives (see the module's notes)."""
        if not self.early_exit:
            before, losses = self.losses(base, removals)
            return Evaluation(before, tuple(losses), tuple(losses))
        known = self._known(base)  # checked before zeroing, which writes the weights
        with torch.no_grad(), self._zeroed(base), self._eval():
            race = _Race(self, base, removals, known)
            evaluation = race.run()
        self.carried = race.winner_losses(evaluation.best(), removals, self._version())
        return evaluation

    def _known(self, base: np.ndarray) -> torch.Tensor | None:
        """The per-image losses with ``base`` removed if the last winner's are those."""
        known = self.carried
        if known is not None and known.removed == base.tobytes() and known.version == self._version():
            return known.losses
        return None

    def _hardest_first(self, known: torch.Tensor | None) -> tuple[float, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """With the base zeroed (the caller's context): the mean loss, the order of the
        images by their loss (``known``, or measured now), highest first (ties: subset
        order), and the subset in that order in slices of about 1/``SLICES``."""
        per_image = known
        if per_image is None:
            per_image = torch.cat([self._per_image(self.model(inputs), targets) for inputs, targets in self.batches])
        order = torch.sort(per_image, descending=True, stable=True).indices
        inputs, targets = self.inputs[order], self.targets[order]
        edges = np.cumsum([0, *slice_sizes(self.images)]).tolist()
        slices = [(inputs[a:b], targets[a:b]) for a, b in zip(edges, edges[1:])]
        return float(per_image.sum()) / self.images, order, slices

    def _per_image(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each image's cross-entropy (the race's loss: the default, never negative)."""
        self.forwards += 1
        return F.cross_entropy(outputs, targets, reduction="none")

    def _version(self) -> tuple[int, ...]:
        """Changes whenever a parameter or buffer is written in place (training, a
        slice written back): carried losses are used only for the weights they came from."""
        return tuple(t._version for t in (*self.model.parameters(), *self.model.buffers()))

    def _touched(self, removed: np.ndarray) -> list[torch.Tensor]:
        return [tensor for tensor, _, classes in self.slots if removed[classes].any()]

    # -- first-order estimates ----------------------------------------------------------------
    def estimates(self, base: np.ndarray, removals: Sequence[np.ndarray]) -> list[float]:
        """First-order (Taylor) change of the mean loss when each removal's extra
        channels are removed, with ``base`` removed: -sum(gradient * weight) over the
        consumers' input slices of those channels, which is -sum(dL/da * a) over the
        channels' activations ``a`` where the consumers read them (the producer slices
        would count the same first-order change a second time).  One forward and
        backward of the subset for all candidates."""
        inputs = [(t, dim, classes) for t, dim, classes in self.slots if dim >= 1 and t.dim() > 1 and t.requires_grad]
        tensors = list({id(t): t for t, _, _ in inputs}.values())
        if not tensors:  # nothing trainable reads these channels: no estimate tells them apart
            return [0.0] * len(removals)
        with self._zeroed(base), self._eval(), torch.enable_grad():
            gradients = {id(t): torch.zeros_like(t) for t in tensors}
            for batch, targets in self.batches:
                loss = self.loss_fn(self.model(batch), targets) * (len(targets) / self.images)
                for tensor, grad in zip(tensors, torch.autograd.grad(loss, tensors, allow_unused=True)):
                    if grad is not None:
                        gradients[id(tensor)] += grad
            changes = [  # per index along the slot's dim: zeroing it changes the loss by about -g.w
                ((-(gradients[id(t)] * t.detach())).movedim(dim, 0).reshape(t.shape[dim], -1).sum(1).cpu().numpy(), classes)
                for t, dim, classes in inputs
            ]
        return [
            float(sum(change[(removed & ~base)[classes]].sum() for change, classes in changes)) for removed in removals
        ]

    # -- masking --------------------------------------------------------------------------------
    @contextmanager
    def _zeroed(self, removed: np.ndarray) -> Iterator[None]:
        """Zero the slices of the classes where ``removed`` is True; write them back on exit."""
        saved = []
        try:
            for tensor, dim, classes in self.slots:
                hit = np.flatnonzero(removed[classes])
                if hit.size:
                    index = torch.from_numpy(hit).to(tensor.device)
                    saved.append((tensor, dim, index, tensor.index_select(dim, index).detach()))
                    with torch.no_grad():
                        tensor.index_fill_(dim, index, 0.0)
            yield
        finally:
            with torch.no_grad():
                for tensor, dim, index, values in reversed(saved):
                    tensor.index_copy_(dim, index, values)

    @contextmanager
    def _eval(self) -> Iterator[None]:
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)


class _Whole:
    """The ``PrefixRunner`` interface for a model it cannot trace: every cut is the
    input, every evaluation the whole forward."""

    def __init__(self, model: nn.Module):
        self.model = model

    def cut(self, tensors: list[torch.Tensor]) -> int:
        return 0

    def start(self, inputs: torch.Tensor) -> Any:
        return inputs

    def advance(self, position: Any, cut: int) -> None:
        pass

    def finish(self, position: Any) -> torch.Tensor:
        return self.model(position)


class _Cursors:
    """Every slice's activations at a cut, each started and advanced only when a
    candidate first needs it there; cuts must come in ascending order."""

    def __init__(self, runner, slices: list):
        self.runner, self.slices = runner, slices
        self.positions: list[Any] = [None] * len(slices)

    def at(self, index: int, cut: int) -> Any:
        if self.positions[index] is None:
            self.positions[index] = self.runner.start(self.slices[index][0])
        self.runner.advance(self.positions[index], cut)
        return self.positions[index]


def slice_sizes(images: int) -> list[int]:
    """Equal slices of about 1/``SLICES`` of the images (at least ``MIN_SLICE``)."""
    size = max(MIN_SLICE, math.ceil(images / SLICES))
    return [min(size, images - start) for start in range(0, images, size)]


@dataclass(frozen=True)
class _Known:
    """Per-image losses (subset order) of the model with ``removed`` zeroed, at ``version``."""

    removed: bytes
    version: tuple[int, ...]
    losses: torch.Tensor


class _Race:
    """One step's early-exit evaluation, with ``base`` zeroed and the model in eval
    mode (the caller's contexts).

    1. Every candidate runs the first slice (in the order of its cut).
    2. Scouting: the ``SCOUTS`` lowest there run the second slice.  The first
       slice alone picks the eventual winner poorly (it was 2nd-13th of 116 on a ResNet-56), and
       every candidate that completes before the winner costs a whole subset.
    3. The lowest scout runs every other slice: its total is the first bound.
    4. The others, in the order of their cuts, run slice after slice until their
       running sum exceeds the lowest completed total.

    Scouting only orders the work; which candidates stop is decided by the bound
    alone, so the choice does not depend on it.

    Activations are advanced to a candidate's cut while its own channels are zeroed:
    the layers before the cut read none of them, so they compute what they would
    without.  Candidates cut before the leader's cut run from a second set of cursors
    (the leader's have passed them)."""

    def __init__(self, evaluator: MaskedEvaluator, base: np.ndarray, removals: Sequence[np.ndarray],
                 known: torch.Tensor | None = None):
        self.evaluator = evaluator
        self.before, self.order, self.slices = evaluator._hardest_first(known)
        self.runner = evaluator.runner or _Whole(evaluator.model)
        self.extras = [removed & ~base for removed in removals]
        self.cuts = [self.runner.cut(evaluator._touched(extra)) for extra in self.extras]
        self.sums = [0.0] * len(removals)
        self.done = [0] * len(removals)  # slices evaluated
        self.pieces: list[list[torch.Tensor]] = [[] for _ in removals]  # per-image losses, slice by slice

    def run(self) -> Evaluation:
        order = sorted(range(len(self.extras)), key=self.cuts.__getitem__)
        first = _Cursors(self.runner, self.slices[:1])
        for index in order:
            self._extend(index, first, 1)
        scouts = sorted(order, key=lambda i: (self.sums[i], i))[:SCOUTS]
        if len(self.slices) > 1:
            second = _Cursors(self.runner, self.slices)
            for index in sorted(scouts, key=self.cuts.__getitem__):
                self._extend(index, second, 2)
        leader = min(scouts, key=lambda i: (self.sums[i], i))
        late = _Cursors(self.runner, self.slices)
        best = self._extend(leader, late, len(self.slices))
        early = _Cursors(self.runner, self.slices)
        for index in sorted(order, key=lambda i: (self.cuts[i], self.sums[i], i)):
            if index != leader and self.sums[index] <= best:
                cursors = early if self.cuts[index] < self.cuts[leader] else late
                best = min(best, self._extend(index, cursors, len(self.slices), best))
        return Evaluation(self.before, *self._results())

    def _extend(self, index: int, cursors: _Cursors, until: int, bound: float = math.inf) -> float:
        """Run candidate ``index`` on its next slices up to ``until`` or until its sum
        exceeds ``bound``; its total if it completed, else infinity."""
        evaluator, cut = self.evaluator, self.cuts[index]
        with evaluator._zeroed(self.extras[index]):
            while self.done[index] < until and self.sums[index] <= bound:
                slice_index = self.done[index]
                outputs = self.runner.finish(cursors.at(slice_index, cut))
                losses = evaluator._per_image(outputs, self.slices[slice_index][1])
                self.pieces[index].append(losses)
                self.sums[index] += float(losses.sum())
                self.done[index] += 1
        complete = self.done[index] == len(self.slices)
        return self.sums[index] if complete else math.inf

    def winner_losses(self, winner: int, removals: Sequence[np.ndarray], version: tuple[int, ...]) -> _Known:
        """The winner's per-image losses in subset order (it ran every slice)."""
        ranked = torch.cat(self.pieces[winner])
        losses = torch.empty_like(ranked)
        losses[self.order] = ranked
        return _Known(removals[winner].tobytes(), version, losses)

    def _results(self) -> tuple[tuple[float | None, ...], tuple[float, ...]]:
        images, count = self.evaluator.images, len(self.slices)
        losses = tuple(s / images if d == count else None for s, d in zip(self.sums, self.done))
        return losses, tuple(s / images for s in self.sums)

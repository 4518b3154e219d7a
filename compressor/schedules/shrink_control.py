"""How hard to shrink the channels selected for removal: set by an outcome, not a constant.

The method's promise is that the shrink drives the selected channels toward zero before
the prune, so that slicing them changes (almost) nothing.  The authors' schedule
(``fixed``: λ starts at ``reg_lambda`` and grows by ``reg_delta`` per interval) does
that over 300 epochs of 390 steps; in a 60-epoch run it shrinks them by about 2 %
and the slice costs most of the accuracy.

The ``target`` schedule measures the selected channels' norm relative to their norm
when regularisation started (``r``) at each epoch end and ``REMEASURES`` times within
each epoch, and sets the per-step shrink ``w <- w·exp(-λ)`` so that, over the steps
left until the prune cap (counted from the last epoch's steps), ``r`` reaches the
target ε.  It is a closed loop, and it must be: what the gradient and the optimizer's
momentum grow back is large (a channel followed by BatchNorm gets gradients that
grow as its weights shrink), so a plan made once per epoch misses by 10x on a
400-step epoch; re-planned within the epoch it does not.
The shrink is per step, not per unit of learning rate, so a step or warm-up LR
schedule does not make it miss: the number of steps per epoch is known, the LR mass
ahead is not.  ``exp`` never flips a sign, and each step's factor is bounded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from compressor.choices import REG_SCHEDULES, registry
from compressor.engine.analysis.graph import ChannelGraph
from compressor.engine.importance import WEIGHT_NAMES

# The controller plans to reach this fraction of ε, not ε itself: the gradient grows the
# channels back between two measurements, and the last search may select a channel
# that was kept (and so never shrunk) until then.
AIM = 0.5
# Times per epoch the target controller measures r again and re-plans λ.
REMEASURES = 16
# No single step multiplies a weight by less than this: a short epoch (few steps) with
# a large λ would otherwise zero channels in one step and shock the optimizer's state.
MIN_STEP_FACTOR = 0.5


def class_norms_squared(model: nn.Module, graph: ChannelGraph) -> np.ndarray:
    """Squared L2 norm per class id over every weight slice the shrink touches
    (producer rows, consumer columns, attention rows, norm scales; each tensor once).
    Summed on the weights' device and copied to the host once: the controller calls it
    within epochs, where a copy per tensor would stall a GPU many times per call."""
    params = dict(model.named_parameters())
    labels = graph.labels
    total: torch.Tensor | None = None
    seen: set[tuple[str, int]] = set()
    with torch.no_grad():
        for slot in graph.slots:
            if slot.tensor not in WEIGHT_NAMES or slot.key not in params or (slot.key, slot.dim) in seen:
                continue
            seen.add((slot.key, slot.dim))
            param = params[slot.key]
            values = param.detach().double().square()
            other = [d for d in range(values.dim()) if d != slot.dim]
            per_atom = values.sum(dim=other) if other else values
            if total is None:
                total = torch.zeros(labels.size, dtype=torch.float64, device=param.device)
            total.index_add_(0, torch.from_numpy(labels[slot.atoms]).to(param.device), per_atom)
    return np.zeros(labels.size) if total is None else total.cpu().numpy()


def selected_norm_ratio(now: np.ndarray, reference: np.ndarray, removed: np.ndarray) -> float:
    """The removed classes' norm now relative to theirs at the reference (1.0 when they had none)."""
    before = float(reference[removed].sum())
    if before <= 0.0:
        return 1.0
    return math.sqrt(float(now[removed].sum()) / before)


@dataclass(frozen=True)
class TargetShrink:
    """λ (log-shrink per step) such that ``r`` reaches ``AIM·ε`` in ``steps_left`` steps."""

    target: float  # ε

    def reg_lambda(self, ratio: float, steps_left: int) -> float:
        if steps_left < 1 or ratio <= 0.0:
            return 0.0
        wanted = math.log(ratio / (AIM * self.target))  # total log-shrink still needed
        if wanted <= 0.0:
            return 0.0
        return min(wanted / steps_left, -math.log(MIN_STEP_FACTOR))

    @staticmethod
    def steps_left(epochs_left: int, steps_per_epoch: int, steps_done: int) -> int:
        """Steps until the cap's epoch ends: the epochs left at the last epoch end, each as
        long as the last complete one, minus those taken since."""
        if epochs_left < 1 or steps_per_epoch < 1:  # at the cap, or no step counted yet: no plan
            return 0
        return max(1, epochs_left * steps_per_epoch - steps_done)

    @staticmethod
    def remeasure_every(steps_per_epoch: int) -> int:
        return max(1, steps_per_epoch // REMEASURES)

    @staticmethod
    def factor(reg_lambda: float, lr: float) -> float:
        return math.exp(-reg_lambda)


def fixed_factor(reg_lambda: float, lr: float) -> float:
    """The authors' decoupled decay ``w <- w·(1 - λ·lr)``."""
    return 1.0 - reg_lambda * lr


# --reg-schedule name -> the per-step factor for a given λ and learning rate.
STEP_FACTORS = registry(REG_SCHEDULES, {"target": TargetShrink.factor, "fixed": fixed_factor}, "--reg-schedule")

"""The gradual schedule: the MACs reduction grows along One-Cycle Pruning's S-curve."""
from __future__ import annotations

import math

from compressor.schedules.base import Schedule


class GradualSchedule(Schedule):
    """One-Cycle Pruning's S-curve applied to the MACs reduction: prune a little at the
    end of each epoch until the target is reached at ~70 % of training."""

    SATURATION = 0.7

    def target(self, epoch: int) -> float:
        c = self.config
        progress = min(1.0, (epoch + 1) / max(1.0, self.SATURATION * c.epochs))
        curve = (1 + math.exp(-c.gradual_alpha + c.gradual_beta)) / (1 + math.exp(-c.gradual_alpha * progress + c.gradual_beta))
        return c.flops_reduction * min(1.0, curve)

    def epoch_end(self, epoch, pruner, event):
        target = self.target(epoch)
        final = target >= self.config.flops_reduction
        # Small steps are skipped (each prune re-analyses the model), except the last.
        if pruner.reached >= target or (not final and target - pruner.reached < 0.005):
            return
        pruner.search(event, target)
        event.prune_due = True

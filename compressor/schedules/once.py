"""The schedules that prune once at a fixed time: never (``dense``), before the first step
(``oneshot``), or after training dense to ``prune_epoch`` (``three-stage``)."""
from __future__ import annotations

from compressor.epochs import epoch_index
from compressor.schedules.base import Schedule


class DenseSchedule(Schedule):
    """No pruning: the baseline at the same epoch budget."""


class OneShotSchedule(Schedule):
    """Prune the randomly initialised network before the first step."""

    def prune_at_start(self, epoch, pruner):
        return epoch == 0 and not pruner.pruned


class ThreeStageSchedule(Schedule):
    """Train dense, prune once, fine-tune: the classic pipeline in one budget."""

    def epoch_end(self, epoch, pruner, event):
        if epoch == epoch_index(self.config.three_stage_epoch) and not pruner.pruned:
            pruner.search(event, self.config.flops_reduction)
            event.prune_due = True

"""The schedules that prune when the searched sub-network is stable: one-cycle (``ocs``,
which also shrinks the channels it will remove) and EPI (``epi``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from compressor.epochs import epoch_index
from compressor.schedules.base import Schedule

if TYPE_CHECKING:  # annotations only
    from compressor.schedules.config import PruneConfig


class StabilitySchedule(Schedule):
    """One-cycle (``ocs``) and EPI: search every epoch from ``monitor_start``; prune
    when the indicator says the sub-network is stable, or at the cap.  ``ocs`` also
    shrinks the selected channels once regularisation has started and, under the
    target shrink (the default), waits until they are at most ``reg_target`` of
    their norm, so that slicing them changes almost nothing."""

    def __init__(self, config: PruneConfig, regularise: bool):
        super().__init__(config)
        self.regularise = regularise

    def epoch_end(self, epoch, pruner, event):
        if pruner.pruned or epoch < epoch_index(self.config.monitor_start):
            return
        plan = pruner.search(event, self.config.flops_reduction)
        pruner.track(event, plan)
        if self.regularise:
            pruner.regularise(epoch, plan, event)
        missing = self._not_ready(pruner, event)
        cap = epoch >= epoch_index(self.config.last_prune_epoch)
        event.prune_due = not missing or cap
        if event.prune_due:
            event.prune_reason = (
                "ready: " + self._ready_words() if not missing
                else f"cap (epoch {self.config.last_prune_epoch}) before " + " and ".join(missing)
            )

    def _waits_for_shrink(self) -> bool:
        return self.regularise and self.config.reg_schedule == "target"

    def _ready_words(self) -> str:
        words = "stable"
        return words + f" and selected channels at <= {self.config.reg_target:g} of their norm" if self._waits_for_shrink() else words

    def _not_ready(self, pruner, event) -> list[str]:
        """What the prune still waits for: stability and, under the target shrink, ε."""
        c = self.config
        missing = []
        if not pruner.stable:
            value = "unmeasured" if event.stability is None else f"{event.stability:.3f}"
            missing.append(f"stability ({value} < {c.indicator_threshold:g})")
        if self._waits_for_shrink() and (event.selected_norm is None or event.selected_norm > c.reg_target):
            value = "not started" if event.selected_norm is None else f"at {event.selected_norm:.3g} of their norm"
            missing.append(f"the shrink (selected channels {value} > {c.reg_target:g})")
        return missing

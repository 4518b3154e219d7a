"""The LAASP schedule: when the loss-aware steps of ``compressor.schedules.laasp`` run, in
chunks with recovery epochs between them, and what of that a checkpoint keeps."""
from __future__ import annotations

from typing import TYPE_CHECKING

from compressor.engine.analysis.graph import ChannelGraph
from compressor.epochs import epoch_index, epoch_number
from compressor.errors import CompressorError
from compressor.schedules import laasp
from compressor.schedules.base import Schedule, timed_search
from compressor.schedules.macs import reduction

if TYPE_CHECKING:  # annotations only
    from compressor.schedules.config import PruneConfig


class LaaspSchedule(Schedule):
    """LAASP, loss-aware automatic selection of the pruning criterion: each step lets
    every criterion of a pool propose channels in every group and takes the pair
    that leaves the lowest loss on a fixed training subset.  Train dense to
    ``prune_epoch``; then at the end of an epoch run a chunk of such steps
    (``compressor.schedules.laasp``) until ``recover_macs`` more of
    the MACs are gone, slice once, and give ``recover_epochs`` epochs of training to
    recover before the next chunk, until the target is met.  Recovery epochs are
    epochs of the run (the budget is fixed), on the run's LR schedule.  A chunk that
    would leave the next one past ``laasp_last_epoch`` goes all the way to the target.

    Its state (the step log, the next chunk's epoch, the groups' original sizes) is
    checkpointed every epoch, so a run resumes between chunks or during a recovery."""

    def __init__(self, config: PruneConfig):
        super().__init__(config)
        self.steps: list[dict] = []
        self.next_epoch = epoch_index(config.laasp_first_epoch)  # a loop index, as the hooks'
        self.done = False
        self.original_sizes: dict[str, int] = {}

    def prune_at_start(self, epoch, pruner):
        if not pruner.selection_data:
            raise CompressorError("the laasp schedule needs selection_data: a list of (inputs, targets) batches")
        return False

    def epoch_end(self, epoch, pruner, event):
        if self.done or epoch < self.next_epoch:
            return
        c = self.config
        final = c.recover_epochs == 0 or epoch + c.recover_epochs > epoch_index(c.laasp_last_epoch)
        goal = c.flops_reduction if final else min(c.flops_reduction, pruner.reached + max(c.recover_macs, 1e-9))
        with timed_search(event):
            plan, steps = laasp.prune_chunk(
                pruner.model, pruner.graph, pruner.cost, pruner.dense_macs, self._limits(pruner.graph),
                pruner.selection_data, self._settings(), goal, pruner.loss_fn,
            )
        chunk = pruner.prunes
        self.steps += [{"epoch": epoch_number(epoch), "chunk": chunk, "step": len(self.steps) + i, **s} for i, s in enumerate(steps)]
        self.next_epoch = epoch + max(1, c.recover_epochs)
        if not steps:
            self.done = True  # every group is at its cap
            return
        pruner.propose(event, plan)
        event.prune_due = True
        self.done = final or reduction(event.plan_macs, pruner.dense_macs) >= c.flops_reduction - 1e-12

    def _limits(self, graph: ChannelGraph) -> dict[str, laasp.GroupLimits]:
        """Caps and rounding follow each group's size before any pruning."""
        if not self.original_sizes:
            self.original_sizes = {g.name: g.size for g in graph.groups}
        c = self.config
        return {
            g.name: laasp.GroupLimits.of(self.original_sizes.get(g.name, g.size), c.round_to, c.max_prune_fraction, c.min_width)
            for g in graph.groups
        }

    def _settings(self) -> laasp.StepSettings:
        c = self.config
        return laasp.StepSettings(tuple(c.criteria_pool), c.flops_reduction, c.laasp_step, c.laasp_group_fraction,
                                  c.laasp_shortlist)

    def state(self) -> dict:
        return {
            "steps": self.steps,
            "next_epoch": self.next_epoch,
            "done": self.done,
            "original_sizes": self.original_sizes,
        }

    def load_state(self, state: dict) -> None:
        self.steps = list(state["steps"])
        self.next_epoch = int(state["next_epoch"])
        self.done = bool(state["done"])
        self.original_sizes = dict(state["original_sizes"])

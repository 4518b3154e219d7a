"""The pruning controller: structure search, stability, regularisation, the prune.

A training loop (ours or a user's) drives it through three hooks::

    pruner = OneCyclePruner(model, example_input, PruneConfig(...), optimizer)
    for epoch in range(epochs):
        pruner.epoch_start(epoch)            # one-shot schedules prune here
        for batch in data:
            ...; optimizer.step()
            pruner.after_step(lr)            # shrink the channels selected for removal
        event = pruner.epoch_end(epoch)      # search, stability; prunes in place when due

With ``prune=False`` the two epoch hooks only report (``event.prune_due``) and the loop
calls ``pruner.prune(epoch, ddp=...)`` itself: what DDP and our own Trainer do.
(``begin_epoch`` / ``end_epoch`` are the deprecated names of those reporting calls.)

The schedules (``compressor.schedules.registry`` names them) are small classes that only
decide *when* to search and prune (``compressor.schedules.base.Schedule``); their hooks see
this controller through ``PrunerView``, and it does the work with the analyse -> plan ->
apply engine.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np
from torch import nn

from compressor.arguments import check_type
from compressor.engine.analysis.graph import ChannelGraph, analyse, check_model_and_input
from compressor.engine.apply import apply_plan, check_plan
from compressor.engine.cost import CostModel
from compressor.engine.flops import count_params
from compressor.engine.importance import score_channels
from compressor.engine.latency import LatencyModel, LatencyTable
from compressor.engine.plan import PruningPlan, kept_class_mask
from compressor.engine.selection import select_plan
from compressor.epochs import epoch_index, epoch_number
from compressor.errors import CompressorError, deprecated
from compressor.schedules.base import EpochEvent, timed_search
from compressor.schedules.config import PruneConfig
from compressor.schedules.distributed import broadcast_plan, release_ddp, rewrap_ddp
from compressor.schedules.macs import reduction, relative_reduction
from compressor.schedules.registry import make_schedule
from compressor.schedules.regularization import Shrinker
from compressor.schedules.shrink_control import STEP_FACTORS, TargetShrink, class_norms_squared, selected_norm_ratio
from compressor.schedules.stability import EpiIndicator, JaccardIndicator


@dataclass
class _State:
    reg_on_epoch: int | None = None
    reg_lambda: float = 0.0
    applied: list[dict] = field(default_factory=list)  # plans applied so far, in order
    prune_epochs: list[int] = field(default_factory=list)
    candidate: dict | None = None
    reached: float = 0.0  # MACs reduction reached so far (gradual)
    reg_reference: list[float] | None = None  # squared norm per class id when regularisation started
    steps: int = 0  # optimizer steps in this epoch so far
    last_steps: int = 0  # ... in the last complete epoch: what the target controller plans with
    epochs_left: int = 0  # from the last epoch end to the prune cap (target controller)
    predicted_speedup: float | None = None  # of the applied plan on the latency table's target (--speedup)


log = logging.getLogger(__name__)
# A plan this far past the asked MACs reduction is worth a word (the ±1 pp users expect).
OVERSHOOT_WARNING = 0.01


class OneCyclePruner:
    def __init__(
        self,
        model: nn.Module,
        example_input,
        config: PruneConfig,
        optimizer=None,
        *,
        lr_scheduler=None,
        selection_data=None,
        loss_fn=None,
        state: dict | None = None,
        latency: LatencyTable | None = None,
    ):
        """``lr_scheduler`` is the user's scheduler, kept valid across the prune.
        ``selection_data`` (a list of (inputs, targets) batches) and ``loss_fn``
        (default cross-entropy) are what loss-aware schedules evaluate candidates on.
        ``state`` (a ``state_dict()``) resumes a run: ``model`` must then be the
        architecture rebuilt with the saved plans applied, with its saved weights.
        ``latency`` is the deploy target's measured table that ``PruneConfig.speedup``
        prices plans with (``compressor.bench.latency.latency_table`` builds one)."""
        check_model_and_input(model, example_input, "OneCyclePruner")
        check_type(config, PruneConfig, "config", "OneCyclePruner", "a PruneConfig")
        if latency is not None:
            check_type(latency, LatencyTable, "latency", "OneCyclePruner", "a LatencyTable")
        self.config = config
        self.model = model
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.selection_data = selection_data
        self.loss_fn = loss_fn
        self.example_input = example_input
        self.graph, self.cost = self._analyse()
        self.latency = _latency_model(config, self.graph, latency)
        self.dense_macs = self.graph.dense_macs
        self.dense_params = self.graph.dense_params
        self.indicator = (
            EpiIndicator(config.indicator_threshold, config.epi_window)
            if config.indicator_kind == "epi"
            else JaccardIndicator(config.indicator_threshold)
        )
        self.schedule = make_schedule(config)
        self.state = _State()
        self._shrinker: Shrinker | None = None
        self._removed: np.ndarray | None = None  # the classes the shrink aims at (target controller)
        self._history: list[dict] = []  # one record per epoch_end (see ``history``)
        self._view = PrunerView(self)  # what the schedule's hooks see of this pruner
        if state is not None:
            self.load_state_dict(state)
        if self.pruned:
            self.latency = None  # a resumed pruned model: the table priced the dense one, the search is over
        if config.schedule != "dense" and not self.pruned:
            self._check_reachable()

    # -- hooks ------------------------------------------------------------------------
    def epoch_start(self, epoch: int, *, prune: bool = True) -> EpochEvent:
        """Before the epoch's first step: one-shot schedules search here (``event.prune_due``)
        and, with ``prune`` (the default), slice the model in place (``event.pruned``).
        Under DDP pass ``prune=False`` and call ``prune(epoch, ddp=...)`` when due."""
        event = EpochEvent(epoch)
        if self.schedule.prune_at_start(epoch, self._view):
            self._search(event, self.config.flops_reduction)
            event.prune_due = True
            event.prune_reason = f"{self.config.schedule} schedule, before epoch {epoch_number(epoch)}"
        return self._prune_if(prune, event)

    def after_step(self, lr: float | None = None) -> None:
        """After every optimizer step: shrink the channels selected for removal once
        regularisation is on (``w <- w * exp(-λ)`` under ``reg_schedule="target"``,
        ``w <- w * (1 - λ·lr)`` under ``"fixed"``), and count the step, which the target
        controller plans with.  ``lr`` defaults to the optimizer's current learning rate
        (its first param group); only the fixed schedule needs it."""
        self.state.steps += 1
        if self._shrinker is None:
            return
        if self.config.reg_schedule == "target":
            self._steer()
        if self.state.reg_lambda <= 0:
            return
        if lr is None and self.config.reg_schedule == "fixed":
            lr = self._current_lr()
        self._shrinker.shrink(STEP_FACTORS[self.config.reg_schedule](self.state.reg_lambda, lr))

    def _steer(self) -> None:
        """Within the epoch, measure how far the selected channels are and re-plan λ."""
        if self._removed is None or self.state.steps % TargetShrink.remeasure_every(self.state.last_steps):
            return
        ratio = self._selected_norm()
        steps_left = TargetShrink.steps_left(self.state.epochs_left, self.state.last_steps, self.state.steps)
        self.state.reg_lambda = TargetShrink(self.config.reg_target).reg_lambda(ratio, steps_left)

    def epoch_end(self, epoch: int, *, prune: bool = True) -> EpochEvent:
        """After the epoch's last step: search, stability, regularisation strength, and
        (``event.prune_due``) whether the sub-network is stable (or the cap is reached);
        with ``prune`` (the default) the model is then sliced in place (``event.pruned``),
        and the model, optimizer and LR scheduler objects stay the ones you hold.  Under
        DDP pass ``prune=False`` and call ``prune(epoch, ddp=...)`` when due."""
        event = EpochEvent(epoch, reg_lambda=self.state.reg_lambda)
        if self.state.steps > 0:
            self.state.last_steps, self.state.steps = self.state.steps, 0
        self.schedule.epoch_end(epoch, self._view, event)
        event.reg_lambda = self.state.reg_lambda
        if event.prune_due and event.prune_reason is None:
            event.prune_reason = f"{self.config.schedule} schedule"
        self._history.append(
            {"epoch": epoch, "stability": event.stability, "reg_lambda": event.reg_lambda,
             "selected_norm": event.selected_norm, "plan_macs": event.plan_macs}
        )
        return self._prune_if(prune, event)

    def _prune_if(self, prune: bool, event: EpochEvent) -> EpochEvent:
        if prune and event.prune_due:
            self.prune(event.epoch)
            event.pruned = True
        return event

    def begin_epoch(self, epoch: int) -> EpochEvent:
        """Deprecated name of ``epoch_start(epoch, prune=False)``."""
        deprecated("OneCyclePruner.begin_epoch(epoch)", "epoch_start(epoch, prune=False)")
        return self.epoch_start(epoch, prune=False)

    def end_epoch(self, epoch: int) -> EpochEvent:
        """Deprecated name of ``epoch_end(epoch, prune=False)``."""
        deprecated("OneCyclePruner.end_epoch(epoch)", "epoch_end(epoch, prune=False)")
        return self.epoch_end(epoch, prune=False)

    def prune(self, epoch: int, *, ddp: nn.Module | None = None) -> nn.Module:
        """Apply the current candidate plan; returns the (same, now smaller) model.

        Under DDP pass the ``DistributedDataParallel`` wrapper of this model as ``ddp``:
        its reducer (which caches every parameter's old shape) is released before the
        slicing, and a fresh wrapper with the same settings is returned; train with that
        one from now on.  The optimizer and LR scheduler objects stay valid either way."""
        if self.state.candidate is None:
            raise RuntimeError("prune() needs a searched plan")
        plan = PruningPlan.from_dict(self.state.candidate)
        check_plan(self.model, self.graph, plan, self.example_input)  # on a copy, before anything changes
        if ddp is not None:
            release_ddp(ddp)
        self.model = apply_plan(self.model, self.graph, plan, None if self.config.reset_optimizer else self.optimizer)
        if self.config.reset_optimizer and self.optimizer is not None:
            self.optimizer.state.clear()  # what the method's authors' code does
        if self.latency is not None:
            self.state.predicted_speedup = self.latency.speedup(kept_class_mask(self.graph, plan))
            self.latency = None  # priced the dense model's classes; the search is over
        self.state.applied.append(plan.to_dict())
        self.state.prune_epochs.append(epoch)
        self.state.candidate = None
        self._shrinker = None
        self._removed = None
        self.state.reg_lambda = 0.0
        self.state.reg_reference = None  # indexed by the old graph's class ids
        self.graph, self.cost = self._analyse()
        self.state.reached = reduction(self.graph.dense_macs, self.dense_macs)
        self._say_if_past_target()
        return self.model if ddp is None else rewrap_ddp(ddp, self.model)

    def _say_if_past_target(self) -> None:
        """The plan is the smallest that reaches the target, but a network with few, wide
        layers may have no plan near it: say by how much and why, instead of a silent 60 %
        for an asked 50 %."""
        asked = self.config.flops_reduction
        if self.config.speedup is not None or self.state.reached <= asked + OVERSHOOT_WARNING:
            return  # a speed-up budget asks for no MACs fraction: the done line says asked vs predicted
        why = ("kept widths are whole multiples of round_to (8 for groups of 16 channels or more), and one such "
               "block is the smallest step; round_to=1 (--round-to 1) comes closer, at widths kernels like less"
               if self.config.round_to != 1 else "one channel of a layer this wide is the smallest step")
        log.warning("asked for %.1f%% fewer MACs; the nearest plan removes %.1f%%: %s", 100 * asked,
                    100 * self.state.reached, why)

    # -- what the controller reports --------------------------------------------------------
    @property
    def plan(self) -> PruningPlan | None:
        """The plan in force: the latest searched candidate before the prune, the applied
        one after it (None before the first search)."""
        if self.state.candidate is not None:
            return PruningPlan.from_dict(self.state.candidate)
        return PruningPlan.from_dict(self.state.applied[-1]) if self.state.applied else None

    @property
    def history(self) -> list[dict]:
        """One record per ``epoch_end``: epoch, stability, reg_lambda, selected_norm, plan_macs."""
        return list(self._history)

    @property
    def stability_history(self) -> list[tuple[int, float]]:
        """(epoch, stability) for every epoch whose end computed one."""
        return [(h["epoch"], h["stability"]) for h in self._history if h["stability"] is not None]

    @property
    def flops_reduction(self) -> float:
        """Fraction of the dense model's MACs removed so far: the quantity
        ``PruneConfig.flops_reduction`` (``--flops-reduction``) asks for."""
        return reduction(self.macs, self.dense_macs)

    @property
    def predicted_speedup(self) -> float | None:
        """With ``PruneConfig.speedup``: the applied plan's speed-up predicted from the latency
        table (the candidate's before the prune; None without a speed-up target)."""
        if self.state.predicted_speedup is not None or self.latency is None or self.state.candidate is None:
            return self.state.predicted_speedup
        return self.latency.speedup(kept_class_mask(self.graph, PruningPlan.from_dict(self.state.candidate)))

    @property
    def macs_reduction(self) -> float:
        """Deprecated name of ``flops_reduction``."""
        deprecated("OneCyclePruner.macs_reduction", "flops_reduction")
        return self.flops_reduction

    def _current_lr(self) -> float:
        if self.optimizer is None:
            raise CompressorError("after_step() needs lr=... when the pruner was built without an optimizer")
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def pruned(self) -> bool:
        return bool(self.state.applied)

    @property
    def prune_epoch(self) -> int | None:
        return self.state.prune_epochs[0] if self.state.prune_epochs else None

    @property
    def macs(self) -> int:
        return self.graph.dense_macs

    @property
    def params(self) -> int:
        return count_params(self.model)

    @property
    def applied_plans(self) -> list[PruningPlan]:
        return [PruningPlan.from_dict(p) for p in self.state.applied]

    def state_dict(self) -> dict:
        return {
            "state": asdict(self.state),
            "indicator": self.indicator.state(),
            "schedule": self.schedule.state(),
            "history": [dict(h) for h in self._history],
            "dense": {"macs": self.dense_macs, "params": self.dense_params},
        }

    def load_state_dict(self, saved: dict) -> None:
        """Restore after the model was rebuilt with ``applied_plans`` (see checkpoint)."""
        self.state = _State(**saved["state"])
        # The model given on resume is already pruned; the original sizes come from the save.
        dense = saved.get("dense") or {}
        self.dense_macs = int(dense.get("macs", self.dense_macs))
        self.dense_params = int(dense.get("params", self.dense_params))
        self._history = [dict(h) for h in saved.get("history", [])]
        self.indicator.load_state(saved["indicator"])
        self.schedule.load_state(saved["schedule"])
        self.graph, self.cost = self._analyse()
        self._check_reference()
        if self.state.candidate is not None and self.state.reg_on_epoch is not None and not self.pruned:
            self._aim_shrink(PruningPlan.from_dict(self.state.candidate))

    def _check_reference(self) -> None:
        """A saved shrink reference must be one finite, non-negative norm per class of this
        model, or the controller would fail (or steer on garbage) epochs into the resumed run."""
        reference = self.state.reg_reference
        if reference is None:
            return
        values = np.asarray(reference, dtype=float)
        if values.shape != self.graph.labels.shape or not np.all(np.isfinite(values) & (values >= 0)):
            raise CompressorError(
                f"the saved shrink reference has {values.size} values for a model with {self.graph.labels.size} "
                "channel classes, or values that are not finite non-negative norms"
            )

    # -- the work ---------------------------------------------------------------------------
    def _check_reachable(self) -> None:
        """Fail before training, not after the first epoch: reachability depends only on
        the caps and rounding, so any scores will do."""
        relative = relative_reduction(self.config.flops_reduction, self.dense_macs, self.graph.dense_macs)
        select_plan(self.graph, self.cost, np.zeros(self.graph.labels.size), self.config.selection(relative), self.latency)

    def _analyse(self) -> tuple[ChannelGraph, CostModel]:
        graph = analyse(self.model, self.example_input, ignore=self.config.ignore)
        return graph, CostModel(graph, self.model)

    def _search(self, event: EpochEvent, target: float) -> PruningPlan:
        """Find the plan meeting ``target`` (a fraction of the *original* MACs) on the current
        model and make it the candidate."""
        with timed_search(event):
            relative = relative_reduction(target, self.dense_macs, self.graph.dense_macs)
            scores = score_channels(
                self.config.criterion,
                self.graph,
                self.model,
                cost=self.cost,
                cost_weighting=self.config.cost_weighting,
                seed=self.config.seed + event.epoch,
            )
            plan = select_plan(self.graph, self.cost, scores, self.config.selection(relative), self.latency)
            return self._propose(event, plan)

    def _propose(self, event: EpochEvent, plan: PruningPlan) -> PruningPlan:
        """Make ``plan`` (rank 0's under DDP) the candidate the next prune applies, and say so in ``event``."""
        plan = broadcast_plan(plan)
        self.state.candidate = plan.to_dict()
        event.searched = True
        event.plan_macs = self.cost.macs(kept_class_mask(self.graph, plan))
        return plan

    def _track(self, event: EpochEvent, plan: PruningPlan) -> None:
        event.stability = self.indicator.update(plan)

    def _regularise(self, epoch: int, plan: PruningPlan, event: EpochEvent) -> None:
        """Start the shrink when due, aim it at ``plan``'s removed channels, measure how far
        they have shrunk (``event.selected_norm``) and set λ for the next epoch."""
        config = self.config
        if self.state.reg_on_epoch is None:
            start = None if config.reg_start is None else epoch_index(config.reg_start)
            latest = (epoch_index(config.monitor_start) + epoch_index(config.last_prune_epoch)) // 2
            automatic = start is None and (self.indicator.plateaued() or epoch >= latest)
            if (start is not None and epoch >= start) or automatic:
                self.state.reg_on_epoch = epoch
                self.state.reg_lambda = config.reg_lambda
                self.state.reg_reference = class_norms_squared(self.model, self.graph).tolist()
        elif config.reg_schedule == "fixed" and (epoch - self.state.reg_on_epoch) % config.reg_interval == 0:
            self.state.reg_lambda += config.reg_delta
        if self.state.reg_on_epoch is None:
            return
        self._aim_shrink(plan)
        if self._removed is not None:
            event.selected_norm = self._selected_norm()
        if config.reg_schedule == "target":
            self.state.epochs_left = epoch_index(config.last_prune_epoch) - epoch
            ratio = 1.0 if event.selected_norm is None else event.selected_norm
            steps_left = TargetShrink.steps_left(self.state.epochs_left, self.state.last_steps, 0)
            self.state.reg_lambda = TargetShrink(config.reg_target).reg_lambda(ratio, steps_left)

    def _aim_shrink(self, plan: PruningPlan) -> None:
        self._shrinker = Shrinker(self.model, self.graph, plan)
        # The reference is None only in checkpoints written before it existed.
        self._removed = None if self.state.reg_reference is None else ~kept_class_mask(self.graph, plan)

    def _selected_norm(self) -> float:
        now = class_norms_squared(self.model, self.graph)
        return selected_norm_ratio(now, np.asarray(self.state.reg_reference), self._removed)


class PrunerView:
    """What a schedule's hooks see of the pruner (``Schedule.prune_at_start`` / ``epoch_end``
    get one): how far pruning has come, the model as it is now, and the four actions a
    schedule may take.  Read-only otherwise: the prune itself is the pruner's, when a hook
    sets ``event.prune_due``."""

    def __init__(self, pruner: OneCyclePruner):
        self._pruner = pruner

    # -- where pruning stands -------------------------------------------------------------------
    @property
    def pruned(self) -> bool:
        """Whether a plan has been applied (pruned at least once)."""
        return self._pruner.pruned

    @property
    def prunes(self) -> int:
        """How many plans have been applied so far."""
        return len(self._pruner.state.prune_epochs)

    @property
    def reached(self) -> float:
        """The fraction of the dense model's MACs removed so far."""
        return self._pruner.state.reached

    @property
    def stable(self) -> bool:
        """Whether the stability indicator (``track``) says the searched sub-network has settled."""
        return self._pruner.indicator.stable()

    # -- the model as it is now (all change with each prune) ------------------------------------
    @property
    def model(self) -> nn.Module:
        return self._pruner.model

    @property
    def graph(self) -> ChannelGraph:
        return self._pruner.graph

    @property
    def cost(self) -> CostModel:
        return self._pruner.cost

    @property
    def dense_macs(self) -> int:
        """The MACs of the model before any pruning: what reductions are fractions of."""
        return self._pruner.dense_macs

    @property
    def selection_data(self):
        """The (inputs, targets) batches loss-aware schedules evaluate candidates on (or None)."""
        return self._pruner.selection_data

    @property
    def loss_fn(self):
        """The loss those evaluations use (None: cross-entropy)."""
        return self._pruner.loss_fn

    # -- actions --------------------------------------------------------------------------------
    def search(self, event: EpochEvent, target: float) -> PruningPlan:
        """Score the channels with the configured criterion and select the plan that removes
        ``target`` of the dense model's MACs; it becomes the candidate the next prune applies."""
        return self._pruner._search(event, target)

    def propose(self, event: EpochEvent, plan: PruningPlan) -> PruningPlan:
        """Make a plan the schedule found itself (on ``graph``) the candidate; returns the plan
        in force (rank 0's under DDP)."""
        return self._pruner._propose(event, plan)

    def track(self, event: EpochEvent, plan: PruningPlan) -> None:
        """Feed ``plan`` to the stability indicator; ``event.stability`` gets its value."""
        self._pruner._track(event, plan)

    def regularise(self, epoch: int, plan: PruningPlan, event: EpochEvent) -> None:
        """Shrink ``plan``'s removed channels from the regularisation start on (``PruneConfig.reg_*``)."""
        self._pruner._regularise(epoch, plan, event)


def _latency_model(config: PruneConfig, graph: ChannelGraph, table: LatencyTable | None) -> LatencyModel | None:
    if config.speedup is None:
        return None
    if table is None:
        raise CompressorError("PruneConfig(speedup=...) needs the deploy target's latency table: pass latency=... "
                              "(compressor.bench.latency.latency_table measures one)")
    return LatencyModel(graph, table)

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

The schedules (``ocs``, ``dense``, ``oneshot``, ``three-stage``, ``epi``, ``gradual``)
are small classes that only decide *when* to search and prune; the controller does
the work with the analyse -> plan -> apply engine.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from compressor.schedules import laasp
from compressor.arguments import check_fields, check_type
from compressor.engine.analysis.graph import ChannelGraph, analyse, check_model_and_input
from compressor.engine.apply import apply_plan, check_plan
from compressor.choices import POOL_CRITERIA, REG_SCHEDULES, SCHEDULES, registry  # named there so that the CLI lists them without torch
from compressor.engine.cost import CostModel
from compressor.epochs import epoch_index, epoch_number
from compressor.errors import CompressorError, deprecated
from compressor.engine.flops import count_params
from compressor.engine.importance import check_criterion, score_channels
from compressor.engine.latency import LatencyModel, LatencyTable
from compressor.engine.plan import PruningPlan, kept_class_mask
from compressor.schedules.regularization import Shrinker
from compressor.schedules.shrink_control import STEP_FACTORS, TargetShrink, class_norms_squared, selected_norm_ratio
from compressor.engine.selection import SelectionConfig, check_speedup, select_plan
from compressor.schedules.stability import EpiIndicator, JaccardIndicator


@dataclass(frozen=True)
class PruneConfig:
    flops_reduction: float = 0.5
    epochs: int = 10
    schedule: str = "ocs"
    criterion: str = "ocs"
    cost_weighting: bool = False
    indicator: str = "jaccard"  # jaccard | epi (for the ocs schedule)
    # Epoch fields are epoch numbers as printed, from 1 (compressor.epochs); the hooks take
    # the loop's index, from 0, and the *_index properties below translate.
    monitor_start: int = 2
    reg_start: int | None = None  # None: when stability plateaus, at the latest halfway to the prune cap
    # target: λ set each epoch so the selected channels reach reg_target of their norm at the
    # regularisation start by the prune cap, and ocs prunes only once they have (or at the cap);
    # fixed: the authors' λ = reg_lambda + reg_delta per reg_interval epochs, pruning on stability alone.
    reg_schedule: str = "target"
    reg_target: float = 1e-2
    reg_lambda: float = 1e-4
    reg_delta: float = 1e-4
    reg_interval: int = 1
    stability_threshold: float = 0.999
    epi_threshold: float = 0.983
    epi_window: int = 5
    max_prune_epoch: int | None = None  # None: the epoch after 40 % of the run (the authors' caps: 110-130 of 300, 50 of 130)
    prune_epoch: int | None = None  # three-stage, laasp: None means the epoch after a third of the run
    max_prune_fraction: float = 0.75
    round_to: int | None = None
    min_width: int = 1
    reset_optimizer: bool = False
    ignore: tuple[str, ...] = ()
    gradual_alpha: float = 14.0
    gradual_beta: float = 5.0
    # laasp: loss-aware choice of (group, criterion) per step on a fixed training subset
    criteria_pool: tuple[str, ...] = POOL_CRITERIA
    selection_samples: int = 256
    laasp_step: float = 0.01  # MACs one step removes, as a fraction of the original MACs
    laasp_group_fraction: float | None = None  # instead: this fraction of the group's channels per step
    recover_macs: float = 0.1  # slice and recover after each this much more MACs reduction
    recover_epochs: int = 1  # epochs of recovery between chunks (0: all steps at the prune epoch)
    seed: int = 0
    # Instead of a MACs budget: prune until the predicted latency on the deploy target is the
    # dense one / speedup (the pruner then needs that target's latency table).  Last, so the
    # fields before it keep their positions.
    speedup: float | None = None
    # laasp: evaluate only the K candidates of a step with the lowest first-order loss
    # estimate (faster, not always the exhaustive choice); None evaluates every one
    laasp_shortlist: int | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if self.schedule not in SCHEDULES:
            raise CompressorError(f"unknown schedule '{self.schedule}'; choose from {', '.join(SCHEDULES)}")
        check_criterion(self.criterion)
        if self.reg_schedule not in REG_SCHEDULES:
            raise CompressorError(f"unknown --reg-schedule '{self.reg_schedule}'; choose from {', '.join(REG_SCHEDULES)}")
        if not (0.0 < self.reg_target < 1.0):
            raise CompressorError(f"--reg-target must be in (0, 1), got {self.reg_target}")
        if self.indicator not in ("jaccard", "epi"):
            raise CompressorError(f"unknown indicator '{self.indicator}'; choose jaccard or epi")
        if self.epochs < 1:
            raise CompressorError("--epochs must be at least 1")
        if self.monitor_start < 1:  # past the run is allowed: the default 2 in a 1-epoch run never searches
            raise CompressorError(f"--monitor-start {self.monitor_start} is before the first epoch, 1 (epochs count from 1)")
        for name in ("max_prune_epoch", "prune_epoch", "reg_start"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= self.epochs:
                flag = "--" + name.replace("_", "-")
                raise CompressorError(f"{flag} {value} is outside the run's epochs 1..{self.epochs} (epochs count from 1)")
        SelectionConfig(self.flops_reduction, self.round_to, self.max_prune_fraction, self.min_width)
        check_speedup(self.speedup)
        if self.speedup is not None and self.schedule not in SPEEDUP_SCHEDULES:
            raise CompressorError(f"--speedup works with the schedules that prune once ({', '.join(SPEEDUP_SCHEDULES)}); "
                                  f"--schedule {self.schedule} steps through MACs fractions, use --flops-reduction")
        self._check_laasp()

    def _check_laasp(self) -> None:
        laasp.check_pool(self.criteria_pool)
        if self.selection_samples < 1:
            raise CompressorError("--selection-samples must be at least 1")
        if not 0.0 < self.laasp_step < 1.0:
            raise CompressorError(f"--laasp-step must be in (0, 1), got {self.laasp_step}")
        if self.laasp_group_fraction is not None and not 0.0 < self.laasp_group_fraction <= 1.0:
            raise CompressorError(f"--laasp-group-fraction must be in (0, 1], got {self.laasp_group_fraction}")
        if self.laasp_shortlist is not None and self.laasp_shortlist < 1:
            raise CompressorError(f"--laasp-shortlist must be at least 1, got {self.laasp_shortlist}")
        if not 0.0 <= self.recover_macs < 1.0:
            raise CompressorError(f"--recover-macs must be in [0, 1), got {self.recover_macs}")
        if self.recover_epochs < 0:
            raise CompressorError("--recover-epochs must be >= 0")
        if self.schedule == "laasp" and self.max_prune_epoch is not None and self.max_prune_epoch < self.laasp_first_epoch:
            raise CompressorError(
                f"--max-prune-epoch {self.max_prune_epoch} is before the laasp --prune-epoch {self.laasp_first_epoch}"
            )

    @property
    def indicator_kind(self) -> str:
        """The stability indicator the prune waits for: EPI's under ``schedule="epi"``, else ``indicator``."""
        return "epi" if self.schedule == "epi" else self.indicator

    @property
    def indicator_threshold(self) -> float:
        """The value of that indicator at which the sub-network counts as stable."""
        return self.epi_threshold if self.indicator_kind == "epi" else self.stability_threshold

    @property
    def laasp_first_epoch(self) -> int:
        """laasp trains dense up to the end of this epoch (default: the epoch after a third of the run)."""
        return self.prune_epoch if self.prune_epoch is not None else epoch_number(self.epochs // 3)

    @property
    def laasp_last_epoch(self) -> int:
        """laasp's last chunk comes at the latest at the end of this epoch (default: the last but one)."""
        if self.max_prune_epoch is not None:
            return self.max_prune_epoch
        return max(self.laasp_first_epoch, self.epochs - 1)

    @property
    def last_prune_epoch(self) -> int:
        """The stability schedules prune at the end of this epoch at the latest (the cap)."""
        if self.max_prune_epoch is not None:
            return self.max_prune_epoch
        return epoch_number(max(0, min(self.epochs - 1, int(0.4 * self.epochs))))

    @property
    def three_stage_epoch(self) -> int:
        """three-stage prunes at the end of this epoch (default: the epoch after a third of the run)."""
        return self.prune_epoch if self.prune_epoch is not None else epoch_number(self.epochs // 3)

    def selection(self, reduction: float) -> SelectionConfig:
        return SelectionConfig(reduction, self.round_to, self.max_prune_fraction, self.min_width, speedup=self.speedup)


# The schedules that search once on the dense model: a speed-up target prices that one plan.
SPEEDUP_SCHEDULES = ("ocs", "oneshot", "three-stage", "epi")


@dataclass
class EpochEvent:
    epoch: int
    searched: bool = False
    stability: float | None = None
    reg_lambda: float = 0.0
    plan_macs: int | None = None
    prune_due: bool = False
    pruned: bool = False
    search_time_s: float = 0.0
    # The selected channels' norm relative to theirs at the regularisation start (None before it).
    selected_norm: float | None = None
    prune_reason: str | None = None  # why this epoch prunes: ready, or the cap and what was missing


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
        self.schedule = _make_schedule(config)
        self.state = _State()
        self._shrinker: Shrinker | None = None
        self._removed: np.ndarray | None = None  # the classes the shrink aims at (target controller)
        self._history: list[dict] = []  # one record per epoch_end (see ``history``)
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
        if self.schedule.prune_at_start(epoch, self):
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
        self.schedule.epoch_end(epoch, self, event)
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
        self.state.reached = 1.0 - self.graph.dense_macs / self.dense_macs
        self._say_if_past_target()
        return self.model if ddp is None else _rewrap_ddp(ddp, self.model)

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
        return 1.0 - self.macs / self.dense_macs

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
        relative = 1.0 - (1.0 - self.config.flops_reduction) * self.dense_macs / self.graph.dense_macs
        select_plan(self.graph, self.cost, np.zeros(self.graph.labels.size), self.config.selection(relative), self.latency)

    def _analyse(self) -> tuple[ChannelGraph, CostModel]:
        graph = analyse(self.model, self.example_input, ignore=self.config.ignore)
        return graph, CostModel(graph, self.model)

    def _search(self, event: EpochEvent, reduction: float) -> PruningPlan:
        """Find the plan meeting ``reduction`` (of the *original* MACs) on the current model."""
        started = time.perf_counter()
        relative = 1.0 - (1.0 - reduction) * self.dense_macs / self.graph.dense_macs
        scores = score_channels(
            self.config.criterion,
            self.graph,
            self.model,
            cost=self.cost,
            cost_weighting=self.config.cost_weighting,
            seed=self.config.seed + event.epoch,
        )
        plan = select_plan(self.graph, self.cost, scores, self.config.selection(relative), self.latency)
        plan = _broadcast(plan)
        self.state.candidate = plan.to_dict()
        event.searched = True
        event.plan_macs = self.cost.macs(kept_class_mask(self.graph, plan))
        event.search_time_s = time.perf_counter() - started
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


def _latency_model(config: PruneConfig, graph: ChannelGraph, table: LatencyTable | None) -> LatencyModel | None:
    if config.speedup is None:
        return None
    if table is None:
        raise CompressorError("PruneConfig(speedup=...) needs the deploy target's latency table: pass latency=... "
                              "(compressor.bench.latency.latency_table measures one)")
    return LatencyModel(graph, table)


def _broadcast(plan: PruningPlan) -> PruningPlan:
    """Every DDP rank applies rank 0's plan, so all ranks keep identical models."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return plan
    payload = [plan.to_dict() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(payload, src=0)
    return PruningPlan.from_dict(payload[0])


def release_ddp(ddp: nn.Module) -> None:
    """Drop a DDP wrapper's reducer: it holds every parameter's autograd accumulator,
    which caches the old shape, so it must be gone before slicing (the wrapper is
    unusable afterwards; ``_rewrap_ddp`` makes its successor).  Public: the Lightning
    callback releases its strategy's wrapper the same way before a prune."""
    import gc

    for handle in getattr(ddp, "_accum_grad_hooks", []) or []:
        handle.remove()
    for name in ("reducer", "logger"):
        if name in ddp.__dict__:
            delattr(ddp, name)
    gc.collect()


def _rewrap_ddp(old: nn.Module, model: nn.Module) -> nn.Module:
    """A fresh ``DistributedDataParallel`` around the pruned model with ``old``'s settings."""
    import inspect

    ddp_type = type(old)
    accepted = inspect.signature(ddp_type.__init__).parameters
    settings = {
        name: getattr(old, name)
        for name in ("device_ids", "output_device", "dim", "process_group", "find_unused_parameters",
                     "gradient_as_bucket_view")
        if name in accepted and hasattr(old, name)
    }
    sync = "forward_sync_buffers" if "forward_sync_buffers" in accepted else "broadcast_buffers"  # torch >= 2.12
    if sync in accepted and hasattr(old, sync):
        settings[sync] = getattr(old, sync)
    wrapper = ddp_type(model, **settings)
    if getattr(old, "static_graph", False) and hasattr(wrapper, "_set_static_graph"):
        wrapper._set_static_graph()
    return wrapper


# -- schedules ----------------------------------------------------------------------------------
class _Schedule:
    def __init__(self, config: PruneConfig):
        self.config = config

    def prune_at_start(self, epoch: int, pruner: OneCyclePruner) -> bool:
        return False

    def epoch_end(self, epoch: int, pruner: OneCyclePruner, event: EpochEvent) -> None:
        return None

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        return None


class DenseSchedule(_Schedule):
    """No pruning: the baseline at the same epoch budget."""


class OneShotSchedule(_Schedule):
    """Prune the randomly initialised network before the first step."""

    def prune_at_start(self, epoch, pruner):
        return epoch == 0 and not pruner.pruned


class ThreeStageSchedule(_Schedule):
    """Train dense, prune once, fine-tune: the classic pipeline in one budget."""

    def epoch_end(self, epoch, pruner, event):
        if epoch == epoch_index(self.config.three_stage_epoch) and not pruner.pruned:
            pruner._search(event, self.config.flops_reduction)
            event.prune_due = True


class StabilitySchedule(_Schedule):
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
        plan = pruner._search(event, self.config.flops_reduction)
        pruner._track(event, plan)
        if self.regularise:
            pruner._regularise(epoch, plan, event)
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
        if not pruner.indicator.stable():
            value = "unmeasured" if event.stability is None else f"{event.stability:.3f}"
            missing.append(f"stability ({value} < {c.indicator_threshold:g})")
        if self._waits_for_shrink() and (event.selected_norm is None or event.selected_norm > c.reg_target):
            value = "not started" if event.selected_norm is None else f"at {event.selected_norm:.3g} of their norm"
            missing.append(f"the shrink (selected channels {value} > {c.reg_target:g})")
        return missing


class GradualSchedule(_Schedule):
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
        if pruner.state.reached >= target or (not final and target - pruner.state.reached < 0.005):
            return
        pruner._search(event, target)
        event.prune_due = True


class LaaspSchedule(_Schedule):
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
        started = time.perf_counter()
        c = self.config
        final = c.recover_epochs == 0 or epoch + c.recover_epochs > epoch_index(c.laasp_last_epoch)
        goal = c.flops_reduction if final else min(c.flops_reduction, pruner.state.reached + max(c.recover_macs, 1e-9))
        plan, steps = laasp.prune_chunk(
            pruner.model, pruner.graph, pruner.cost, pruner.dense_macs, self._limits(pruner.graph),
            pruner.selection_data, self._settings(), goal, pruner.loss_fn,
        )
        chunk = len(pruner.state.prune_epochs)
        self.steps += [{"epoch": epoch_number(epoch), "chunk": chunk, "step": len(self.steps) + i, **s} for i, s in enumerate(steps)]
        self.next_epoch = epoch + max(1, c.recover_epochs)
        event.search_time_s = time.perf_counter() - started
        if not steps:
            self.done = True  # every group is at its cap
            return
        plan = _broadcast(plan)
        pruner.state.candidate = plan.to_dict()
        event.searched = True
        event.plan_macs = pruner.cost.macs(kept_class_mask(pruner.graph, plan))
        event.prune_due = True
        self.done = final or 1.0 - event.plan_macs / pruner.dense_macs >= c.flops_reduction - 1e-12

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
        return laasp.StepSettings(
            tuple(c.criteria_pool), c.flops_reduction, c.laasp_step, c.laasp_group_fraction, c.laasp_shortlist
        )

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


# Each --schedule name (compressor.choices.SCHEDULES, which the CLI lists without torch)
# and what builds it; importing refuses a name without a factory, or a factory without a name.
SCHEDULE_FACTORIES: dict[str, Callable[[PruneConfig], _Schedule]] = registry(SCHEDULES, {
    "ocs": partial(StabilitySchedule, regularise=True),
    "dense": DenseSchedule,
    "oneshot": OneShotSchedule,
    "three-stage": ThreeStageSchedule,
    "epi": partial(StabilitySchedule, regularise=False),
    "gradual": GradualSchedule,
    "laasp": LaaspSchedule,
}, "--schedule")


def _make_schedule(config: PruneConfig) -> _Schedule:
    return SCHEDULE_FACTORIES[config.schedule](config)

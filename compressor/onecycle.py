"""The pruning controller: structure search, stability, regularisation, the prune.

A training loop (ours or a user's) drives it through three hooks::

    pruner = OneCyclePruner(model, example_input, PruneConfig(...), optimizer)
    for epoch in range(epochs):
        pruner.begin_epoch(epoch)            # one-shot schedules prune here
        for batch in data:
            ...; optimizer.step()
            pruner.after_step(lr)            # shrink the channels selected for removal
        event = pruner.end_epoch(epoch)      # search, stability; event.prune_due says when
        if event.prune_due:
            pruner.prune()                   # slices model + optimizer state in place

The schedules (``ocs``, ``dense``, ``oneshot``, ``three-stage``, ``epi``, ``gradual``)
are small classes that only decide *when* to search and prune; the controller does
the work with the analyse -> plan -> apply engine.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from compressor.analysis.graph import ChannelGraph, analyse
from compressor.apply import apply_plan
from compressor.cost import CostModel
from compressor.errors import CompressorError
from compressor.flops import count_params
from compressor.importance import CRITERIA, score_channels
from compressor.plan import PruningPlan, kept_class_mask
from compressor.regularization import Shrinker
from compressor.selection import SelectionConfig, select_plan
from compressor.stability import EpiIndicator, JaccardIndicator

SCHEDULES = ("ocs", "dense", "oneshot", "three-stage", "epi", "gradual")


@dataclass(frozen=True)
class PruneConfig:
    flops_reduction: float = 0.5
    epochs: int = 10
    schedule: str = "ocs"
    criterion: str = "ocs"
    cost_weighting: bool = False
    indicator: str = "jaccard"  # jaccard | epi (for the ocs schedule)
    monitor_start: int = 1
    reg_start: int | None = None  # None: when stability plateaus, at the latest halfway to the prune cap
    reg_lambda: float = 1e-4
    reg_delta: float = 1e-4
    reg_interval: int = 1
    stability_threshold: float = 0.999
    epi_threshold: float = 0.983
    epi_window: int = 5
    max_prune_epoch: int | None = None  # None: 40 % of the epochs (the authors' caps: 110-130 of 300, 50 of 130)
    prune_epoch: int | None = None  # three-stage: None means a third of the epochs
    max_prune_fraction: float = 0.75
    round_to: int | None = None
    min_width: int = 1
    reset_optimizer: bool = False
    ignore: tuple[str, ...] = ()
    gradual_alpha: float = 14.0
    gradual_beta: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise CompressorError(f"unknown schedule '{self.schedule}'; choose from {', '.join(SCHEDULES)}")
        if self.criterion not in CRITERIA:
            raise CompressorError(f"unknown criterion '{self.criterion}'; choose from {', '.join(CRITERIA)}")
        if self.indicator not in ("jaccard", "epi"):
            raise CompressorError(f"unknown indicator '{self.indicator}'; choose jaccard or epi")
        if self.epochs < 1:
            raise CompressorError("--epochs must be at least 1")
        for name in ("max_prune_epoch", "prune_epoch", "reg_start"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.epochs:
                flag = "--" + name.replace("_", "-")
                raise CompressorError(f"{flag} {value} is outside the run's epochs 0..{self.epochs - 1}")
        SelectionConfig(self.flops_reduction, self.round_to, self.max_prune_fraction, self.min_width)

    @property
    def last_prune_epoch(self) -> int:
        if self.max_prune_epoch is not None:
            return self.max_prune_epoch
        return max(0, min(self.epochs - 1, int(0.4 * self.epochs)))

    def selection(self, reduction: float) -> SelectionConfig:
        return SelectionConfig(reduction, self.round_to, self.max_prune_fraction, self.min_width)


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


@dataclass
class _State:
    reg_on_epoch: int | None = None
    reg_lambda: float = 0.0
    applied: list[dict] = field(default_factory=list)  # plans applied so far, in order
    prune_epochs: list[int] = field(default_factory=list)
    candidate: dict | None = None
    reached: float = 0.0  # MACs reduction reached so far (gradual)


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
    ):
        """``lr_scheduler`` is the user's scheduler, kept valid across the prune.
        ``selection_data`` (a list of (inputs, targets) batches) and ``loss_fn``
        (default cross-entropy) are what loss-aware schedules evaluate candidates on."""
        self.config = config
        self.model = model
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.selection_data = selection_data
        self.loss_fn = loss_fn
        self.example_input = example_input
        self.graph, self.cost = self._analyse()
        self.dense_macs = self.graph.dense_macs
        self.dense_params = self.graph.dense_params
        indicator_kind = "epi" if config.schedule == "epi" else config.indicator
        self.indicator = (
            EpiIndicator(config.epi_threshold, config.epi_window)
            if indicator_kind == "epi"
            else JaccardIndicator(config.stability_threshold)
        )
        self.schedule = _make_schedule(config)
        self.state = _State()
        self._shrinker: Shrinker | None = None
        if config.schedule != "dense":
            self._check_reachable()

    # -- hooks ------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> EpochEvent:
        event = EpochEvent(epoch)
        if self.schedule.prune_at_start(epoch, self):
            self._search(event, self.config.flops_reduction)
            event.prune_due = True
        return event

    def after_step(self, lr: float) -> None:
        if self._shrinker is not None and self.state.reg_lambda > 0:
            self._shrinker.shrink(1.0 - self.state.reg_lambda * lr)

    def end_epoch(self, epoch: int) -> EpochEvent:
        event = EpochEvent(epoch, reg_lambda=self.state.reg_lambda)
        self.schedule.end_epoch(epoch, self, event)
        event.reg_lambda = self.state.reg_lambda
        return event

    def prune(self, epoch: int) -> nn.Module:
        """Apply the current candidate plan; returns the (same, now smaller) model."""
        if self.state.candidate is None:
            raise RuntimeError("prune() needs a searched plan")
        plan = PruningPlan.from_dict(self.state.candidate)
        self.model = apply_plan(self.model, self.graph, plan, None if self.config.reset_optimizer else self.optimizer)
        if self.config.reset_optimizer and self.optimizer is not None:
            self.optimizer.state.clear()  # what the method's authors' code does
        self.state.applied.append(plan.to_dict())
        self.state.prune_epochs.append(epoch)
        self.state.candidate = None
        self._shrinker = None
        self.state.reg_lambda = 0.0
        self.graph, self.cost = self._analyse()
        self.state.reached = 1.0 - self.graph.dense_macs / self.dense_macs
        return self.model

    # -- what the controller reports --------------------------------------------------------
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
        return {"state": asdict(self.state), "indicator": self.indicator.state(), "schedule": self.schedule.state()}

    def load_state_dict(self, saved: dict) -> None:
        """Restore after the model was rebuilt with ``applied_plans`` (see checkpoint)."""
        self.state = _State(**saved["state"])
        self.indicator.load_state(saved["indicator"])
        self.schedule.load_state(saved["schedule"])
        self.graph, self.cost = self._analyse()
        if self.state.candidate is not None and self.state.reg_lambda > 0:
            self._shrinker = Shrinker(self.model, self.graph, PruningPlan.from_dict(self.state.candidate))

    # -- the work ---------------------------------------------------------------------------
    def _check_reachable(self) -> None:
        """Fail before training, not after the first epoch: reachability depends only on
        the caps and rounding, so any scores will do."""
        select_plan(self.graph, self.cost, np.zeros(self.graph.labels.size), self.config.selection(self.config.flops_reduction))

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
        plan = select_plan(self.graph, self.cost, scores, self.config.selection(relative))
        plan = _broadcast(plan)
        self.state.candidate = plan.to_dict()
        event.searched = True
        event.plan_macs = self.cost.macs(kept_class_mask(self.graph, plan))
        event.search_time_s = time.perf_counter() - started
        return plan

    def _track(self, event: EpochEvent, plan: PruningPlan) -> None:
        event.stability = self.indicator.update(plan)

    def _regularise(self, epoch: int, plan: PruningPlan) -> None:
        config = self.config
        if self.state.reg_on_epoch is None:
            start = config.reg_start
            latest = (config.monitor_start + config.last_prune_epoch) // 2
            automatic = start is None and (self.indicator.plateaued() or epoch >= latest)
            if (start is not None and epoch >= start) or automatic:
                self.state.reg_on_epoch = epoch
                self.state.reg_lambda = config.reg_lambda
        elif (epoch - self.state.reg_on_epoch) % config.reg_interval == 0:
            self.state.reg_lambda += config.reg_delta
        if self.state.reg_on_epoch is not None:
            self._shrinker = Shrinker(self.model, self.graph, plan)


def _broadcast(plan: PruningPlan) -> PruningPlan:
    """Every DDP rank applies rank 0's plan, so all ranks keep identical models."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return plan
    payload = [plan.to_dict() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(payload, src=0)
    return PruningPlan.from_dict(payload[0])


# -- schedules ----------------------------------------------------------------------------------
class _Schedule:
    def __init__(self, config: PruneConfig):
        self.config = config

    def prune_at_start(self, epoch: int, pruner: OneCyclePruner) -> bool:
        return False

    def end_epoch(self, epoch: int, pruner: OneCyclePruner, event: EpochEvent) -> None:
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

    def end_epoch(self, epoch, pruner, event):
        prune_epoch = self.config.prune_epoch if self.config.prune_epoch is not None else self.config.epochs // 3
        if epoch == prune_epoch and not pruner.pruned:
            pruner._search(event, self.config.flops_reduction)
            event.prune_due = True


class StabilitySchedule(_Schedule):
    """One-cycle (``ocs``) and EPI: search every epoch from ``monitor_start``; prune
    when the indicator says the sub-network is stable, or at the cap.  ``ocs`` also
    shrinks the selected channels once regularisation has started."""

    def __init__(self, config: PruneConfig, regularise: bool):
        super().__init__(config)
        self.regularise = regularise

    def end_epoch(self, epoch, pruner, event):
        if pruner.pruned or epoch < self.config.monitor_start:
            return
        plan = pruner._search(event, self.config.flops_reduction)
        pruner._track(event, plan)
        if self.regularise:
            pruner._regularise(epoch, plan)
        event.prune_due = pruner.indicator.stable() or epoch >= self.config.last_prune_epoch


class GradualSchedule(_Schedule):
    """One-Cycle Pruning's S-curve applied to the MACs reduction: prune a little at the
    end of each epoch until the target is reached at ~70 % of training."""

    SATURATION = 0.7

    def target(self, epoch: int) -> float:
        c = self.config
        progress = min(1.0, (epoch + 1) / max(1.0, self.SATURATION * c.epochs))
        curve = (1 + math.exp(-c.gradual_alpha + c.gradual_beta)) / (1 + math.exp(-c.gradual_alpha * progress + c.gradual_beta))
        return c.flops_reduction * min(1.0, curve)

    def end_epoch(self, epoch, pruner, event):
        target = self.target(epoch)
        final = target >= self.config.flops_reduction
        # Small steps are skipped (each prune re-analyses the model), except the last.
        if pruner.state.reached >= target or (not final and target - pruner.state.reached < 0.005):
            return
        pruner._search(event, target)
        event.prune_due = True


def _make_schedule(config: PruneConfig) -> _Schedule:
    return {
        "ocs": lambda: StabilitySchedule(config, regularise=True),
        "epi": lambda: StabilitySchedule(config, regularise=False),
        "dense": lambda: DenseSchedule(config),
        "oneshot": lambda: OneShotSchedule(config),
        "three-stage": lambda: ThreeStageSchedule(config),
        "gradual": lambda: GradualSchedule(config),
    }[config.schedule]()

"""What a pruning run is asked to do: ``PruneConfig``, checked when it is made.

Epoch fields are epoch numbers as users type and read them (from 1, ``compressor.epochs``);
the properties at the end translate the defaults each schedule prunes by.
"""
from __future__ import annotations

from dataclasses import dataclass

from compressor.arguments import check_fields
from compressor.choices import POOL_CRITERIA, REG_SCHEDULES  # named there so that the CLI lists them without torch
from compressor.engine.importance import check_criterion
from compressor.engine.selection import SelectionConfig, check_speedup
from compressor.epochs import epoch_number
from compressor.errors import CompressorError
from compressor.schedules import laasp
from compressor.schedules.registry import schedule_names, speedup_schedules


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
        if self.schedule not in schedule_names():
            raise CompressorError(f"unknown schedule '{self.schedule}'; choose from {', '.join(schedule_names())}")
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
        if self.speedup is not None and self.schedule not in speedup_schedules():
            raise CompressorError(f"--speedup works with the schedules that prune once ({', '.join(speedup_schedules())}); "
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
    def planned_prune_epoch(self) -> int:
        """three-stage prunes, and laasp starts to prune, at the end of this epoch: ``prune_epoch``,
        by default the epoch after a third of the run."""
        return self.prune_epoch if self.prune_epoch is not None else epoch_number(self.epochs // 3)

    # The names each schedule's code reads it by: laasp trains dense up to the end of this epoch.
    laasp_first_epoch = three_stage_epoch = planned_prune_epoch

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

    def selection(self, reduction: float) -> SelectionConfig:
        return SelectionConfig(reduction, self.round_to, self.max_prune_fraction, self.min_width, speedup=self.speedup)

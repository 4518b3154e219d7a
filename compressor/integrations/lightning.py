"""One-cycle pruning inside Lightning's ``Trainer.fit`` (Lightning is an optional extra).

    from compressor import PruneConfig
    from compressor.integrations.lightning import PruningCallback

    trainer = lightning.Trainer(max_epochs=30, callbacks=[PruningCallback(PruneConfig(flops_reduction=0.5, epochs=30))])
    trainer.fit(module, datamodule)

The callback drives the same ``OneCyclePruner`` that ``compress prune`` and a plain
PyTorch loop use: it builds it when training starts (on the LightningModule, with the
trainer's first optimizer and LR scheduler), calls ``after_step`` after every
optimizer step, searches at each epoch end and prunes when the sub-network is stable.
The prune slices the LightningModule in place: the optimizer and LR scheduler objects
stay the ones Lightning holds (their per-parameter state is sliced), and under the DDP
strategy the old ``DistributedDataParallel`` wrapper is released and the strategy wraps
the smaller module again.

The example input for the analysis is, in this order: ``example_input=``, the module's
``example_input_array``, or the first sample of the first training batch.
Limitation: a Lightning checkpoint written after the prune holds the smaller weights;
resuming ``Trainer.fit`` from it needs the pruned architecture rebuilt first
(``compressor.runfiles.modelfile.rebuild`` with ``pruner.applied_plans``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from compressor.epochs import epoch_number
from compressor.errors import CompressorError
from compressor.schedules.base import EpochEvent
from compressor.schedules.config import PruneConfig
from compressor.schedules.distributed import release_ddp
from compressor.schedules.pruner import OneCyclePruner

log = logging.getLogger(__name__)

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - exercised only without the extra
    try:
        import pytorch_lightning as pl
    except ImportError as error:
        raise CompressorError(
            "the Lightning callback needs Lightning: pip install 'onecycle-compress[lightning]' (or pip install lightning)"
        ) from error


class PruningCallback(pl.Callback):
    """Prune a LightningModule during ``Trainer.fit`` with the one-cycle controller.

    ``config`` defaults to ``PruneConfig(flops_reduction=..., epochs=trainer.max_epochs)``;
    keyword ``overrides`` replace fields of it (``flops_reduction=0.5``, ``schedule="ocs"``
    ...).  After the fit, ``callback.pruner`` holds the plan, the stability history and the
    MACs, and ``callback.events`` every epoch's ``EpochEvent``.

    The prune is reported on global rank 0 as one line through ``logging`` (logger
    ``compressor.integrations.lightning``): at INFO, or at DEBUG with ``verbose=False``.
    It shows only where logging is configured, e.g. ``logging.basicConfig(level=logging.INFO)``.
    """

    def __init__(self, config: PruneConfig | None = None, example_input: Any = None, *, verbose: bool = True, **overrides):
        super().__init__()
        self.config = config
        self.overrides = overrides
        self.example_input = example_input
        self.verbose = verbose
        self.pruner: OneCyclePruner | None = None
        self.events: list[EpochEvent] = []
        self._last_step = -1

    # -- building the pruner -----------------------------------------------------------------
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        example = self._given_example(pl_module)
        if example is not None:
            self._build(trainer, pl_module, example)

    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.pruner is None:
            self._build(trainer, pl_module, self._first_batch_example(trainer, pl_module))
        event = self.pruner.epoch_start(trainer.current_epoch, prune=False)
        if event.prune_due:
            self._prune(trainer, pl_module, trainer.current_epoch, event.prune_reason)

    def _given_example(self, pl_module) -> Any:
        if self.example_input is not None:
            return _to_device(self.example_input, pl_module.device)
        array = getattr(pl_module, "example_input_array", None)
        return None if array is None else _to_device(array, pl_module.device)

    def _first_batch_example(self, trainer, pl_module) -> Any:
        loader = trainer.train_dataloader
        if loader is None:
            raise CompressorError(
                "PruningCallback needs an example input: pass example_input=..., set the module's "
                "example_input_array, or give Trainer.fit a training dataloader"
            )
        batch = next(iter(loader))
        return _to_device(_first_sample(batch), pl_module.device)

    def _build(self, trainer, pl_module, example) -> None:
        config = self.config or PruneConfig(epochs=max(1, int(trainer.max_epochs or 1)))
        if self.overrides:
            config = replace(config, **self.overrides)
        if not trainer.optimizers:
            raise CompressorError("PruningCallback needs the LightningModule to configure an optimizer")
        schedulers = getattr(trainer, "lr_scheduler_configs", None) or []
        self.pruner = OneCyclePruner(
            pl_module,
            example,
            config,
            trainer.optimizers[0],
            lr_scheduler=schedulers[0].scheduler if schedulers else None,
        )
        self._last_step = trainer.global_step

    # -- the hooks -------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # After an optimizer step only (gradient accumulation steps every few batches).
        if self.pruner is not None and trainer.global_step != self._last_step:
            self._last_step = trainer.global_step
            self.pruner.after_step()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.pruner is None:
            return
        epoch = trainer.current_epoch
        event = self.pruner.epoch_end(epoch, prune=False)
        if event.prune_due:
            self._prune(trainer, pl_module, epoch, event.prune_reason)
            event.pruned = True
        self.events.append(event)
        metrics = {"prune/macs": float(self.pruner.macs), "prune/reg_lambda": float(event.reg_lambda)}
        if event.stability is not None:
            metrics["prune/stability"] = float(event.stability)
        if event.selected_norm is not None:
            metrics["prune/selected_norm"] = float(event.selected_norm)
        pl_module.log_dict(metrics, on_epoch=True, on_step=False, sync_dist=False, rank_zero_only=True)

    def _prune(self, trainer, pl_module, epoch: int, reason: str | None) -> None:
        """Slice the module in place; re-wrap DDP through the strategy."""
        started = time.perf_counter()
        strategy = trainer.strategy
        wrapped = isinstance(strategy.model, nn.parallel.DistributedDataParallel)
        if wrapped:
            release_ddp(strategy.model)
            strategy.model = pl_module
        self.pruner.prune(epoch)
        if wrapped:
            strategy.configure_ddp()  # the strategy's own wrapping (device ids, kwargs, comm hooks)
        if trainer.is_global_zero:
            log.log(logging.INFO if self.verbose else logging.DEBUG,
                    "pruned after epoch %d: %.1fM -> %.1fM MACs (%.1f s); why then: %s", epoch_number(epoch),
                    self.pruner.dense_macs / 1e6, self.pruner.macs / 1e6, time.perf_counter() - started, reason)

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {} if self.pruner is None else {"pruner": self.pruner.state_dict()}


def _first_sample(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch[:1]
    if isinstance(batch, (list, tuple)) and batch:
        return _first_sample(batch[0])
    if isinstance(batch, dict) and batch:
        return _first_sample(next(iter(batch.values())))
    raise CompressorError(
        f"cannot take an example input from a batch of type {type(batch).__name__}; pass example_input=..."
    )


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value

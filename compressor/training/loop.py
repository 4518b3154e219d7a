"""The ``compress prune`` training loop.

One training run of ``epochs`` epochs with the pruning controller's hooks in it:
a step-wise LR schedule computed from the epoch fraction (so resuming and pruning
never disturb it), optional AMP and channels_last on CUDA, optional
``torch.compile``, a progress bar, one metrics line and one atomic checkpoint per
epoch (and one just before the prune), DDP through torchrun.

Every prune measures its shock (validation right before and right after the slice, no
training between; optionally after re-estimating BatchNorm statistics, ``recalibrate_bn``)
into the epoch's metrics line.  Rank 0 logs one INFO line per epoch and one per prune, with
the shock (``compress`` prints them on stdout), and a DEBUG line per checkpoint; other
ranks stay silent.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from compressor.training import batchnorm
from compressor.training.checkpoint import BEFORE_PRUNE, LATEST, save_checkpoint
from compressor.choices import AMP_MODES, LR_SCHEDULES, MAX_SEED, OPTIMIZERS  # named there for a torch-free CLI
from compressor.runfiles.modelfile import portable_state
from compressor.data.datasets import DataBundle
from compressor.devices import AUTO, auto_device
from compressor.errors import CompressorError
from compressor.schedules.base import EpochEvent
from compressor.schedules.pruner import OneCyclePruner
from compressor.artifacts import PruneShock
from compressor.epochs import epoch_number
from compressor.training.report import EpochRecord, MetricsLog, format_epoch_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_schedule: str = "step"
    milestones: tuple[float, ...] = (0.3, 0.6, 0.8, 0.9)  # fractions of the run (step schedule)
    gamma: float = 0.2
    label_smoothing: float = 0.0
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    progress: bool = True
    recalibrate_bn: int = 0  # training batches to re-estimate BatchNorm statistics on right after a prune (0: off)
    # Training batches the BatchNorm statistics are re-estimated on before each validation (and so
    # before each checkpoint and prune); 0 keeps the running averages (see Trainer._refresh_bn).
    refresh_bn: int = 4

    def __post_init__(self) -> None:
        for value, valid, flag in (
            (self.optimizer, OPTIMIZERS, "--optimizer"),
            (self.lr_schedule, LR_SCHEDULES, "--lr-schedule"),
            (self.amp, AMP_MODES, "--amp"),
        ):
            if value not in valid:
                raise CompressorError(f"{flag} must be one of {', '.join(valid)}, got '{value}'")
        if self.lr <= 0:
            raise CompressorError("--lr must be positive")
        for name in ("recalibrate_bn", "refresh_bn"):
            if getattr(self, name) < 0:
                raise CompressorError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.seed <= MAX_SEED:  # torch and numpy would overflow deep inside, as a traceback
            raise CompressorError(f"--seed must be between 0 and {MAX_SEED}, got {self.seed}")


def lr_at(config: TrainConfig, progress: float) -> float:
    """Learning rate after ``progress`` epochs (fractional): the schedule is a pure
    function of time, so a resumed or pruned run continues on the same curve."""
    t = min(max(progress / config.epochs, 0.0), 1.0)
    if config.lr_schedule == "step":
        return config.lr * config.gamma ** sum(t >= m for m in config.milestones)
    if config.lr_schedule == "cosine":
        return 0.5 * config.lr * (1 + math.cos(math.pi * t))
    warmup = 0.3  # one-cycle: linear warm-up from lr/25, cosine down to lr/1e4
    if t < warmup:
        return config.lr / 25 + (config.lr - config.lr / 25) * t / warmup
    return config.lr / 1e4 + (config.lr - config.lr / 1e4) * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (1 - warmup)))


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov and config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


DEVICE_TYPES = ("cpu", "cuda", "mps")  # where a run can train; "meta" or "banana" cannot


def resolve_device(name: str) -> torch.device:
    if name == AUTO:
        return torch.device(auto_device(name))
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise CompressorError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CompressorError("--device cuda was asked for, but CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise CompressorError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


class LossDiverged(CompressorError):
    pass


@dataclass
class RunContext:
    """What the loop needs besides the model: where to write, who writes."""

    out: Path
    rank: int = 0
    world_size: int = 1

    @property
    def writer(self) -> bool:
        return self.rank == 0


def scaled_step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> bool:
    """Step through the gradient scaler; False when it skipped the step (inf/nan gradients
    under fp16), so the shrink and the controller's step count follow only real steps.
    A skipped step is the one that lowers the scale; reading it costs a host sync, so
    only when the scaler is on (fp16 training: two syncs per step, everything else one)."""
    if not scaler.is_enabled():
        optimizer.step()
        return True
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    return scaler.get_scale() >= scale


class Trainer:
    def __init__(
        self,
        pruner: OneCyclePruner,
        optimizer: torch.optim.Optimizer,
        data: DataBundle,
        config: TrainConfig,
        context: RunContext,
        checkpoint_extra: Callable[[], dict],
    ):
        self.pruner = pruner
        self.optimizer = optimizer
        self.data = data
        self.config = config
        self.context = context
        self.device = resolve_device(config.device)
        self.checkpoint_extra = checkpoint_extra
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp == "fp16" and self.device.type == "cuda")
        self.metrics = MetricsLog(context.out / "metrics.jsonl") if context.writer else None
        self.best_top1 = 0.0
        self.wall_time_s = 0.0
        self._network = self._wrap(pruner.model)

    # -- model wrapping -----------------------------------------------------------------------
    def _wrap(self, model: nn.Module) -> nn.Module:
        """DDP and torch.compile wrap the controller's model; both are redone after a prune."""
        if self.config.channels_last and self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        network = model
        if self.context.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            network = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if self.config.compile:
            network = torch.compile(network)
        return network

    def _autocast(self):
        if self.config.amp == "none" or self.device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.amp == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    # -- the loop -------------------------------------------------------------------------------
    def run(self, start_epoch: int = 0) -> None:
        for epoch in range(start_epoch, self.config.epochs):
            started = time.perf_counter()
            shock = None  # the prune's shock, when this epoch prunes
            begin = self.pruner.epoch_start(epoch, prune=False)
            if begin.prune_due:
                shock = self._prune(epoch, begin, before_training=True)
            train_started = time.perf_counter()
            train_loss, train_top1, images = self._train_epoch(epoch)
            train_s = time.perf_counter() - train_started
            self._refresh_bn(epoch)
            val_loss, val_top1 = self.evaluate()
            if not math.isfinite(val_loss):  # the README's promise covers validation too, not just training
                raise LossDiverged(self._diverged_message(val_loss, epoch, None))
            event = self.pruner.epoch_end(epoch, prune=False)
            event.search_time_s += begin.search_time_s
            if event.prune_due:
                self._checkpoint(epoch, BEFORE_PRUNE)
                shock = self._prune(epoch, event)
                event.pruned = True
            elapsed = time.perf_counter() - started
            self.wall_time_s += elapsed
            self.best_top1 = max(self.best_top1, val_top1)
            record = EpochRecord(
                epoch=epoch_number(epoch),
                train_loss=train_loss,
                train_top1=train_top1,
                val_loss=val_loss,
                val_top1=val_top1,
                lr=lr_at(self.config, epoch + 1),
                stability=event.stability,
                reg_lambda=event.reg_lambda,
                selected_norm=event.selected_norm,
                macs=self.pruner.macs,
                params=self.pruner.params,
                pruned=event.pruned or begin.prune_due,
                epoch_time_s=elapsed,
                search_time_s=event.search_time_s,
                images_per_s=images / max(train_s, 1e-9),
                prune_shock=shock,
            )
            if self.metrics is not None:
                self.metrics.append(record)
                self._say(format_epoch_line(record, self.config.epochs))
            self._checkpoint(epoch, LATEST)

    def _prune(self, epoch: int, event: EpochEvent, before_training: bool = False) -> PruneShock:
        """Slice the model, measuring the shock: validation right before and right after the
        slice with no training between (and, with ``recalibrate_bn``, after re-estimating the
        BatchNorm statistics).  The measurement runs on a forked RNG, so the run's random
        stream (and so its training) is the same as without it."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            loss_before, top1_before = self.evaluate()
        macs_before = self.pruner.macs
        # The old DDP reducer holds each parameter's autograd accumulator, which caches
        # the old shape; it must be gone before slicing so fresh ones are made.
        self._network = None
        gc.collect()
        model = self.pruner.prune(epoch)
        self._network = self._wrap(model)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            loss_after, top1_after = self.evaluate()
            shock: PruneShock = {
                "epoch": epoch_number(epoch),
                "at": "start" if before_training else "end",
                "top1_before": top1_before,
                "top1_after": top1_after,
                "loss_before": loss_before,
                "loss_after": loss_after,
                "macs_before": macs_before,
                "macs_after": self.pruner.macs,
                "recalibration_batches": 0,
                "top1_after_recalibration": None,
                "loss_after_recalibration": None,
                "reason": event.prune_reason or "",
                "selected_norm": event.selected_norm,
            }
            if self.config.recalibrate_bn > 0:
                shock["recalibration_batches"] = self._recalibrate_bn(epoch)
                if shock["recalibration_batches"]:
                    shock["loss_after_recalibration"], shock["top1_after_recalibration"] = self.evaluate()
        when = "before training" if before_training else f"after epoch {epoch_number(epoch)}"
        line = (f"pruned {when}: {self.pruner.dense_macs / 1e6:.1f}M -> {self.pruner.macs / 1e6:.1f}M MACs; "
                f"shock: val top-1 {top1_before:.1f}% -> {top1_after:.1f}%, loss {loss_before:.3f} -> {loss_after:.3f}")
        if shock["top1_after_recalibration"] is not None:
            batches = shock["recalibration_batches"]
            line += (f"; after BN recalibration on {batches} batch{'es' if batches > 1 else ''} "
                     f"{shock['top1_after_recalibration']:.1f}%, loss {shock['loss_after_recalibration']:.3f}")
        self._say(line)
        if event.prune_reason:
            self._say(f"  why then: {event.prune_reason}")
        return shock

    def _refresh_bn(self, epoch: int) -> None:
        """Before the epoch's validation: make the eval-mode BatchNorm statistics true to the
        weights the epoch ended with (``compressor.training.batchnorm`` says why).  While the
        shrink ran, a digits ResNet-56 validated at 7 % (one class for every image) for three
        epochs as it trained at 58-69 %, and scored 79 % once its statistics were re-estimated
        with no weight changed.  The validation line, the best top-1, the checkpoint written
        after it and the prune's "before" all read these statistics."""
        if self.config.refresh_bn > 0:
            self._reestimate_bn(epoch, self.config.refresh_bn)

    def _recalibrate_bn(self, epoch: int) -> int:
        """``recalibrate_bn`` batches, right after a prune (the shock's third measurement)."""
        return self._reestimate_bn(epoch, self.config.recalibrate_bn)

    def _reestimate_bn(self, epoch: int, batches: int) -> int:
        """Re-estimate the BatchNorm statistics on the first ``batches`` training batches of
        ``epoch``.  Under DDP the ranks' averages are averaged, so all ranks keep the same
        buffers.  Returns the batches used (0: the model has no BatchNorm)."""
        model = self.pruner.model
        count = min(batches, self.data.batches_per_epoch(self.context.world_size))
        stream = self.data.train_batches(epoch, rank=self.context.rank, world_size=self.context.world_size)
        inputs = (self._to_device(images, labels)[0] for images, labels in itertools.islice(stream, count))
        with self._autocast():
            used = batchnorm.reestimate(model, inputs)
        if used and self.context.world_size > 1:
            for norm in batchnorm.batch_norms(model):
                for buffer in (norm.running_mean, norm.running_var):
                    dist.all_reduce(buffer)
                    buffer /= self.context.world_size
        return used

    def _train_epoch(self, epoch: int) -> tuple[float, float, int]:
        network = self._network
        network.train()
        steps = self.data.batches_per_epoch(self.context.world_size)
        total_loss, correct, seen = 0.0, 0, 0
        bar = self._progress(steps, f"epoch {epoch_number(epoch)}/{self.config.epochs}")
        batches = self.data.train_batches(epoch, rank=self.context.rank, world_size=self.context.world_size)
        for step, (images, labels) in enumerate(batches):
            lr = lr_at(self.config, epoch + step / steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            images, labels = self._to_device(images, labels)
            with self._autocast():
                logits = network(images)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
            # The step's one host sync: loss (for the NaN check and the log) and hits, copied together.
            step_loss, hits = torch.stack([loss.detach(), (logits.argmax(1) == labels).sum().float()]).tolist()
            if not math.isfinite(step_loss):
                raise LossDiverged(self._diverged_message(step_loss, epoch, step))
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if scaled_step(self.scaler, self.optimizer):
                self.pruner.after_step(lr)
            total_loss += step_loss * labels.numel()
            correct += int(hits)
            seen += labels.numel()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total_loss / seen:.3f}", top1=f"{100 * correct / seen:.1f}%", refresh=False)
        if bar is not None:
            bar.close()
        return total_loss / max(seen, 1), 100.0 * correct / max(seen, 1), seen * self.context.world_size

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        network = self._network
        network.eval()
        sums = torch.zeros(3, dtype=torch.float64)
        for images, labels in self.data.val_batches(rank=self.context.rank, world_size=self.context.world_size):
            images, labels = self._to_device(images, labels)
            with self._autocast():
                logits = network(images).float()
            sums += torch.tensor(
                [F.cross_entropy(logits, labels, reduction="sum").item(), (logits.argmax(1) == labels).sum().item(), labels.numel()],
                dtype=torch.float64,
            )
        if self.context.world_size > 1:
            reduced = sums.to(self.device)
            dist.all_reduce(reduced)
            sums = reduced.cpu()
        loss, correct, count = sums.tolist()
        return loss / max(count, 1), 100.0 * correct / max(count, 1)

    def _to_device(self, images: torch.Tensor, labels: torch.Tensor):
        images = images.to(self.device, non_blocking=True)
        if self.config.channels_last and self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(self.device, non_blocking=True)

    # -- output -----------------------------------------------------------------------------------
    def _checkpoint(self, epoch: int, name: str) -> None:
        if not self.context.writer:
            return
        payload = {
            "epoch": epoch_number(epoch),  # the last epoch it holds; a resume starts at the next
            "model": portable_state(self.pruner.model),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "pruner": self.pruner.state_dict(),
            "rng": torch.get_rng_state(),
            # Every CUDA device's generator (dropout, random augmentation on the GPU), so a GPU
            # resume draws what the uninterrupted run would; empty on a CPU run.
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "best_top1": self.best_top1,
            "wall_time_s": self.wall_time_s,
            **self.checkpoint_extra(),
        }
        save_checkpoint(self.context.out / name, payload)
        log.debug("epoch %d: wrote %s", epoch_number(epoch), self.context.out / name)

    def restore(self, payload: dict) -> None:
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scaler.load_state_dict(payload["scaler"])
        torch.set_rng_state(payload["rng"])
        cuda_states = payload.get("cuda_rng") or []  # absent in checkpoints written before it was kept
        if cuda_states and self.device.type == "cuda" and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        self.best_top1 = float(payload["best_top1"])
        self.wall_time_s = float(payload["wall_time_s"])

    def _diverged_message(self, loss: float, epoch: int, step: int | None) -> str:
        """``step`` None: the validation loss after the epoch's training."""
        latest = self.context.out / LATEST
        kept = f"the last good checkpoint {latest} is kept" if latest.exists() else "no epoch had finished, so there is no checkpoint yet"
        where = (f"epoch {epoch_number(epoch)}, step {step + 1}" if step is not None
                 else f"validation after epoch {epoch_number(epoch)}")
        return f"the loss became {loss} at {where}; stopped, {kept} (try a lower --lr)"

    def fingerprint(self) -> dict:
        """What every DDP rank must agree on at the end: the plans and the weights."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.pruner.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return {"rank": self.context.rank, "plans": self.pruner.state.applied, "weights_sha256": digest.hexdigest()}

    def _progress(self, total: int, description: str):
        if not (self.config.progress and self.context.writer):
            return None
        from compressor.progress import progress_bar

        return progress_bar(total, description)

    def _say(self, message: str) -> None:
        """A progress line for whoever watches the run: rank 0 only, at INFO."""
        if self.context.writer:
            log.info(message)


def distributed_context() -> tuple[int, int]:
    """Rank and world size under torchrun (1 process otherwise); sets up the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    return rank, world_size


def config_dict(*configs) -> dict:
    """Flatten frozen configs into one JSON-friendly dict (tuples become lists)."""
    merged = {}
    for config in configs:
        for key, value in asdict(config).items():
            merged[key] = list(value) if isinstance(value, tuple) else value
    return merged

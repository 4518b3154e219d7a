"""The Lightning callback in a real ``Trainer.fit`` on CPU: the module shrinks mid-fit,
training continues on the smaller module, and Lightning's optimizer and LR scheduler
objects stay the same (their state sliced to the kept channels)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

from compressor import PruneConfig  # noqa: E402
from compressor.integrations.lightning import PruningCallback  # noqa: E402


class TinyNet(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
        )
        self.seen_params = []

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        self.seen_params.append(sum(p.numel() for p in self.parameters()))
        return F.cross_entropy(self(images), labels)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


class Recorder(pl.Callback):
    """What Lightning holds before and after the prune."""

    def on_train_epoch_start(self, trainer, pl_module):
        optimizer = trainer.optimizers[0]
        self.optimizer = getattr(self, "optimizer", optimizer)
        self.same_optimizer = getattr(self, "same_optimizer", True) and optimizer is self.optimizer
        self.scheduler = getattr(self, "scheduler", trainer.lr_scheduler_configs[0].scheduler)


def loader(seed=0):
    generator = torch.Generator().manual_seed(seed)
    images, labels = torch.randn(64, 3, 16, 16, generator=generator), torch.randint(0, 10, (64,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=16)


def test_callback_prunes_inside_trainer_fit_and_training_continues():
    torch.manual_seed(0)
    module = TinyNet()
    params = {n: p for n, p in module.named_parameters()}
    callback = PruningCallback(PruneConfig(flops_reduction=0.5, epochs=3, monitor_start=1, max_prune_epoch=2),
                               verbose=False)
    recorder = Recorder()
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder, callback])
    trainer.fit(module, loader())
    pruner = callback.pruner
    # Pruned once, after epoch 2 (index 1), to the target; epoch 3 trained the smaller module.
    assert [e.epoch for e in callback.events if e.pruned] == [1]
    assert 0.5 <= pruner.flops_reduction < 0.75 and pruner.macs < pruner.dense_macs and trainer.global_step == 12
    dense, pruned = module.seen_params[0], sum(p.numel() for p in module.parameters())
    assert module.seen_params == [dense] * 8 + [pruned] * 4 and pruned < dense
    # Same optimizer and scheduler objects, same Parameter objects, state sliced with them.
    optimizer = trainer.optimizers[0]
    assert recorder.same_optimizer and optimizer is recorder.optimizer is pruner.optimizer
    assert trainer.lr_scheduler_configs[0].scheduler is recorder.scheduler is pruner.lr_scheduler
    assert recorder.scheduler.last_epoch == 3 and optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5**3)
    assert all(params[n] is p for n, p in module.named_parameters())
    assert all(optimizer.state[p]["momentum_buffer"].shape == p.shape for p in module.parameters())
    assert [e for e, _ in pruner.stability_history] == [0, 1]
    assert trainer.callback_metrics["prune/macs"] == pruner.macs


def test_example_input_comes_from_the_module_or_the_argument():
    module = TinyNet()
    module.example_input_array = torch.zeros(1, 3, 16, 16)
    callback = PruningCallback(flops_reduction=0.3, schedule="oneshot", verbose=False)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
    trainer.fit(module, loader())
    assert callback.pruner.config.epochs == 1 and callback.pruner.pruned
    assert callback.pruner.prune_epoch == 0 and callback.pruner.flops_reduction >= 0.3
    assert len(set(module.seen_params)) == 1 and module.seen_params[0] == callback.pruner.params  # before step 1


def test_the_callback_drives_the_same_target_shrink_to_epsilon_before_its_prune():
    """Lightning calls after_step() without a learning rate; the target controller counts
    steps, so it plans the same way as in our own loop."""
    torch.manual_seed(0)
    module = TinyNet()
    callback = PruningCallback(PruneConfig(flops_reduction=0.5, epochs=4, monitor_start=1, reg_start=1,
                                           max_prune_epoch=3, reg_target=0.02), verbose=False)
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(128, 3, 16, 16, generator=generator), torch.randint(0, 10, (128,), generator=generator)
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
    trainer.fit(module, DataLoader(TensorDataset(images, labels), batch_size=8))
    pruned = [e for e in callback.events if e.pruned]
    assert [e.epoch for e in pruned] == [2]
    assert pruned[0].selected_norm <= 0.02 and "shrink" not in pruned[0].prune_reason
    assert [e.selected_norm is not None for e in callback.events] == [True, True, True, False]
    assert max(e.reg_lambda for e in callback.events) > 0

"""The pruning controller from a user's own loop: a ~20-line plain PyTorch loop prunes
mid-training and keeps training with the same optimizer (state of kept channels
preserved) and LR scheduler; the README example runs; DDP re-wrapping works."""
from __future__ import annotations

import copy
import os
import re
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compressor
from compressor import EpochEvent, OneCyclePruner, PruneConfig
from compressor.engine.apply import slice_indices

README = Path(__file__).resolve().parents[2] / "README.md"


def small_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),
    )


def batches(n: int = 4, size: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 16, 16, generator=generator), torch.randint(0, 10, (size,), generator=generator))
            for _ in range(n)]


def test_the_api_is_importable_from_compressor():
    for name in ("OneCyclePruner", "PruneConfig", "EpochEvent"):
        assert name in compressor.__all__ and getattr(compressor, name)
    assert {"after_step", "epoch_start", "epoch_end", "prune", "plan", "stability_history", "macs",
            "dense_macs", "macs_reduction"} <= set(dir(OneCyclePruner(small_cnn(), torch.zeros(1, 3, 16, 16),
                                                                        PruneConfig(epochs=3, schedule="dense"))))


def test_plain_loop_prunes_mid_training_and_keeps_the_optimizer_and_scheduler():
    torch.manual_seed(0)
    epochs, data = 5, batches()
    model = small_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(data))
    config = PruneConfig(flops_reduction=0.5, epochs=epochs, monitor_start=0, max_prune_epoch=2)
    pruner = OneCyclePruner(model, torch.zeros(1, 3, 16, 16), config, optimizer, lr_scheduler=scheduler)
    events, lrs, checked = [], [], False
    for epoch in range(epochs):
        for images, labels in data:
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
            scheduler.step()
            pruner.after_step()  # the LR comes from the optimizer
            lrs.append(optimizer.param_groups[0]["lr"])
        graph, before = pruner.graph, {p: copy.deepcopy(optimizer.state[p]) for p in model.parameters()}
        weights = {name: p.detach().clone() for name, p in model.named_parameters()}
        event = pruner.epoch_end(epoch)
        events.append(event)
        if event.pruned:
            checked = _assert_state_sliced(model, optimizer, graph, pruner, before)
            pruned_weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    # Pruned once, at the cap, to the target; the same objects kept training afterwards.
    assert [e.epoch for e in events if e.pruned] == [2] and checked
    assert pruner.pruned and abs(pruner.macs_reduction - 0.5) <= 0.02
    assert pruner.macs < pruner.dense_macs and pruner.plan is not None and pruner.plan == pruner.applied_plans[-1]
    assert optimizer.param_groups[0]["params"] == list(model.parameters())
    assert all(not torch.equal(p, pruned_weights[n]) for n, p in model.named_parameters() if p.requires_grad)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    # The scheduler stepped on through the prune: the LR curve is the uninterrupted cosine.
    reference = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.05)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=epochs * len(data))
    expected = []
    for _ in lrs:
        reference.step()
        cosine.step()
        expected.append(reference.param_groups[0]["lr"])
    assert lrs == pytest.approx(expected)
    assert [e for e, _ in pruner.stability_history] == [0, 1, 2] and all(isinstance(e, EpochEvent) for e in events)


def _assert_state_sliced(model, optimizer, graph, pruner, before) -> bool:
    """Momentum of every kept channel is the momentum it had before the prune."""
    indices = slice_indices(graph, pruner.plan)
    assert indices, "the prune removed nothing"
    for (module_name, tensor_name), dims in indices.items():
        param = getattr(model.get_submodule(module_name), tensor_name)
        if not isinstance(param, nn.Parameter):
            continue
        old = before[param]["momentum_buffer"]
        for dim, index in dims.items():
            old = old.index_select(dim, index)
        assert torch.equal(optimizer.state[param]["momentum_buffer"], old), (module_name, tensor_name)
    return True


def test_onecycle_lr_keeps_stepping_after_a_prune_before_training():
    model = small_cnn()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=8)
    pruner = OneCyclePruner(model, torch.zeros(1, 3, 16, 16), PruneConfig(epochs=2, schedule="oneshot"), optimizer,
                            lr_scheduler=scheduler)
    for epoch in range(2):
        assert pruner.epoch_start(epoch).pruned == (epoch == 0)
        for images, labels in batches():
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
            scheduler.step()
            pruner.after_step()
        pruner.epoch_end(epoch)
    assert scheduler.last_epoch == 8 and pruner.pruned and pruner.macs_reduction > 0.45
    assert all(optimizer.state[p]["exp_avg"].shape == p.shape for p in model.parameters())


def test_after_step_reads_the_learning_rate_from_the_optimizer():
    model = small_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    config = PruneConfig(epochs=4, monitor_start=0, reg_start=0, reg_lambda=0.1, max_prune_epoch=3)
    pruner = OneCyclePruner(model, torch.zeros(1, 3, 16, 16), config, optimizer)
    pruner.epoch_end(0)
    assert pruner.state.reg_lambda == pytest.approx(0.1)
    before = [p.detach().clone() for p in model.parameters()]
    pruner.after_step()  # lr 0.5 from the optimizer: selected channels shrink by 1 - 0.1 * 0.5
    implicit = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p, old in zip(model.parameters(), before):
            p.copy_(old)
    pruner.after_step(0.5)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), implicit))
    ratios = torch.cat([(p / old)[old != 0].detach().flatten() for p, old in zip(model.parameters(), before)])
    # 0.95 per selected slot (0.95^2 where a weight sits in a removed row and a removed column)
    distance = torch.stack([(ratios - v).abs() for v in (1.0, 0.95, 0.95**2)]).min(0).values
    assert distance.max() < 1e-5 and ((ratios - 0.95).abs() < 1e-5).any()
    with pytest.raises(compressor.CompressorError, match="lr="):
        OneCyclePruner(small_cnn(), torch.zeros(1, 3, 16, 16), config)._current_lr()


def test_the_readme_example_runs():
    text = README.read_text()
    section = text.split("## Use it from your own training loop", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    pruner = namespace["pruner"]
    assert pruner.pruned and pruner.macs < pruner.dense_macs


# -- DDP: the user's wrapper is released and re-made --------------------------------------------
def _ddp_worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.manual_seed(0)  # identical init on every rank
    torch.set_num_threads(1)
    model = small_cnn()
    network = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    config = PruneConfig(flops_reduction=0.5, epochs=3, monitor_start=0, max_prune_epoch=1)
    pruner = OneCyclePruner(model, torch.zeros(1, 3, 16, 16), config, optimizer)
    for epoch in range(3):
        for images, labels in batches(n=2, seed=rank):  # each rank its own data
            optimizer.zero_grad()
            F.cross_entropy(network(images), labels).backward()
            optimizer.step()
            pruner.after_step()
        if pruner.end_epoch(epoch).prune_due:
            network = pruner.prune(epoch, ddp=network)  # a fresh DDP around the smaller model
    state = {k: v.detach().clone() for k, v in model.named_parameters()}  # BN running stats are per rank
    torch.save({"state": state, "reduction": pruner.macs_reduction, "wrapped": network.module is model}, out)
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_ddp_wrapper_is_rewrapped_and_ranks_stay_identical(tmp_path):
    import torch.multiprocessing as mp

    port = _free_port()
    outs = [str(tmp_path / f"rank{r}.pt") for r in range(2)]
    context = mp.start_processes(_ddp_entry, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    del context
    results = [torch.load(o, weights_only=True) for o in outs]
    assert all(r["wrapped"] for r in results)
    assert abs(results[0]["reduction"] - 0.5) <= 0.02
    for key, value in results[0]["state"].items():
        assert torch.equal(value, results[1]["state"][key]), key


def _ddp_entry(rank: int, world_size: int, port: int, directory: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    _ddp_worker(rank, world_size, port, os.path.join(directory, f"rank{rank}.pt"))

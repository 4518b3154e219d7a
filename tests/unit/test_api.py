"""The pruning controller from a user's own loop: a ~20-line plain PyTorch loop prunes
mid-training and keeps training with the same optimizer (state of kept channels
preserved) and LR scheduler; the README example runs; DDP re-wrapping works."""
from __future__ import annotations

import copy
import dataclasses
import os
import re
import socket
import sys
import warnings
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
            "dense_macs", "flops_reduction"} <= set(dir(OneCyclePruner(small_cnn(), torch.zeros(1, 3, 16, 16),
                                                                        PruneConfig(epochs=3, schedule="dense"))))


def test_plain_loop_prunes_mid_training_and_keeps_the_optimizer_and_scheduler():
    torch.manual_seed(0)
    epochs, data = 5, batches()
    model = small_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(data))
    config = PruneConfig(flops_reduction=0.5, epochs=epochs, monitor_start=1, max_prune_epoch=3)
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
    assert pruner.pruned and abs(pruner.flops_reduction - 0.5) <= 0.02
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
    assert scheduler.last_epoch == 8 and pruner.pruned and pruner.flops_reduction > 0.45
    assert all(optimizer.state[p]["exp_avg"].shape == p.shape for p in model.parameters())


def test_after_step_reads_the_learning_rate_from_the_optimizer():
    model = small_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    config = PruneConfig(epochs=4, monitor_start=1, reg_start=1, reg_lambda=0.1, max_prune_epoch=4, reg_schedule="fixed")
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


def _ours_deprecated(caught) -> list[str]:
    from compressor.errors import DEPRECATED_REMOVED_IN

    return [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)
            and f"will be removed in {DEPRECATED_REMOVED_IN}" in str(w.message)]


def test_the_readme_example_runs():
    text = README.read_text()
    section = text.split("## Use it from your own training loop", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {"__name__": "readme_example"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    pruner = namespace["pruner"]
    assert pruner.pruned and pruner.macs < pruner.dense_macs
    assert _ours_deprecated(caught) == []  # the README teaches the names that stay


# -- one name per hook and per quantity; the old names warn for one release --------------------
def test_deprecated_hook_and_quantity_names_warn_and_still_work():
    def pruner() -> OneCyclePruner:
        torch.manual_seed(0)
        return OneCyclePruner(small_cnn(), torch.zeros(1, 3, 16, 16), PruneConfig(flops_reduction=0.5, epochs=3,
                              schedule="oneshot", max_prune_epoch=2), None)

    old, new = pruner(), pruner()
    with pytest.warns(DeprecationWarning, match=r"begin_epoch.*epoch_start\(epoch, prune=False\)") as caught:
        begun = old.begin_epoch(0)
    assert caught[0].filename == __file__  # points at the caller
    assert begun.prune_due and not begun.pruned and not old.pruned  # reports; the caller prunes
    same = lambda a, b: dataclasses.replace(a, search_time_s=0) == dataclasses.replace(b, search_time_s=0)  # noqa: E731
    assert same(begun, new.epoch_start(0, prune=False)) and old.plan == new.plan
    old.prune(0), new.prune(0)
    with pytest.warns(DeprecationWarning, match=r"end_epoch.*epoch_end\(epoch, prune=False\)"):
        ended = old.end_epoch(0)
    assert same(ended, new.epoch_end(0, prune=False)) and old.history == new.history
    with pytest.warns(DeprecationWarning, match=r"macs_reduction.*use flops_reduction"):
        assert old.macs_reduction == old.flops_reduction == new.flops_reduction > 0.45

    from compressor import SelectionConfig

    with pytest.warns(DeprecationWarning, match=r"SelectionConfig\(macs_reduction=\.\.\.\)"):
        assert SelectionConfig(macs_reduction=0.3, round_to=4) == SelectionConfig(0.3, 4) == SelectionConfig(flops_reduction=0.3, round_to=4)
    with pytest.warns(DeprecationWarning, match=r"SelectionConfig.macs_reduction"):
        assert SelectionConfig(0.3).macs_reduction == 0.3
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="not also"):
        SelectionConfig(0.3, macs_reduction=0.3)
    with pytest.raises(TypeError, match="flops_reduction"):
        SelectionConfig()


def test_the_package_calls_only_the_names_that_stay():
    """The deprecated names are defined once each (the aliases) and called nowhere, so
    compress prune and the Lightning callback never warn."""
    root = README.parent
    pattern = re.compile(r"\.(begin_epoch|end_epoch)\(|\.macs_reduction\b|macs_reduction=")
    found = [f"{path.relative_to(root)}:{number}: {line.strip()}"
             for folder in ("compressor", "exporters", "models") for path in sorted((root / folder).rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), start=1)
             if pattern.search(line) and "deprecated(" not in line]
    assert found == []


# -- DDP: the user's wrapper is released and re-made --------------------------------------------
def _ddp_worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.manual_seed(0)  # identical init on every rank
    torch.set_num_threads(1)
    model = small_cnn()
    network = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    config = PruneConfig(flops_reduction=0.5, epochs=3, monitor_start=1, max_prune_epoch=2)
    pruner = OneCyclePruner(model, torch.zeros(1, 3, 16, 16), config, optimizer)
    for epoch in range(3):
        for images, labels in batches(n=2, seed=rank):  # each rank its own data
            optimizer.zero_grad()
            F.cross_entropy(network(images), labels).backward()
            optimizer.step()
            pruner.after_step()
        if pruner.epoch_end(epoch, prune=False).prune_due:
            network = pruner.prune(epoch, ddp=network)  # a fresh DDP around the smaller model
    state = {k: v.detach().clone() for k, v in model.named_parameters()}  # BN running stats are per rank
    torch.save({"state": state, "reduction": pruner.flops_reduction, "wrapped": network.module is model}, out)
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


# -- a plan past the asked reduction says so ----------------------------------------------------------
def _the_readme_network() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


@pytest.mark.parametrize("round_to", [None, 1])
def test_a_plan_past_the_asked_reduction_says_by_how_much_and_why(caplog, round_to):
    """Two layers, one 64 wide: a block of 8 of its channels is 12 % of the MACs, so the
    nearest plan to 50 % at the default widths removes 60 %; one channel at a time, 51 %."""
    torch.manual_seed(0)
    config = PruneConfig(flops_reduction=0.5, epochs=1, schedule="oneshot", round_to=round_to)
    pruner = OneCyclePruner(_the_readme_network(), torch.zeros(1, 3, 32, 32), config)
    with caplog.at_level("WARNING", logger="compressor"):
        pruner.epoch_start(0)
    warned = [r.getMessage() for r in caplog.records if "nearest plan removes" in r.getMessage()]
    past = pruner.flops_reduction - 0.5
    assert (len(warned) == 1) == (past > 0.01), (past, warned)
    if round_to is None:
        assert past > 0.05 and "round_to" in warned[0] and f"{100 * pruner.flops_reduction:.1f}%" in warned[0]
    else:
        assert past < 0.02

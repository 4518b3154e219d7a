"""The prune's shock: validation right before and right after the slice (no training
between), in metrics.jsonl, summary.json, the prune line and run.png; ``--recalibrate-bn N``
re-estimates the sliced model's BatchNorm statistics and measures again."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from compressor.artifacts import PruneShock, RunSummary, problems
from compressor.cli import main
from compressor.engine.apply import apply_plan
from compressor.engine.masking import masked_copy
from compressor.engine.plan import PruningPlan
from compressor.schedules.onecycle import OneCyclePruner, PruneConfig
from compressor.training.checkpoint import BEFORE_PRUNE, LATEST, load_checkpoint
from compressor.data.datasets import DataBundle, DataConfig, load_data
from compressor.training.loop import RunContext, TrainConfig, Trainer, make_optimizer
from compressor.training.report import EpochRecord, plot_run
from compressor.runfiles.modelfile import ModelSpec, load_pruned, rebuild, restored_state
from tests.hostile import TINY
from tests.fixed_split import FixedSplit

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PRUNE_LINE = re.compile(r"^pruned after epoch 1: .* shock: val top-1 (\S+)% -> (\S+)%, loss (\S+) -> (\S+)(.*)$", re.MULTILINE)


def prune(out: Path, *extra: str) -> str:
    result = CliRunner().invoke(main, ["prune", *TINY, "--device", "cpu", "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return result.output


def read(out: Path) -> tuple[dict, list[dict]]:
    summary = json.loads((out / "summary.json").read_text())
    return summary, [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@torch.no_grad()
def evaluate(model: nn.Module, data: DataBundle) -> tuple[float, float]:
    """Validation loss and top-1 %, computed here, not by the Trainer."""
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for images, labels in data.val_batches():
        logits = model(images).float()
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += int((logits.argmax(1) == labels).sum())
        count += labels.numel()
    return loss / count, 100.0 * correct / count


def before_prune_model(out: Path) -> tuple[nn.Module, ModelSpec]:
    """The unpruned model as it was right before the slice (checkpoint-before-prune.pt)."""
    payload = load_checkpoint(out / BEFORE_PRUNE)
    spec = ModelSpec.from_dict(payload["spec"])
    model = rebuild(spec, [])
    model.load_state_dict(restored_state(payload["model"]))
    return model, spec


def run_data(summary: dict) -> DataBundle:
    return load_data(DataConfig(**summary["data"]))


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("shock") / "run"
    return out, prune(out)


@pytest.fixture(scope="module")
def recalibrated(tmp_path_factory) -> tuple[Path, str]:
    """One epoch that ends with the prune: model.pt is the model right after recalibration.
    Without the refresh before validation, so the before-prune statistics are the running
    averages and the recalibration's effect shows on every BatchNorm."""
    out = tmp_path_factory.mktemp("shock") / "recalibrated"
    return out, prune(out, "--epochs", "1", "--recalibrate-bn", "2", "--refresh-bn", "0")


def test_the_shock_is_validation_of_the_model_right_before_and_right_after_the_slice(plain):
    out, _ = plain
    summary, records = read(out)
    shock = records[0]["prune_shock"]
    assert shock["epoch"] == 1 and shock["at"] == "end" and records[1]["prune_shock"] is None
    assert problems(PruneShock, shock) == []
    data = run_data(summary)
    model, spec = before_prune_model(out)
    loss, top1 = evaluate(model, data)
    assert shock["top1_before"] == top1 and shock["loss_before"] == pytest.approx(loss, rel=1e-5)
    # The epoch's own validation ran on the same weights (the search changes none).
    assert records[0]["val_top1"] == top1
    plan = PruningPlan.from_dict(json.loads((out / "plan.json").read_text())[0])
    graph = spec.analyse(model)
    masked_loss, masked_top1 = evaluate(masked_copy(model, graph, plan), data)
    sliced_loss, sliced_top1 = evaluate(apply_plan(model, graph, plan), data)
    assert shock["top1_after"] == sliced_top1 == masked_top1
    assert shock["loss_after"] == pytest.approx(sliced_loss, rel=1e-5) == pytest.approx(masked_loss, rel=1e-4)
    assert shock["macs_before"] == summary["dense_macs"] and shock["macs_after"] == summary["pruned_macs"]
    assert shock["recalibration_batches"] == 0 and shock["top1_after_recalibration"] is None


def test_summary_lists_one_shock_per_prune_and_the_prune_line_shows_it(plain):
    out, output = plain
    summary, records = read(out)
    assert summary["prune_shocks"] == [records[0]["prune_shock"]]
    assert problems(RunSummary, summary) == []
    line = PRUNE_LINE.search(output)
    assert line is not None, output
    shock = summary["prune_shocks"][0]
    assert [float(v) for v in line.groups()[:4]] == pytest.approx(
        [shock["top1_before"], shock["top1_after"], shock["loss_before"], shock["loss_after"]], abs=0.051)
    assert "recalibration" not in line.group(5)


def test_recalibrate_bn_reestimates_the_statistics_and_measures_again(recalibrated):
    out, output = recalibrated
    summary, records = read(out)
    shock = records[0]["prune_shock"]
    assert summary["prune_shocks"] == [shock]
    assert shock["recalibration_batches"] == 2
    assert json.loads(json.dumps(load_checkpoint(out / LATEST)["config"]))["recalibrate_bn"] == 2
    data = run_data(summary)
    model, spec = before_prune_model(out)
    plan = PruningPlan.from_dict(json.loads((out / "plan.json").read_text())[0])
    sliced = apply_plan(model, spec.analyse(model), plan)
    assert shock["top1_after"] == evaluate(sliced, data)[1]
    final, _, _ = load_pruned(out / "model.pt")  # the run ended right after the prune
    norms = [(name, m) for name, m in final.named_modules() if isinstance(m, nn.BatchNorm2d)]
    old = dict(sliced.named_modules())
    assert norms and all(not torch.equal(m.running_mean, old[name].running_mean) for name, m in norms)
    # The statistics are the plain average over the first 2 training batches of the epoch.
    for _, module in sliced.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    sliced.train()
    with torch.no_grad():
        for images, _ in list(data.train_batches(0))[:2]:
            sliced(images)
    for name, module in norms:
        assert torch.allclose(module.running_mean, old[name].running_mean, atol=1e-6), name
        assert torch.allclose(module.running_var, old[name].running_var, atol=1e-6), name
        assert module.momentum == 0.1 and int(module.num_batches_tracked) == 2
    loss, top1 = evaluate(final, data)
    assert shock["top1_after_recalibration"] == top1 and shock["loss_after_recalibration"] == pytest.approx(loss, rel=1e-5)
    line = PRUNE_LINE.search(output)
    assert line is not None and f"after BN recalibration on 2 batches {top1:.1f}%" in line.group(5), output


# -- the recalibration itself, on a small model ------------------------------------------------------
def small_trainer(tmp_path: Path, recalibrate_bn: int) -> Trainer:
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(24, 3, 8, 8, generator=generator), torch.randint(0, 10, (24,), generator=generator)
    data = DataBundle(10, (3, 8, 8), 16, 8, 8, 0, FixedSplit(images[:16], labels[:16]), FixedSplit(images[16:], labels[16:]))
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Dropout(0.5),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    config = TrainConfig(epochs=2, device="cpu", progress=False, recalibrate_bn=recalibrate_bn)
    optimizer = make_optimizer(config, model)
    pruner = OneCyclePruner(model, torch.zeros(1, 3, 8, 8), PruneConfig(epochs=2, schedule="dense"), optimizer)
    return Trainer(pruner, optimizer, data, config, RunContext(tmp_path), lambda: {})


def test_recalibration_restores_modes_and_momentum_and_caps_at_an_epoch(tmp_path):
    trainer = small_trainer(tmp_path, recalibrate_bn=5)  # 2 batches per epoch
    model = trainer.pruner.model
    model.eval()
    model[3].train()  # a mixed state comes back as it was
    assert trainer._recalibrate_bn(0) == 2
    assert [m.training for m in model] == [False, False, False, True, False, False, False]
    assert model[1].momentum == 0.1 and int(model[1].num_batches_tracked) == 2
    assert not torch.equal(model[1].running_mean, torch.zeros(16))


def test_trainconfig_refuses_a_negative_recalibration():
    from compressor.errors import CompressorError

    with pytest.raises(CompressorError, match="--recalibrate-bn"):
        TrainConfig(recalibrate_bn=-1)


def test_an_old_metrics_line_without_a_shock_still_loads_and_plots(tmp_path):
    line = {"epoch": 1, "train_loss": 2.0, "train_top1": 10.0, "val_loss": 2.1, "val_top1": 9.0, "lr": 0.1,
            "stability": None, "reg_lambda": 0.0, "macs": 40, "params": 10, "pruned": True, "epoch_time_s": 1.0,
            "search_time_s": 0.0, "images_per_s": 1.0}
    old = EpochRecord.from_dict(line)
    assert old.prune_shock is None
    shock = {"epoch": 2, "at": "end", "top1_before": 9.0, "top1_after": 4.0, "loss_before": 2.1, "loss_after": 3.0,
             "macs_before": 40, "macs_after": 20, "recalibration_batches": 2, "top1_after_recalibration": 7.0,
             "loss_after_recalibration": 2.5}
    new = EpochRecord.from_dict({**line, "prune_shock": shock})
    assert new.prune_shock == shock and EpochRecord.from_dict(new.to_dict()) == new
    path = plot_run([old, new.__class__(**{**new.to_dict(), "epoch": 2})], tmp_path / "run.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""``compress prune`` flags reach the run and change what it does (this tree's CLI, in-process).

tests/unit/test_prune_options.py checks each option's effect on the library objects;
here one run with many non-default flags checks that the flags become those settings
and that their effects show in the run's artifacts, and one run checks ``--weights``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from compressor.engine.analysis.graph import analyse
from compressor.training.checkpoint import LATEST, load_checkpoint
from compressor.cli import main
from compressor.runfiles.modelfile import load_pruned
from compressor.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--model", "resnet20", "--dataset", "synthetic", "--synthetic-train", "64", "--synthetic-val", "32", "--batch-size", "32",
        "--no-progress", "--device", "cpu"]

# 4 epochs x 2 steps.  --indicator epi is stable at the second search (epoch 1), before the
# cap at epoch 2 (--reg-schedule fixed: stability alone decides); --reset-optimizer then leaves AdamW with only the 4 steps after the prune.
FLAGS = {
    "--epochs": "4", "--monitor-start": "1", "--max-prune-epoch": "3", "--flops-reduction": "0.4",
    "--optimizer": "adamw", "--lr": "0.01", "--weight-decay": "0.001", "--momentum": "0.8",
    "--lr-schedule": "cosine", "--milestones": "0.5", "--gamma": "0.3", "--label-smoothing": "0.1",
    "--criterion": "l1", "--indicator": "epi", "--epi-threshold": "0.9", "--epi-window": "3",
    "--reg-start": "1", "--reg-schedule": "fixed", "--reg-target": "0.05", "--reg-lambda": "0.001",
    "--reg-delta": "0.002", "--reg-interval": "2", "--min-width": "6", "--round-to": "1", "--max-prune-fraction": "0.8", "--seed": "3",
}
SWITCHES = ["--cost-weighting", "--reset-optimizer", "--no-nesterov", "--no-augment",
            "--ignore", "layer1.0.conv1", "--ignore", "layer2.1.conv1"]


def prune(*args: str) -> None:
    result = CliRunner().invoke(main, ["prune", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def flagged(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("options") / "run"
    prune(*TINY, *[item for pair in FLAGS.items() for item in pair], *SWITCHES, "--out", str(out))
    return out


def test_every_flag_becomes_the_runs_setting(flagged):
    payload = load_checkpoint(flagged / LATEST)
    assert payload["cuda_rng"] == []  # a CPU run: no CUDA generator to keep (a GPU run keeps every device's)
    config = payload["config"]
    expected = {
        "epochs": 4, "monitor_start": 1, "max_prune_epoch": 3, "flops_reduction": 0.4, "optimizer": "adamw",
        "lr": 0.01, "weight_decay": 0.001, "momentum": 0.8, "nesterov": False, "lr_schedule": "cosine",
        "milestones": [0.5], "gamma": 0.3, "label_smoothing": 0.1, "criterion": "l1", "cost_weighting": True,
        "indicator": "epi", "epi_threshold": 0.9, "epi_window": 3, "reg_start": 1, "reg_schedule": "fixed",
        "reg_target": 0.05, "reg_lambda": 0.001,
        "reg_delta": 0.002, "reg_interval": 2, "min_width": 6, "round_to": 1, "max_prune_fraction": 0.8,
        "seed": 3, "reset_optimizer": True, "augment": False, "device": "cpu", "progress": False,
        "ignore": ["layer1.0.conv1", "layer2.1.conv1"],
    }
    assert {key: config[key] for key in expected} == expected


def test_the_flags_effects_show_in_the_artifacts(flagged):
    records = metrics(flagged)
    summary = json.loads((flagged / "summary.json").read_text())
    # --lr-schedule cosine at --lr 0.01: the LR at each epoch's end.
    assert [r["lr"] for r in records] == pytest.approx([0.005 * (1 + math.cos(math.pi * e / 4)) for e in (1, 2, 3, 4)])
    # --indicator epi compares channel counts from the second search on (Jaccard needs a third
    # plan and reads 0 there); above --epi-threshold 0.9 and rising, it prunes before the cap.
    assert records[0]["stability"] == 0.0 and 0.9 <= records[1]["stability"] <= 1.0
    assert summary["prune_epoch"] == 2 and [r["pruned"] for r in records] == [False, True, False, False]
    # --reg-start 1 (on at its end), --reg-lambda, growing by --reg-delta every --reg-interval epochs (epoch 1: not yet).
    assert [r["reg_lambda"] for r in records[:2]] == pytest.approx([0.001, 0.001])
    assert summary["criterion"] == "l1" and summary["macs_reduction"] >= 0.4
    # --optimizer adamw with --reset-optimizer: Adam state counts only the 4 steps after the prune.
    optimizer = load_checkpoint(flagged / LATEST)["optimizer"]
    assert "betas" in optimizer["param_groups"][0] and optimizer["param_groups"][0]["weight_decay"] == 0.001
    assert {int(state["step"]) for state in optimizer["state"].values()} == {4}
    # --ignore keeps those modules' channels; --min-width bounds every group.
    model, _, _ = load_pruned(flagged / "model.pt")
    assert model.layer1[0].conv1.out_channels == 16 and model.layer2[1].conv1.out_channels == 32
    assert min(g.size for g in analyse(model, torch.zeros(1, 3, 32, 32)).groups) >= 6
    assert sum(m.out_channels for n, m in model.named_modules() if n.endswith(".conv1")) < 16 * 3 + 32 * 3 + 64 * 3


def test_weights_flag_starts_the_run_from_the_file(tmp_path):
    torch.manual_seed(7)
    source = build_model("resnet20")
    torch.save(source.state_dict(), tmp_path / "start.pt")
    out = tmp_path / "run"
    # --lr 1e-30 and no decay: the one step moves no weight by more than ~1e-30.
    prune(*TINY, "--epochs", "1", "--schedule", "dense", "--lr", "1e-30", "--weight-decay", "0", "--no-augment",
          "--dataset", "synthetic", "--synthetic-train", "32", "--weights", str(tmp_path / "start.pt"), "--out", str(out))
    model, _, _ = load_pruned(out / "model.pt")
    start = source.state_dict()
    for name, tensor in model.named_parameters():
        torch.testing.assert_close(tensor.detach(), start[name], rtol=0, atol=1e-20, msg=name)

"""Eval-mode statistics true to the weights while the shrink runs (``--refresh-bn``).

Two short runs that shrink for three epochs and prune at the end of the third, one with the
default refresh before each validation and one without (the behaviour before it existed).
The model right before the prune (``checkpoint-before-prune.pt``) is what the validation, the
shock's "before" and a user taking the checkpoint all see.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from compressor.cli import main
from compressor.data.datasets import DataConfig, load_data
from compressor.epochs import epoch_index
from compressor.training import batchnorm
from compressor.training.checkpoint import BEFORE_PRUNE, load_checkpoint
from compressor.training.loop import TrainConfig
from compressor.runfiles.modelfile import ModelSpec, rebuild, restored_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 256 training images in 8 batches; the shrink runs from the first epoch to the prune at the third's end.
SHRINKING = ["prune", "--model", "resnet20", "--dataset", "synthetic", "--synthetic-train", "256",
             "--synthetic-val", "64", "--batch-size", "32", "--epochs", "4", "--monitor-start", "1", "--reg-start", "1",
             "--max-prune-epoch", "3", "--no-progress", "--device", "cpu"]
# Largest |logit difference| over the largest |logit|, saved statistics against ones estimated afresh
# on the whole epoch.  The default refresh (4 of the 8 batches) measured 0.05; the running
# averages 1.08 (28 % of the argmaxes the same).
BOUND = 0.15


def _run(root: Path, refresh: int) -> Path:
    out = root / f"refresh{refresh}"
    result = CliRunner().invoke(main, [*SHRINKING, "--refresh-bn", str(refresh), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("refresh")
    return {refresh: _run(root, refresh) for refresh in (0, TrainConfig().refresh_bn)}


def _relative_error_to_fresh_statistics(out: Path) -> float:
    payload = load_checkpoint(out / BEFORE_PRUNE)
    assert payload["pruner"]["state"]["reg_on_epoch"] == 0  # it was shrinking
    model = rebuild(ModelSpec.from_dict(payload["spec"]), [])
    model.load_state_dict(restored_state(payload["model"]))
    data = load_data(DataConfig(**json.loads((out / "summary.json").read_text())["data"]))
    batch = next(iter(data.val_batches()))[0]
    model.eval()
    with torch.no_grad():
        saved = model(batch)
        batchnorm.reestimate(model, (images for images, _ in data.train_batches(epoch_index(payload["epoch"]))))
        fresh = model(batch)
    return float((saved - fresh).abs().max() / fresh.abs().max())


def test_after_shrinking_steps_eval_outputs_match_freshly_estimated_statistics(runs):
    assert _relative_error_to_fresh_statistics(runs[TrainConfig().refresh_bn]) <= BOUND


def test_the_running_averages_alone_are_far_off(runs):
    """What the test above guards against: without the refresh the same model is far outside."""
    assert _relative_error_to_fresh_statistics(runs[0]) > BOUND


def test_the_refresh_changes_no_training_step(runs):
    """Training reads batch statistics only: the two runs train identically, step for step."""
    def training(out: Path) -> list[tuple[float, float]]:
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [(line["train_loss"], line["train_top1"]) for line in lines]

    assert training(runs[0]) == training(runs[TrainConfig().refresh_bn])


def test_reestimate_restores_modes_and_leaves_dropout_off():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5))
    model.eval()
    model[2].train()  # a mixed state comes back as it was
    inputs = [torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)]
    state = torch.random.get_rng_state()
    used = batchnorm.reestimate(model, inputs)
    assert used == 2 and int(model[1].num_batches_tracked) == 2 and model[1].momentum == 0.1
    assert [m.training for m in model] == [False, False, True]
    assert torch.equal(torch.random.get_rng_state(), state)  # dropout was off: nothing drawn


def test_a_negative_refresh_is_refused():
    from compressor.errors import CompressorError

    with pytest.raises(CompressorError, match="--refresh-bn"):
        TrainConfig(refresh_bn=-1)

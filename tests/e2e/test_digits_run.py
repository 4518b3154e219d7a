"""A run on the shipped digits, and everything that reads a run's data back: the export gate's
images, the bundle, INT8 calibration and ``compress eval`` all open the same real images,
offline, with the run's own preprocessing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compressor.data import digits
from compressor.data.datasets import DataConfig, load_data
from tests import hostile
from tests.cli_runs import compress

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIGITS_PRUNE = ["--model", "resnet20", "--batch-size", "100", "--epochs", "2", "--monitor-start", "1",
                "--max-prune-epoch", "1", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A 2-epoch ResNet-20 run on digits (the default dataset: no --dataset given) and its export."""
    out = tmp_path_factory.mktemp("digits") / "r20"
    compress("prune", *DIGITS_PRUNE, "--out", str(out))
    compress("export", str(out), "--max-batch", "2")
    return out


def _plain_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) images as every reader must see them: normalised, un-augmented."""
    loaded = load_data(DataConfig(dataset="digits", augment=False))
    return loaded.train_split.images, loaded.val_split.images


def _rows_in(images: torch.Tensor, bank: torch.Tensor) -> int:
    return int((images.flatten(1)[:, None] == bank.flatten(1)[None]).all(-1).any(1).sum())


def test_the_default_run_trains_on_digits_and_learns_them(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["dataset"] == "digits" and summary["data"]["dataset"] == "digits"
    # Pruned at the end of its first epoch and trained one more, the model is still far from the
    # 95 % a full run reaches, but above chance (10 %): it learns from these images.
    assert summary["top1"] > 15.0


def test_the_gate_fed_the_runs_validation_digits_and_the_bundle_says_how(run_dir):
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert manifest["status"] == "ok"
    assert manifest["parity"]["dataset_images"]["used"] == 32
    assert manifest["parity"]["dataset_images"]["dataset"] == "digits"
    bundle = manifest["bundle"]
    assert bundle["dataset"] == "digits" and bundle["class_names"] == [str(d) for d in range(10)]
    steps = bundle["preprocessing"]
    assert steps["mean"] == [digits.MEAN] * 3 and steps["std"] == [digits.STD] * 3
    assert steps["resize"] == [32, 32] and "bilinear" in steps["resize_mode"]


def test_calibration_reads_the_training_digits_never_the_validation_ones(run_dir):
    from compressor.export.calibration import calibration_sets, data_config_for

    config = data_config_for(run_dir, None, None)
    assert config.dataset == "digits" and not config.augment
    sets = calibration_sets(config, 64, 100, (3, 32, 32))
    train, val = _plain_digits()
    assert sets.note["dataset"] == "digits" and sets.note["split"] == "train"
    assert _rows_in(sets.calibration, train) == 64 and _rows_in(sets.check, train) == 100
    assert _rows_in(sets.calibration, val) == 0 and _rows_in(sets.check, val) == 0


def test_eval_reproduces_the_runs_top1_on_the_same_digits(run_dir, tmp_path):
    report_file = tmp_path / "eval.json"
    result = hostile.invoke("eval", run_dir, "--json", report_file)
    assert result.exit_code == 0, result.output
    report = json.loads(report_file.read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert report["dataset"] == "digits" and report["images"] == digits.VAL_IMAGES
    torch_row = report["rows"][0]
    assert torch_row["top1"] == pytest.approx(summary["top1"], abs=1e-9)


@pytest.mark.parametrize("command", [["eval", "--data", "digits"], ["export", "--int8", "--calib-data", "digits"]])
def test_a_folder_for_the_shipped_digits_is_refused(run_dir, tmp_path, command):
    verb, *options = command
    folder_option = "--data-dir" if verb == "eval" else "--calib-data-dir"
    extra = ["--out", tmp_path / "out"] if verb == "export" else []
    result = hostile.invoke(verb, run_dir, *options, folder_option, tmp_path, *extra)
    hostile.one_line_error(result, folder_option, "digits")


def test_synthetic_sizes_without_the_synthetic_set_are_refused(tmp_path):
    """The default dataset is digits now: a size for the generated set would be ignored."""
    result = hostile.invoke("prune", "--synthetic-train", "64", "--out", tmp_path / "run")
    hostile.one_line_error(result, "--synthetic-train", "--dataset synthetic")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("options", [["--data-dir", "FOLDER"], ["--dataset", "synthetic", "--download"]])
def test_a_folder_or_a_download_for_a_built_in_set_is_refused_by_prune(tmp_path, options):
    """They would be ignored without a word: the set comes with the package."""
    options = [str(tmp_path) if option == "FOLDER" else option for option in options]
    result = hostile.invoke("prune", *options, "--out", tmp_path / "run")
    hostile.one_line_error(result, options[-2] if options[-1] == str(tmp_path) else options[-1], "comes with the package")
    assert not (tmp_path / "run").exists()

"""``compress prune`` end to end on the built-in synthetic data (CPU, tiny runs)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compressor.training.checkpoint import LATEST, load_checkpoint
from compressor.runfiles.modelfile import load_pruned
from tests.cli_runs import (
    AFTER_CHECKPOINT,
    BEFORE_CHECKPOINT,
    ENV,
    checkpoint_epoch,
    compress,
    kill_at_checkpoint,
    metrics,
    one_error_line,
)

SYNTHETIC = ["--dataset", "synthetic", "--synthetic-train", "256", "--synthetic-val", "128"]
TRAINING = ["--model", "resnet20", "--batch-size", "64", "--epochs", "4", "--max-prune-epoch", "3", "--monitor-start", "1",
            "--no-progress"]
TINY = [*SYNTHETIC, *TRAINING]




def comparable(records: list[dict]) -> list[tuple]:
    return [(r["epoch"], r["train_loss"], r["val_top1"], r["macs"], r["stability"], r["pruned"], r["prune_shock"])
            for r in records]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "ocs"
    compress("prune", *TINY, "--out", str(out))
    return out


def test_ocs_run_prunes_keeps_training_and_writes_every_artifact(finished):
    for name in ("summary.json", "metrics.jsonl", "plan.json", "run.png", "model.pt", LATEST, "checkpoint-before-prune.pt"):
        assert (finished / name).stat().st_size > 0, name
    summary = json.loads((finished / "summary.json").read_text())
    for key in ("model", "dataset", "schedule", "epochs", "flops_reduction_target", "dense_macs", "dense_params",
                "pruned_macs", "pruned_params", "prune_epoch", "top1", "best_top1", "wall_time_s", "model_path"):
        assert key in summary, key
    assert summary["prune_epoch"] == 3 and 0.5 <= summary["macs_reduction"] <= 0.51
    records = metrics(finished)
    assert [r["prune_shock"] is not None for r in records] == [False, False, True, False]
    assert summary["prune_shocks"] == [records[2]["prune_shock"]]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]  # numbered from 1, as printed
    assert records[1]["macs"] == summary["dense_macs"] and records[3]["macs"] == summary["pruned_macs"]
    assert records[3]["train_loss"] > 0  # the pruned network kept training
    assert (finished / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pruned_model_file_reloads_and_matches_the_checkpoint(finished):
    model, spec, plan = load_pruned(finished / "model.pt")
    payload = load_checkpoint(finished / LATEST)
    assert sum(p.numel() for p in model.parameters()) == json.loads((finished / "summary.json").read_text())["pruned_params"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, payload["model"]["state_dict"][name]), name


@pytest.mark.parametrize(
    "epoch,when",
    [
        (2, AFTER_CHECKPOINT),  # the resume starts with epoch 3, the one that prunes at its end
        (3, BEFORE_CHECKPOINT),  # epoch 3 pruned and logged, its checkpoint not written: redo the prune
    ],
    ids=["after-epoch-2-checkpoint", "between-prune-epoch-metrics-and-checkpoint"],
)
def test_killed_run_resumes_to_the_same_result(finished, tmp_path, epoch, when):
    out = tmp_path / "killed"
    kill_at_checkpoint(TINY, out, epoch, when)
    compress("prune", "--resume", str(out))
    assert comparable(metrics(out)) == comparable(metrics(finished))
    resumed, _, _ = load_pruned(out / "model.pt")
    uninterrupted, _, _ = load_pruned(finished / "model.pt")
    for (name, a), b in zip(resumed.state_dict().items(), uninterrupted.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_refuses_conflicting_settings(finished):
    result = compress("prune", "--resume", str(finished), "--lr", "0.5", "--epochs", "9", check=False)
    one_error_line(result, 1, "--resume refuses", "lr: run has 0.1, given 0.5", "epochs: run has 4, given 9")


def test_existing_run_is_not_overwritten(finished):
    result = compress("prune", *TINY, "--out", str(finished), check=False)
    one_error_line(result, 1, f"{finished} already holds a run", f"--resume {finished}")


def test_two_process_ddp_keeps_ranks_identical(tmp_path):
    out = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
         "-m", "compressor", "prune", *TINY, "--epochs", "3", "--max-prune-epoch", "2", "--out", str(out)],
        capture_output=True, text=True, env=ENV, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}-final.json").read_text()) for r in (0, 1)]
    assert ranks[0]["plans"] and ranks[0]["plans"] == ranks[1]["plans"]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert json.loads((out / "summary.json").read_text())["prune_epoch"] == 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["--flops-reduction", "0.95", "--max-prune-fraction", "0.5"], "maximum reachable"),
        (["--dataset", "imagefolder", "--data-dir", "/nonexistent/data"], "/nonexistent/data"),
        (["--max-prune-epoch", "41"], "outside the run"),
        (["--model", "resnt20"], "did you mean"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    data = [] if "--dataset" in args else SYNTHETIC  # the synthetic sizes apply to synthetic only
    result = compress("prune", *data, *TRAINING, "--out", str(tmp_path / "bad"), *args, check=False)
    one_error_line(result, 1, message)


def test_non_image_folder_is_refused(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "data" / split / "cats").mkdir(parents=True)
        (tmp_path / "data" / split / "cats" / "notes.txt").write_text("not an image")
    result = compress("prune", *TRAINING, "--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"),
                      "--out", str(tmp_path / "bad"), check=False)
    one_error_line(result, 1, f"no images found in {tmp_path / 'data' / 'train'}", "cats", ".jpg")


def test_nan_loss_before_any_checkpoint_says_there_is_none(tmp_path):
    out = tmp_path / "nan"
    result = compress("prune", *TINY, "--lr", "1e30", "--out", str(out), check=False)
    one_error_line(result, 1, "the loss became", "at epoch 1,", "no epoch had finished", "lower --lr")
    assert not (out / LATEST).exists()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    """Epoch 1 trains normally; shrinking starts at its end (--reg-start 1) under the authors'
    fixed schedule with a factor of 1 - 1e30 * lr = -1e29 per step, which overflows float32
    within epoch 2's first steps.  (The target schedule bounds each step's factor, so it
    cannot be made to diverge this way.)"""
    out = tmp_path / "nan"
    result = compress("prune", *TINY, "--reg-start", "1", "--reg-schedule", "fixed", "--reg-lambda", "1e30",
                      "--out", str(out), check=False)
    line = one_error_line(result, 1, "the loss became", "at epoch 2,", f"the last good checkpoint {out / LATEST} is kept")
    assert "nan" in line or "inf" in line, line
    assert checkpoint_epoch(out) == 1 and [r["epoch"] for r in metrics(out)] == [1]
    assert not (out / "summary.json").exists()


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path):
    """A real write failure: the file-size limit makes the OS refuse the bigger write."""
    path = tmp_path / LATEST
    script = f"""
import resource, signal, torch
from pathlib import Path
from compressor.training.checkpoint import save_checkpoint, CheckpointError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
path = Path({str(path)!r})
save_checkpoint(path, {{"epoch": 1, "model": {{"w": torch.ones(10)}}}})
resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 1000, resource.RLIM_INFINITY))
try:
    save_checkpoint(path, {{"epoch": 2, "model": {{"w": torch.ones(1_000_000)}}}})
except CheckpointError as error:
    print("ERROR", error)
assert torch.load(path, weights_only=True)["epoch"] == 1  # the raw file: this payload is no full run's
assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "the disk is full; the previous checkpoint is intact" in result.stdout


def test_config_file_sets_defaults_and_flags_override(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("epochs: 2\nflops-reduction: 0.3\nschedule: oneshot\n")
    out = tmp_path / "configured"
    compress("prune", "--config", str(config), *TINY, "--epochs", "1", "--max-prune-epoch", "1", "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["schedule"] == "oneshot" and summary["flops_reduction_target"] == 0.3


def test_toml_config_and_unknown_keys(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('schedule = "dense"\nepochs = 1\n')
    out = tmp_path / "toml"
    compress("prune", "--config", str(config), *TINY, "--epochs", "1", "--max-prune-epoch", "1", "--out", str(out))
    assert json.loads((out / "summary.json").read_text())["schedule"] == "dense"
    config.write_text("no_such_option = 3\n")
    result = compress("prune", "--config", str(config), "--out", str(tmp_path / "x"), check=False)
    one_error_line(result, 2, "--config", f"{config} sets unknown options: no_such_option")


def test_every_place_names_the_prune_epoch_alike(tmp_path):
    """Epochs are numbered from 1 in the console, its reason, metrics.jsonl, summary.json and the
    checkpoint: a 2-epoch run capped at epoch 1 says epoch 1 everywhere."""
    out = tmp_path / "numbered"
    result = compress("prune", *SYNTHETIC, "--model", "resnet20", "--batch-size", "64", "--epochs", "2",
                      "--monitor-start", "1", "--max-prune-epoch", "1", "--no-progress", "--out", str(out))
    console = result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    pruned = [r["epoch"] for r in metrics(out) if r["pruned"]]
    said = {int(n) for n in re.findall(r"pruned after epoch (\d+)", console)}
    capped = {int(n) for n in re.findall(r"cap \(epoch (\d+)\)", console + summary["prune_shocks"][0]["reason"])}
    assert said == capped == {1} and pruned == [1] and summary["prune_epoch"] == 1
    assert summary["prune_epochs"] == [1] and summary["prune_shocks"][0]["epoch"] == 1
    assert re.search(r"^epoch 1/2 .* pruned$", console, re.M) and checkpoint_epoch(out) == 2

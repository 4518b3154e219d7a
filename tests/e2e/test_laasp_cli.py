"""``compress prune --schedule laasp`` end to end: chunks of loss-aware steps with
recovery epochs between them, the step log, resume across a pruning step, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from compressor.cli import main
from compressor.runfiles.modelfile import load_pruned
from tests.cli_runs import AFTER_CHECKPOINT, BEFORE_CHECKPOINT, compress, kill_at_checkpoint, metrics


# Chunks at the ends of epochs 1 and 3: 1 + 2 recovery epochs = 3 is the last
# chunk (3 + 2 would pass the last-but-one epoch), then epoch 4 fine-tunes.
LAASP = [
    "--model", "resnet20", "--dataset", "synthetic", "--synthetic-train", "128", "--synthetic-val", "64", "--batch-size", "64",
    "--epochs", "5", "--schedule", "laasp", "--prune-epoch", "2", "--recover-epochs", "2",
    "--recover-macs", "0.2", "--laasp-step", "0.1", "--selection-samples", "16", "--flops-reduction", "0.4",
    "--no-progress",
]




def comparable(records: list[dict]) -> list[tuple]:
    return [(r["epoch"], r["train_loss"], r["val_top1"], r["macs"], r["pruned"]) for r in records]


def steps(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "laasp_steps.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "laasp"
    compress("prune", *LAASP, "--out", str(out))
    return out


def test_laasp_prunes_in_chunks_with_recovery_epochs_and_writes_its_step_log(finished):
    for name in ("summary.json", "metrics.jsonl", "plan.json", "run.png", "model.pt", "laasp_steps.jsonl"):
        assert (finished / name).stat().st_size > 0, name
    summary = json.loads((finished / "summary.json").read_text())
    assert summary["schedule"] == "laasp" and summary["prune_epochs"] == [2, 4]
    assert 0.4 <= summary["macs_reduction"] <= 0.405
    records = metrics(finished)
    assert [r["epoch"] for r in records if r["pruned"]] == [2, 4]
    macs = [r["macs"] for r in records]  # after the epoch's prune, if any
    assert summary["dense_macs"] == macs[0] > macs[1] == macs[2] > macs[3] == macs[4] == summary["pruned_macs"]
    log = steps(finished)
    assert summary["laasp_steps"] == len(log) and sum(summary["criterion_wins"].values()) == len(log)
    assert [s["chunk"] for s in log] == sorted(s["chunk"] for s in log) and {s["chunk"] for s in log} == {0, 1}
    for step in log:
        losses = [c["loss"] for c in step["evaluated"] if c["loss"] is not None]  # None: stopped, cannot win
        assert step["loss"] == min(losses)  # the winner is the argmin of what was evaluated
        assert all(c["loss_at_least"] > step["loss"] for c in step["evaluated"] if c["loss"] is None)
        assert step["criterion"] in step["criteria"] and step["criterion"] in ("l1", "l2", "euclidean", "cosine")
    chunk0 = [s for s in log if s["chunk"] == 0]
    assert chunk0[-1]["macs_reduction"] >= 0.2 and all(s["epoch"] == 2 for s in chunk0)
    assert log[-1]["macs_reduction"] == pytest.approx(summary["macs_reduction"])


@pytest.mark.parametrize(
    "epoch,when",
    [
        (3, AFTER_CHECKPOINT),  # in the recovery after the first chunk; the resume runs the second
        (2, BEFORE_CHECKPOINT),  # the first chunk pruned and logged, not checkpointed: redo the chunk
    ],
    ids=["after-epoch-3-checkpoint", "between-chunk-epoch-metrics-and-checkpoint"],
)
def test_killed_laasp_run_resumes_across_a_pruning_step(finished, tmp_path, epoch, when):
    out = tmp_path / "killed"
    kill_at_checkpoint(LAASP, out, epoch, when)
    compress("prune", "--resume", str(out))
    assert comparable(metrics(out)) == comparable(metrics(finished))
    assert [(s["group"], s["criterion"], s["removed"]) for s in steps(out)] == [
        (s["group"], s["criterion"], s["removed"]) for s in steps(finished)
    ]
    summary, uninterrupted = (json.loads((d / "summary.json").read_text()) for d in (out, finished))
    assert summary["dense_macs"] == uninterrupted["dense_macs"] and summary["prune_epochs"] == [2, 4]
    resumed, _, _ = load_pruned(out / "model.pt")
    reference, _, _ = load_pruned(finished / "model.pt")
    for (name, a), b in zip(resumed.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "args,message",
    [
        (["--criteria-pool", ""], "--criteria-pool is empty"),
        (["--criteria-pool", "l1,fpgm"], "unknown criterion 'fpgm'"),
        (["--selection-samples", "500"], "larger than the training set (128 images)"),
        (["--prune-epoch", "6"], "--prune-epoch 6 is outside the run's epochs 1..5"),
    ],
)
def test_bad_laasp_input_is_one_clear_line(tmp_path, args, message):
    """In-process (click's runner): each case fails before any training."""
    result = CliRunner().invoke(main, ["prune", *LAASP, "--out", str(tmp_path / "bad"), *args])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output and not (tmp_path / "bad" / "metrics.jsonl").exists()

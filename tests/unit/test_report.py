"""Run artifacts: the per-epoch log survives kills and resumes, the summary is
written atomically, and the plot renders for short and unmonitored runs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from compressor.errors import CompressorError
from compressor.training.report import EpochRecord, MetricsLog, format_epoch_line, plot_run, write_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def record(epoch: int, *, pruned: bool = False, stability: float | None = 0.99) -> EpochRecord:
    return EpochRecord(
        epoch=epoch,
        train_loss=2.0 / (epoch + 1),
        train_top1=10.0 + 5 * epoch,
        val_loss=2.1 / (epoch + 1),
        val_top1=9.0 + 5 * epoch,
        lr=0.1 / (epoch + 1),
        stability=stability,
        reg_lambda=2e-4 if epoch < 3 else 0.0,
        macs=40_000_000 if epoch < 3 else 20_300_000,
        params=1_000_000,
        pruned=pruned,
        epoch_time_s=12.3,
        search_time_s=1.5 if pruned else 0.0,
        images_per_s=4000.0,
    )


def run(epochs: int = 6, prune_at: int = 3) -> list[EpochRecord]:
    return [record(e, pruned=e == prune_at, stability=None if e == 0 else 0.99 + e / 1000) for e in range(epochs)]


def test_append_read_round_trip(tmp_path: Path):
    path = tmp_path / "out" / "metrics.jsonl"
    log = MetricsLog(path)
    for r in run():
        log.append(r)
    assert MetricsLog.read(path) == run()
    assert len(path.read_text().splitlines()) == 6


def test_read_skips_truncated_last_line(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    log.append(record(0))
    log.append(record(1))
    with path.open("a") as stream:
        stream.write(json.dumps(record(2).to_dict())[:40])
    assert MetricsLog.read(path) == [record(0), record(1)]


def test_append_after_kill_drops_the_fragment(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    log.append(record(0))
    with path.open("a") as stream:
        stream.write('{"epoch": 1, "train_lo')
    log.append(record(1))
    assert MetricsLog.read(path) == [record(0), record(1)]


def test_read_rejects_a_broken_middle_line(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(record(0).to_dict()) + "\nnot json\n" + json.dumps(record(1).to_dict()) + "\n")
    with pytest.raises(CompressorError, match="line 2"):
        MetricsLog.read(path)


def test_truncate_after_keeps_epochs_up_to_k(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for r in run():
        log.append(r)
    log.truncate_after(2)
    assert [r.epoch for r in MetricsLog.read(path)] == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]
    log.append(record(3))
    assert [r.epoch for r in MetricsLog.read(path)] == [0, 1, 2, 3]


def test_write_summary_is_valid_json_and_leaves_no_temp_file(tmp_path: Path):
    path = tmp_path / "summary.json"
    path.write_text("old")
    summary = {"val_top1": 71.5, "macs": 20_300_000, "stability": None, "epochs": [1, 2]}
    write_summary(path, summary)
    assert json.loads(path.read_text()) == summary
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


@pytest.mark.parametrize(
    "records",
    [
        pytest.param(run(), id="normal"),
        pytest.param([record(0)], id="one-record"),
        pytest.param([replace(r, stability=None) for r in run()], id="no-stability"),
        pytest.param(run(prune_at=-1), id="no-prune"),
    ],
)
def test_plot_run_writes_a_png(tmp_path: Path, records: list[EpochRecord]):
    path = plot_run(records, tmp_path / "run.png", title="resnet18 cifar10 50%")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000



def _stability_lines(monkeypatch) -> list[float]:
    """The y of every horizontal line plot_run draws (the stability threshold, then ε)."""
    from matplotlib.axes import Axes

    drawn, original = [], Axes.axhline
    monkeypatch.setattr(Axes, "axhline", lambda self, y=0, *a, **k: (drawn.append(y), original(self, y, *a, **k))[1])
    return drawn


def test_plot_run_draws_the_threshold_it_is_given(tmp_path: Path, monkeypatch):
    drawn = _stability_lines(monkeypatch)
    plot_run(run(), tmp_path / "a.png", "t", threshold=0.95, indicator="jaccard")
    plot_run(run(), tmp_path / "b.png", "t", threshold=0.983, indicator="epi")
    plot_run([replace(r, stability=None) for r in run()], tmp_path / "c.png", "t", threshold=0.9)  # nothing measured
    plot_run(run(), tmp_path / "d.png", "t")  # no threshold: no line
    assert drawn == [0.95, 0.983]


@pytest.mark.parametrize(
    "overrides,threshold,indicator,epsilon",
    [
        ({"schedule": "ocs", "stability_threshold": 0.95}, 0.95, "jaccard", 0.01),
        ({"schedule": "ocs", "indicator": "epi", "epi_threshold": 0.9, "reg_target": 0.03}, 0.9, "epi", 0.03),
        ({"schedule": "epi", "epi_threshold": 0.97, "stability_threshold": 0.5}, 0.97, "epi", None),
    ],
)
def test_run_png_shows_the_runs_own_threshold(tmp_path: Path, monkeypatch, overrides, threshold, indicator, epsilon):
    """--stability-threshold and --indicator/--schedule epi reach run.png; the pruner stops at
    the same value (one rule: PruneConfig.indicator_threshold).  ocs runs also draw their
    --reg-target beside the selected channels' norm; epi does not shrink, so draws none."""
    from compressor.schedules.onecycle import PruneConfig
    from compressor.training import run as run_module
    from compressor.data.datasets import DataConfig
    from compressor.training.loop import TrainConfig

    seen = {}
    original = run_module.plot_run
    monkeypatch.setattr(run_module, "plot_run", lambda *a, **k: (seen.update(k), original(*a, **k))[1])
    drawn = _stability_lines(monkeypatch)
    data = DataConfig(dataset="synthetic", synthetic_train=16, synthetic_val=8, batch_size=16, augment=False)
    train = TrainConfig(epochs=2, lr=1e-3, device="cpu", progress=False)
    prune = PruneConfig(epochs=2, monitor_start=1, max_prune_epoch=2, flops_reduction=0.3, **overrides)
    run_module.run_prune(run_module.RunSpec("resnet20", tmp_path / "out", data, train, prune))
    assert (seen["threshold"], seen["indicator"]) == (threshold, indicator)
    assert drawn == [threshold] + ([epsilon] if epsilon else [])
    assert (tmp_path / "out" / "run.png").read_bytes().startswith(PNG_MAGIC)

def test_format_epoch_line():
    line = format_epoch_line(record(2, stability=0.987), total_epochs=10)
    assert line.startswith("epoch 2/10  ")  # a record holds the epoch as printed, numbered from 1
    assert "top1 20.0%" in line and "val 19.0%" in line
    assert "J 0.987" in line and "λ 2e-04" in line and "MACs 40.0M" in line and line.endswith("12.3 s")
    assert "J -" in format_epoch_line(record(0, stability=None), 10)
    assert format_epoch_line(record(3, pruned=True), 10).endswith("pruned")

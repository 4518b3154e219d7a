"""Equal-budget comparison of the pruning schedules on the built-in synthetic data.

Every schedule gets the same epochs, data, optimizer and LR schedule; each run is
one ``compress prune`` process.  Reports final-epoch top-1 (mean ± std over seeds),
the achieved MACs reduction, and wall time, plus the training cost of ``ocs``
relative to ``dense`` at the same epochs.

    python -m benchmarks.schedule_comparison --models resnet20 resnet56 --seeds 0 1 2 \
        --out benchmarks/results/schedule_comparison

``--schedules laasp --merge`` runs only those rows and merges them into the
existing results (same model/schedule/seed rows are replaced, the rest kept).
``--laasp-options`` adds flags to the ``laasp`` runs only (its step size and
selection subset trade selection time for fidelity).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from compressor.schedules.registry import schedule_names


def run(model: str, schedule: str, seed: int, args, workdir: Path) -> dict:
    out = workdir / f"{model}-{schedule}-{seed}"
    command = [
        sys.executable, "-m", "compressor", "prune", "--model", model, "--schedule", schedule, "--seed", str(seed),
        "--epochs", str(args.epochs), "--dataset", "synthetic", "--synthetic-train", str(args.train), "--synthetic-val", str(args.val),
        "--flops-reduction", str(args.reduction), "--out", str(out), "--no-progress",
    ]
    if schedule == "laasp":
        command += args.laasp_options.split()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    print(f"{model:<10} {schedule:<12} seed {seed}: top-1 {summary['top1']:.2f}%  "
          f"-{summary['macs_reduction']:.1%} MACs  {summary['wall_time_s']:.0f} s", flush=True)
    return summary


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(rows: list[dict], models: list[str], args) -> str:
    lines = [
        "| model | schedule | top-1 % (final epoch) | best top-1 % | MACs reduction | prune epoch | wall time s | time / dense |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in models:
        dense_runs = [r["wall_time_s"] for r in rows if r["model"] == model and r["schedule"] == "dense"]
        dense_time = statistics.mean(dense_runs) if dense_runs else float("nan")
        for schedule in schedule_names():
            runs = [r for r in rows if r["model"] == model and r["schedule"] == schedule]
            if not runs:
                continue
            wall = statistics.mean(r["wall_time_s"] for r in runs)
            epochs = sorted({r["prune_epoch"] for r in runs if r["prune_epoch"] is not None})
            lines.append(
                f"| {model} | {schedule} | {_mean_std([r['top1'] for r in runs])} | "
                f"{_mean_std([r['best_top1'] for r in runs])} | "
                f"{statistics.mean(r['macs_reduction'] for r in runs):.1%} | {', '.join(map(str, epochs)) or '-'} | "
                f"{wall:.0f} | {wall / dense_time:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument("--schedules", nargs="+", default=list(schedule_names()))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--val", type=int, default=1000)
    parser.add_argument("--reduction", type=float, default=0.5)
    parser.add_argument("--out", default="benchmarks/results/schedule_comparison")
    parser.add_argument("--laasp-options", default="", help="extra `compress prune` flags for laasp runs")
    parser.add_argument("--merge", action="store_true", help="merge into the existing results instead of replacing them")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for model in args.models:
            for seed in args.seeds:
                for schedule in args.schedules:
                    rows.append(run(model, schedule, seed, args, Path(workdir)))
                    _write(rows, args)  # a stopped sweep keeps what it measured


def _write(rows: list[dict], args) -> None:
    if args.merge:
        return _merge(rows, args)
    models = [m for m in args.models if any(r["model"] == m for r in rows)]
    header = (
        f"# Equal-budget schedule comparison on `synthetic`\n\n"
        f"{args.epochs} epochs, {args.train} training / {args.val} validation images, batch 128, SGD Nesterov "
        f"lr 0.1 step schedule, target {args.reduction:.0%} MACs, seeds {', '.join(map(str, args.seeds))}. "
        f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}.\n\n"
        f"Command: `python -m benchmarks.schedule_comparison --models {' '.join(args.models)} "
        f"--seeds {' '.join(map(str, args.seeds))} --epochs {args.epochs} --train {args.train} --val {args.val}`\n\n"
    )
    text = header + table(rows, models, args) + "\n"
    Path(f"{args.out}.md").write_text(text)
    Path(f"{args.out}.json").write_text(json.dumps(rows, indent=1))


def _merge(rows: list[dict], args) -> None:
    """Replace the re-run (model, schedule, seed) rows in the saved results and the
    table in the markdown; the header and notes written by hand stay."""
    json_path, md_path = Path(f"{args.out}.json"), Path(f"{args.out}.md")
    fresh = {(r["model"], r["schedule"], r["seed"]) for r in rows}
    kept = [r for r in json.loads(json_path.read_text()) if (r["model"], r["schedule"], r["seed"]) not in fresh]
    merged = kept + rows
    json_path.write_text(json.dumps(merged, indent=1))
    models = list(dict.fromkeys(r["model"] for r in merged))
    lines = md_path.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    last = max(i for i, line in enumerate(lines) if line.startswith("|"))
    command = (
        f"Rows {', '.join(args.schedules)}: `python -m benchmarks.schedule_comparison --models {' '.join(args.models)} "
        f"--schedules {' '.join(args.schedules)} --seeds {' '.join(map(str, args.seeds))} --epochs {args.epochs} "
        f"--train {args.train} --val {args.val} --laasp-options '{args.laasp_options}' --merge`"
    )
    head = [line for line in lines[:first] if not line.startswith(f"Rows {', '.join(args.schedules)}:")]
    while head and not head[-1].strip():
        head.pop()
    text = head + ["", command, ""] + table(merged, models, args).splitlines() + lines[last + 1:]
    md_path.write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()

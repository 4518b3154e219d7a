"""Prune shock and final top-1 of every schedule at an equal budget, on the built-in data.

The one-cycle method promises that by the prune the selected channels are shrunk so
far that slicing them costs (almost) nothing.  This sweep measures that promise: each
row is one ``compress prune`` process; the shock is validation top-1 right before
minus right after the slice (``prune_shocks`` in summary.json), with no training
between.  ``ocs`` runs the default target shrink, ``ocs-fixed`` the authors' constant
schedule (``--reg-schedule fixed``).

    python -m benchmarks.prune_shock --models resnet20 --reductions 0.5 0.8 --seeds 0 \\
        --epochs 30 --train 512 --val 256 --batch-size 32 --out benchmarks/results/prune_shock_30ep

Rows are written after every run, so a sweep stopped early keeps what it measured.
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

VARIANTS = {  # row name -> compress prune flags
    "ocs": ["--schedule", "ocs"],
    "ocs-fixed": ["--schedule", "ocs", "--reg-schedule", "fixed"],
    "dense": ["--schedule", "dense"],
    "oneshot": ["--schedule", "oneshot"],
    "three-stage": ["--schedule", "three-stage"],
    "epi": ["--schedule", "epi"],
    "gradual": ["--schedule", "gradual"],
    "laasp": ["--schedule", "laasp"],
}


def run(model: str, variant: str, reduction: float, seed: int, args, workdir: Path) -> dict:
    out = workdir / f"{model}-{variant}-{reduction}-{seed}"
    command = [
        sys.executable, "-m", "compressor", "prune", "--model", model, *VARIANTS[variant], "--seed", str(seed),
        "--epochs", str(args.epochs), "--dataset", "synthetic", "--synthetic-train", str(args.train), "--synthetic-val", str(args.val),
        "--batch-size", str(args.batch_size), "--flops-reduction", str(reduction), "--out", str(out), "--no-progress",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    shocks = summary.get("prune_shocks") or []
    row = {
        "model": model, "variant": variant, "reduction": reduction, "seed": seed,
        "top1": summary["top1"], "best_top1": summary["best_top1"], "macs_reduction": summary["macs_reduction"],
        "prune_epoch": summary.get("prune_epoch"), "wall_time_s": summary["wall_time_s"],
        # The largest single-prune drop (gradual and laasp prune several times).
        "shock_pp": max((s["top1_before"] - s["top1_after"] for s in shocks), default=None),
        "shocks": shocks,
    }
    shock = "-" if row["shock_pp"] is None else f"{row['shock_pp']:+.1f} pp"
    print(f"{model:<9} {variant:<11} {reduction:.0%} seed {seed}: top-1 {row['top1']:.2f}%  shock {shock}  "
          f"-{row['macs_reduction']:.1%} MACs  {row['wall_time_s']:.0f} s", flush=True)
    return row


def _mean_std(values: list[float], unit: str = "") -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}{unit}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}{unit}"


def table(rows: list[dict]) -> str:
    lines = [
        "| model | MACs target | schedule | seeds | prune shock (top-1 before − after) | final top-1 % | best top-1 % | MACs reduction | prune epoch(s) | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = dict.fromkeys((r["model"], r["reduction"], r["variant"]) for r in rows)
    for model, reduction, variant in keys:
        runs = [r for r in rows if (r["model"], r["reduction"], r["variant"]) == (model, reduction, variant)]
        shocks = [r["shock_pp"] for r in runs if r["shock_pp"] is not None]
        epochs = sorted({s["epoch"] + 1 for r in runs for s in r["shocks"]})
        lines.append(
            f"| {model} | {reduction:.0%} | {variant} | {len(runs)} | {_mean_std(shocks, ' pp')} | "
            f"{_mean_std([r['top1'] for r in runs])} | {_mean_std([r['best_top1'] for r in runs])} | "
            f"{statistics.mean(r['macs_reduction'] for r in runs):.1%} | {', '.join(map(str, epochs)) or '-'} | "
            f"{statistics.mean(r['wall_time_s'] for r in runs):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--reductions", nargs="+", type=float, default=[0.5, 0.8])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--val", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", default="benchmarks/results/prune_shock_30ep")
    parser.add_argument("--append", action="store_true", help="add these rows to the saved ones (same settings)")
    args = parser.parse_args()
    saved = Path(f"{args.out}.json")
    rows: list[dict] = json.loads(saved.read_text()) if args.append and saved.exists() else []
    args.commands = _commands(args)
    with tempfile.TemporaryDirectory() as workdir:
        for seed in args.seeds:
            for model in args.models:
                for reduction in args.reductions:
                    for variant in args.variants:
                        if variant == "dense" and reduction != args.reductions[0]:
                            continue  # dense does not depend on the target
                        rows.append(run(model, variant, reduction, seed, args, Path(workdir)))
                        _write(rows, args)


def _commands(args) -> list[str]:
    """Every command that wrote rows into this file, this one last."""
    saved = Path(f"{args.out}.md")
    earlier = []
    if args.append and saved.exists():
        earlier = [line[len("Command: "):] for line in saved.read_text().splitlines() if line.startswith("Command: ")]
    this = (
        f"`python -m benchmarks.prune_shock --models {' '.join(args.models)} --variants {' '.join(args.variants)} "
        f"--reductions {' '.join(map(str, args.reductions))} --seeds {' '.join(map(str, args.seeds))} "
        f"--epochs {args.epochs} --train {args.train} --val {args.val} --batch-size {args.batch_size} --out {args.out}"
        f"{' --append' if args.append else ''}`"
    )
    return earlier + [this]


def _write(rows: list[dict], args) -> None:
    header = (
        "# Prune shock and final top-1 at an equal budget, on `synthetic`\n\n"
        f"{args.epochs} epochs, {args.train} training / {args.val} validation images, batch {args.batch_size}, "
        f"SGD Nesterov lr 0.1 step schedule, random init. CPU {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}.\n\n"
        + "".join(f"Command: {command}\n" for command in args.commands) + "\n"
    )
    Path(f"{args.out}.md").write_text(header + table(rows) + "\n")
    Path(f"{args.out}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

"""Prune shock, final top-1 and the validation curve of every schedule at an equal budget.

The one-cycle method promises that by the prune the selected channels are shrunk so
far that slicing them costs (almost) nothing.  This sweep measures that promise: each
row is one ``compress prune`` process; the shock is validation top-1 right before
minus right after the slice (``prune_shocks`` in summary.json), with no training
between.  ``ocs`` runs the default target shrink, ``ocs-fixed`` the authors' constant
schedule (``--reg-schedule fixed``).  Each row also keeps the run's eval-mode
validation curve; the table gives, for each shrinking schedule, its largest drop below
the same-seed ``dense`` run while it shrank after the first LR drop.

On the shipped digits (real images; the default) with the 60-epoch recipe::

    python -m benchmarks.prune_shock --models resnet20 --reductions 0.5 0.8 --seeds 0 1 2 --epochs 60 \\
        --batch-size 64 --recipe "--reg-start 11 --max-prune-epoch 36 --monitor-start 2 --max-prune-fraction 0.9" \\
        --jobs 2 --out benchmarks/results/schedules_digits_60ep

``--dataset synthetic --train N --val N`` gives the generated set of any size (which a model
barely learns: it cannot rank schedules).  Rows are written after every run, a row's seeds one after another, so a sweep
stopped early keeps what it measured; ``--append`` then skips the runs already saved.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import shlex
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
        "--epochs", str(args.epochs), *_data_flags(args), "--batch-size", str(args.batch_size),
        "--flops-reduction", str(reduction), *shlex.split(args.recipe), "--out", str(out), "--no-progress",
    ]
    # One thread a run: two runs side by side on two cores, not four threads fighting over them.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    shocks = summary.get("prune_shocks") or []
    row = {
        "model": model, "variant": variant, "reduction": reduction, "seed": seed,
        "top1": summary["top1"], "best_top1": summary["best_top1"], "macs_reduction": summary["macs_reduction"],
        "prune_epoch": summary.get("prune_epoch"), "wall_time_s": summary["wall_time_s"],
        "search_time_s": summary.get("search_time_s"),  # of the wall time, in the structure search (laasp's steps)
        # The largest single-prune drop (gradual and laasp prune several times).
        "shock_pp": max((s["top1_before"] - s["top1_after"] for s in shocks), default=None),
        "shocks": shocks,
        "val_curve": [line["val_top1"] for line in metrics],
        "lr_curve": [line["lr"] for line in metrics],
        "shrinking": [line.get("selected_norm") is not None and not line["pruned"] for line in metrics],
        "epochs_from": 1,
    }
    shock = "-" if row["shock_pp"] is None else f"{row['shock_pp']:+.1f} pp"
    print(f"{model:<9} {variant:<11} {reduction:.0%} seed {seed}: top-1 {row['top1']:.2f}%  shock {shock}  "
          f"-{row['macs_reduction']:.1%} MACs  {row['wall_time_s']:.0f} s", flush=True)
    return row


def numbered_from_one(row: dict) -> dict:
    """A saved row in today's epoch numbering (from 1): rows written before it (no
    ``epochs_from``) counted the prune epoch and the shocks' epochs from 0."""
    if row.get("epochs_from") == 1:
        return row
    shift = lambda epoch: None if epoch is None else epoch + 1  # noqa: E731
    shocks = [{**shock, "epoch": shift(shock["epoch"])} for shock in row.get("shocks", [])]
    return {**row, "prune_epoch": shift(row.get("prune_epoch")), "shocks": shocks, "epochs_from": 1}


def _data_flags(args) -> list[str]:
    if args.dataset == "synthetic":
        return ["--dataset", "synthetic", "--synthetic-train", str(args.train), "--synthetic-val", str(args.val)]
    return ["--dataset", args.dataset]


def shrink_gap(row: dict, dense: dict | None) -> float | None:
    """The largest drop (pp) of ``row``'s validation top-1 below the same-seed dense run's, over
    the epochs it shrank after the first LR drop (None: it never shrank there, or no dense run)."""
    if dense is None or not row.get("shrinking"):
        return None
    first_drop = next((e for e, lr in enumerate(row["lr_curve"]) if lr < row["lr_curve"][0]), None)
    epochs = [e for e, on in enumerate(row["shrinking"]) if on and first_drop is not None and e >= first_drop]
    if not epochs:
        return None
    return max(dense["val_curve"][e] - row["val_curve"][e] for e in epochs)


def _dense_of(row: dict, rows: list[dict]) -> dict | None:
    return next((r for r in rows if r["variant"] == "dense" and (r["model"], r["seed"]) == (row["model"], row["seed"])
                 and "val_curve" in r), None)


def _mean_std(values: list[float], unit: str = "") -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}{unit}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}{unit}"


def table(rows: list[dict]) -> str:
    lines = [
        "| model | MACs target | schedule | seeds | prune shock (top-1 before − after) | final top-1 % | best top-1 % "
        "| worst val gap to dense while shrinking (pp) | lowest val while shrinking % | MACs reduction | prune epoch(s) "
        "| wall s (search s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted(dict.fromkeys((r["model"], r["reduction"], r["variant"]) for r in rows),
                  key=lambda k: (k[0], k[1], list(VARIANTS).index(k[2])))
    for model, reduction, variant in keys:
        runs = [r for r in rows if (r["model"], r["reduction"], r["variant"]) == (model, reduction, variant)]
        shocks = [r["shock_pp"] for r in runs if r["shock_pp"] is not None]
        gaps = [g for g in (shrink_gap(r, _dense_of(r, rows)) for r in runs) if g is not None]
        lowest = [min(v for v, on in zip(r["val_curve"], r["shrinking"]) if on)
                  for r in runs if any(r.get("shrinking") or [])]
        epochs = sorted({s["epoch"] for r in runs for s in r["shocks"]})
        lines.append(
            f"| {model} | {reduction:.0%} | {variant} | {len(runs)} | {_mean_std(shocks, ' pp')} | "
            f"{_mean_std([r['top1'] for r in runs])} | {_mean_std([r['best_top1'] for r in runs])} | "
            f"{_mean_std(gaps)}{f' (max {max(gaps):.1f})' if gaps else ''} | {_mean_std(lowest)} | "
            f"{statistics.mean(r['macs_reduction'] for r in runs):.1%} | {', '.join(map(str, epochs)) or '-'} | "
            f"{statistics.mean(r['wall_time_s'] for r in runs):.0f}{_search(runs)} |"
        )
    return "\n".join(lines)


def _search(runs: list[dict]) -> str:
    """The mean search seconds where a run searched for more than a second (laasp), else nothing."""
    searched = [r.get("search_time_s") or 0.0 for r in runs]
    return f" ({statistics.mean(searched):.0f})" if max(searched) > 1.0 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--reductions", nargs="+", type=float, default=[0.5, 0.8])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--dataset", choices=["digits", "synthetic"], default="digits")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--train", type=int, default=2000, help="synthetic: training images")
    parser.add_argument("--val", type=int, default=1000, help="synthetic: validation images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--recipe", default="", help="further compress prune flags, the same for every run")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (one thread each)")
    parser.add_argument("--out", default="benchmarks/results/schedules_digits_60ep")
    parser.add_argument("--append", action="store_true", help="add these rows to the saved ones (same settings); runs already saved are skipped")
    args = parser.parse_args()
    saved = Path(f"{args.out}.json")
    rows = [numbered_from_one(row) for row in json.loads(saved.read_text())] if args.append and saved.exists() else []
    args.commands = _commands(args)
    todo = _todo(args, done={(r["model"], r["variant"], r["reduction"], r["seed"]) for r in rows})
    with tempfile.TemporaryDirectory() as workdir, concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run, model, variant, reduction, seed, args, Path(workdir))
                   for model, variant, reduction, seed in todo]
        for future in concurrent.futures.as_completed(futures):
            rows.append(future.result())
            _write(rows, args)


def _todo(args, done: set[tuple]) -> list[tuple]:
    """The runs to make, a row's seeds one after another so that a sweep stopped early
    leaves whole rows; runs already saved (with --append) are not made again."""
    todo = [(model, variant, reduction, seed) for model in args.models for reduction in args.reductions
            for variant in args.variants for seed in args.seeds
            if variant != "dense" or reduction == args.reductions[0]]  # dense does not depend on the target
    return [run for run in todo if run not in done]


def _commands(args) -> list[str]:
    """Every command that wrote rows into this file, this one last."""
    saved = Path(f"{args.out}.md")
    earlier = []
    if args.append and saved.exists():
        earlier = [line[len("Command: "):] for line in saved.read_text().splitlines() if line.startswith("Command: ")]
    data = f"--dataset {args.dataset}" + (f" --train {args.train} --val {args.val}" if args.dataset == "synthetic" else "")
    this = (
        f"`python -m benchmarks.prune_shock --models {' '.join(args.models)} --variants {' '.join(args.variants)} "
        f"--reductions {' '.join(map(str, args.reductions))} --seeds {' '.join(map(str, args.seeds))} "
        f"--epochs {args.epochs} {data} --batch-size {args.batch_size}"
        f"{f' --recipe {shlex.quote(args.recipe)}' if args.recipe else ''} --jobs {args.jobs} --out {args.out}"
        f"{' --append' if args.append else ''}`"
    )
    return earlier + [this]


def _write(rows: list[dict], args) -> None:
    sizes = (f"{args.train} training / {args.val} validation images" if args.dataset == "synthetic"
             else "1,500 training / 297 validation images")
    header = (
        f"# Prune shock, final top-1 and the shrink's validation curve at an equal budget, on `{args.dataset}`\n\n"
        f"{args.epochs} epochs, {sizes}, batch {args.batch_size}, SGD Nesterov lr 0.1 step schedule "
        f"(x0.2 at 30/60/80/90 %), random init{f', {args.recipe}' if args.recipe else ''}. "
        f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores), one thread a run, "
        f"{args.jobs} run(s) side by side, torch {torch.__version__}.\n\n"
        + "".join(f"Command: {command}\n" for command in args.commands) + "\n"
    )
    Path(f"{args.out}.md").write_text(header + table(rows) + "\n")
    Path(f"{args.out}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

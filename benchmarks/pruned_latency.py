"""Measured speed-up of models pruned to half their MACs, against the dense model.

For each model: random init, a 50 %-MACs plan (L2 ranking, channels rounded to
``--round-to``; ``auto`` measures what ONNX Runtime on this CPU rewards), then
``compress bench``'s timing (dense and pruned interleaved) through ONNX Runtime
and PyTorch at batch 1 and 32.  The whole benchmark runs ``--repeats`` times in a
row and reports every run, so run-to-run agreement is visible.  Latency does not
depend on the weights' values, so random init measures the deployed shapes.

    python -m benchmarks.pruned_latency --out benchmarks/results/pruned_latency_cpu
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from compressor.bench.bench import BenchConfig, run_bench
from compressor.bench.rounding import SweepConfig, auto_round_to
from compressor.bench.stats import relative_difference
from compressor.bench.subjects import model_pair
from compressor.bench.timing import TimingConfig
from compressor import SelectionConfig, prune_once
from compressor.atomic import atomic_write_text
from compressor.models import build_model, get_entry

MODELS = ("resnet56", "mobilenetv2_cifar", "resnet50")


def pruned_copy(name: str, reduction: float, round_to: int | None):
    entry = get_entry(name)
    torch.manual_seed(0)
    dense = build_model(name, num_classes=entry.num_classes).eval()
    pruned = build_model(name, num_classes=entry.num_classes).eval()
    pruned.load_state_dict(dense.state_dict())
    example = torch.zeros(1, *entry.input_size)
    return dense, prune_once(pruned, example, SelectionConfig(reduction, round_to)).model, tuple(entry.input_size)


def resolve_round_to(text: str) -> tuple[int, dict | None]:
    if text != "auto":
        return int(text), None
    choice, cached = auto_round_to(SweepConfig(backend="onnxruntime", device="cpu"))
    print(choice.table(), "(cached)" if cached else "", flush=True)
    return choice.multiple, choice.to_dict()


def agreement(runs: list[dict]) -> list[dict]:
    """Per (model, backend, batch): medians of every run and their largest relative gap."""
    keyed = {}
    for index, run in enumerate(runs):
        for record in run["records"]:
            key = (record["model"], record["backend"], record["precision"], record["batch_size"])
            keyed.setdefault(key, []).append(record)
    rows = []
    for (model, backend, precision, batch), records in keyed.items():
        medians = [r["median_ms"] for r in records]
        rows.append({
            "model": model, "backend": backend, "precision": precision, "batch_size": batch,
            "median_ms": medians,
            "speedup": [r.get("speedup") for r in records],
            "efficiency": [r.get("efficiency") for r in records],
            "macs_ratio": records[0].get("macs_ratio"),
            "max_relative_gap": max(relative_difference(a, b) for a in medians for b in medians),
        })
    return rows


def markdown(report: dict) -> str:
    env = report["runs"][0]["environment"]
    lines = [
        "# Measured speed-up of 50 %-MACs pruned models (CPU)", "",
        f"Command: `{report['command']}`", "",
        f"Machine: {env['cpu']} ({', '.join(env['cpu_flags'])}), {env['usable_cores']} usable cores, "
        f"{report['runs'][0]['config']['threads']} threads; torch {env['versions']['torch']}, "
        f"onnxruntime {env['versions']['onnxruntime']}; Python {env['python']}.", "",
        f"Plans: L2 ranking at 50 % MACs, channels rounded to {report['round_to']} "
        f"({'measured by --round-to auto' if report['round_to_choice'] else 'given'}), random init. "
        f"{len(report['runs'])} consecutive runs of the same benchmark; each cell times dense and pruned "
        "interleaved in 5 rounds.", "",
        "| model | backend | batch | dense median ms | pruned median ms | speed-up | MACs ratio | efficiency | run-to-run gap |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = report["agreement"]
    for row in rows:
        if row["speedup"][0] is None:
            continue
        dense = next(r for r in rows if r["backend"] == row["backend"] and r["batch_size"] == row["batch_size"]
                     and r["model"] == row["model"].replace(" pruned", " dense"))
        gap = max(row["max_relative_gap"], dense["max_relative_gap"])
        fmt = lambda values, spec: " / ".join(format(v, spec) for v in values)  # noqa: E731
        lines.append(
            f"| {row['model'].replace(' pruned', '')} | {row['backend']} | {row['batch_size']} | {fmt(dense['median_ms'], '.2f')} | "
            f"{fmt(row['median_ms'], '.2f')} | {fmt(row['speedup'], '.2f')} | {row['macs_ratio']:.2f} | "
            f"{fmt(row['efficiency'], '.2f')} | {100 * gap:.1f} % |"
        )
    lines += ["", "Values separated by / are the consecutive runs. Efficiency = speed-up / MACs ratio; "
              "run-to-run gap = largest relative difference between the runs' medians (dense or pruned)."]
    if report["round_to_choice"]:
        choice = report["round_to_choice"]
        lines += ["", "## --round-to auto (ONNX Runtime, this CPU)", "", "| multiple | mean efficiency of its widths |",
                  "|---|---|"]
        lines += [f"| {m} | {s:.2f} |" for m, s in choice["scores"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--backends", default="onnxruntime,torch")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--round-to", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, help="CPU threads for both runtimes [default: every usable core]")
    parser.add_argument("--min-runs", type=int, default=10)
    parser.add_argument("--min-time-s", type=float, default=3.0)
    parser.add_argument("--out", default="benchmarks/results/pruned_latency_cpu")
    args = parser.parse_args()
    round_to, choice = resolve_round_to(args.round_to)
    timing = TimingConfig(warmup_s=1.0, warmup_runs=3, min_runs=args.min_runs, min_time_s=args.min_time_s, rounds=5)
    config = BenchConfig(tuple(args.backends.split(",")), "cpu", tuple(int(b) for b in args.batch_sizes.split(",")),
                         ("fp32",), args.threads, timing)
    report = {"command": "python -m benchmarks.pruned_latency " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items()),
        "round_to": round_to, "round_to_choice": choice, "runs": []}
    with tempfile.TemporaryDirectory(prefix="pruned-latency-") as scratch:
        groups = []
        for name in args.models:
            dense, pruned, size = pruned_copy(name, 0.5, round_to)
            groups.append(model_pair(name, dense, pruned, size, Path(scratch) / name))
        for repeat in range(args.repeats):
            started = time.perf_counter()
            result = run_bench(groups, config, on_cell=lambda label: print("  " + label, flush=True))
            print(f"run {repeat + 1}: {time.perf_counter() - started:.0f} s", flush=True)
            report["runs"].append(result.to_dict())
            report["agreement"] = agreement(report["runs"])
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=1))
            atomic_write_text(out.with_suffix(".md"), markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()

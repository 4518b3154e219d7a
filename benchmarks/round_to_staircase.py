"""How latency steps with channel count, per backend: the evidence behind --round-to auto.

1. A width sweep of one 3x3 convolution (w -> w channels, w = 32..64, batch 16,
   16x16), every width interleaved in the same timing rounds, through each backend.
   Per multiple m: the mean efficiency of the widths that are multiples of m, and
   the multiple ``--round-to auto`` picks from it.
2. Whole models pruned to half their MACs with channels rounded to 1, 4, 8, 16 and
   32 (same ranking), timed interleaved with the dense model: the efficiency
   (speed-up / MACs ratio) each rounding actually buys.

    python -m benchmarks.round_to_staircase --out benchmarks/results/round_to_cpu
"""
from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from compressor.bench.bench import BenchConfig, run_bench
from compressor.bench.environment import describe
from compressor.bench.rounding import SweepConfig, choose, efficiency, sweep
from compressor.bench.subjects import Group, Subject
from compressor.bench.timing import TimingConfig
from benchmarks.pruned_latency import pruned_copy
from compressor.atomic import atomic_write_text
from compressor.errors import CompressorError
from compressor.engine.flops import count_macs, count_params

ROUNDINGS = (1, 4, 8, 16, 32)


def conv_sweeps(backends: list[str], scratch: Path) -> dict:
    results = {}
    for backend in backends:
        config = SweepConfig(backend=backend, device="cpu",
                             timing=TimingConfig(warmup_s=0.2, warmup_runs=5, min_runs=30, min_time_s=0.6, rounds=5))
        latency = sweep(config, scratch / backend)
        multiple, scores = choose(latency, config.tolerance)
        results[backend] = {"latency_ms": latency, "scores": scores, "chosen": multiple, "config": asdict(config)}
        print(f"{backend}: round-to auto -> {multiple}; scores {({m: round(s, 3) for m, s in scores.items()})}", flush=True)
    return results


def rounding_group(name: str, scratch: Path) -> Group:
    subjects = []
    for round_to in ROUNDINGS:
        try:
            dense, pruned, size = pruned_copy(name, 0.5, round_to)
        except CompressorError as error:  # a multiple this coarse may not reach 50 %
            print(f"{name} round-to {round_to}: {error}", flush=True)
            continue
        if not subjects:
            example = torch.zeros(1, *size)
            subjects.append(Subject(f"{name} dense", "dense", size, count_macs(dense, example), count_params(dense),
                                    dense, scratch))
        example = torch.zeros(1, *size)
        subjects.append(Subject(f"{name} round-to {round_to}", "pruned", size, count_macs(pruned, example),
                                count_params(pruned), pruned, scratch))
    return Group(name, subjects)


def model_table(models: list[str], backends: list[str], batch_sizes: tuple[int, ...], scratch: Path) -> dict:
    timing = TimingConfig(warmup_s=1.0, warmup_runs=3, min_runs=10, min_time_s=2.0, rounds=5)
    config = BenchConfig(tuple(backends), "cpu", batch_sizes, ("fp32",), None, timing)
    groups = [rounding_group(name, scratch / name) for name in models]
    return run_bench(groups, config, on_cell=lambda label: print("  " + label, flush=True)).to_dict()


def plot(sweeps: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(sweeps), figsize=(6 * len(sweeps), 4), squeeze=False)
    for axis, (backend, data) in zip(axes[0], sweeps.items()):
        widths = sorted(data["latency_ms"])
        latency = [data["latency_ms"][w] for w in widths]
        top = widths[-1]
        axis.plot(widths, latency, "o-", ms=3, label="measured")
        axis.plot(widths, [data["latency_ms"][top] * (w / top) ** 2 for w in widths], "--", label="MACs-proportional")
        eights = [w for w in widths if w % 8 == 0]
        axis.plot(eights, [data["latency_ms"][w] for w in eights], "s", ms=6, mfc="none", label="multiples of 8")
        axis.set_xlabel("channels in and out (3x3 conv, batch 16, 16x16)")
        axis.set_ylabel("median latency (ms)")
        axis.set_title(f"{backend}: auto picks {data['chosen']}")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = ["# Channel-count staircase and --round-to auto (CPU)", "", f"Command: `{report['command']}`", "",
             f"Machine: {env['cpu']} ({', '.join(env['cpu_flags'])}), {env['usable_cores']} usable cores; "
             f"torch {env['versions']['torch']}, onnxruntime {env['versions']['onnxruntime']}.", "",
             "## 1. One 3x3 convolution, w -> w channels (batch 16, 16x16)", "",
             "Efficiency of a width = (w/64)^2 / (t(w)/t(64)). Score of a multiple = mean efficiency of its widths "
             "below 64; auto picks the smallest multiple within 3 % of the best score.", "",
             "| backend | " + " | ".join(f"m={m}" for m in next(iter(report["sweeps"].values()))["scores"]) + " | auto picks |",
             "|---|" + "---|" * (len(next(iter(report["sweeps"].values()))["scores"]) + 1)]
    for backend, data in report["sweeps"].items():
        lines.append(f"| {backend} | " + " | ".join(f"{s:.2f}" for s in data["scores"].values()) + f" | {data['chosen']} |")
    lines += ["", "Median latency (ms) per width:", "", "| width | " + " | ".join(report["sweeps"]) + " |",
              "|---|" + "---|" * len(report["sweeps"])]
    widths = sorted(next(iter(report["sweeps"].values()))["latency_ms"])
    for w in widths:
        cells = []
        for data in report["sweeps"].values():
            cells.append(f"{data['latency_ms'][w]:.3f} (eff {efficiency(data['latency_ms'], w):.2f})")
        lines.append(f"| {w}{' *' if w % 8 == 0 else ''} | " + " | ".join(cells) + " |")
    lines += ["", "## 2. Whole models at 50 % MACs, by rounding", "",
              "| model | backend | batch | round-to | MACs ratio | median ms | speed-up | efficiency |", "|---|---|---|---|---|---|---|---|"]
    for record in report["models"]["records"]:
        round_to = record["model"].split("round-to ")[-1] if "round-to" in record["model"] else "dense"
        name = record["model"].split(" ")[0]
        ratio = f"{record['macs_ratio']:.2f}" if record.get("macs_ratio") else "1.00"
        speed = f"{record['speedup']:.2f}" if record.get("speedup") else ""
        eff = f"{record['efficiency']:.2f}" if record.get("efficiency") else ""
        lines.append(f"| {name} | {record['backend']} | {record['batch_size']} | {round_to} | {ratio} | "
                     f"{record['median_ms']:.2f} | {speed} | {eff} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="onnxruntime,torch")
    parser.add_argument("--models", nargs="+", default=["resnet56", "mobilenetv2_cifar"])
    parser.add_argument("--batch-sizes", default="32")
    parser.add_argument("--out", default="benchmarks/results/round_to_cpu")
    args = parser.parse_args()
    backends = args.backends.split(",")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"command": f"python -m benchmarks.round_to_staircase --backends {args.backends} --models "
                         f"{' '.join(args.models)} --batch-sizes {args.batch_sizes} --out {args.out}",
              "environment": describe(None)}
    with tempfile.TemporaryDirectory(prefix="round-to-") as scratch:
        report["sweeps"] = conv_sweeps(backends, Path(scratch))
        plot(report["sweeps"], out.with_suffix(".png"))
        report["models"] = model_table(args.models, backends, tuple(int(b) for b in args.batch_sizes.split(",")),
                                       Path(scratch))
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=1))
    atomic_write_text(out.with_suffix(".md"), markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()

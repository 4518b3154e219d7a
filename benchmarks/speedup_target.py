"""Requested vs measured speed-up of ``--speedup`` plans, on ONNX Runtime's CPU provider.

For each model and deploy batch: the latency table ``compress prune --speedup`` measures
(timed here, every time: its cost is one of the goals), then for each target X the plan
the engine picks under that latency budget (L2 ranking, as ``compress info --speedup``),
and dense vs pruned timed as ``compress bench`` times them (interleaved rounds, median).
Beside each speed-up plan, the MACs-budgeted plan with the same MACs reduction is timed in
the same rounds: at equal MACs, which one does the runtime reward.  Each deploy precision
(fp32, int8: the uint8-activation QDQ form ONNX Runtime's CPU provider runs, quantized as
``compress bench --precision int8`` quantizes) has its own table, plans and timings.

Random init throughout: latency does not depend on the weights' values.  Accuracy at
equal latency needs trained runs and is not measured here.

    python -m benchmarks.speedup_target --out benchmarks/results/speedup_target_cpu
"""
from __future__ import annotations

import argparse
import sys
import copy
import json
import tempfile
import time
from pathlib import Path

import torch

from compressor import SelectionConfig, prune_once
from compressor.atomic import atomic_write_text
from compressor.bench.bench import BenchConfig, run_bench
from compressor.bench.environment import describe, usable_cores
from compressor.bench.latency import DeployTarget, latency_table
from compressor.bench.subjects import Group, model_pair
from compressor.engine.analysis.graph import analyse
from compressor.engine.latency import LatencyModel
from compressor.engine.plan import kept_class_mask
from compressor.engine.selection import UnreachableSpeedupError
from compressor.models import build_model, get_entry

TOLERANCE = 0.10  # the goal: measured within 10 % of the request


def dense_model(name: str):
    entry = get_entry(name)
    torch.manual_seed(0)
    return build_model(name, num_classes=entry.num_classes).eval(), tuple(entry.input_size)


def plans_for(model, input_size, latency: LatencyModel, target: float, max_prune_fraction: float):
    """The latency-budgeted plan for ``target`` and the MACs plan of the same MACs reduction."""
    example = torch.zeros(1, *input_size)
    fast = prune_once(copy.deepcopy(model), example,
                      SelectionConfig(max_prune_fraction=max_prune_fraction, speedup=target), latency=latency)
    reduction = 1.0 - fast.predicted_macs / fast.dense_macs
    macs = prune_once(copy.deepcopy(model), example, SelectionConfig(reduction, max_prune_fraction=max_prune_fraction))
    return fast, macs, reduction


def time_cell(model, input_size, fast, macs, batch: int, precision: str, threads: int | None, scratch: Path) -> dict:
    """Dense, the speed-up plan and the MACs plan in the same interleaved rounds."""
    group = model_pair("m", model, fast.model, input_size, scratch, pruned_label="speedup-plan")
    twin = model_pair("m", model, macs.model, input_size, scratch, pruned_label="macs-plan")
    group = Group("m", [*group.subjects, twin.subjects[1]])
    result = run_bench([group], BenchConfig(backends=("onnxruntime",), device="cpu", batch_sizes=(batch,),
                                            precisions=(precision,), threads=threads))
    cells = {}
    for record in result.records:
        cells.setdefault(record["precision"], {})[record["model"].split(" ", 1)[1]] = record["median_ms"]
    return cells


def measure(name: str, batch: int, precision: str, targets: tuple[float, ...], threads: int | None,
            max_prune_fraction: float) -> list[dict]:
    model, input_size = dense_model(name)
    target = DeployTarget("onnxruntime", "cpu", precision, batch, threads)
    started = time.perf_counter()
    table, _ = latency_table(model, input_size, target, max_prune_fraction=max_prune_fraction, refresh=True)
    table_s = time.perf_counter() - started
    latency = LatencyModel(analyse(model, torch.zeros(1, *input_size)), table)
    print(f"{name} {precision} b{batch}: table of {len(table.layers)} layers in {table_s:.1f} s, dense {table.dense_ms:.3f} ms",
          flush=True)
    rows = []
    for x in targets:
        row = {"model": name, "precision": precision, "batch_size": batch, "max_prune_fraction": max_prune_fraction,
               "requested": x, "table_s": table_s}
        try:
            fast, macs, reduction = plans_for(model, input_size, latency, x, max_prune_fraction)
        except UnreachableSpeedupError as error:
            rows.append({**row, "unreachable": str(error)})
            print(f"  {x}x: {error}", flush=True)
            continue
        with tempfile.TemporaryDirectory(prefix="speedup-target-") as scratch:
            ms = time_cell(model, input_size, fast, macs, batch, precision, threads, Path(scratch))[precision]
        row.update(predicted=latency.speedup(kept_class_mask(fast.graph, fast.plan)), macs_reduction=reduction, ms=ms,
                   measured=ms["dense"] / ms["speedup-plan"], macs_plan=ms["dense"] / ms["macs-plan"])
        row["within_tolerance"] = abs(row["measured"] / x - 1.0) <= TOLERANCE
        rows.append(row)
        print(f"  {x}x: predicted {row['predicted']:.2f}x, measured {row['measured']:.2f}x, same-MACs plan "
              f"{row['macs_plan']:.2f}x", flush=True)
    return rows


def markdown(data: dict) -> str:
    env = data["environment"]
    lines = [
        "# `--speedup X`: requested vs measured, ONNX Runtime CPU", "",
        f"CPU {env['cpu']} ({env['threads']} thread(s)), torch {env['versions'].get('torch')}, onnxruntime "
        f"{env['versions'].get('onnxruntime')}, Python {env['python']}. Random init; the latency table measured "
        "at each deploy precision and batch, each plan chosen under that table's latency budget (L2 ranking, "
        "per-group cap `cap`), then dense, the speed-up plan and the MACs plan of the same MACs reduction timed "
        f"together as `compress bench` times them (median). Goal: measured within ±{TOLERANCE:.0%} of the request.",
        "", *[f"Command: `{command}`" for command in data["commands"]], "",
        "| model | precision | batch | cap | asked | predicted | measured | within ±10 % | MACs removed "
        "| same-MACs plan, measured | dense ms | table s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        head = f"| {r['model']} | {r['precision']} | {r['batch_size']} | {r['max_prune_fraction']} | {r['requested']:.1f}x"
        if "unreachable" in r:
            best = r["unreachable"].split("the best reachable is ")[-1].split(" ")[0]
            lines.append(f"{head} | unreachable (best {best}) | | | | | | {r['table_s']:.0f} |")
            continue
        lines.append(f"{head} | {r['predicted']:.2f}x | {r['measured']:.2f}x | {'yes' if r['within_tolerance'] else 'no'} "
                     f"| {r['macs_reduction']:.1%} | {r['macs_plan']:.2f}x | {r['ms']['dense']:.3f} | {r['table_s']:.0f} |")
    return "\n".join(lines) + "\n"


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,resnet56")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--targets", default="1.5,2,3")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--max-prune-fraction", type=float, default=0.75, help="per-group cap, as compress prune's")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: every usable core)")
    parser.add_argument("--out", type=Path, required=True, help="results stem: writes OUT.json and OUT.md")
    parser.add_argument("--append", action="store_true", help="add these rows to OUT.json's (same machine)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    targets = tuple(float(t) for t in args.targets.split(","))
    rows = []
    for name in args.models.split(","):
        for precision in args.precisions.split(","):
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                rows += measure(name, batch, precision, targets, args.threads, args.max_prune_fraction)
    saved = json.loads(args.out.with_suffix(".json").read_text()) if args.append else {"commands": [], "rows": []}
    command = "python -m benchmarks.speedup_target " + " ".join(sys.argv[1:] if argv is None else argv)
    data = {"environment": describe(args.threads or usable_cores()), "commands": [*saved["commands"], command],
            "tolerance": TOLERANCE, "rows": [*saved["rows"], *rows]}
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(data, indent=1, default=str))
    atomic_write_text(args.out.with_suffix(".md"), markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()

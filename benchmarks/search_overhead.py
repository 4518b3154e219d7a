"""Cost of the per-epoch structure search, as a fraction of an epoch.

Ours: score channels, bisect the global threshold with MACs predicted analytically,
update the stability indicator.  Naive (what the method's authors' code does): the
same bisection, but every probe deep-copies the model, physically prunes the copy
and counts its MACs with FlopCounterMode, stopping at |target - achieved| <= 5e-4.

    python -m benchmarks.search_overhead --models resnet20 resnet56 --out benchmarks/results/search_overhead
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from compressor import CostModel, GroupPlan, PruningPlan, analyse, apply_plan, count_macs
from compressor.data.datasets import DataConfig, load_data
from compressor.engine.importance import score_channels
from compressor.engine.selection import SelectionConfig, select_plan
from compressor.schedules.stability import JaccardIndicator
from compressor.models import build_model


def time_epoch(model, data, steps: int) -> float:
    """Seconds per training epoch, extrapolated from ``steps`` timed SGD steps."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    batches = data.train_batches(0)
    next(batches)  # warm-up step outside the timing
    started = time.perf_counter()
    for _, (images, labels) in zip(range(steps), batches):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    per_step = (time.perf_counter() - started) / steps
    return per_step * data.batches_per_epoch()


def ours(model, graph, cost, indicator, target: float) -> float:
    started = time.perf_counter()
    scores = score_channels("ocs", graph, model)
    plan = select_plan(graph, cost, scores, SelectionConfig(target))
    indicator.update(plan)
    return time.perf_counter() - started


def naive(model, graph, example, target: float, tolerance: float = 5e-4) -> tuple[float, int]:
    """Bisection over the sorted scores with a deep copy + prune + count per probe."""
    started = time.perf_counter()
    scores = score_channels("ocs", graph, model)
    ordered = np.sort(np.concatenate([scores[g.classes] for g in graph.groups]))
    low, high, probes = 0, ordered.size - 1, 0
    dense = graph.dense_macs
    while low < high:
        mid = (low + high) // 2
        plan = _plan_at(graph, scores, ordered[mid])
        copy_ = apply_plan(copy.deepcopy(model), graph, plan)
        achieved = 1 - count_macs(copy_, example) / dense
        probes += 1
        if abs(achieved - target) <= tolerance:
            break
        if achieved < target:
            low = mid + 1
        else:
            high = mid
    return time.perf_counter() - started, probes


def _plan_at(graph, scores, threshold: float) -> PruningPlan:
    groups = {}
    for group in graph.groups:
        values = scores[group.classes]
        floor = max(1, int(np.ceil(group.size * 0.25)))  # the 0.75 cap
        keep = max(floor, int((values > threshold).sum()))
        order = np.argsort(-values, kind="stable")[:keep]
        groups[group.name] = GroupPlan(group.size, tuple(sorted(order.tolist())))
    return PruningPlan(groups)


def measure(name: str, repeats: int, steps: int, train_images: int) -> dict:
    torch.manual_seed(0)
    data = load_data(DataConfig(dataset="synthetic", synthetic_train=train_images, synthetic_val=128))
    model = build_model(name)
    example = torch.zeros(1, 3, 32, 32)
    epoch_s = time_epoch(model, data, steps)
    graph = analyse(model, example)
    cost = CostModel(graph, model)
    indicator = JaccardIndicator()
    ours_s = statistics.median(ours(model, graph, cost, indicator, 0.5) for _ in range(repeats))
    naive_runs = [naive(model, graph, example, 0.5) for _ in range(max(1, repeats // 3))]
    naive_s = statistics.median(r[0] for r in naive_runs)
    return {
        "model": name,
        "train_images": train_images,
        "epoch_s": epoch_s,
        "search_s": ours_s,
        "search_fraction_of_epoch": ours_s / epoch_s,
        "naive_search_s": naive_s,
        "naive_probes": naive_runs[0][1],
        "naive_fraction_of_epoch": naive_s / epoch_s,
        "speedup_vs_naive": naive_s / ours_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument("--train-images", type=int, default=50000, help="epoch size the fraction refers to (CIFAR: 50000)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per model")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", default="benchmarks/results/search_overhead")
    args = parser.parse_args()
    rows = [measure(name, args.repeats, args.steps, args.train_images) for name in args.models]
    header = (
        f"# Structure-search overhead per epoch\n\nCPU: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}. Epoch = {args.train_images} images, batch 128 "
        f"(time extrapolated from {args.steps} steps). Target 50 % MACs.\n\n"
        "| model | epoch s | our search s | % of epoch | naive search s | naive probes | naive % of epoch | speed-up |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['model']} | {r['epoch_s']:.1f} | {r['search_s']:.3f} | {100 * r['search_fraction_of_epoch']:.4f} % | "
        f"{r['naive_search_s']:.2f} | {r['naive_probes']} | {100 * r['naive_fraction_of_epoch']:.3f} % | "
        f"{r['speedup_vs_naive']:.0f}x |"
        for r in rows
    ]
    with open(f"{args.out}.md", "w") as handle:
        handle.write(header + "\n".join(lines) + "\n\nCommand: `python -m benchmarks.search_overhead`\n")
    with open(f"{args.out}.json", "w") as handle:
        json.dump(rows, handle, indent=1)
    print(header + "\n".join(lines))


if __name__ == "__main__":
    main()

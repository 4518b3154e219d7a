"""Time of LAASP's loss-aware selection, per step of a chunk, by way of evaluating the candidates.

Four ways, each its own ``Selector`` from the same model, images and settings, run
back to back in one process:

* ``whole``: every (group, criterion) candidate runs the whole subset through the
  whole model (``MaskedEvaluator(reuse_prefix=False, early_exit=False)``), the
  exhaustive reference;
* ``prefix``: the layers before the first one a candidate touches run once per
  step (``early_exit=False``), the default before issue 29;
* ``default``: prefix reuse, and each candidate stops once its running loss sum
  exceeds the best completed total (exact: the same choices);
* ``shortlist``: a first-order (Taylor) estimate keeps the K most promising
  candidates, which ``default`` then evaluates (approximate).

Each runs ``--steps`` steps of one chunk; the table gives seconds per step, the
speed-ups, and whether the (group, criterion) choices and the chunk's plan match
``whole``'s.  Then ``default`` runs one whole chunk (``--chunk-macs`` of the MACs,
as ``--recover-macs`` does in a run) for its seconds per chunk.

``--train-epochs`` first trains the model on the training split, so the losses are
those of a network at a prune point (a laasp run's first chunk comes after a third
of its epochs, at 97-99 % here).  From random init a few candidates have huge
losses and stop at once, which flatters early exit; after 2 epochs (the default
before issue 29's second round) the eval-mode network is at chance, which no prune
point is.

    python -m benchmarks.laasp_step --models resnet20,resnet56 --samples 256 --steps 3 --train-epochs 8
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compressor import CostModel, analyse
from compressor.choices import POOL_CRITERIA as LAASP_CRITERIA
from compressor.data.datasets import DataConfig, load_data
from compressor.engine.verify import make_informative
from compressor.models import build_model
from compressor.schedules.laasp import GroupLimits, MaskedEvaluator, Selector, StepSettings
from compressor.schedules.laasp_eval import SLICES

MODES = {  # name: (reuse_prefix, early_exit, shortlist)
    "whole": (False, False, False),
    "prefix": (True, False, False),
    "default": (True, True, False),
    "shortlist": (True, True, True),
}


def trained(name: str, data, epochs: int):
    """``name`` from a seeded init, BN statistics randomised, then ``epochs`` of SGD."""
    torch.manual_seed(0)
    model = make_informative(build_model(name, num_classes=data.num_classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    for epoch in range(epochs):
        for inputs, targets in data.train_batches(epoch):
            optimizer.zero_grad()
            F.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
    return model.eval()


def run_mode(mode: str, model, graph, cost, limits, batches, args) -> dict:
    reuse, early, short = MODES[mode]
    settings = StepSettings(LAASP_CRITERIA, target=0.5, step=args.step, shortlist=args.shortlist if short else None)
    started = time.perf_counter()
    evaluator = MaskedEvaluator(model, graph, batches, None, reuse, early)
    selector = Selector(model, graph, cost, graph.dense_macs, limits, evaluator, settings)
    setup_s = time.perf_counter() - started
    steps, times = [], []
    for _ in range(args.steps):
        started = time.perf_counter()
        step = selector.step()
        times.append(time.perf_counter() - started)
        steps.append(step)
    return {
        "setup_s": setup_s,  # once per chunk: moving the subset, filters, and the trace and its check
        "step_s": times,
        "mean_step_s": float(np.mean(times)),
        "batch_passes": evaluator.forwards,
        "choices": [[s["group"], s["criterion"]] for s in steps],
        "stopped_early": sum(e["loss"] is None for s in steps for e in s["evaluated"]),
        "evaluated": sum(len(s["evaluated"]) for s in steps),
        "candidates": [s["candidates"] for s in steps],
        "losses": [s["loss"] for s in steps],
        "plan": {name: list(group.kept) for name, group in selector.plan().groups.items()},
    }


def one_model(name: str, args) -> dict:
    data = load_data(DataConfig(dataset="digits", batch_size=args.batch_size))
    batches = data.selection_batches(args.samples)
    model = trained(name, data, args.train_epochs)
    graph = analyse(model, torch.zeros(1, *data.input_size))
    cost = CostModel(graph, model)
    limits = {g.name: GroupLimits.of(g.size, None, 0.75, 1) for g in graph.groups}
    with torch.no_grad():
        model(batches[0][0])  # warm-up, untimed
    record = {"model": name, "groups": len(graph.groups)}
    for mode in args.modes.split(","):
        record[mode] = run_mode(mode, model, graph, cost, limits, batches, args)
        print(f"{name} {mode}: {record[mode]['mean_step_s']:.2f} s/step", file=sys.stderr, flush=True)
    reference = record["whole"]
    for mode in args.modes.split(","):
        row = record[mode]
        same = [a == b for a, b in zip(row["choices"], reference["choices"])]
        row["same_choices"] = float(np.mean(same))
        row["same_plan"] = row["plan"] == reference["plan"]
        row["plan_channels_differing"] = sum(
            len(set(row["plan"][g]) ^ set(reference["plan"][g])) for g in reference["plan"]
        )
        row["speedup_vs_whole"] = reference["mean_step_s"] / row["mean_step_s"]
        if "prefix" in record:
            row["speedup_vs_prefix"] = record["prefix"]["mean_step_s"] / row["mean_step_s"]
    for mode in args.modes.split(","):
        del record[mode]["plan"]  # compared above; too long to keep in the report
    if args.chunk_macs > 0:
        record["chunk"] = run_chunk(model, graph, cost, limits, batches, args)
        print(f"{name} chunk: {record['chunk']['seconds']:.1f} s, {record['chunk']['steps']} steps", file=sys.stderr)
    record["accuracy"] = _accuracy(model, batches)
    return record


def run_chunk(model, graph, cost, limits, batches, args) -> dict:
    """One chunk of the default evaluation from the dense model, as a run's first chunk."""
    settings = StepSettings(LAASP_CRITERIA, target=0.5, step=args.step)
    started = time.perf_counter()
    evaluator = MaskedEvaluator(model, graph, batches)
    selector = Selector(model, graph, cost, graph.dense_macs, limits, evaluator, settings)
    steps = selector.run(args.chunk_macs)
    return {"seconds": time.perf_counter() - started, "steps": len(steps), "reduction": selector.reduction()}


def _accuracy(model, batches) -> float:
    """Eval-mode top-1 on the selection images: how trained the network the steps start from is."""
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches)
    return correct / sum(len(y) for _, y in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet20,resnet56")
    parser.add_argument("--modes", default=",".join(MODES), help="'whole' first: the others are compared with it")
    parser.add_argument("--samples", type=int, default=256, help="selection images (a run's --selection-samples)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--step", type=float, default=0.01)
    parser.add_argument("--steps", type=int, default=3, help="steps of one chunk, per mode")
    parser.add_argument("--shortlist", type=int, default=8)
    parser.add_argument("--train-epochs", type=int, default=8)
    parser.add_argument("--chunk-macs", type=float, default=0.1, help="one chunk of `default` (0: none)")
    parser.add_argument("--out", default="benchmarks/results/laasp_step")
    args = parser.parse_args()
    rows = [one_model(name, args) for name in args.models.split(",")]
    report = {
        "samples": args.samples, "batch_size": args.batch_size, "step_macs": args.step, "steps": args.steps,
        "shortlist": args.shortlist, "train_epochs": args.train_epochs, "chunk_macs": args.chunk_macs,
        "criteria": list(LAASP_CRITERIA), "command": "python -m benchmarks.laasp_step " + " ".join(sys.argv[1:]),
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(), "device": "cpu", "torch": torch.__version__,
        "python": platform.python_version(), "rows": rows,
    }
    text = json.dumps(report, indent=1)
    Path(f"{args.out}.json").write_text(text + "\n")
    Path(f"{args.out}.md").write_text(_markdown(report, args))
    sys.stdout.write(_markdown(report, args))


def _markdown(r: dict, args) -> str:
    lines = [
        "# LAASP selection: seconds per step of a chunk, by way of evaluating the candidates\n",
        f"{r['samples']} selection images of the shipped `digits` set (batches of {r['batch_size']}), the model "
        f"trained {r['train_epochs']} epoch(s) from a seeded init (eval-mode top-1 on those images: "
        + ", ".join(f"{row['model']} {row['accuracy']:.1%}" for row in r["rows"] if "accuracy" in row)
        + f"), {r['steps']} steps of ≈ {r['step_macs']:.0%} of "
        f"the MACs each from the dense model, criteria {', '.join(r['criteria'])}, shortlist K = {r['shortlist']}. "
        f"CPU {r['cpu']} ({r['cores']} cores shared with other jobs; load average at the end "
        f"{r['load_average'][0]:.1f}), {r['threads']} torch thread(s), torch {r['torch']}, Python {r['python']}.\n",
        "| model | candidates/step | mode | s/step | vs whole | vs prefix | stopped early | same choices as whole "
        "| same plan | channels differing |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        for mode in MODES:
            if mode not in row:
                continue
            m = row[mode]
            lines.append(
                f"| {row['model']} | {m['candidates'][0]} | {mode} | {m['mean_step_s']:.2f} | "
                f"{m['speedup_vs_whole']:.1f}x | "
                + (f"{m['speedup_vs_prefix']:.1f}x" if "speedup_vs_prefix" in m else "-") + " | "
                f"{m['stopped_early']} of {m['evaluated']} | {m['same_choices']:.0%} | {m['same_plan']} | "
                f"{m['plan_channels_differing']} |"
            )
    chunks = [row for row in r["rows"] if "chunk" in row and "whole" in row]
    if chunks:
        lines += [
            "",
            f"One chunk of `default` from the dense model ({r['chunk_macs']:.0%} of the MACs, a run's "
            "`--recover-macs`), against `whole` at its mean step time for as many steps (projected, not run):",
            "",
            "| model | steps | default s/chunk | whole s/chunk (projected) | vs whole |",
            "|---|---|---|---|---|",
        ]
        for row in chunks:
            chunk, whole = row["chunk"], row["whole"]["mean_step_s"] * row["chunk"]["steps"]
            lines.append(f"| {row['model']} | {chunk['steps']} | {chunk['seconds']:.1f} | {whole:.0f} | "
                         f"{whole / chunk['seconds']:.1f}x |")
    lines += [
        "",
        "Modes: `whole` runs every candidate through the whole model on the whole subset (the exhaustive reference); "
        "`prefix` runs the layers before a candidate's first touched layer once per step; `default` adds early exit "
        f"(the subset in slices of about 1/{SLICES}, the images of the highest loss first; a candidate stops once "
        "its running loss sum exceeds the best completed total, which cannot change the argmin because "
        "cross-entropy is never negative); `shortlist` "
        "evaluates only the K candidates with the lowest first-order (Taylor) loss estimate. 'stopped early' counts "
        "candidates that early exit stopped (for `shortlist`: of the K evaluated). 'same choices' is the share of "
        "steps whose (group, criterion) equals `whole`'s at the same step number; a shortlist that differs once "
        "then continues from a different model.",
        "",
        f"Command: `OMP_NUM_THREADS={r['threads']} {r['command']}`",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Time of one LAASP selection step: the whole forward per candidate vs the prefix reused.

Reference (``MaskedEvaluator(reuse_prefix=False)``): every (group, criterion)
candidate zeroes its channels in place and runs the whole selection subset through
the whole model.  Prefix reuse (the default, ``compressor.schedules.prefix_cache``):
the layers before the first one a candidate touches run once per step, and each
candidate runs only the rest.  Both run the same step on the same model and
images; the script checks that they evaluate the same candidates to the same
losses (within float rounding) and pick the same (group, criterion).

A chunk is a run of such steps, each costing about the same, so the ratio per
step is the ratio per chunk.  (The deep-copy-and-slice comparison of an earlier
version of this script is in git history: masking in place was 1.10x faster.)

    python -m benchmarks.laasp_step --models resnet20,resnet56 --samples 256 --out benchmarks/results/laasp_step
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

from compressor import CostModel, analyse
from compressor.choices import POOL_CRITERIA as LAASP_CRITERIA
from compressor.data.datasets import DataConfig, load_data
from compressor.engine.verify import make_informative
from compressor.models import build_model
from compressor.schedules.laasp import GroupLimits, MaskedEvaluator, Selector, StepSettings

PATHS = {False: "whole", True: "prefix"}


def timed(function, *args):
    started = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - started


def one_step(name: str, args) -> dict:
    """One selection step of ``name`` on both paths, from the same start."""
    data = load_data(DataConfig(dataset="digits", batch_size=args.batch_size))
    batches = data.selection_batches(args.samples)
    torch.manual_seed(0)
    model = make_informative(build_model(name, num_classes=data.num_classes)).eval()  # random BN statistics
    graph = analyse(model, torch.zeros(1, *data.input_size))
    cost = CostModel(graph, model)
    limits = {g.name: GroupLimits.of(g.size, None, 0.75, 1) for g in graph.groups}
    settings = StepSettings(LAASP_CRITERIA, target=0.5, step=args.step)
    with torch.no_grad():
        model(batches[0][0])  # warm-up, untimed
    record = {"model": name, "groups": len(graph.groups)}
    for reuse, path in PATHS.items():
        evaluator, setup_s = timed(MaskedEvaluator, model, graph, batches, None, reuse)
        selector = Selector(model, graph, cost, graph.dense_macs, limits, evaluator, settings)
        step, step_s = timed(selector.step)
        record[path] = {
            "step_s": step_s,
            "setup_s": setup_s,  # once per chunk: moving the subset, and for prefix reuse the trace and its check
            "batch_passes": evaluator.forwards,
            "winner": [step["group"], step["criterion"]],
            "losses": [e["loss"] for e in step["evaluated"]],
        }
    whole, prefix = record["whole"], record["prefix"]
    losses = np.array(whole["losses"])
    record.update(
        candidates=len(losses),
        speedup=whole["step_s"] / prefix["step_s"],
        forward_equivalents=prefix["step_s"] / (whole["step_s"] / (len(losses) + 1)),
        same_winner=whole["winner"] == prefix["winner"],
        winner_margin=float(np.diff(np.sort(losses)[:2])[0]),
        max_loss_diff=float(np.max(np.abs(losses - np.array(prefix["losses"])))),
    )
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet20,resnet56")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--step", type=float, default=0.01)
    parser.add_argument("--out", default="benchmarks/results/laasp_step")
    args = parser.parse_args()
    rows = [one_step(name, args) for name in args.models.split(",")]
    report = {
        "samples": args.samples, "batch_size": args.batch_size, "step_macs": args.step, "criteria": list(LAASP_CRITERIA),
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
        "device": "cpu", "torch": torch.__version__, "python": platform.python_version(), "rows": rows,
    }
    text = json.dumps(report, indent=1)
    sys.stdout.write(text + "\n")
    Path(f"{args.out}.json").write_text(text + "\n")
    Path(f"{args.out}.md").write_text(_markdown(report, args))


def _markdown(r: dict, args) -> str:
    lines = [
        "# One LAASP selection step: the whole forward per candidate vs the prefix reused\n",
        f"Random init with random BN statistics (`make_informative`), {r['samples']} selection images of the shipped "
        f"`digits` set in batches of {r['batch_size']}, one step of ≈ {r['step_macs']:.0%} of the MACs from the dense "
        f"model, criteria {', '.join(r['criteria'])}. CPU {r['cpu']} ({r['cores']} cores shared with other jobs), "
        f"{r['threads']} torch thread(s), torch {r['torch']}, Python {r['python']}.\n",
        "| model | groups | candidates | whole forward s/step | prefix reuse s/step | speed-up | forward-equivalents per step "
        "(was candidates + 1) | prefix setup s/chunk | same winner | winner margin | max loss diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        w, p = row["whole"], row["prefix"]
        lines.append(
            f"| {row['model']} | {row['groups']} | {row['candidates']} | {w['step_s']:.1f} | {p['step_s']:.1f} | "
            f"{row['speedup']:.2f}x | {row['forward_equivalents']:.1f} of {row['candidates'] + 1} | {p['setup_s']:.2f} | "
            f"{row['same_winner']} (`{'`, `'.join(w['winner'])}`) | {row['winner_margin']:.1e} | {row['max_loss_diff']:.1e} |"
        )
    lines += [
        "",
        "Prefix reuse runs, per step, one whole forward (the loss before the step, which also carries the cached "
        "activations forward) plus, per candidate, the network from the first layer its group touches. "
        "What remains is those suffixes: a group inside a block of stage s runs the rest of stage s and every later "
        "stage, a group spanning a residual stage runs from that stage's first producer (for stage 1, the stem: "
        "the whole model). With the groups spread evenly over depth that is about half a forward per candidate, "
        "so the exact path cannot go much past 2x on a ResNet; a further cut needs fewer exact evaluations.",
        "",
        f"Command: `OMP_NUM_THREADS={r['threads']} nice -n 10 python -m benchmarks.laasp_step --models {args.models} "
        f"--samples {r['samples']}`",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

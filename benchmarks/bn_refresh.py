"""How many training batches the BatchNorm refresh needs, and what it costs per epoch.

One ``ocs`` run with the issue's recipe; at every epoch end, before the run's own (refresh-free)
validation, copies of the model are validated with BatchNorm statistics

* as the running averages leave them (``0``: what every validation read before ``--refresh-bn``),
* re-estimated on the epoch's first K training batches, for each K of ``--batches``,
* re-estimated on every batch of the epoch (``all``: the reference).

It measures the first epochs (the running averages still close to their initial 0 and 1), and
every epoch from just before the shrink starts to just after the prune, where the run stops.

Training never reads the statistics, so one run measures every K on the same weights.  Each
re-estimation is timed and set against the epoch's training time (the same process, so the
ratio holds on a loaded machine too).

    python -m benchmarks.bn_refresh --model resnet56 --flops-reduction 0.8 --out benchmarks/results/bn_refresh_digits
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from compressor.epochs import epoch_index, epoch_number
from compressor.training import batchnorm, loop
from compressor.training.run import RunSpec, configs_from_dict, run_prune

# Epoch numbers from 1 (compressor.epochs); the hooks below get the loop's index, from 0.
RECIPE = {"epochs": 60, "batch_size": 64, "reg_start": 11, "max_prune_epoch": 36, "monitor_start": 2,
          "max_prune_fraction": 0.9, "refresh_bn": 0, "progress": False}
ALL = "all"


@torch.no_grad()
def _top1(model, data) -> float:
    model.eval()
    correct = count = 0
    for images, labels in data.val_batches():
        correct += int((model(images).argmax(1) == labels).sum())
        count += len(labels)
    return 100.0 * correct / count


def _measure(trainer: loop.Trainer, epoch: int, choices: list) -> dict:
    """Val top-1 and seconds of the re-estimation for every K, on copies of the model."""
    row = {"epoch": epoch_number(epoch), "shrinking": trainer.pruner._shrinker is not None, "top1": {}, "seconds": {}}
    steps = trainer.data.batches_per_epoch()
    for choice in choices:
        model = copy.deepcopy(trainer.pruner.model)
        count = steps if choice == ALL else int(choice)
        started = time.perf_counter()
        if count:
            batches = itertools.islice(trainer.data.train_batches(epoch), count)
            batchnorm.reestimate(model, (images for images, _ in batches))
        row["seconds"][str(choice)] = time.perf_counter() - started
        row["top1"][str(choice)] = _top1(model, trainer.data)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--flops-reduction", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--out", default="benchmarks/results/bn_refresh_digits")
    args = parser.parse_args()
    torch.set_num_threads(1)
    choices = [0, *args.batches, ALL]
    rows: list[dict] = []
    train_seconds: list[float] = []
    original_refresh = loop.Trainer._refresh_bn
    original_train = loop.Trainer._train_epoch

    def timed_train(self, epoch):
        started = time.perf_counter()
        result = original_train(self, epoch)
        train_seconds.append(time.perf_counter() - started)
        return result

    def measuring_refresh(self, epoch):
        if epoch > epoch_index(RECIPE["max_prune_epoch"]) + 1:  # past the prune the question is answered: stop the run
            raise _Done
        if epoch_index(RECIPE["monitor_start"]) + 2 < epoch < epoch_index(RECIPE["reg_start"]) - 1:  # between the start and the shrink
            return original_refresh(self, epoch)
        rows.append({**_measure(self, epoch, choices), "train_s": train_seconds[-1]})
        print(f"epoch {epoch_number(epoch)}: " + "  ".join(f"{k}: {v:.1f}%" for k, v in rows[-1]["top1"].items()), flush=True)
        _write(rows, args)
        original_refresh(self, epoch)

    loop.Trainer._refresh_bn = measuring_refresh  # a benchmark's probe, not a code path of the tool
    loop.Trainer._train_epoch = timed_train
    settings = {**RECIPE, "dataset": "digits", "flops_reduction": args.flops_reduction, "seed": args.seed}
    data, train, prune = configs_from_dict(settings)
    with tempfile.TemporaryDirectory() as out, contextlib.suppress(_Done):
        run_prune(RunSpec(args.model, Path(out) / "run", data, train, prune))
    _write(rows, args)


class _Done(Exception):
    """Raised from the probe once the epochs after the prune are measured."""


def _summary(rows: list[dict]) -> list[str]:
    choices = list(rows[0]["top1"])
    lines = ["| statistics from | mean \\|gap\\| to `all` while shrinking (pp) | worst gap (pp) | lowest val while shrinking % "
             "| seconds per epoch | share of the epoch's training time |", "|---|---|---|---|---|---|"]
    shrinking = [r for r in rows if r["shrinking"]] or rows
    for choice in choices:
        gaps = [abs(r["top1"][ALL] - r["top1"][choice]) for r in shrinking]
        seconds = [r["seconds"][choice] for r in rows]
        share = statistics.mean(r["seconds"][choice] / r["train_s"] for r in rows)
        name = "running averages (no refresh)" if choice == "0" else ("every batch of the epoch" if choice == ALL
                                                                       else f"first {choice} batch(es)")
        lines.append(f"| {name} | {statistics.mean(gaps):.2f} | {max(gaps):.1f} | "
                     f"{min(r['top1'][choice] for r in shrinking):.1f} | {statistics.mean(seconds):.2f} | {share:.1%} |")
    return lines


def _write(rows: list[dict], args) -> None:
    header = [
        f"# BatchNorm statistics during the shrink: how many batches the refresh needs ({args.model}, digits)", "",
        f"One `ocs` run, {args.model}, digits, -{args.flops_reduction:.0%} MACs, seed {args.seed}, "
        + ", ".join(f"{k} {v}" for k, v in RECIPE.items() if k not in ("refresh_bn", "progress"))
        + f"; one thread; CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores), torch {torch.__version__}. "
        "Each epoch end validates copies of the model; training is the same for all.", "",
        f"Command: `python -m benchmarks.bn_refresh --model {args.model} --flops-reduction {args.flops_reduction} "
        f"--seed {args.seed} --batches {' '.join(map(str, args.batches))} --out {args.out}`", "",
    ]
    epochs = ["", "| epoch | shrinking | " + " | ".join(f"val % ({k})" for k in rows[0]["top1"]) + " |",
              "|---|---|" + "---|" * len(rows[0]["top1"])]
    epochs += [f"| {r['epoch']} | {'yes' if r['shrinking'] else ''} | " + " | ".join(f"{v:.1f}" for v in r["top1"].values())
               + " |" for r in rows]
    Path(f"{args.out}.md").write_text("\n".join(header + _summary(rows) + epochs) + "\n")
    Path(f"{args.out}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

"""One ``compress prune`` run end to end: build or resume, train, write artifacts.

Artifacts in the output directory (keys in design.md): ``summary.json``,
``metrics.jsonl``, ``plan.json``, ``run.png``, ``model.pt`` (the pruned model file),
``checkpoint.pt`` (every epoch) and ``checkpoint-before-prune.pt``; the ``laasp``
schedule adds ``laasp_steps.jsonl``, one line per pruning step (the winning group
and criterion, and every candidate's loss).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from compressor.atomic import atomic_write_text
from compressor.checkpoint import LATEST, load_checkpoint
from compressor.data import DataConfig, load_data
from compressor.errors import CompressorError
from compressor.onecycle import OneCyclePruner, PruneConfig
from compressor.outdir import check_fresh_output, remove_stale_temps  # noqa: F401 - check_fresh_output: API
from compressor.plan import PruningPlan
from compressor.report import MetricsLog, plot_run, write_summary
from compressor.serialization import ModelSpec, rebuild, restored_state, save_pruned
from compressor.training import RunContext, Trainer, TrainConfig, config_dict, distributed_context, make_optimizer, resolve_device
from compressor.zoo import build

CONFIG_TYPES = (DataConfig, TrainConfig, PruneConfig)


@dataclass(frozen=True)
class RunSpec:
    model: str
    out: Path
    data: DataConfig
    train: TrainConfig
    prune: PruneConfig
    weights: str | None = None
    trust_code: bool = False  # a resumed checkpoint's module.path:factory name may be imported


def configs_from_dict(values: dict) -> tuple[DataConfig, TrainConfig, PruneConfig]:
    """Split one flat dict of settings into the three frozen configs."""
    built = []
    for kind in CONFIG_TYPES:
        names = {f.name for f in fields(kind)}
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names}
        built.append(kind(**kwargs))
    return tuple(built)  # type: ignore[return-value]


def conflicts(saved: dict, given: dict) -> list[str]:
    """Settings given now that differ from the run being resumed."""
    differences = []
    for key, value in sorted(given.items()):
        old = saved.get(key)
        normalised = list(value) if isinstance(value, tuple) else value
        if key in saved and old != normalised:
            differences.append(f"{key}: run has {old!r}, given {normalised!r}")
    return differences


def run_prune(spec: RunSpec, resume_payload: dict | None = None) -> dict:
    rank, world_size = distributed_context()
    torch.manual_seed(spec.train.seed)
    data = load_data(spec.data)
    # Built before the model so a too-large subset fails before anything heavy.
    selection = data.selection_batches(spec.prune.selection_samples) if spec.prune.schedule == "laasp" else None
    model_spec = ModelSpec(spec.model, data.num_classes, data.input_size, spec.prune.ignore)
    device = resolve_device(spec.train.device)
    if resume_payload is None:
        model = build(spec.model, data.num_classes, spec.weights, input_size=data.input_size)
    else:
        plans = [PruningPlan.from_dict(p) for p in resume_payload["pruner"]["state"]["applied"]]
        model = rebuild(model_spec, plans, trust_code=spec.trust_code)
        model.load_state_dict(restored_state(resume_payload["model"]))
    model.to(device)
    optimizer = make_optimizer(spec.train, model)
    example = torch.zeros(1, *data.input_size, device=device)
    saved_state = None if resume_payload is None else resume_payload["pruner"]
    pruner = OneCyclePruner(model, example, spec.prune, optimizer, selection_data=selection, state=saved_state)
    context = RunContext(spec.out, rank, world_size)
    if context.writer:
        _clear_for_start(spec.out, fresh=resume_payload is None)
    settings = config_dict(spec.data, spec.train, spec.prune)
    extra = lambda: {"config": settings, "model_name": spec.model, "spec": model_spec.to_dict()}  # noqa: E731
    trainer = Trainer(pruner, optimizer, data, spec.train, context, extra)
    start = 0
    if resume_payload is not None:
        trainer.restore(resume_payload)
        start = int(resume_payload["epoch"]) + 1
        if context.writer:
            MetricsLog(spec.out / "metrics.jsonl").truncate_after(start - 1)
    trainer.run(start)
    if world_size > 1:
        atomic_write_text(spec.out / f"rank{rank}-final.json", json.dumps(trainer.fingerprint()))
    if not context.writer:
        return {}
    return _write_artifacts(spec, model_spec, pruner, trainer)


def _clear_for_start(out: Path, fresh: bool) -> None:
    """Before the first epoch: a killed run's temp files go; a fresh run (an empty --out,
    or --overwrite) starts its own metrics log rather than appending to a file it did not
    write, and unlinks a symlink there instead of writing through it."""
    remove_stale_temps(out)
    if fresh:
        (out / "metrics.jsonl").unlink(missing_ok=True)


def _write_artifacts(spec: RunSpec, model_spec: ModelSpec, pruner: OneCyclePruner, trainer: Trainer) -> dict:
    out = spec.out
    plans = pruner.applied_plans or [PruningPlan.dense(pruner.graph)]
    model_path = save_pruned(out / "model.pt", pruner.model.cpu(), model_spec, plans[-1], plans[:-1])
    atomic_write_text(out / "plan.json", json.dumps([p.to_dict() for p in plans], indent=1))
    records = MetricsLog.read(out / "metrics.jsonl")
    plot_run(records, out / "run.png", f"{spec.model} on {spec.data.dataset}: {spec.prune.schedule}")
    last = records[-1]
    summary = {
        "model": spec.model,
        "dataset": spec.data.dataset,
        "schedule": spec.prune.schedule,
        "criterion": spec.prune.criterion,
        "epochs": spec.train.epochs,
        "flops_reduction_target": spec.prune.flops_reduction,
        "dense_macs": pruner.dense_macs,
        "dense_params": pruner.dense_params,
        "pruned_macs": pruner.macs,
        "pruned_params": pruner.params,
        "macs_reduction": 1 - pruner.macs / pruner.dense_macs,
        "prune_epoch": pruner.prune_epoch,
        "prune_epochs": pruner.state.prune_epochs,
        "top1": last.val_top1,
        "best_top1": trainer.best_top1,
        "wall_time_s": trainer.wall_time_s,
        "search_time_s": sum(r.search_time_s for r in records),
        "model_path": str(model_path),
        "seed": spec.train.seed,
    }
    if spec.prune.schedule == "laasp":
        summary.update(_write_laasp_steps(out, pruner.schedule.steps))
    write_summary(out / "summary.json", summary)
    return summary


def _write_laasp_steps(out: Path, steps: list[dict]) -> dict:
    """The log of which (group, criterion) won each step; counts go into the summary."""
    atomic_write_text(out / "laasp_steps.jsonl", "".join(json.dumps(step) + "\n" for step in steps))
    wins = Counter(step["criterion"] for step in steps)
    removed = Counter()
    for step in steps:
        removed[step["criterion"]] += step["removed"]
    return {"laasp_steps": len(steps), "criterion_wins": dict(wins), "channels_removed_by_criterion": dict(removed)}

"""One ``compress prune`` run end to end: build or resume, train, write artifacts.

Artifacts in the output directory (``_write_artifacts`` sets the summary's keys,
``EpochRecord`` a metrics line's): ``summary.json``,
``metrics.jsonl``, ``plan.json``, ``run.png``, ``model.pt`` (the pruned model file),
``checkpoint.pt`` (every epoch) and ``checkpoint-before-prune.pt``; the ``laasp``
schedule adds ``laasp_steps.jsonl``, one line per pruning step (the winning group
and criterion, and every candidate's loss).
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from compressor.arguments import typed_config
from compressor.artifacts import MODEL_FILE, SUMMARY_FILE, RunSummary
from compressor.atomic import atomic_write_text
from compressor.epochs import epoch_index, epoch_number
from compressor.training.checkpoint import LATEST, check_continues, load_checkpoint
from compressor.data.datasets import DataConfig, for_device, load_data
from compressor.errors import CompressorError, one_line
from compressor.schedules.config import PruneConfig
from compressor.schedules.pruner import OneCyclePruner
from compressor.outdir import check_fresh_output, remove_stale_temps  # noqa: F401 - check_fresh_output: API
from compressor.engine.latency import LatencyTable
from compressor.engine.plan import PruningPlan
from compressor.training.report import MetricsLog, plot_run, write_summary
from compressor.runfiles.modelfile import ModelSpec, check_dtypes, rebuild, restored_state, save_pruned
from compressor.training.loop import RunContext, Trainer, TrainConfig, config_dict, distributed_context, make_optimizer, resolve_device
from compressor.models.zoo import build

CONFIG_TYPES = (DataConfig, TrainConfig, PruneConfig)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    model: str
    out: Path
    data: DataConfig
    train: TrainConfig
    prune: PruneConfig
    weights: str | None = None
    trust_code: bool = False  # a resumed checkpoint's module.path:factory name may be imported
    # --speedup: measures (or reads the cached) latency table of the dense model on the deploy
    # target, given (model, input_size).  Injected by the CLI: measuring is the bench layer's.
    latency_table: Callable[..., LatencyTable] | None = None


LATENCY_TABLE_FILE = "latency_table.json"  # the table a --speedup run priced its plan with


def configs_from_dict(values: dict, where: str = "the settings") -> tuple[DataConfig, TrainConfig, PruneConfig]:
    """Split one flat dict of settings into the three frozen configs; a value of the wrong
    type (``lr: "0.1"``, ``epochs: 1.7``, ``epochs: true``) is refused, never coerced."""
    return tuple(typed_config(kind, values, where) for kind in CONFIG_TYPES)  # type: ignore[return-value]


def conflicts(saved: dict, given: dict) -> list[str]:
    """Settings given now that differ from the run being resumed."""
    differences = []
    for key, value in sorted(given.items()):
        old = saved.get(key)
        normalised = list(value) if isinstance(value, tuple) else value
        if key in saved and old != normalised:
            differences.append(f"{key}: run has {old!r}, given {normalised!r}")
    return differences


def _check_classifier(name: str) -> None:
    """``compress prune`` trains a classifier with cross-entropy on image/label batches; a
    torchvision detector or segmenter trains on its own targets, in its own loop."""
    from compressor.models.registry import DETECTION, SEGMENTATION, get_entry

    try:
        family = get_entry(name).family
    except Exception:  # noqa: BLE001 - not a registry name (a factory, a timm name): built and checked later
        return
    if family in (DETECTION, SEGMENTATION):
        kind = "detector" if family == DETECTION else "segmentation model"
        raise CompressorError(
            f"{name} is a torchvision {kind}; compress prune trains classifiers on labelled images. Prune it in "
            "its own training loop with OneCyclePruner (README: 'A detector's own loop'); compress info "
            f"{name} --flops-reduction F shows what a prune would remove"
        )


def run_prune(spec: RunSpec, resume_payload: dict | None = None) -> dict:
    _check_classifier(spec.model)
    if resume_payload is not None:
        check_continues(resume_payload, spec.out)  # before anything in the run is touched
    rank, world_size = distributed_context()
    torch.manual_seed(spec.train.seed)
    device = resolve_device(spec.train.device)
    data = load_data(for_device(spec.data, device))
    # Built before the model so a too-large subset fails before anything heavy.
    selection = data.selection_batches(spec.prune.selection_samples) if spec.prune.schedule == "laasp" else None
    model_spec = ModelSpec(spec.model, _model_classes(spec.data, data.num_classes), data.input_size, spec.prune.ignore)
    if resume_payload is None:
        # Trained weights of another class count get a new head (logged); the checkpoints hold
        # the weights from then on, so a resume never reads spec.weights again.
        model = build(spec.model, model_spec.num_classes, spec.weights, input_size=data.input_size, new_head=True)
        model.to(device)
        optimizer = make_optimizer(spec.train, model)
        example = torch.zeros(1, *data.input_size, device=device)
        table = _latency_table(spec, model, data.input_size)
        pruner = OneCyclePruner(model, example, spec.prune, optimizer, selection_data=selection, latency=table)
    else:
        with _checkpoint_must_fit(spec.out / LATEST):
            model, optimizer, pruner = _restore_model(spec, model_spec, resume_payload, device, data, selection)
    context = RunContext(spec.out, rank, world_size)
    if context.writer:
        _clear_for_start(spec.out, fresh=resume_payload is None)
    settings = config_dict(spec.data, spec.train, spec.prune)
    extra = lambda: {"config": settings, "model_name": spec.model, "spec": model_spec.to_dict()}  # noqa: E731
    trainer = Trainer(pruner, optimizer, data, spec.train, context, extra)
    data.batches_per_epoch(world_size)  # a --batch-size larger than the shard: refused before the start line
    start = 0
    if resume_payload is not None:
        with _checkpoint_must_fit(spec.out / LATEST):
            trainer.restore(resume_payload)
        done = int(resume_payload["epoch"])  # the last epoch it holds, numbered from 1
        start = epoch_index(done) + 1  # the loop index of the epoch after it
        if context.writer:
            MetricsLog(spec.out / "metrics.jsonl").truncate_after(done)
    if context.writer:
        log.info(start_line(spec, data, device, world_size, resume_payload))
    trainer.run(start)
    if world_size > 1:
        atomic_write_text(spec.out / f"rank{rank}-final.json", json.dumps(trainer.fingerprint()))
    if not context.writer:
        return {}
    summary = _write_artifacts(spec, model_spec, pruner, trainer)
    _check_target_reached(spec, summary)
    return summary


def start_line(spec: RunSpec, data, device, world_size: int, resume_payload: dict | None) -> str:
    """What the run is about to do, in one line, once every setting has been checked:
    'compress prune: resnet20 on digits (1,500 train / 297 val), cpu, 10 epochs of ocs, -50% MACs -> runs/resnet20-ocs'."""
    where = f"{device}" + (f" x{world_size} processes" if world_size > 1 else "")
    if spec.prune.schedule == "dense":
        target = "no pruning"
    elif spec.prune.speedup is not None:
        target = f"{spec.prune.speedup:g}x faster on the deploy target"
    else:
        target = f"-{spec.prune.flops_reduction:.0%} MACs"
    what = (f"{spec.model} on {spec.data.dataset} ({data.train_size:,} train / {data.val_size:,} val), {where}, "
            f"{spec.train.epochs} epochs of {spec.prune.schedule}, {target}")
    if resume_payload is None:
        return f"compress prune: {what} -> {spec.out}"
    return f"compress prune: resuming {spec.out} after epoch {int(resume_payload['epoch'])}: {what}"


def _model_classes(config: DataConfig, found: int) -> int:
    """The model's outputs: the data's class count, or --num-classes (no fewer: a label would
    have no output)."""
    if config.num_classes is None:
        return found
    if config.num_classes < found:
        raise CompressorError(f"--num-classes {config.num_classes} is fewer than the {found} classes of the data "
                              f"(labels 0-{found - 1}); give at least {found} or drop it")
    return config.num_classes


TARGET_SLACK = 0.01  # the plan lands on or just past the target; this much short is rounding, more is a miss


def _check_target_reached(spec: RunSpec, summary: dict) -> None:
    """A run that ends short of --flops-reduction (too few epochs for the prune to
    happen, say) is a failure to report, not a "-0.0 %" success."""
    if spec.prune.schedule == "dense":
        return
    if spec.prune.speedup is not None:
        if summary["prune_epoch"] is None:
            raise CompressorError(f"the run ended without pruning (--speedup {spec.prune.speedup:g}); artifacts are in "
                                  f"{spec.out}; give more --epochs or an earlier --max-prune-epoch")
        return
    reached, target = summary["macs_reduction"], spec.prune.flops_reduction
    if reached < target - TARGET_SLACK:
        raise CompressorError(
            f"the run ended without reaching its target: MACs reduced by {max(reached, 0):.1%}, --flops-reduction "
            f"asked for {target:.1%} (pruned: {'never' if summary['prune_epoch'] is None else 'partly'}); artifacts "
            f"are in {spec.out}; give more --epochs or an earlier --max-prune-epoch"
        )


def _latency_table(spec: RunSpec, model, input_size) -> LatencyTable | None:
    """A fresh --speedup run measures its table (kept with the run, for --resume)."""
    if spec.prune.speedup is None:
        return None
    if spec.latency_table is None:
        raise CompressorError("a --speedup run needs the deploy target's latency table (RunSpec.latency_table)")
    table = spec.latency_table(model, input_size)
    table.save(spec.out / LATENCY_TABLE_FILE)
    return table


def _restore_model(spec: RunSpec, model_spec: ModelSpec, payload: dict, device, data, selection):
    plans = [PruningPlan.from_dict(p) for p in payload["pruner"]["state"]["applied"]]
    model = rebuild(model_spec, plans, trust_code=spec.trust_code)
    state = restored_state(payload["model"])
    check_dtypes(model, state, spec.out / LATEST)  # load_state_dict would convert them silently
    model.load_state_dict(state)
    model.to(device)
    optimizer = make_optimizer(spec.train, model)
    example = torch.zeros(1, *data.input_size, device=device)
    table = LatencyTable.load(spec.out / LATENCY_TABLE_FILE) if spec.prune.speedup is not None else None
    pruner = OneCyclePruner(model, example, spec.prune, optimizer, selection_data=selection, state=payload["pruner"],
                            latency=table)
    return model, optimizer, pruner


@contextlib.contextmanager
def _checkpoint_must_fit(path: Path):
    """A checkpoint whose parts do not fit together (weights of another architecture, wrong
    shapes, missing keys, optimizer state of another model) is one line, not a traceback.
    Only the restore is wrapped: an error in training itself stays a bug report."""
    try:
        yield
    except CompressorError:
        raise
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as error:
        raise CompressorError(f"{path} does not fit the run it describes ({one_line(error, 200)}); "
                              "resume from an intact checkpoint") from error


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
    model_path = _save_model(out, pruner.model.cpu(), model_spec, plans)
    atomic_write_text(out / "plan.json", json.dumps([p.to_dict() for p in plans], indent=1))
    records = MetricsLog.read(out / "metrics.jsonl")
    plot_run(records, out / "run.png", f"{spec.model} on {spec.data.dataset}: {spec.prune.schedule}",
             threshold=spec.prune.indicator_threshold, indicator=spec.prune.indicator_kind,
             reg_target=spec.prune.reg_target if spec.prune.schedule == "ocs" else None)
    last = records[-1]
    summary: RunSummary = {  # the one definition of summary.json
        "model": spec.model,
        "dataset": spec.data.dataset,
        "data": config_dict(spec.data),  # read back by export's parity gate for real images
        "schedule": spec.prune.schedule,
        "criterion": spec.prune.criterion,
        "epochs": spec.train.epochs,
        "flops_reduction_target": spec.prune.flops_reduction,
        "dense_macs": pruner.dense_macs,
        "dense_params": pruner.dense_params,
        "pruned_macs": pruner.macs,
        "pruned_params": pruner.params,
        "macs_reduction": 1 - pruner.macs / pruner.dense_macs,
        "prune_epoch": None if pruner.prune_epoch is None else epoch_number(pruner.prune_epoch),
        "prune_epochs": [epoch_number(index) for index in pruner.state.prune_epochs],
        "prune_shocks": [r.prune_shock for r in records if r.prune_shock is not None],
        "top1": last.val_top1,
        "best_top1": trainer.best_top1,
        "wall_time_s": trainer.wall_time_s,
        "search_time_s": sum(r.search_time_s for r in records),
        "model_path": str(model_path),
        "seed": spec.train.seed,
    }
    if spec.prune.speedup is not None:
        summary.update(speedup_target=spec.prune.speedup, predicted_speedup=pruner.predicted_speedup)
    if spec.prune.schedule == "laasp":
        summary.update(_write_laasp_steps(out, pruner.schedule.steps))
    write_summary(out / SUMMARY_FILE, summary)
    return summary


def _save_model(out: Path, model, model_spec: ModelSpec, plans: list) -> Path:
    try:
        return save_pruned(out / MODEL_FILE, model, model_spec, plans[-1], plans[:-1])
    except OSError as error:  # the training is in checkpoint.pt: say so, and how to finish
        reason = "the disk is full" if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else error.strerror
        kept = (f"the last checkpoint {out / LATEST} is intact; free space and run compress prune --resume {out} "
                "to write the artifacts") if (out / LATEST).exists() else "no checkpoint was written"
        raise CompressorError(f"could not write {out / MODEL_FILE}: {reason}; {kept}") from error


def _write_laasp_steps(out: Path, steps: list[dict]) -> dict:
    """The log of which (group, criterion) won each step; counts go into the summary."""
    atomic_write_text(out / "laasp_steps.jsonl", "".join(json.dumps(step) + "\n" for step in steps))
    wins = Counter(step["criterion"] for step in steps)
    removed = Counter()
    for step in steps:
        removed[step["criterion"]] += step["removed"]
    return {"laasp_steps": len(steps), "criterion_wins": dict(wins), "channels_removed_by_criterion": dict(removed)}

"""Run checkpoints: everything needed to continue a run exactly.

A checkpoint holds the configuration, the model spec and the plans applied so far
(so the pruned architecture can be rebuilt), the weights, the optimizer and AMP
scaler state, the pruning controller's state, the RNG state and the metrics so
far.  It is written atomically with ``torch.save`` and read with
``weights_only=True``.  A failed write (full disk) leaves the previous checkpoint
valid and says so.

A checkpoint carries a sha256 of everything in it (``compressor.runfiles.integrity``), and
a resume only continues a run the checkpoint can belong to: its epoch within the run's
epochs, its prunes no later than that epoch, and that epoch recorded in the run's
``metrics.jsonl`` (``check_continues``).  Resuming writes the run's artifacts, so a
checkpoint that cannot be shown to be this run's is refused before anything is written.
"""
from __future__ import annotations

import errno
from pathlib import Path

import torch

from compressor.artifacts import CHECKPOINT_FILE
from compressor.atomic import atomic_torch_save
from compressor.epochs import epoch_index
from compressor.errors import CompressorError
from compressor.runfiles.integrity import check_digest, sealed

FORMAT = "compressor.training.checkpoint/1"
LATEST = CHECKPOINT_FILE  # the checkpoint a resume continues from
BEFORE_PRUNE = "checkpoint-before-prune.pt"


class CheckpointError(CompressorError):
    pass


def save_checkpoint(path: Path, payload: dict) -> Path:
    payload = sealed({"format": FORMAT, **payload})
    try:
        return atomic_torch_save(path, payload)
    except OSError as error:
        reason = "the disk is full" if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else error.strerror
        raise CheckpointError(f"could not write checkpoint {path}: {reason}; {_what_is_kept(path)}") from error


def _what_is_kept(path: Path) -> str:
    """checkpoint-before-prune.pt is new at the prune, yet the run's checkpoint.pt may be there."""
    if path.exists():
        return "the previous checkpoint is intact"
    latest = path.with_name(LATEST)
    return f"the last checkpoint {latest} is intact" if latest.exists() else "no earlier checkpoint exists"


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: nothing to resume")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is a user-facing problem
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(error).__name__})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this tool")
    if not check_digest(payload, path, CheckpointError):
        # Written before checkpoints carried a digest: refused, unlike such a model file.  A resume
        # writes model.pt, summary.json and the rest over the run, so it must be able to show the
        # checkpoint is intact; a checkpoint is a run's working state, not a deliverable.
        raise CheckpointError(f"{path} has no sha256 digest (written before checkpoints carried one), so it cannot "
                              "be shown to be intact; refused to resume from it (finish the run with the version "
                              "that started it, or start it again)")
    check_payload(payload, path)
    return payload


# What a resume reads from a checkpoint, and the type each must have: a tampered or
# truncated file is refused here in one line, not deep inside the run as a traceback.
_FIELDS = {
    "epoch": int, "model_name": str, "config": dict, "spec": dict, "model": dict, "optimizer": dict,
    "scaler": dict, "pruner": dict, "rng": torch.Tensor, "best_top1": (int, float), "wall_time_s": (int, float),
}


def check_payload(payload: dict, path: Path) -> None:
    for key, kind in _FIELDS.items():
        value = payload.get(key)
        if key not in payload or isinstance(value, bool) or not isinstance(value, kind):
            found = "missing" if key not in payload else f"{type(value).__name__} {_short(value)}"
            raise CheckpointError(f"{path} is damaged or edited: '{key}' is {found}; resume from an intact checkpoint")
    if payload["epoch"] < 1:
        raise CheckpointError(f"{path} is damaged or edited: 'epoch' is {payload['epoch']} (epochs count from 1)")
    state = payload["pruner"].get("state")
    applied = state.get("applied") if isinstance(state, dict) else None
    if not isinstance(applied, list):
        raise CheckpointError(f"{path} is damaged or edited: the pruner state has no list of applied plans")
    _check_epochs(payload, state, path)


def _check_epochs(payload: dict, state: dict, path: Path) -> None:
    """A checkpoint's ``epoch`` is the last epoch it holds, numbered from 1: at most E in an
    E-epoch run (a finished run, resumed to write its artifacts again).  The pruner state
    counts its prunes by loop index (from 0), and none comes after that epoch."""
    epoch, epochs = payload["epoch"], payload["config"].get("epochs")
    if isinstance(epochs, int) and not isinstance(epochs, bool) and epoch > epochs:
        raise CheckpointError(f"{path} cannot belong to its run: it says epoch {epoch} of a {epochs}-epoch run; "
                              "resume from an intact checkpoint")
    prunes = state.get("prune_epochs", [])
    last_index = epoch_index(epoch)
    if not isinstance(prunes, list) or any(not isinstance(e, int) or isinstance(e, bool) or e > last_index for e in prunes):
        raise CheckpointError(f"{path} cannot belong to its run: its pruner state lists prunes {_short(prunes)} "
                              f"(loop indices, from 0) after its own epoch {epoch}; resume from an intact checkpoint")


def check_continues(payload: dict, run_dir: Path) -> None:
    """The run in ``run_dir`` reached the checkpoint's epoch: its metrics.jsonl records it (the
    line is appended before the checkpoint is written).  A checkpoint copied from another run,
    or one whose run lost its log, is refused: resuming would write over artifacts it did not make."""
    from compressor.training.report import MetricsLog

    path, log = run_dir / LATEST, run_dir / "metrics.jsonl"
    epochs = {record.epoch for record in MetricsLog.read(log)} if log.is_file() else set()
    if payload["epoch"] not in epochs:
        raise CheckpointError(f"{path} cannot belong to the run in {run_dir}: its metrics.jsonl has no record of "
                              f"epoch {payload['epoch']}, the checkpoint's; refused to resume and write over "
                              "the run's artifacts")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."

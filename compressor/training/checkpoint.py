"""Run checkpoints: everything needed to continue a run exactly.

A checkpoint holds the configuration, the model spec and the plans applied so far
(so the pruned architecture can be rebuilt), the weights, the optimizer and AMP
scaler state, the pruning controller's state, the RNG state and the metrics so
far.  It is written atomically with ``torch.save`` and read with
``weights_only=True``.  A failed write (full disk) leaves the previous checkpoint
valid and says so.
"""
from __future__ import annotations

import errno
from pathlib import Path

import torch

from compressor.atomic import atomic_torch_save
from compressor.errors import CompressorError

FORMAT = "compressor.training.checkpoint/1"
LATEST = "checkpoint.pt"
BEFORE_PRUNE = "checkpoint-before-prune.pt"


class CheckpointError(CompressorError):
    pass


def save_checkpoint(path: Path, payload: dict) -> Path:
    payload = {"format": FORMAT, **payload}
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
    if payload["epoch"] < 0:
        raise CheckpointError(f"{path} is damaged or edited: 'epoch' is {payload['epoch']}")
    applied = (payload["pruner"].get("state") or {}).get("applied") if isinstance(payload["pruner"].get("state"), dict) else None
    if not isinstance(applied, list):
        raise CheckpointError(f"{path} is damaged or edited: the pruner state has no list of applied plans")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."

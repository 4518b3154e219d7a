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

FORMAT = "compressor.checkpoint/1"
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
        previous = "the previous checkpoint is intact" if path.exists() else "no earlier checkpoint exists"
        raise CheckpointError(f"could not write checkpoint {path}: {reason}; {previous}") from error


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: nothing to resume")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is a user-facing problem
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(error).__name__})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this tool")
    return payload

"""Loading a local state_dict file into a freshly built model.

Checkpoints come from many trainers, so the loader accepts a bare state_dict
or one nested under "state_dict"/"model", and reports key or shape mismatches
as one readable line instead of torch's multi-line RuntimeError.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

WRAPPER_KEYS = ("state_dict", "model")


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load the state_dict stored at `path` into `model`, strictly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    state = _unwrap(_read(path), path)
    problem = _describe_mismatch(model.state_dict(), state)
    if problem:
        raise ValueError(f"weights in {path} do not fit the model: {problem}")
    model.load_state_dict(state)


def _read(path: Path) -> object:
    """torch.load restricted to tensors and plain containers (no arbitrary pickles).

    A corrupt or foreign file can fail deep inside the unpickler with almost
    any exception type, so all of them become one ValueError naming the file.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"cannot read weights from {path}: not a torch.save file of plain tensors "
            f"({type(error).__name__}; see the chained error for details)"
        ) from error


def _unwrap(obj: object, path: Path) -> Mapping[str, Tensor]:
    """Return the state_dict, looking one level inside common checkpoint wrappers."""
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    return obj


def _describe_mismatch(expected: Mapping[str, Tensor], given: Mapping[str, Tensor]) -> str:
    """One-line summary of missing/unexpected keys and shape clashes; '' if none."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    clashes = [
        f"{k} file {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in given and given[k].shape != expected[k].shape
    ]
    parts = [
        _summarise("missing keys", missing),
        _summarise("unexpected keys", unexpected),
        _summarise("shape mismatches", clashes),
    ]
    return "; ".join(part for part in parts if part)


def _summarise(label: str, items: list[str]) -> str:
    """'label: N (e.g. first)', or '' for an empty list."""
    return f"{label}: {len(items)} (e.g. {items[0]})" if items else ""

"""Loading trained weights (a state_dict) into a freshly built model.

Checkpoints come from many trainers, so a file may hold a bare state_dict or one
nested under "state_dict"/"model", saved by ``torch.save`` or as ``.safetensors``
(timm's files); either way only tensors come out of it, never code.  Key or shape
mismatches are one readable line instead of torch's multi-line RuntimeError.

Started from weights trained on another dataset, the classifier head has another
class count: with ``num_classes`` given, the layers whose shapes differ from the
model's *only* in their first (output) dimension, and there hold ``num_classes``
in the model, keep the model's fresh initialisation and the change is logged in
one line.  Such a shape can only come from the class count (every other width of
the architecture is the same whatever the class count), so no other layer is ever
re-initialised; every other mismatch is refused.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

WRAPPER_KEYS = ("state_dict", "model")
SAFETENSORS_SUFFIX = ".safetensors"
STEP_COUNTER = "num_batches_tracked"


def load_weights(model: nn.Module, path: str | Path, num_classes: int | None = None) -> None:
    """Load the state_dict stored at `path` into `model`; strictly unless `num_classes`
    is given, which lets a head of another class count be re-initialised (see above)."""
    path = Path(path)
    load_state(model, read_weights_file(path), str(path), num_classes)


def read_weights_file(path: Path) -> Mapping[str, Tensor]:
    """The state_dict in the file at `path` (unwrapped)."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return _unwrap(_read(path), path)


def load_state(model: nn.Module, state: Mapping[str, Tensor], source: str, num_classes: int | None = None) -> None:
    """Load `state` (read from `source`, named in messages) into `model`; see the module doc."""
    expected = model.state_dict()
    # BatchNorm's step counter came with PyTorch 0.4.1: older files (torchvision's DenseNets)
    # lack it, and torchvision's own loader lets BatchNorm start it at 0, as this does.
    state = with_metadata(state, {**{k: v for k, v in expected.items() if k.endswith(STEP_COUNTER)}, **state})
    head = _head_keys(expected, state, num_classes) if num_classes is not None else []
    problem = _describe_mismatch({k: v for k, v in expected.items() if k not in head},
                                 {k: v for k, v in state.items() if k not in head})
    if problem:
        raise ValueError(f"weights in {source} do not fit the model: {problem}")
    model.load_state_dict(with_metadata(state, {**state, **{k: expected[k] for k in head}}))
    if head:
        layers = sorted({k.rpartition(".")[0] for k in head})
        log.info("weights from %s: classifier %s re-initialised for the new class count, %d -> %d classes",
                 source, ", ".join(layers), state[head[0]].shape[0], num_classes)


def with_metadata(original: Mapping[str, Tensor], items: Mapping[str, Tensor]) -> OrderedDict:
    """``items`` carrying ``original``'s per-module versions (``_metadata``), which some modules
    need to load (torchvision's MNASNet refuses a state_dict without them)."""
    state = OrderedDict(items)
    if hasattr(original, "_metadata"):
        state._metadata = original._metadata
    return state


def _head_keys(expected: Mapping[str, Tensor], given: Mapping[str, Tensor], num_classes: int) -> list[str]:
    """Keys whose shapes differ only in dim 0, which is ``num_classes`` in the model and one
    and the same other count in the file: the classifier layer(s)."""
    keys = [
        k for k in expected
        if k in given and given[k].dim() == expected[k].dim() >= 1
        and given[k].shape[0] != expected[k].shape[0] == num_classes
        and given[k].shape[1:] == expected[k].shape[1:]
    ]
    return keys if len({given[k].shape[0] for k in keys}) == 1 else []


def _read(path: Path) -> object:
    """torch.load restricted to tensors and plain containers (no arbitrary pickles), or a
    safetensors file (tensors only by design).

    A corrupt or foreign file can fail deep inside the unpickler with almost
    any exception type, so all of them become one ValueError naming the file.
    """
    try:
        if path.suffix == SAFETENSORS_SUFFIX:
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except ImportError as error:
        raise ValueError(f"reading {path} needs the safetensors package (pip install safetensors)") from error
    except Exception as error:
        kind = "safetensors file" if path.suffix == SAFETENSORS_SUFFIX else "torch.save file of plain tensors"
        raise ValueError(
            f"cannot read weights from {path}: not a {kind} "
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

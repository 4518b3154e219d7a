"""Save and load pruned models without unpickling arbitrary objects.

A pruned model file holds the model spec (registry name and constructor
arguments), the plan and the weights, written with ``torch.save`` and read back
with ``torch.load(weights_only=True)``: only tensors and plain containers can come
out of it, so a crafted file cannot run code.  Loading rebuilds the original
architecture, re-analyses it, applies the plan and loads the weights strictly.

The stored model name is data too: a ``module.path:factory`` name is imported only
when the caller passes ``trust_code=True`` (``compressor.trust``).

The file carries a sha256 of everything in it (``compressor.runfiles.integrity``), checked
before anything else is read from it; the weights must also have the dtypes of the
architecture they are loaded into (a float64 or int32 tensor would be converted silently).
"""
from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Sequence
from pathlib import Path

import torch
from torch import nn

from compressor.engine.analysis.graph import ChannelGraph, analyse
from compressor.atomic import atomic_torch_save
from compressor.engine.apply import apply_plan
from compressor.errors import CompressorError, one_line
from compressor.engine.plan import PruningPlan
from compressor.runfiles.integrity import check_digest, sealed
from compressor.trust import check_trusted
from compressor.models.deployable import check_runs, model_input
from compressor.models.zoo import build

log = logging.getLogger(__name__)

FORMAT = "compressor.pruned-model/1"


@dataclass(frozen=True)
class ModelSpec:
    """Enough to rebuild the unpruned architecture and its channel groups."""

    name: str
    num_classes: int
    input_size: tuple[int, int, int]
    ignore: tuple[str, ...] = ()

    def build(self, trust_code: bool = False) -> nn.Module:
        """A spec usually comes from a file, so a factory name needs ``trust_code``."""
        check_trusted(self.name, "the model spec", trust_code)
        try:
            return build(self.name, self.num_classes, input_size=self.input_size)
        except RuntimeError as error:  # e.g. a num_classes whose head cannot be allocated
            raise CompressorError(
                f"the model spec ({self.name}, {self.num_classes} classes) cannot be built: {one_line(str(error))}"
            ) from error

    def example_input(self, model: nn.Module) -> torch.Tensor | list:
        """Zeros of the kind ``model`` takes (a detector: a list of images)."""
        return model_input(model, self.input_size)

    def analyse(self, model: nn.Module) -> ChannelGraph:
        return analyse(model, self.example_input(model), ignore=self.ignore)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["input_size"], data["ignore"] = list(self.input_size), list(self.ignore)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        input_size = tuple(int(v) for v in data["input_size"])
        if len(input_size) != 3 or min(input_size) < 1:
            raise ValueError(f"input_size {list(input_size)} is not three positive numbers (C, H, W)")
        if int(data["num_classes"]) < 1:
            raise ValueError(f"num_classes {int(data['num_classes'])} is not a positive number")
        return cls(
            name=str(data["name"]),
            num_classes=int(data["num_classes"]),
            input_size=input_size,
            ignore=tuple(str(v) for v in data.get("ignore", ())),
        )


def save_pruned(
    path: str | os.PathLike,
    model: nn.Module,
    spec: ModelSpec,
    plan: PruningPlan,
    earlier_plans: Sequence[PruningPlan] = (),
) -> Path:
    """Write atomically: a crash mid-write never leaves a truncated file at ``path``.

    ``earlier_plans`` are plans applied before ``plan`` (a schedule that prunes in
    several steps); loading replays them in order.
    """
    path = Path(path)
    payload = {
        "format": FORMAT,
        "spec": spec.to_dict(),
        "plan": plan.to_dict(),
        "earlier_plans": [p.to_dict() for p in earlier_plans],
        **portable_state(model),
    }
    return atomic_torch_save(path, sealed(payload))


def portable_state(model: nn.Module) -> dict:
    """Weights plus the per-module version metadata some modules check on load
    (torchvision's MNASNet refuses a state dict without it), as plain containers."""
    state = model.state_dict()
    metadata = {k: dict(v) for k, v in getattr(state, "_metadata", {}).items()}
    return {"state_dict": {k: v.detach().cpu().clone() for k, v in state.items()}, "state_metadata": metadata}


def restored_state(payload: dict) -> OrderedDict:
    state = OrderedDict(payload["state_dict"])
    state._metadata = OrderedDict((k, dict(v)) for k, v in payload.get("state_metadata", {}).items())
    return state


def read_pruned(path: str | os.PathLike) -> tuple[ModelSpec, list[PruningPlan], dict]:
    """Read and validate a pruned model file without building the model."""
    path = Path(path)
    if not path.is_file():
        raise CompressorError(f"no such pruned model file: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to read the file is the file's fault
        raise CompressorError(
            f"{path} is not a pruned model file this tool can load safely; refused to load it "
            f"({_load_failure(error)})"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CompressorError(f"{path} is not a pruned model file (expected format '{FORMAT}')")
    if not check_digest(payload, path):
        # Written before model files carried a digest: loaded, with a warning.  A model file is a
        # deliverable whose run may be long gone, and reading it writes nothing; refusing it would
        # strand every earlier model.pt.  Loading it stays safe (weights only, no code without
        # trust_code), and its weights must still fit the rebuilt architecture, shapes and dtypes.
        log.warning("%s has no sha256 digest (written before model files carried one): damage to it cannot be "
                    "detected; save it again with save_pruned to add one", path)
    try:
        spec = ModelSpec.from_dict(payload["spec"])
        plans = [PruningPlan.from_dict(p) for p in payload.get("earlier_plans", [])]
        plans.append(PruningPlan.from_dict(payload["plan"]))
        state_dict = restored_state(payload)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CompressorError(f"{path} is a damaged pruned model file: {error}") from error
    return spec, plans, state_dict


def _load_failure(error: Exception) -> str:
    """One line saying why torch's safe loader refused, without its advice to turn the
    safety off (which would let a crafted file run code)."""
    text = str(error)
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if match:
        return f"it references '{match.group(1)}', which a model file never needs"
    # torch wraps the unpickler's reason in advice to load unsafely; keep only the reason.
    match = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    first = match.group(1) if match else (text.strip().splitlines()[0] if text.strip() else "")
    return f"{type(error).__name__}: {first[:160]}" if first else type(error).__name__


def rebuild(spec: ModelSpec, plans: Sequence[PruningPlan], trust_code: bool = False) -> nn.Module:
    """The original architecture with ``plans`` applied in order (weights random).
    ``trust_code``: allow a ``module.path:factory`` spec name to be imported and called."""
    model = spec.build(trust_code)
    if plans:  # analysing runs the model once at the spec's input_size (a file's data): refuse a size that cannot fit
        check_runs(model, spec.input_size, 1, f"the model spec's input_size {list(spec.input_size)}")
    for plan in plans:
        model = apply_plan(model, spec.analyse(model), plan)
    return model


def load_pruned(
    path: str | os.PathLike, trust_code: bool = False
) -> tuple[nn.Module, ModelSpec, PruningPlan]:
    """The pruned model in eval mode, its spec and its last plan.  A file whose model is
    a ``module.path:factory`` is refused (``UntrustedCodeError``) unless ``trust_code``:
    loading it would import that module and run its code."""
    spec, plans, state_dict = read_pruned(path)
    check_trusted(spec.name, str(path), trust_code)  # here too, to name the file in the error
    model = rebuild(spec, plans, trust_code)
    check_dtypes(model, state_dict, path)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise CompressorError(f"{path}: weights do not fit the pruned architecture: {one_line(str(error))}") from error
    return model.eval(), spec, plans[-1]


def check_dtypes(model: nn.Module, state_dict: dict, path: str | os.PathLike) -> None:
    """Every tensor of ``state_dict`` has the dtype ``model`` holds under its name (``path`` names
    the file in the error).  ``load_state_dict`` converts a float64 or int32 tensor to the
    parameter's dtype without a word; such weights were not saved from this architecture, so
    they are refused rather than guessed at."""
    expected = model.state_dict()
    for key, value in state_dict.items():
        want = expected.get(key)
        if want is not None and isinstance(value, torch.Tensor) and value.dtype != want.dtype:
            raise CompressorError(f"{path}: weight {key} is {_dtype(value)} where the architecture holds "
                                  f"{_dtype(want)}; refused to convert it (the file was not saved from this model)")


def _dtype(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).replace("torch.", "")

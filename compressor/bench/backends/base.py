"""What every backend shares: the workload it is asked to run and its answer.

A backend is probed first (``unavailable`` returns the reason it cannot run on this
machine, or None) and only then asked to ``prepare`` a runnable for one artifact.
A prepared runnable reports the execution provider it really got, so a silent
fallback (ONNX Runtime does that) is caught instead of being timed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from compressor.errors import CompressorError

DEVICES = ("cpu", "cuda")


def gpu_missing(what: str) -> str:
    """Why a GPU backend cannot run with --device cpu (two different fixes)."""
    import torch

    if torch.cuda.is_available():
        return f"{what} runs on the GPU; pass --device cuda"
    return f"{what} needs an NVIDIA GPU; PyTorch sees none on this machine"


class BackendError(CompressorError):
    """This backend cannot run this workload (reported as skipped with the reason)."""


@dataclass(frozen=True)
class Workload:
    batch_size: int
    precision: str
    device: str
    threads: int | None  # CPU threads for the runtime; None = the runtime's default
    input_size: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.batch_size, *self.input_size)


class Artifacts(Protocol):
    """What a subject (a model being benchmarked) can hand a backend."""

    name: str

    def module(self):  # -> nn.Module, or raises BackendError
        ...

    def onnx(self, precision: str) -> Path: ...

    def engine(self, workload: Workload) -> Path: ...


class Prepared(Protocol):
    timer: str
    provider: str  # what actually runs it, e.g. "CPUExecutionProvider" or "torch eager cpu"
    provider_options: dict[str, str] | None  # ONNX Runtime's provider options; None elsewhere
    session_config: dict[str, str] | None  # ONNX Runtime's session config entries; None elsewhere
    timed_file: Path | None  # the ONNX file or engine it runs (None: a PyTorch module)

    def __call__(self) -> None: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str
    description: str

    def unavailable(self, device: str, precision: str) -> str | None: ...

    def prepare(self, artifacts: Artifacts, workload: Workload) -> Prepared: ...

"""The parity gate: the exported model must compute what the PyTorch model computes.

Both run on the same seeded random inputs at several batch sizes (1, 2, an odd
size and the max batch: dynamic-shape bugs hide at sizes other than the export
example's).  An element passes when ``|out - ref| <= atol + rtol * |ref|`` (numpy's
``allclose`` rule), so large logits are judged relatively and near-zero ones
absolutely.  Reduced precision (FP16) is judged by top-1 agreement instead, since
elementwise tolerances tight enough to mean anything would reject correct models.

Backends plug in as plain callables ``torch.Tensor -> np.ndarray``, so ONNX
Runtime and TensorRT share the arithmetic and the report format.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from compressor.errors import CompressorError
from exporters.messages import one_line

Runner = Callable[[torch.Tensor], np.ndarray]
ORT_CPU = "CPUExecutionProvider"
# Relative errors are taken against |ref| floored at this fraction of the batch's largest
# |ref|: a logit that happens to be ~0 would otherwise turn a 1e-7 difference into a
# "relative error" of 0.5 that says nothing about the model.
REL_FLOOR = 1e-3


@dataclass(frozen=True)
class BatchParity:
    batch_size: int
    max_abs_err: float
    max_rel_err: float
    top1_agreement: float
    worst_ratio: float  # max |out - ref| / (atol + rtol |ref|): <= 1 passes
    passed: bool

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass(frozen=True)
class ParityReport:
    """fp32 parity of one exported file against PyTorch, batch by batch."""

    backend: str
    provider: str
    reference: str
    model_file: str
    atol: float
    rtol: float
    batches: tuple[BatchParity, ...]

    @property
    def passed(self) -> bool:
        return all(b.passed for b in self.batches)

    @property
    def max_abs_err(self) -> float:
        return max(b.max_abs_err for b in self.batches)

    @property
    def max_rel_err(self) -> float:
        return max(b.max_rel_err for b in self.batches)

    @property
    def top1_agreement(self) -> float:
        return min(b.top1_agreement for b in self.batches)

    @property
    def batch_sizes(self) -> list[int]:
        return [b.batch_size for b in self.batches]

    def to_dict(self) -> dict:
        return {
            "checked": True,
            "passed": self.passed,
            "backend": self.backend,
            "provider": self.provider,
            "reference": self.reference,
            "model_file": self.model_file,
            "batch_sizes": self.batch_sizes,
            "max_abs_err": self.max_abs_err,
            "max_rel_err": self.max_rel_err,
            "top1_agreement": self.top1_agreement,
            "atol": self.atol,
            "rtol": self.rtol,
            "rule": "abs_err <= atol + rtol * |ref|",
            "rel_err": f"|out - ref| / max(|ref|, {REL_FLOOR:g} * max|ref| of the batch)",
            "per_batch": [b.to_dict() for b in self.batches],
        }

    def failure(self) -> str:
        worst = max(self.batches, key=lambda b: b.worst_ratio)
        return (
            f"{self.model_file} on {self.provider} differs from PyTorch beyond tolerance at batch "
            f"{worst.batch_size}: max abs err {worst.max_abs_err:.3g}, max rel err {worst.max_rel_err:.3g} "
            f"(allowed: atol {self.atol:g} + rtol {self.rtol:g} x |ref|), top-1 agreement {worst.top1_agreement:.1%}"
        )


@dataclass(frozen=True)
class Top1Report:
    """Reduced-precision check: how often the exported model picks PyTorch's class."""

    backend: str
    provider: str
    model_file: str
    batch_size: int
    top1_agreement: float
    min_top1: float
    max_abs_err: float

    @property
    def passed(self) -> bool:
        return self.top1_agreement >= self.min_top1

    def to_dict(self) -> dict:
        return {**vars(self), "checked": True, "passed": self.passed}

    def failure(self) -> str:
        return (
            f"{self.model_file} on {self.provider} agrees with PyTorch fp32 on top-1 for only "
            f"{self.top1_agreement:.1%} of {self.batch_size} random inputs (needs {self.min_top1:.0%})"
        )


def random_inputs(batch: int, input_size, seed: int) -> torch.Tensor:
    """Seeded per batch size, so a rerun checks exactly the same inputs."""
    generator = torch.Generator().manual_seed(seed * 1000 + batch)
    return torch.randn(batch, *input_size, generator=generator)


def compare_batch(reference: np.ndarray, result: np.ndarray, atol: float, rtol: float) -> BatchParity:
    if reference.shape != result.shape:
        raise CompressorError(f"exported model returned shape {result.shape}, PyTorch {reference.shape}")
    reference, result = reference.astype(np.float64), result.astype(np.float64)
    diff = np.abs(result - reference)
    allowed = atol + rtol * np.abs(reference)
    scale = max(float(np.abs(reference).max()) * REL_FLOOR, np.finfo(np.float64).tiny)
    finite = bool(np.isfinite(result).all())
    ratio = float(np.max(diff / np.maximum(allowed, np.finfo(np.float64).tiny))) if finite else float("inf")
    return BatchParity(
        batch_size=int(reference.shape[0]),
        max_abs_err=float(diff.max()) if finite else float("inf"),
        max_rel_err=float(np.max(diff / np.maximum(np.abs(reference), scale))) if finite else float("inf"),
        top1_agreement=_top1(reference, result),
        worst_ratio=ratio,
        passed=finite and bool(np.all(diff <= allowed)),
    )


def _top1(reference: np.ndarray, result: np.ndarray) -> float:
    if reference.ndim < 2:
        return 1.0 if np.array_equal(np.sign(reference), np.sign(result)) else 0.0
    return float(np.mean(reference.argmax(-1) == result.argmax(-1)))


def check_parity(
    reference: Runner,
    candidate: Runner,
    input_size,
    batch_sizes,
    atol: float,
    rtol: float,
    seed: int,
    labels: dict,
) -> ParityReport:
    """fp32 gate: every batch size must pass the allclose rule.

    ``labels`` holds backend, provider, reference and model_file for the report."""
    batches = []
    for batch in batch_sizes:
        x = random_inputs(batch, input_size, seed)
        batches.append(compare_batch(reference(x), candidate(x), atol, rtol))
    return ParityReport(atol=atol, rtol=rtol, batches=tuple(batches), **labels)


def check_top1(
    reference: Runner, candidate: Runner, input_size, batch: int, chunk: int, min_top1: float, seed: int, labels: dict
) -> Top1Report:
    """Top-1 agreement on one random batch, fed in chunks of at most ``chunk``
    (a TensorRT engine's profile caps the batch)."""
    x = random_inputs(batch, input_size, seed + 1)
    ref, out = [], []
    for part in torch.split(x, chunk):
        ref.append(reference(part))
        out.append(candidate(part))
    ref_all, out_all = np.concatenate(ref), np.concatenate(out)
    return Top1Report(
        batch_size=batch,
        top1_agreement=_top1(ref_all, out_all),
        min_top1=min_top1,
        max_abs_err=float(np.abs(out_all.astype(np.float64) - ref_all).max()),
        **labels,
    )


def torch_runner(model: nn.Module, device: str = "cpu") -> Runner:
    """The fp32 PyTorch reference, in eval mode, on ``device``."""
    model = model.eval().float().to(device)

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return model(x.to(device)).float().cpu().numpy()

    return run


def ort_session(path: Path, provider: str = ORT_CPU, name: str | None = None):
    """An ONNX Runtime session that really got ``provider`` (ORT falls back silently)."""
    import onnxruntime as ort

    name = name or path.name
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: keep the CLI's output to our summary
    # A verification run, not a benchmark: do not busy-wait on cores other work may need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=[provider])
    except Exception as error:  # noqa: BLE001 - ORT's load errors are the model's fault
        raise CompressorError(f"ONNX Runtime cannot load {name}: {one_line(error)}") from error
    got = session.get_providers()
    if not got or got[0] != provider:
        raise CompressorError(f"ONNX Runtime session for {name} got providers {got}, not {provider}")
    return session


def ort_runner(session) -> Runner:
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> np.ndarray:
        return np.asarray(session.run(None, {name: x.numpy()})[0])

    return run


def ort_labels(session, model_file: str, reference: str = "pytorch-fp32-cpu") -> dict:
    provider = session.get_providers()[0]
    return {"backend": "onnxruntime", "provider": provider, "reference": reference, "model_file": model_file}


def check_onnx(model: nn.Module, path: Path, input_size, batch_sizes, atol: float, rtol: float, seed: int,
               name: str | None = None) -> ParityReport:
    """The fp32 gate for an ONNX file on ONNX Runtime's CPU provider."""
    session = ort_session(path, name=name)
    labels = ort_labels(session, name or path.name)
    return check_parity(torch_runner(model), ort_runner(session), input_size, batch_sizes, atol, rtol, seed, labels)


def check_onnx_top1(model: nn.Module, path: Path, input_size, batch: int, min_top1: float, seed: int,
                    name: str | None = None) -> Top1Report:
    """The FP16 check for an ONNX file on ONNX Runtime's CPU provider."""
    session = ort_session(path, name=name)
    labels = {key: value for key, value in ort_labels(session, name or path.name).items() if key != "reference"}
    return check_top1(torch_runner(model), ort_runner(session), input_size, batch, batch, min_top1, seed, labels)

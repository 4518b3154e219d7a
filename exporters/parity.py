"""The parity gate: the exported model must compute what the PyTorch model computes.

Both run on the same inputs, each a *case* of the gate:

- seeded ``randn`` batches at several batch sizes (1, 2, an odd size and the max
  batch: dynamic-shape bugs hide at sizes other than the export example's), and a
  *batch sweep*: every other size up to 16 (``ExportConfig.parity_sweep_sizes``), since a
  branch on one exact batch size is frozen into the file by both exporters unnoticed;
- the max batch scaled by each of ``ExportConfig.parity_scales``: a value-dependent branch frozen into the
  file by an exporter shows up when inputs leave the example's range (raw 0-255
  pixels are ~100x normalised ones);
- real images from the run's dataset, when there is one (``compressor.export.gate_images``).

On the unscaled cases an element passes when ``|out - ref| <= atol + rtol * |ref|``
(numpy's ``allclose`` rule), so large logits are judged relatively and near-zero
ones absolutely.  Far outside its input range a network can be numerically chaotic:
at 10x inputs a random-init EfficientNet's fp32 output moves by 10 % of its largest
logit when its input moves by one part in 10^4, and a correct ONNX file (other
kernels, other rounding) lands 18 % away, so no elementwise rule can hold there.  A
scaled case is judged against that measured sensitivity instead: the largest
difference, relative to the output's largest magnitude, may be ``rtol`` or ten times
how far PyTorch's own output moves under that tiny input change, whichever is larger.
A frozen branch in a model that is stable there is off by the output's whole magnitude
and fails; where the model is chaotic the case can only catch that much, and its
allowance is in the manifest.  Every output tensor is compared (tuples and dicts are flattened as the
exporters flatten them, ``compressor.export.outputs``).  Reduced precision (FP16) is judged
by top-1 agreement instead, since elementwise tolerances tight enough to mean
anything would reject correct models; FP16 outputs without a class axis are judged by
their error relative to the output's largest magnitude (``FP16_MAX_REL_ERR``).

Backends plug in as plain callables ``torch.Tensor -> list[np.ndarray]`` (one array
per output), so ONNX Runtime and TensorRT share the arithmetic and the report format.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from compressor.errors import CompressorError, one_line
from compressor.export.ort import open_session, session_runner

Runner = Callable[[torch.Tensor], list[np.ndarray]]
# Relative errors are taken against |ref| floored at this fraction of the batch's largest
# |ref|: a logit that happens to be ~0 would otherwise turn a 1e-7 difference into a
# "relative error" of 0.5 that says nothing about the model.
REL_FLOOR = 1e-3
# A scaled case may differ from PyTorch by this many times how far PyTorch's output moves
# when the input moves by SENSITIVITY_STEP (relative, random sign per element): a correct
# file's kernels perturb the computation less than that step; a frozen branch is off by
# the output's whole magnitude.
NOISE_FACTOR = 10.0
SENSITIVITY_STEP = 1e-4


@dataclass(frozen=True)
class BatchParity:
    inputs: str  # which case: "randn", "randn x100", "dataset images"
    batch_size: int
    max_abs_err: float
    max_rel_err: float
    top1_agreement: float
    worst_ratio: float  # max |out - ref| / (atol + rtol |ref|): <= 1 passes
    passed: bool
    worst_output: int = 0  # index of the output with the largest worst_ratio
    scale: float = 1.0  # the inputs' scale; scaled cases are judged by ``compare_scaled``
    sensitivity: float | None = None  # scaled cases: PyTorch's output change under SENSITIVITY_STEP, normalised
    sweep: bool = False  # a randn case of the batch sweep (reported apart from ``batch_sizes``)

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass(frozen=True)
class ParityReport:
    """fp32 parity of one exported file against PyTorch, case by case."""

    backend: str
    provider: str
    reference: str
    model_file: str
    atol: float
    rtol: float
    batches: tuple[BatchParity, ...]
    outputs: int = 1

    @property
    def passed(self) -> bool:
        return all(b.passed for b in self.batches)

    @property
    def max_abs_err(self) -> float:
        """Over the unscaled cases: a x100 input's absolute error is on another scale
        (its own figure is in ``per_batch``; the relative error compares across scales)."""
        return max((b.max_abs_err for b in self.batches if b.scale == 1.0), default=0.0)

    @property
    def max_rel_err(self) -> float:
        return max(b.max_rel_err for b in self.batches)

    @property
    def top1_agreement(self) -> float:
        return min(b.top1_agreement for b in self.batches)

    @property
    def batch_sizes(self) -> list[int]:
        """The batch sizes of the plain ``randn`` cases (the dynamic-batch check)."""
        return [b.batch_size for b in self.batches if b.inputs == RANDN and not b.sweep]

    @property
    def swept_batch_sizes(self) -> list[int]:
        """The other batch sizes the sweep fed (``randn`` too, judged by the same rule)."""
        return [b.batch_size for b in self.batches if b.sweep]

    @property
    def inputs(self) -> list[str]:
        return list(dict.fromkeys(b.inputs for b in self.batches))

    def to_dict(self) -> dict:
        return {
            "checked": True,
            "passed": self.passed,
            "backend": self.backend,
            "provider": self.provider,
            "reference": self.reference,
            "model_file": self.model_file,
            "batch_sizes": self.batch_sizes,
            "batch_sweep": self.swept_batch_sizes,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "max_abs_err": self.max_abs_err,
            "max_abs_err_of": "the unscaled inputs (per_batch has every case's own)",
            "max_rel_err": self.max_rel_err,
            "top1_agreement": self.top1_agreement,
            "atol": self.atol,
            "rtol": self.rtol,
            "rule": ("unscaled inputs: abs_err <= atol + rtol * |ref| per element; scaled inputs: "
                     f"max abs_err / max|ref| <= max(rtol, {NOISE_FACTOR:g} x how far PyTorch's output moves, "
                     f"relative to max|ref|, when the input moves by {SENSITIVITY_STEP:g}); for every output"),
            "rel_err": f"|out - ref| / max(|ref|, {REL_FLOOR:g} * max|ref| of the batch)",
            "per_batch": [b.to_dict() for b in self.batches],
        }

    def failure(self) -> str:
        worst = max(self.batches, key=lambda b: b.worst_ratio)
        output = f" (output {worst.worst_output} of {self.outputs})" if self.outputs > 1 else ""
        # a sweep size failing says the model or its file depends on that exact batch size
        swept = " (a size of the batch sweep)" if worst.sweep else ""
        return (
            f"{self.model_file} on {self.provider} differs from PyTorch beyond tolerance on {worst.inputs} "
            f"inputs at batch {worst.batch_size}{swept}{output}: max abs err {worst.max_abs_err:.3g}, max rel err "
            f"{worst.max_rel_err:.3g} (allowed: atol {self.atol:g} + rtol {self.rtol:g} x |ref|), "
            f"top-1 agreement {worst.top1_agreement:.1%}"
        )


# FP16 outputs that are not class scores (a regression value, a 1-D score per sample, a single
# column) are judged by max |fp16 - fp32| / max |fp32| over the batch: top-1 agreement is
# meaningless there (one column's argmax always agrees) and a comparison of signs passes an
# output that is off by any factor.  Half precision rounds each value by at most 2^-11
# (~5e-4) relative, and measured end to end it stays near that (random-init CIFAR ResNet-20,
# MobileNetV2 and VGG-16 logits: 4-6e-4 of the largest logit on 100 inputs); 2 % leaves 30x
# room for deeper or less tame models, while a wrong file (a scale, a frozen branch, an
# overflow to inf) is off by a large part of the output's magnitude.
FP16_MAX_REL_ERR = 0.02
NO_CLASS_AXIS = "the output has no class axis"
# A detector's head scores every anchor; nearly all anchors are background, whose class scores
# sit close together, so half precision reorders them without changing a single detection.
RAW_DETECTOR_OUTPUTS = ("the outputs are a detector's raw per-anchor scores, whose near-tied background anchors "
                        "make top-1 meaningless")


@dataclass(frozen=True)
class Top1Report:
    """Reduced-precision check: how often the exported model picks PyTorch's class, and for
    outputs without a class axis, how far it is from PyTorch relative to the output's size."""

    backend: str
    provider: str
    model_file: str
    batch_size: int
    top1_agreement: float  # without a class axis: 1.0 when every sign agrees (not judged; see below)
    min_top1: float
    max_abs_err: float
    top1_judged: bool = True  # some output has a class axis (2+ scores per sample)
    max_rel_err: float | None = None  # over the outputs without a class axis; None: there are none
    max_rel_bound: float = FP16_MAX_REL_ERR
    relative_because: str = NO_CLASS_AXIS  # why those outputs are judged by relative error

    @property
    def top1_passed(self) -> bool:
        return not self.top1_judged or self.top1_agreement >= self.min_top1

    @property
    def rel_passed(self) -> bool:
        return self.max_rel_err is None or self.max_rel_err <= self.max_rel_bound

    @property
    def passed(self) -> bool:
        return self.top1_passed and self.rel_passed

    def to_dict(self) -> dict:
        rule = ("top-1 agreement on outputs with a class axis; max |out - ref| / max |ref| on the others")
        return {**vars(self), "checked": True, "passed": self.passed, "rule": rule}

    def failure(self) -> str:
        if not self.top1_passed:
            return (
                f"{self.model_file} on {self.provider} agrees with PyTorch fp32 on top-1 for only "
                f"{self.top1_agreement:.1%} of {self.batch_size} random inputs (needs {self.min_top1:.0%})"
            )
        return (
            f"{self.model_file} on {self.provider} differs from PyTorch fp32 by {self.max_rel_err:.3g} of the output's "
            f"largest magnitude on {self.batch_size} random inputs (allowed: {self.max_rel_bound:g}; "
            f"{self.relative_because}, so it is judged by relative error, not top-1)"
        )


RANDN = "randn"
IMAGES = "dataset images"
UNIFORM = "uniform 0-1"
PIXELS = "uniform 0-255"


@dataclass(frozen=True)
class GateCase:
    """One batch the gate feeds both models: what it is, and how much its outputs may grow."""

    inputs: str
    x: torch.Tensor
    scale: float = 1.0  # the absolute tolerance is multiplied by max(1, scale)
    sweep: bool = False  # one of the batch sweep's sizes


def random_inputs(batch: int, input_size, seed: int) -> torch.Tensor:
    """Seeded per batch size, so a rerun checks exactly the same inputs."""
    generator = torch.Generator().manual_seed(seed * 1000 + batch)
    return torch.randn(batch, *input_size, generator=generator)


def gate_cases(input_size, batch_sizes, seed: int, scales=(), images: torch.Tensor | None = None,
               sweep=()) -> list[GateCase]:
    """``randn`` at every batch size (``sweep``'s too), the largest batch at every scale, and ``images`` if given.
    With scales, also non-negative inputs (uniform in 0-1 and in 0-255: un-normalised images,
    which a branch like ``if (x >= 0).all()`` tells apart and randn never produces)."""
    cases = [GateCase(RANDN, random_inputs(batch, input_size, seed)) for batch in batch_sizes]
    cases += [GateCase(RANDN, random_inputs(batch, input_size, seed), sweep=True) for batch in sweep]
    largest = random_inputs(max(batch_sizes), input_size, seed)
    cases += [GateCase(f"randn x{scale:g}", largest * scale, scale) for scale in scales]
    if scales:
        unit = torch.rand(largest.shape, generator=torch.Generator().manual_seed(seed * 1000 + 999))
        cases += [GateCase(UNIFORM, unit), GateCase(PIXELS, unit * 255, 255.0)]
    if images is not None and len(images):
        cases.append(GateCase(IMAGES, images))
    return cases


def compare_batch(reference: list[np.ndarray], result: list[np.ndarray], atol: float, rtol: float,
                  inputs: str = RANDN) -> BatchParity:
    """Every output of one batch against the reference's, element by element; the batch is
    as good as its worst output."""
    _same_count(reference, result)
    per_output = [_compare_output(ref, out, atol, rtol) for ref, out in zip(reference, result)]
    return _batch(per_output, reference, result, inputs)


def compare_scaled(reference: list[np.ndarray], nudged: list[np.ndarray], result: list[np.ndarray],
                   rtol: float, inputs: str, scale: float) -> BatchParity:
    """A scaled case: the largest difference relative to the output's largest magnitude, against
    ``max(rtol, NOISE_FACTOR x`` how far PyTorch's output moved on the ``nudged`` input``)``."""
    _same_count(reference, result)
    per_output = [_compare_scaled_output(ref, near, out, rtol) for ref, near, out in zip(reference, nudged, result)]
    batch = _batch(per_output, reference, result, inputs)
    sensitivity = max(o["noise"] for o in per_output)
    return BatchParity(**{**vars(batch), "scale": scale, "sensitivity": sensitivity})


def _same_count(reference: list, result: list) -> None:
    if len(reference) != len(result):
        raise CompressorError(f"exported model returned {len(result)} outputs, PyTorch {len(reference)}")


def _batch(per_output: list[dict], reference: list[np.ndarray], result: list[np.ndarray], inputs: str) -> BatchParity:
    worst = max(range(len(per_output)), key=lambda i: per_output[i]["ratio"])
    return BatchParity(
        inputs=inputs,
        batch_size=int(reference[0].shape[0]) if reference[0].ndim else 1,
        max_abs_err=max(o["abs"] for o in per_output),
        max_rel_err=max(o["rel"] for o in per_output),
        top1_agreement=_top1(reference, result),
        worst_ratio=per_output[worst]["ratio"],
        passed=all(o["passed"] for o in per_output),
        worst_output=worst,
    )


def _compare_scaled_output(reference: np.ndarray, nudged: np.ndarray, result: np.ndarray, rtol: float) -> dict:
    if reference.shape != result.shape:
        raise CompressorError(f"exported model returned shape {result.shape}, PyTorch {reference.shape}")
    reference, nudged, result = (a.astype(np.float64) for a in (reference, nudged, result))
    if not (np.isfinite(reference).all() and np.isfinite(result).all() and np.isfinite(nudged).all()):
        same = bool(np.array_equal(reference, result, equal_nan=True))
        return {"abs": 0.0 if same else float("inf"), "rel": 0.0 if same else float("inf"),
                "ratio": 0.0 if same else float("inf"), "passed": same, "noise": 0.0}
    magnitude = max(float(np.abs(reference).max(initial=0.0)), np.finfo(np.float64).tiny)
    noise = float(np.abs(nudged - reference).max(initial=0.0)) / magnitude
    diff = float(np.abs(result - reference).max(initial=0.0))
    allowed = max(rtol, NOISE_FACTOR * noise)
    ratio = diff / magnitude / max(allowed, np.finfo(np.float64).tiny)
    return {"abs": diff, "rel": diff / magnitude, "ratio": ratio, "passed": ratio <= 1.0, "noise": noise}


def _compare_output(reference: np.ndarray, result: np.ndarray, atol: float, rtol: float) -> dict:
    if reference.shape != result.shape:
        raise CompressorError(f"exported model returned shape {result.shape}, PyTorch {reference.shape}")
    reference, result = reference.astype(np.float64), result.astype(np.float64)
    # inf/nan where PyTorch has the same inf/nan agree; any other non-finite value fails
    same = (reference == result) | (np.isnan(reference) & np.isnan(result))
    odd = ~(np.isfinite(reference) & np.isfinite(result))
    if np.any(odd & ~same):
        return {"abs": float("inf"), "rel": float("inf"), "ratio": float("inf"), "passed": False}
    with np.errstate(invalid="ignore"):  # inf - inf where both agree: masked just below
        diff = np.where(odd, 0.0, np.abs(result - reference))
    magnitude = np.where(odd, 0.0, np.abs(reference))
    allowed = atol + rtol * magnitude
    tiny = np.finfo(np.float64).tiny
    floor = max(float(magnitude.max(initial=0.0)) * REL_FLOOR, tiny)
    return {
        "abs": float(diff.max(initial=0.0)),
        "rel": float(np.max(diff / np.maximum(magnitude, floor), initial=0.0)),
        "ratio": float(np.max(diff / np.maximum(allowed, tiny), initial=0.0)),
        "passed": bool(np.all(diff <= allowed)),
    }


def _top1(reference: list[np.ndarray], result: list[np.ndarray]) -> float:
    """The lowest top-1 agreement over the outputs that have a class axis (2-D and up);
    with none, 1.0 when every output's signs agree, else 0.0."""
    ranked = [(ref, out) for ref, out in zip(reference, result) if ref.ndim >= 2 and ref.shape[-1] > 0]
    if not ranked:
        same = all(np.array_equal(np.sign(ref), np.sign(out)) for ref, out in zip(reference, result))
        return 1.0 if same else 0.0
    return min(float(np.mean(ref.argmax(-1) == out.argmax(-1))) for ref, out in ranked)


def check_parity(
    reference: Runner,
    candidate: Runner,
    cases: list[GateCase],
    atol: float,
    rtol: float,
    labels: dict,
    chunk: int | None = None,
) -> ParityReport:
    """fp32 gate: every case must pass its rule on every output (see the module docstring).

    ``labels`` holds backend, provider, reference and model_file for the report;
    ``chunk`` caps the batch a runner is fed (a TensorRT profile's max)."""
    batches, outputs = [], 1
    for case in cases:
        # each side gets its own copy: a model that writes into its input must not feed the other one
        ref, out = _run_chunked(reference, case.x.clone(), chunk), _run_chunked(candidate, case.x.clone(), chunk)
        outputs = len(ref)
        if case.scale == 1.0:
            batch = compare_batch(ref, out, atol, rtol, case.inputs)
            batches.append(BatchParity(**{**vars(batch), "sweep": True}) if case.sweep else batch)
        else:
            nudged = _run_chunked(reference, nudge(case.x), chunk)
            batches.append(compare_scaled(ref, nudged, out, rtol, case.inputs, case.scale))
    return ParityReport(atol=atol, rtol=rtol, batches=tuple(batches), outputs=outputs, **labels)


def nudge(x: torch.Tensor) -> torch.Tensor:
    """``x`` with every element moved by SENSITIVITY_STEP of itself, up or down (seeded)."""
    signs = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(7)).to(x.dtype) * 2 - 1
    return x * (1 + SENSITIVITY_STEP * signs)


def _run_chunked(runner: Runner, x: torch.Tensor, chunk: int | None) -> list[np.ndarray]:
    if chunk is None or len(x) <= chunk:
        return runner(x)
    parts = [runner(part) for part in torch.split(x, chunk)]
    return [np.concatenate(pieces) for pieces in zip(*parts)]


def check_top1(
    reference: Runner, candidate: Runner, input_size, batch: int, chunk: int, min_top1: float, seed: int, labels: dict,
    class_scores: bool = True,
) -> Top1Report:
    """Top-1 agreement on one random batch, fed in chunks of at most ``chunk``
    (a TensorRT engine's profile caps the batch).  ``class_scores=False`` (a detector's raw
    outputs): every output is judged by its error relative to its largest magnitude."""
    x = random_inputs(batch, input_size, seed + 1)
    ref_all, out_all = _run_chunked(reference, x.clone(), chunk), _run_chunked(candidate, x.clone(), chunk)
    _same_count(ref_all, out_all)
    for ref, out in zip(ref_all, out_all):
        if ref.shape != out.shape:
            raise CompressorError(f"exported model returned shape {out.shape}, PyTorch {ref.shape}")
    ranked = [(ref, out) for ref, out in zip(ref_all, out_all) if class_scores and _has_class_axis(ref)]
    others = [(ref, out) for ref, out in zip(ref_all, out_all) if not (class_scores and _has_class_axis(ref))]
    return Top1Report(
        batch_size=batch,
        top1_agreement=_top1(*map(list, zip(*ranked))) if ranked else _top1(ref_all, out_all),
        top1_judged=bool(ranked),
        min_top1=min_top1,
        max_abs_err=max(float(np.abs(o.astype(np.float64) - r).max(initial=0.0)) for r, o in zip(ref_all, out_all)),
        max_rel_err=max(_relative_to_largest(ref, out) for ref, out in others) if others else None,
        relative_because=NO_CLASS_AXIS if class_scores else RAW_DETECTOR_OUTPUTS,
        **labels,
    )


def _has_class_axis(output: np.ndarray) -> bool:
    """Top-1 means something only over two or more scores per sample."""
    return output.ndim >= 2 and output.shape[-1] >= 2


def _relative_to_largest(reference: np.ndarray, result: np.ndarray) -> float:
    """max |result - reference| / max |reference|; any non-finite value where PyTorch has a
    finite one (an fp16 overflow) is an infinite error."""
    reference, result = reference.astype(np.float64), result.astype(np.float64)
    if not np.array_equal(np.isfinite(reference), np.isfinite(result)):
        return float("inf")
    finite = np.isfinite(reference)
    if not np.array_equal(reference[~finite], result[~finite], equal_nan=True):
        return float("inf")
    diff = float(np.abs(result[finite] - reference[finite]).max(initial=0.0))
    magnitude = float(np.abs(reference[finite]).max(initial=0.0))
    if magnitude == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / magnitude


def torch_runner(model: nn.Module, device: str = "cpu") -> Runner:
    """The fp32 PyTorch reference, in eval mode, on ``device``; outputs flattened as exported."""
    from compressor.export.outputs import flatten_outputs, run_model

    model = model.eval().float().to(device)

    def run(x: torch.Tensor) -> list[np.ndarray]:
        return [t.float().cpu().numpy() for t in flatten_outputs(run_model(model, x.to(device)))]

    return run


def ort_labels(session, model_file: str, reference: str = "pytorch-fp32-cpu") -> dict:
    provider = session.get_providers()[0]
    return {"backend": "onnxruntime", "provider": provider, "reference": reference, "model_file": model_file}


def check_onnx(model: nn.Module, path: Path, input_size, batch_sizes, atol: float, rtol: float, seed: int,
               name: str | None = None, scales=(), images: torch.Tensor | None = None, sweep=()) -> ParityReport:
    """The fp32 gate for an ONNX file on ONNX Runtime's CPU provider (cases: ``gate_cases``)."""
    session = open_session(path, name=name)
    labels = ort_labels(session, name or path.name)
    cases = gate_cases(input_size, batch_sizes, seed, scales, images, sweep)
    return check_parity(torch_runner(model), session_runner(session, name or path.name), cases, atol, rtol, labels)


def check_onnx_top1(model: nn.Module, path: Path, input_size, batch: int, min_top1: float, seed: int,
                    name: str | None = None, class_scores: bool = True) -> Top1Report:
    """The FP16 check for an ONNX file on ONNX Runtime's CPU provider (``class_scores``: see check_top1)."""
    session = open_session(path, name=name)
    labels = {key: value for key, value in ort_labels(session, name or path.name).items() if key != "reference"}
    run = session_runner(session, name or path.name)
    return check_top1(torch_runner(model), run, input_size, batch, batch, min_top1, seed, labels, class_scores)

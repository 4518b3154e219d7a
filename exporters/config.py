"""The options of one export, fixed before anything is written.

A frozen dataclass so that every step (export, simplify, gates, engine build,
manifest) reads the same settings, and the manifest can record exactly what was
asked for.  Validation that needs no heavy imports happens here, so a bad value is
refused before an output directory is created.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from compressor.errors import CompressorError
from compressor.export.opsets import check_opset, resolve_opset

FORMATS = ("onnx", "tensorrt")
DEFAULT_MAX_BATCH = 8
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3
FP16_MIN_TOP1 = 0.99
# INT8 (``compressor.export.int8``): named here so that the CLI lists them without the ONNX stack.
CALIB_METHODS = ("minmax", "entropy", "percentile")
# symmetric: signed int8 activations, zero point 0 (TensorRT's explicit quantization takes only
# these; ONNX Runtime's CPU provider runs them, but with slower S8S8 kernels on x86).
# asymmetric: uint8 activations with a zero point (ONNX Runtime CPU's fast U8S8 kernels).
# auto: the form the export's target runs best (ACTIVATIONS_FOR_FORMAT).
INT8_ACTIVATIONS = ("auto", "symmetric", "asymmetric")
# What "auto" means for each --format: an ONNX file is shipped to ONNX Runtime, whose CPU provider
# ran the symmetric S8S8 file of a pruned ResNet-20 2x slower than fp32 on x86 (and the README's
# default run on the synthetic set passed the INT8 gate only in the asymmetric form: 98.8 % < 99 %
# symmetric); a TensorRT engine takes only the symmetric form.
ACTIVATIONS_FOR_FORMAT = {"onnx": "asymmetric", "tensorrt": "symmetric"}
DEFAULT_CALIB_SAMPLES = 256
INT8_MIN_AGREEMENT = 0.99
INT8_CHECK_IMAGES = 500
MIN_INT8_CHECK_IMAGES = 100  # fewer cannot judge 99 % agreement (one miss in 100)
# Upper bounds that keep the gate a gate: an fp32 export that is right differs from
# PyTorch by ~1e-5 relative; 10 % relative or a whole logit absolute is already loose,
# and `--atol inf` would pass anything.
MAX_ATOL = 1.0
MAX_RTOL = 0.1
PARITY_IMAGES = 32  # real images from a run's dataset that the gate adds to its random inputs
# Input scales the gate adds at the max batch: a value-dependent branch frozen into the
# file shows up once inputs leave the export example's range (raw 0-255 pixels are ~100x).
PARITY_SCALES = (0.01, 100.0)
# The gate also feeds every batch size from 1 up to this (or the max batch, if smaller):
# a model may special-case one exact size (``if x.shape[0] == 6``), which neither
# exporter reliably reports -- torch.export keeps the batch symbolic and silently takes the
# example's branch, and the tracer's re-trace only tries one other size -- so only running
# that size shows it.  Hard-coded sizes sit among the small ones; the sweep costs
# n(n+1)/2 images per side, so it stops at 16 (136 images) and above that only the max
# batch is fed.
SWEEP_MAX_BATCH = 16


@dataclass(frozen=True)
class ExportConfig:
    """What ``compress export`` was asked to do.

    ``opset=None`` means the installed exporter's preferred opset (recorded in the
    manifest).  ``input_size`` overrides the source's native (C, H, W), for tests
    that export ImageNet models at a small resolution.  ``out=None``: the source's
    default folder (``export_source`` fills it in with ``with_out``).
    """

    out: Path | None = None
    format: str = "onnx"
    opset: int | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    fp16: bool = False
    simplify: bool = True
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    verify: bool = True
    allow_trace: bool = False  # keep a TorchScript trace that saw data-dependent control flow
    parity_images: int = PARITY_IMAGES
    parity_scales: tuple[float, ...] = PARITY_SCALES
    overwrite: bool = False  # replace files in ``out`` that no earlier export there wrote
    input_size: tuple[int, int, int] | None = None
    seed: int = 0
    fp16_check_batch: int = 100  # one disagreement in 100 still meets 99 %
    fp16_min_top1: float = FP16_MIN_TOP1
    trt_workspace_bytes: int = 2 << 30
    trt_optimization_level: int = 3  # TensorRT's default, pinned so engines compare fairly
    trt_timing_cache: Path | None = None  # None: a per-user cache shared by every export
    int8: bool = False  # also model_int8.onnx (QDQ), calibrated and gated on held-out images
    calib_data: str | None = None  # dataset kind to calibrate on; None: the run's own dataset
    calib_data_dir: str | None = None
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    calib_method: str = "minmax"
    int8_min_agreement: float = INT8_MIN_AGREEMENT
    int8_exclude: tuple[str, ...] = ()  # ONNX node names kept in float
    int8_fallback: bool = True  # keep the most sensitive layers in float until the gate passes
    int8_check_images: int = INT8_CHECK_IMAGES
    int8_activations: str = "auto"  # see INT8_ACTIVATIONS; ``activation_form`` is the one used

    def __post_init__(self) -> None:
        if self.out is not None:
            object.__setattr__(self, "out", Path(self.out))
        check_opset(self.opset)  # refused here, before a source is loaded or a folder made
        if self.format not in FORMATS:
            raise CompressorError(f"unknown export format '{self.format}'; expected one of: {', '.join(FORMATS)}")
        if self.max_batch < 1:
            raise CompressorError(f"--max-batch must be >= 1, got {self.max_batch}")
        _check_tolerance("--atol", self.atol, MAX_ATOL)
        _check_tolerance("--rtol", self.rtol, MAX_RTOL)
        if self.parity_images < 0:
            raise CompressorError(f"parity_images must be >= 0, got {self.parity_images}")
        self._check_int8()
        if self.input_size is not None and (len(self.input_size) != 3 or min(self.input_size) < 1):
            raise CompressorError(f"input size must be three positive integers C,H,W, got {self.input_size}")

    @property
    def export_opset(self) -> int:
        """The opset written (``opset``, or the installed torch's default); checked at construction."""
        return resolve_opset(self.opset)

    def with_out(self, out: Path) -> ExportConfig:
        """This config writing to ``out``: a copy whose other fields were validated already."""
        config = copy.copy(self)
        object.__setattr__(config, "out", Path(out))
        return config

    @property
    def activation_form(self) -> str:
        """symmetric or asymmetric: ``int8_activations``, with auto resolved by the format."""
        if self.int8_activations == "auto":
            return ACTIVATIONS_FOR_FORMAT.get(self.format, "symmetric")
        return self.int8_activations

    def _check_int8(self) -> None:
        object.__setattr__(self, "int8_exclude", tuple(self.int8_exclude))
        if not self.int8:
            asked = [flag for flag, value in (("--calib-data", self.calib_data), ("--calib-data-dir", self.calib_data_dir),
                                              ("--int8-exclude", self.int8_exclude)) if value]
            if asked:
                raise CompressorError(f"{asked[0]} applies to INT8 export; add --int8")
            return
        if self.calib_method not in CALIB_METHODS:
            raise CompressorError(f"unknown --calib-method {self.calib_method!r}; choose one of {', '.join(CALIB_METHODS)}")
        if self.int8_activations not in INT8_ACTIVATIONS:
            raise CompressorError(f"unknown --int8-activations {self.int8_activations!r}; choose one of "
                                  f"{', '.join(INT8_ACTIVATIONS)}")
        if self.format == "tensorrt" and self.activation_form != "symmetric":
            raise CompressorError("--format tensorrt --int8 needs --int8-activations symmetric: TensorRT's explicit "
                                  "quantization takes only signed int8 with zero point 0")
        if self.calib_samples < 1:
            raise CompressorError(f"--calib-samples must be >= 1, got {self.calib_samples}")
        if not (math.isfinite(self.int8_min_agreement) and 0.5 <= self.int8_min_agreement <= 1.0):
            raise CompressorError(f"--int8-min-agreement must be between 0.5 and 1, got {self.int8_min_agreement:g}")
        if self.int8_check_images < MIN_INT8_CHECK_IMAGES:
            raise CompressorError(f"int8_check_images must be >= {MIN_INT8_CHECK_IMAGES}, got {self.int8_check_images}")

    @property
    def parity_batch_sizes(self) -> tuple[int, ...]:
        """1, 2, an odd size (3) and the max batch, never above the max batch.

        Batch 1 and an odd size catch exporters that specialised the batch dim to the
        example's size; the max batch is what a deployment will send."""
        return tuple(sorted(b for b in {1, 2, 3, self.max_batch} if b <= self.max_batch))

    @property
    def parity_sweep_sizes(self) -> tuple[int, ...]:
        """Every other batch size up to ``min(max_batch, SWEEP_MAX_BATCH)`` (see there)."""
        return tuple(b for b in range(1, min(self.max_batch, SWEEP_MAX_BATCH) + 1) if b not in self.parity_batch_sizes)

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("out", "trt_timing_cache"):
            data[key] = None if data[key] is None else str(data[key])
        if self.input_size is not None:
            data["input_size"] = list(self.input_size)
        data["int8_exclude"] = list(self.int8_exclude)
        return data


def _check_tolerance(flag: str, value: float, bound: float) -> None:
    if not (math.isfinite(value) and 0 <= value <= bound):
        raise CompressorError(
            f"{flag} must be between 0 and {bound:g}, got {value:g}; a looser gate would pass a wrong export "
            "(to skip the gate knowingly, use --no-verify: the manifest then says 'unverified')"
        )

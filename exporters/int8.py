"""INT8 QDQ ONNX by ONNX Runtime's static quantization, behind an accuracy gate.

The calibration maths is ONNX Runtime's (``onnxruntime.quantization.quantize_static``);
this module only chooses its settings, feeds it images and judges the result:

* QDQ format, int8 weights per output channel and int8 activations, both symmetric: the
  form TensorRT's explicit quantization consumes, and ONNX Runtime's CPU provider runs.
* The gate is accuracy, not elementwise closeness (INT8 is expected to move logits): the
  quantized model must pick PyTorch fp32's class on at least ``min_agreement`` of the
  held-out images (``compressor.export.calibration``).
* When it does not, the layers that hurt most are tried in float, one at a time, and kept in
  float only where that raises the agreement, until it passes or ``MAX_FLOAT_FRACTION`` of
  the quantizable layers are float (then it is refused:
  past that the file is not an INT8 model any more, and the calibration data is the more
  likely culprit).  A layer's harm is measured by quantizing it alone and taking the
  relative error of the logits on held-out images.  The ranges are calibrated once and
  reused through ONNX Runtime's calibration cache, where the installed version has one.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from compressor.errors import CompressorError, one_line
from compressor.export.config import INT8_MIN_AGREEMENT
from compressor.export.ort import ORT_CPU, open_session, session_runner
from compressor.export.runlimit import check_bounded

log = logging.getLogger(__name__)

# Above this share of float layers the automatic fallback gives up (see the module docstring).
MAX_FLOAT_FRACTION = 0.25
# The layers with weights: where INT8 saves time, and the ones the fallback may keep in float.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Images per held-out batch and per sensitivity probe (enough to rank layers, cheap to run).
CHUNK = 64
PROBE_IMAGES = 128
TIMING_CALIB_SAMPLES = 16


@dataclass(frozen=True)
class Int8Settings:
    method: str = "minmax"
    min_agreement: float = INT8_MIN_AGREEMENT
    exclude: tuple[str, ...] = ()
    symmetric: bool = True  # signed int8 activations, zero point 0 (see ``ExportConfig.int8_activations``)
    auto_fallback: bool = True  # (validated with the rest of the export's options, ``ExportConfig``)


@dataclass
class Int8Outcome:
    """What the quantization produced and how it was judged (the manifest's ``int8`` section)."""

    agreement: float
    min_agreement: float
    check_images: int
    quantized_layers: list[str]
    float_layers: list[str]  # the user's --int8-exclude and the fallback's, in that order
    auto_float_layers: list[str] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)
    preprocess: str = "onnxruntime quant_pre_process"
    first_agreement: float | None = None  # before the fallback kept any layer in float

    @property
    def passed(self) -> bool:
        return self.agreement >= self.min_agreement

    def to_dict(self) -> dict:
        return {**vars(self), "passed": self.passed,
                "rule": "top-1 agreement with PyTorch fp32 on held-out training-split images"}

    def failure(self, file_name: str, calibration: dict) -> str:
        fallback = (f", even with {len(self.auto_float_layers)} of its most sensitive layers kept in float "
                    f"({self.first_agreement:.1%} all in INT8)" if self.auto_float_layers else "")
        return (
            f"{file_name} agrees with PyTorch fp32 on top-1 for only {self.agreement:.1%} of {self.check_images} "
            f"held-out images (needs {self.min_agreement:.0%}){fallback}; calibrated on {calibration['samples']} "
            f"{calibration['dataset']} image(s) with {calibration.get('method', 'minmax')}"
        )


def quantize_gated(fp32_path: Path, out_path: Path, scratch, sets, reference: np.ndarray,
                   settings: Int8Settings) -> Int8Outcome:
    """Write ``out_path`` (QDQ INT8) from ``fp32_path`` calibrated on ``sets.calibration``;
    ``reference``: PyTorch fp32 logits on ``sets.check``.  ``scratch(name)`` gives temp paths."""
    pre, preprocess = _preprocess(fp32_path, scratch("int8.pre.onnx"))
    weighted = weighted_layers(pre)
    if not weighted:
        raise CompressorError(f"--int8: this model's ONNX graph has no {'/'.join(WEIGHTED_OPS)} layer, nothing that "
                              "INT8 would speed up; export it without --int8")
    _check_excludes(settings.exclude, weighted)
    quantizer = _Quantizer(pre, sets.calibration, settings.method, scratch("int8.calibration.json"),
                           settings.symmetric)
    float_layers = list(settings.exclude)
    quantizer.write(out_path, exclude=float_layers)
    agreement = _agreement(out_path, sets.check, reference)
    outcome = Int8Outcome(agreement, settings.min_agreement, len(sets.check),
                          [n for n in weighted if n not in float_layers], list(float_layers), preprocess=preprocess,
                          first_agreement=agreement)
    if outcome.passed or not settings.auto_fallback:
        return outcome
    return _fall_back(quantizer, out_path, sets, reference, settings, weighted, outcome, scratch("int8.probe.onnx"))


def quantize_for_timing(fp32_path: Path, out_path: Path, input_size, symmetric: bool = True) -> None:
    """The export's INT8 settings, calibrated on seeded random inputs, ungated: for timing a
    model that has no ``model_int8.onnx`` (the ranges change what an INT8 graph computes, not
    how long it takes)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="int8-timing-") as folder:
        pre, _ = _preprocess(fp32_path, Path(folder) / "pre.onnx")
        images = torch.randn(TIMING_CALIB_SAMPLES, *input_size, generator=torch.Generator().manual_seed(0))
        _Quantizer(pre, images, "minmax", Path(folder) / "calibration.json", symmetric).write(out_path)


def weighted_layers(path: Path) -> list[str]:
    """Names of the nodes with weights, in graph order (the names ``--int8-exclude`` takes)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type in WEIGHTED_OPS]


def _check_excludes(exclude, weighted: list[str]) -> None:
    unknown = [name for name in exclude if name not in weighted]
    if unknown:
        shown = ", ".join(weighted[:8]) + (" ..." if len(weighted) > 8 else "")
        raise CompressorError(f"--int8-exclude {unknown[0]!r} is not a layer with weights in this model's ONNX "
                              f"graph; its layers are: {shown}")


def _fall_back(quantizer, out_path, sets, reference, settings, weighted, outcome, probe_path) -> Int8Outcome:
    candidates = [n for n in weighted if n not in outcome.float_layers]
    budget = int(MAX_FLOAT_FRACTION * len(weighted)) - len(outcome.float_layers)
    harm = {name: quantizer.harm_alone(name, probe_path, sets.check[:PROBE_IMAGES], reference[:PROBE_IMAGES])
            for name in candidates}
    outcome.sensitivity = {name: round(value, 6) for name, value in harm.items()}
    tried = 0
    for name in sorted(candidates, key=harm.__getitem__, reverse=True):
        if len(outcome.auto_float_layers) >= budget or tried >= 2 * max(budget, 0):
            break
        tried += 1
        floats = [*outcome.float_layers, name]
        quantizer.write(probe_path, exclude=floats)
        agreement = _agreement(probe_path, sets.check, reference)
        log.info("INT8 gate: %s in float: top-1 agreement %.1f%% (was %.1f%%)", name, 100 * agreement,
                 100 * outcome.agreement)
        if agreement <= outcome.agreement:
            continue  # no help: it stays INT8 (a float layer costs speed)
        outcome.float_layers.append(name)
        outcome.auto_float_layers.append(name)
        outcome.agreement = agreement
        probe_path.replace(out_path)  # the file kept is the one whose agreement is reported
        if outcome.passed:
            break
    outcome.quantized_layers = [n for n in weighted if n not in outcome.float_layers]
    return outcome


def _preprocess(fp32_path: Path, pre_path: Path) -> tuple[Path, str]:
    """ONNX Runtime's recommended pre-pass (shape inference, graph clean-up), with named nodes;
    where it cannot run, the model as exported (named), and the reason."""
    from onnxruntime.quantization import quant_pre_process

    note = "onnxruntime quant_pre_process"
    try:
        quant_pre_process(str(fp32_path), str(pre_path))
        model = onnx.load(str(pre_path))
    except Exception as error:  # noqa: BLE001 - the pre-pass is optional; quantization itself decides
        note = f"quant_pre_process skipped: {one_line(error, 200)}"
        model = onnx.load(str(fp32_path))
    # the calibrator runs its own session, out of RunLimit's reach: a graph that repeats is refused
    check_bounded(model, fp32_path.name, "ONNX Runtime's INT8 calibrator")
    for index, node in enumerate(model.graph.node):
        if not node.name:  # --int8-exclude and the manifest need a name for every layer
            node.name = f"{node.op_type}_{index}"
    onnx.save(model, str(pre_path))
    return pre_path, note


class _Quantizer:
    """One calibrated model, quantized with different layers kept in float."""

    def __init__(self, model: Path, images: torch.Tensor, method: str, cache: Path, symmetric: bool = True) -> None:
        from onnxruntime.quantization import quantize_static

        self.model, self.images, self.method, self.symmetric = model, images, method, symmetric
        self.output_ops = _output_op_types(model)
        has_cache = "calibration_cache_path" in inspect.signature(quantize_static).parameters
        self.cache = cache if has_cache else None
        if self.cache is not None:
            self.cache.unlink(missing_ok=True)

    def write(self, out: Path, exclude=(), only=None) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile}
        activations = QuantType.QInt8 if self.symmetric else QuantType.QUInt8
        extra = {
            "ActivationSymmetric": self.symmetric, "WeightSymmetric": True,
            # The model's outputs stay float: 8-bit logits are ~0.4 % of their range apart, enough to swap
            # the top two classes of a model that is not very sure (measured: 94 % -> 97 % agreement).
            "OpTypesToExcludeOutputQuantization": self.output_ops,
        }
        cache = {"calibration_cache_path": str(self.cache)} if self.cache is not None else {}
        try:
            quantize_static(
                str(self.model), str(out), _Reader(self.model, self.images), quant_format=QuantFormat.QDQ,
                per_channel=True, activation_type=activations, weight_type=QuantType.QInt8,
                nodes_to_exclude=list(exclude), nodes_to_quantize=only, calibrate_method=methods[self.method],
                extra_options=extra, **cache,
            )
        except CompressorError:
            raise
        except Exception as error:  # noqa: BLE001 - the quantizer's refusals are this model's, said in one line
            raise CompressorError(f"ONNX Runtime's quantizer cannot quantize this model: {one_line(error, 300)}") \
                from error

    def harm_alone(self, name: str, probe: Path, images: torch.Tensor, reference: np.ndarray) -> float:
        """Relative logit error on ``images`` with only layer ``name`` in INT8."""
        self.write(probe, only=[name])
        logits = run_onnx(probe, images)
        scale = float(np.abs(reference).max()) or 1.0
        return float(np.abs(logits - reference).max() / scale)


def _output_op_types(path: Path) -> list[str]:
    """Op types of the nodes that produce the graph's outputs."""
    graph = onnx.load(str(path), load_external_data=False).graph
    outputs = {output.name for output in graph.output}
    return sorted({node.op_type for node in graph.node if outputs & set(node.output)})


class _Reader:
    """Feeds the calibration images to ONNX Runtime's calibrator, a batch at a time."""

    def __init__(self, model: Path, images: torch.Tensor) -> None:
        self.name = onnx.load(str(model), load_external_data=False).graph.input[0].name
        self.batches = iter(images.split(CHUNK))

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.name: batch.numpy()}

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def run_onnx(path: Path, images: torch.Tensor, provider: str = ORT_CPU) -> np.ndarray:
    """The first output of ``path`` on ``images``, in chunks."""
    run = session_runner(open_session(path, provider), path.name)
    return np.concatenate([run(batch)[0] for batch in images.split(CHUNK)])


def _agreement(path: Path, images: torch.Tensor, reference: np.ndarray) -> float:
    return top1_agreement(run_onnx(path, images), reference)


def top1_agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    if logits.shape != reference.shape:
        raise CompressorError(f"the INT8 model returned shape {logits.shape}, PyTorch {reference.shape}")
    return float(np.mean(logits.argmax(axis=-1) == reference.argmax(axis=-1)))


def reference_logits(model, images: torch.Tensor) -> np.ndarray:
    """PyTorch fp32's output on ``images``: one (batch, classes) tensor of finite logits."""
    from compressor.export.parity import torch_runner

    run = torch_runner(model)
    outputs = [run(batch) for batch in images.split(CHUNK)]
    if len(outputs[0]) != 1:
        # the gate compares one output's top-1; the others would be quantized with nothing checking them
        raise CompressorError(
            f"--int8's gate judges the top-1 of one classifier output, and this model has {len(outputs[0])} outputs; "
            "export it without --int8"
        )
    logits = np.concatenate([output[0] for output in outputs])
    # (batch, classes) only: on a (batch, C, H, W) map the "top-1" of the last axis is a pixel column
    if logits.ndim != 2 or logits.shape[-1] < 2:
        raise CompressorError(
            f"--int8's gate judges top-1 agreement, and this model's output {tuple(logits.shape)} is not "
            "(batch, classes) class scores; export it without --int8"
        )
    if not np.isfinite(logits).all():  # nothing to agree with; the calibrator would fail on NaN ranges
        raise CompressorError("--int8: PyTorch fp32's outputs on the calibration split's images are not finite "
                              "(NaN or inf), so there is nothing for INT8 to agree with; check the model's weights")
    return logits

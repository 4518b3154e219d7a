"""One runner per backend: a batch of float32 images in, the classifier's logits out
(a ``(batch, classes)`` numpy array, the first output when a model has several).

* PyTorch: the pruned model file read with ``load_pruned`` (weights only; a
  ``module.path:factory`` model is imported only with ``trust_code``), fp32, on the CPU;
* ONNX Runtime: the CUDA provider when this machine has one that works, else the CPU
  provider; a file whose inputs are float16 gets float16 images;
* TensorRT: the engine on the GPU, fed in chunks its optimisation profile accepts.

Every way a file can fail to load or run is one ``CompressorError`` naming the file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from compressor.errors import CompressorError, one_line
from compressor.evaluation.subjects import NOT_A_CLASSIFIER, ONNX, PYTORCH, TENSORRT, Subject
from compressor.export.ort import ORT_CPU, open_session, preferred_provider

log = logging.getLogger(__name__)


@dataclass
class Runner:
    name: str
    backend: str  # "pytorch", "onnxruntime" or "tensorrt"
    provider: str  # where it ran: "cpu (torch 2.x)", "CPUExecutionProvider", "TensorRT 10.x on <gpu>"
    input_size: tuple | None  # (C, H, W) the model takes; None entries: dynamic
    run: Callable[[torch.Tensor], np.ndarray]
    num_classes: int | None = None
    notes: tuple[str, ...] = ()  # shown under the report's table (which of several outputs was scored)
    model: torch.nn.Module | None = None  # PyTorch's model, for the memory estimate of a batch
    fixed_batch: int | None = None  # a file whose batch dimension is fixed gets chunks padded to it

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        try:
            logits = self.run(images)
        except CompressorError:
            raise
        except Exception as error:  # noqa: BLE001 - a backend's failure on our images is the file's
            raise CompressorError(f"{self.backend} failed to run {self.name} on a batch of shape "
                                  f"{tuple(images.shape)}: {one_line(error)}") from error
        if logits.ndim != 2 or logits.shape[0] != images.shape[0]:
            raise CompressorError(f"{self.name}'s output has shape {tuple(logits.shape)}, not (batch, classes): "
                                  "eval measures classifiers")
        if not np.isfinite(logits).all():
            # argmax of NaN scores is an index all the same: it would be reported as an accuracy
            raise CompressorError(f"{self.name} returned NaN or infinite scores on a batch of shape "
                                  f"{tuple(images.shape)}; its accuracy cannot be measured")
        return logits


def make_runner(subject: Subject, trust_code: bool = False) -> Runner:
    if subject.kind == PYTORCH:
        return pytorch_runner(subject.path, trust_code)
    if subject.kind == ONNX:
        return onnx_runner(subject.path, subject.name)
    if subject.kind == TENSORRT:
        return tensorrt_runner(subject.path, subject.name)
    raise ValueError(f"unknown subject kind {subject.kind!r}")


def pytorch_runner(path: Path, trust_code: bool = False) -> Runner:
    """The pruned model as ``exporters/sources.py`` loads it, fp32 on the CPU."""
    from compressor.export.outputs import flatten_outputs, run_model
    from compressor.models.deployable import is_detector
    from compressor.runfiles.modelfile import load_pruned

    model, spec, _ = load_pruned(path, trust_code)
    if is_detector(model):
        raise CompressorError(NOT_A_CLASSIFIER.format(what=f"{path} holds a detector ({spec.name})"))
    model = model.eval().float().cpu()

    def run(images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return flatten_outputs(run_model(model, images))[0].float().numpy()

    return Runner("pytorch", "pytorch", f"cpu (torch {torch.__version__})", tuple(spec.input_size), run,
                  spec.num_classes, model=model)


def onnx_runner(path: Path, name: str) -> Runner:
    from compressor.export.runlimit import RunLimit

    provider = preferred_provider()
    try:
        session = open_session(path, provider, name)
    except CompressorError as error:
        if provider == ORT_CPU:
            raise
        log.warning("%s on %s failed (%s); using %s", name, provider, error, ORT_CPU)
        session = open_session(path, ORT_CPU, name)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise CompressorError(f"{name} takes {len(inputs)} inputs; eval feeds one batch of images")
    shape = list(inputs[0].shape)
    if len(shape) != 4:
        raise CompressorError(f"{name} takes input of shape {shape}, not (batch, C, H, W) images")
    dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
    input_name = inputs[0].name
    fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    limit = RunLimit(name)  # a foreign graph can run for ever (a Loop of 10^15 steps)

    def run_once(x: np.ndarray) -> np.ndarray:
        return np.asarray(limit(lambda options: session.run(None, {input_name: x}, options))[0], dtype=np.float32)

    def run(images: torch.Tensor) -> np.ndarray:
        x = images.numpy().astype(dtype, copy=False)
        if fixed_batch is None:
            return run_once(x)
        return _in_chunks(run_once, x, fixed_batch)

    size = tuple(d if isinstance(d, int) and d > 0 else None for d in shape[1:])
    outputs = session.get_outputs()
    out_shape = list(outputs[0].shape) if outputs else []
    # a static class count lets evaluate() say when the file predicts other classes than the data has
    classes = out_shape[1] if len(out_shape) == 2 and isinstance(out_shape[1], int) and out_shape[1] > 0 else None
    notes = ()
    if len(outputs) > 1:
        notes = (f"{name} has {len(outputs)} outputs ({', '.join(o.name for o in outputs)}); the first, "
                 f"{outputs[0].name!r}, is scored as its class scores",)
    return Runner(name, "onnxruntime", session.get_providers()[0], size, run, classes, notes, fixed_batch=fixed_batch)


def _in_chunks(run_once, x: np.ndarray, batch: int) -> np.ndarray:
    """A model whose batch size is fixed: full chunks, the last one padded with zeros."""
    outputs = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        size = len(chunk)
        if size < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - size, *chunk.shape[1:]), dtype=chunk.dtype)])
        outputs.append(run_once(chunk)[:size])
    return np.concatenate(outputs)


def tensorrt_runner(path: Path, name: str) -> Runner:
    from compressor.export.tensorrt import EngineRunner, engine_provider

    try:
        engine = EngineRunner(path)
        shape = tuple(engine.engine.get_tensor_shape(engine.input))
        largest = int(engine.engine.get_tensor_profile_shape(engine.input, 0)[2][0])
    except CompressorError:
        raise
    except Exception as error:  # noqa: BLE001 - a damaged or foreign engine
        raise CompressorError(f"TensorRT cannot load {name}: {one_line(error)}") from error

    def run(images: torch.Tensor) -> np.ndarray:
        outputs = [engine(chunk)[0] for chunk in images.split(max(largest, 1))]
        return np.concatenate(outputs).astype(np.float32, copy=False)

    size = tuple(d if d > 0 else None for d in shape[1:])
    return Runner(name, "tensorrt", engine_provider(), size, run)


def check_input_size(runner: Runner, input_size: tuple) -> None:
    """The images must be what the model takes (a dynamic dimension takes anything)."""
    expected = runner.input_size
    if expected is None:
        return
    fits = len(expected) == len(input_size) and all(e is None or e == s for e, s in zip(expected, input_size))
    if not fits:
        shown = "x".join("?" if e is None else str(e) for e in expected)
        raise CompressorError(
            f"the images are {'x'.join(map(str, input_size))} (C x H x W) but {runner.name} takes {shown}; "
            "evaluate it on the data it was made for (--data, --data-dir)"
        )

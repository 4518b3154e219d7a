"""PyTorch -> one ONNX file with a symbolic batch dimension.

The dynamo exporter (``torch.onnx.export(dynamo=True)``) is tried first: it is
torch's supported path and runs onnxscript's graph optimiser.  When it raises, or
produces something we cannot use (a static batch dim, a different opset than
asked for), the TorchScript exporter (``dynamo=False``) is tried, and the reason
for the fallback is kept for the manifest.  Nothing about "export succeeded" is
trusted: the caller's parity gate decides whether the file is any good.

Tracing runs the model once and records the ops it happened to execute: a Python
``if`` on a tensor's value (or on the batch size) is frozen into whichever branch
that one example took, and the file is silently wrong for other inputs.  The tracer
says so through ``TracerWarning``; such a trace is traced again on other batch sizes
and input scales (``trace_check``) and refused when the graph changes, unless the
caller allows it (``allow_trace``); the warnings go into the manifest either way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import warnings

import onnx
import torch
from torch import nn

from compressor.errors import CompressorError, one_line
from compressor.export.messages import quiet
from compressor.export.opsets import DYNAMO_OPSETS, TORCHSCRIPT_OPSETS, within
from compressor.export.outputs import INPUT_NAME, output_names, run_model
BATCH_DIM = "batch"
# torch.export specialises a dimension whose example size is 0 or 1 to a constant,
# so the example batch must be >= 2 for the batch dimension to stay symbolic.
EXAMPLE_BATCH = 2
# Protobuf cannot hold a model over 2 GiB; stay clear of it before inlining weights.
INLINE_LIMIT_BYTES = 1_800_000_000


@dataclass(frozen=True)
class OnnxExport:
    """Which exporter wrote ``path``, at which opset, and why it was not the first choice."""

    path: Path
    exporter: str  # "dynamo" or "torchscript"
    opset: int
    fallback_reason: str | None
    trace_warnings: tuple[str, ...] = ()  # what the TorchScript tracer said it may have frozen
    trace_check: str | None = None  # how a warned trace was checked (exporters.trace_check)


class TraceRefused(CompressorError):
    """Only the TorchScript tracer could export the model, and it saw data-dependent control flow."""


def export_onnx(model: nn.Module, input_size, path: Path, opset: int, allow_trace: bool = False) -> OnnxExport:
    """Export ``model`` (eval, CPU, fp32) to ``path``; dynamo first, TorchScript second.
    ``allow_trace``: keep a trace the tracer warned about (see the module docstring)."""
    model = model.eval().float().cpu()
    example = torch.randn(EXAMPLE_BATCH, *input_size, generator=torch.Generator().manual_seed(0))
    if _weight_bytes(model) >= INLINE_LIMIT_BYTES:
        raise CompressorError("models with over 1.8 GB of weights (ONNX external data) are not supported yet")
    names = output_names(run_model(model, example))
    reasons = []
    attempts = (("dynamo", DYNAMO_OPSETS, _export_dynamo), ("torchscript", TORCHSCRIPT_OPSETS, _export_torchscript))
    for exporter, bounds, write in attempts:
        if not within(opset, bounds):
            reasons.append(f"the {exporter} exporter cannot write opset {opset} ({bounds[0]}-{bounds[1]})")
            continue
        problem, warned = _try(write, model, example, path, opset, names)
        if problem is None:
            fallback = "; ".join(reasons) or None
            check = _check_warned_trace(write, model, example, path, opset, names, fallback, warned, allow_trace)
            return OnnxExport(path, exporter, opset, fallback, warned, check)
        reasons.append(f"{exporter}: {problem}")
    path.unlink(missing_ok=True)
    raise CompressorError("ONNX export failed: " + "; ".join(reasons))


def _check_warned_trace(write, model, example, path, opset, names, fallback, warned, allow_trace) -> str | None:
    """None without warnings; else how the trace was checked, or TraceRefused (see trace_check)."""
    from compressor.export.trace_check import first_difference

    if not warned:
        return None
    if allow_trace:
        return "not checked: --allow-trace"
    try:
        with quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            changed = first_difference(write, model, example, path, opset, names)
    except Exception as error:  # noqa: BLE001 - a trace that cannot be repeated is not trusted either
        path.unlink(missing_ok=True)
        raise TraceRefused(_trace_refusal(fallback, warned, f"tracing it again failed ({one_line(error)})"))
    if changed is None:
        return "traced again at another batch size, at inputs x100 and x0.01 and on 0-255 pixels: the same graph"
    path.unlink(missing_ok=True)
    raise TraceRefused(_trace_refusal(fallback, warned, f"tracing it on {changed} wrote a different graph"))


def _trace_refusal(fallback: str | None, warned: tuple[str, ...], found: str) -> str:
    why = f" ({fallback[:160]})" if fallback else ""
    return (
        f"only the TorchScript tracer could export this model{why}; it warned that the trace may be wrong for "
        f"other inputs ({warned[0][:140]}), and {found}: the model branches on its batch size or input "
        "values, which a trace freezes: refused (make the branch exportable by torch.export, or pass "
        "--allow-trace to keep the trace; the manifest records it)"
    )


def _try(write, model, example, path: Path, opset: int, names: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """Run one exporter and check its file: (the problem as one line or None, tracer warnings)."""
    path.unlink(missing_ok=True)
    try:
        with quiet(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", torch.jit.TracerWarning)
            write(model, example, path, opset, names)
    except Exception as error:  # noqa: BLE001 - any exporter failure means: try the next one
        return one_line(error), ()
    return check_exported(path, opset), _tracer_warnings(caught)


def _tracer_warnings(caught: list[warnings.WarningMessage]) -> tuple[str, ...]:
    """Each distinct tracer warning once, with where in the model's code it came from."""
    found = []
    for record in caught:
        if issubclass(record.category, torch.jit.TracerWarning):
            found.append(f"{Path(record.filename).name}:{record.lineno}: {one_line(str(record.message), 160)}")
    return tuple(dict.fromkeys(found))


def _export_dynamo(model, example, path: Path, opset: int, names: list[str]) -> None:
    batch = torch.export.Dim(BATCH_DIM, min=1)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=names,
        opset_version=opset,
        dynamic_shapes=({0: batch},),
        optimize=True,
        verbose=False,
    )
    _check_batch_range(program.exported_program)
    program.save(str(path), external_data=False)  # one self-contained file


class BatchRangeNarrowed(Exception):
    """torch.export kept the batch symbolic but proved the program only for some sizes."""


def _check_batch_range(exported) -> None:
    """A branch on the batch size (``if x.shape[0] > 4``) does not fail torch.onnx's export:
    the guard narrows the batch symbol's range and the file is silently wrong outside it.
    Anything narrower than 1..infinity is refused here, so the tracer (and its own refusal)
    is what the user hears about next."""
    name = exported.graph_signature.user_inputs[0]
    node = next(n for n in exported.graph.nodes if n.op == "placeholder" and n.name == name)
    size = node.meta["val"].shape[0]
    if not isinstance(size, torch.SymInt):
        return  # a static batch: check_exported reports it
    span = exported.range_constraints.get(size.node.expr)
    if span is not None and (float(span.upper) != float("inf") or int(span.lower) > 1):
        raise BatchRangeNarrowed(
            f"the exported program holds only for batch sizes {span.lower}-{span.upper} "
            "(the model branches on its batch size)"
        )


def _export_torchscript(model, example, path: Path, opset: int, names: list[str]) -> None:
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=False,
        input_names=[INPUT_NAME],
        output_names=names,
        opset_version=opset,
        dynamic_axes={name: {0: BATCH_DIM} for name in (INPUT_NAME, *names)},
        do_constant_folding=True,
    )


def check_exported(path: Path, opset: int) -> str | None:
    """Why the file at ``path`` is unusable (wrong opset, static batch), or None."""
    model = onnx.load(str(path), load_external_data=False)
    produced = model_opset(model)
    if produced != opset:
        return f"asked for opset {opset} but the file declares opset {produced}"
    if not batch_dim_is_symbolic(model):
        return "the input's batch dimension came out static"
    return None


def model_opset(model: onnx.ModelProto) -> int | None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


def batch_dim_is_symbolic(model: onnx.ModelProto) -> bool:
    """Dim 0 of every graph input is a named parameter, not a fixed value."""
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if not dims or not dims[0].HasField("dim_param") or not dims[0].dim_param:
            return False
    return True


def io_signature(model: onnx.ModelProto) -> tuple[list[dict], list[dict]]:
    """Names, shapes (symbolic dims as strings) and dtypes of the graph's inputs and outputs."""

    def describe(value) -> dict:
        tensor = value.type.tensor_type
        shape = [d.dim_param if d.HasField("dim_param") else int(d.dim_value) for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        return {"name": value.name, "shape": shape, "dtype": dtype}

    initializers = {init.name for init in model.graph.initializer}
    inputs = [describe(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [describe(v) for v in model.graph.output]


def _weight_bytes(model: nn.Module) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)

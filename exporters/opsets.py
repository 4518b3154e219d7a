"""Which ONNX opsets the installed torch can write, read from torch itself.

Kept apart from the exporter (and free of ``import onnx``) so the CLI can show the
default in ``--help`` and refuse a bad ``--opset`` without loading the ONNX stack.
"""
from __future__ import annotations

import torch

from compressor.errors import CompressorError


def _torch_constant(module: str, name: str, fallback: int) -> int:
    """torch keeps its opset limits in private modules; read them defensively."""
    try:
        import importlib

        return int(getattr(importlib.import_module(module), name))
    except (ImportError, AttributeError, TypeError, ValueError):
        return fallback


DEFAULT_OPSET = _torch_constant("torch.onnx._constants", "ONNX_DEFAULT_OPSET", 20)
# The dynamo exporter's op library is written against opset 18; lower opsets need the
# ONNX version converter, which fails on common ops (and then silently keeps 18).
DYNAMO_OPSETS = (
    _torch_constant("torch.onnx._internal.exporter._constants", "TORCHLIB_OPSET", 18),
    _torch_constant("torch.onnx._constants", "ONNX_MAX_OPSET", 23),
)
TORCHSCRIPT_OPSETS = (
    _torch_constant("torch.onnx._constants", "ONNX_MIN_OPSET", 7),
    _torch_constant("torch.onnx._constants", "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20),
)


def within(opset: int, bounds: tuple[int, int]) -> bool:
    return bounds[0] <= opset <= bounds[1]


def supported_range_text() -> str:
    low = min(DYNAMO_OPSETS[0], TORCHSCRIPT_OPSETS[0])
    high = max(DYNAMO_OPSETS[1], TORCHSCRIPT_OPSETS[1])
    return (
        f"torch {torch.__version__} can produce opsets {low}-{high} "
        f"(dynamo exporter {DYNAMO_OPSETS[0]}-{DYNAMO_OPSETS[1]}, "
        f"TorchScript exporter {TORCHSCRIPT_OPSETS[0]}-{TORCHSCRIPT_OPSETS[1]})"
    )


def check_opset(opset: int | None) -> int:
    """The opset to export at; refuses one that no installed exporter can write."""
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if not (within(opset, DYNAMO_OPSETS) or within(opset, TORCHSCRIPT_OPSETS)):
        raise CompressorError(f"opset {opset} is not supported: {supported_range_text()}")
    return opset

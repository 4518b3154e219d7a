"""Which ONNX opsets the installed torch can write, read from torch's own files.

Kept apart from the exporter (and free of ``import onnx`` and ``import torch``) so the
CLI can show the default in ``--help`` and refuse a bad ``--opset`` without loading
the ONNX stack or torch: the limits are literal assignments in torch's private
constants modules, so they are read from the installed source with ``ast``
(``tests/unit/test_cli_lazy_imports.py`` checks them against the imported values).
"""
from __future__ import annotations

import ast
import importlib.util
from importlib import metadata
from pathlib import Path

from compressor.errors import CompressorError


def _torch_root() -> Path | None:
    spec = importlib.util.find_spec("torch")  # finds the package without importing it
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def _torch_constant(module: str, name: str, fallback: int) -> int:
    """``module.name`` as torch defines it; ``fallback`` if this torch does not (any more)."""
    root = _torch_root()
    if root is None:
        return fallback
    path = root.joinpath(*module.split(".")[1:]).with_suffix(".py")
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, ValueError):
        return fallback
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            try:
                return int(ast.literal_eval(node.value))
            except (ValueError, TypeError):
                return fallback
    return fallback


def _torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "(not installed)"


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
        f"torch {_torch_version()} can produce opsets {low}-{high} "
        f"(dynamo exporter {DYNAMO_OPSETS[0]}-{DYNAMO_OPSETS[1]}, "
        f"TorchScript exporter {TORCHSCRIPT_OPSETS[0]}-{TORCHSCRIPT_OPSETS[1]})"
    )


def resolve_opset(opset: int | None) -> int:
    """The opset to export at: ``opset``, or the installed torch's default for None."""
    return DEFAULT_OPSET if opset is None else int(opset)


def check_opset(opset: int | None) -> int:
    """The opset to export at; refuses one that no installed exporter can write.  Called once,
    by ``ExportConfig`` (every export's options pass through it)."""
    opset = resolve_opset(opset)
    if not (within(opset, DYNAMO_OPSETS) or within(opset, TORCHSCRIPT_OPSETS)):
        raise CompressorError(f"opset {opset} is not supported: {supported_range_text()}")
    return opset

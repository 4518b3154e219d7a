"""Errors the analyser raises for models it cannot handle."""
from __future__ import annotations

from compressor.errors import CompressorError


class UnsupportedOperationError(CompressorError):
    """An op consumed prunable channels in a way the analyser cannot follow."""

    def __init__(self, op: str, module: str, module_type: str):
        where = f"module '{module}' ({module_type})" if module else "the model's forward"
        hint = f"--ignore {module}" if module else "--ignore on the enclosing module"
        super().__init__(
            f"cannot follow channels through op '{op}' in {where}; "
            f"pass {hint} to keep the channels that reach it fixed"
        )
        self.op = op
        self.module = module


class ModelRunError(CompressorError):
    """The model's own forward pass failed on the example input (wrong input size...)."""

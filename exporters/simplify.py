"""Optional graph simplification with onnxsim.

The dynamo exporter already folds constants, so simplification is a clean-up
(fused BN, removed identity chains), never a requirement: when onnxsim is missing,
fails, reports its own check failed, or loses the symbolic batch dimension, the
unsimplified model is kept and the reason recorded.  The result is re-verified by
the same parity gate as the unsimplified model (the pipeline does that).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from compressor.errors import one_line
from compressor.export.messages import quiet
from compressor.export.onnx_export import batch_dim_is_symbolic


@dataclass(frozen=True)
class Simplified:
    """``path`` holds the simplified model when ``applied``; ``reason`` says why not."""

    applied: bool
    path: Path | None
    reason: str | None
    nodes_before: int
    nodes_after: int | None

    def to_dict(self) -> dict:
        return {
            "tool": "onnxsim",
            "applied": self.applied,
            "reason": self.reason,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
        }


def simplify_onnx(source: Path, target: Path) -> Simplified:
    """Write a simplified copy of ``source`` to ``target`` if onnxsim manages it."""
    model = onnx.load(str(source))
    before = len(model.graph.node)
    try:
        import onnxsim
    except ImportError as error:
        return Simplified(False, None, f"onnxsim is not installed ({error}); pip install onnxsim", before, None)
    try:
        with quiet():
            simplified, ok = onnxsim.simplify(model)
    except Exception as error:  # noqa: BLE001 - onnxsim failing is a reason to skip it, not to stop
        return Simplified(False, None, f"onnxsim failed: {one_line(error)}", before, None)
    if not ok:
        return Simplified(False, None, "onnxsim's own output check failed", before, None)
    if not batch_dim_is_symbolic(simplified):
        return Simplified(False, None, "onnxsim made the batch dimension static", before, None)
    onnx.save(simplified, str(target))
    return Simplified(True, target, None, before, len(simplified.graph.node))

"""What ``compress bench`` may reuse: only what it can verify now.

* Cached artifacts (ONNX files, FP16 ONNX files, engines) carry a record
  ``.NAME.record.json`` with the file's SHA-256 and the identity of the source it was
  made from (the model's architecture and weights, or the ONNX an engine was built
  from).  A cached file is reused only if both match; anything else (a planted or
  edited file, a file from another model, an old cache without a record) is rebuilt,
  with a log line.  A speed-up measured on a file nobody vouches for would be a lie.
* MACs of an exported file are counted from its ONNX graph (Conv, ConvTranspose,
  Gemm, MatMul, as ``compressor.engine.flops`` counts the PyTorch model); a manifest's
  ``macs`` is only a claim, checked against that count and refused on a mismatch.
"""
from __future__ import annotations

import hashlib
import json
import logging
from math import prod
from pathlib import Path
from typing import Callable

import torch

from compressor.atomic import atomic_write_file, atomic_write_text
from compressor.errors import CompressorError
from compressor.hashing import file_sha256

log = logging.getLogger(__name__)

MACS_TOLERANCE = 0.01  # relative; the ONNX graph and the PyTorch counter agree far closer on real exports


def model_identity(model: torch.nn.Module, input_size) -> str:
    """SHA-256 of the architecture (its repr), the input size and every tensor of the state."""
    digest = hashlib.sha256(f"{model!r}|{tuple(input_size)}".encode())
    for name, tensor in model.state_dict().items():
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{data.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _record_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.record.json")


def _record_matches(target: Path, source: str) -> bool:
    try:
        record = json.loads(_record_path(target).read_text())
        return record == {"sha256": file_sha256(target), "source": source}
    except (OSError, ValueError):
        return False


def cached(target: Path, source: str, make: Callable[[Path], None]) -> Path:
    """``target`` if its record vouches for its content and ``source``; else made again.

    ``make`` writes a fresh temp file that then replaces ``target``: a link planted at the
    target (or at any fixed staging name) is replaced, never written through."""
    if target.is_file() and not target.is_symlink() and _record_matches(target, source):
        return target
    if target.exists() or target.is_symlink():
        log.warning("bench cache: %s is not the file recorded for this source model; rebuilding it", target)
    atomic_write_file(target, make)
    atomic_write_text(_record_path(target), json.dumps({"sha256": file_sha256(target), "source": source}))
    return target


# -- MACs of an ONNX graph --------------------------------------------------------------------------
def onnx_macs(path: Path) -> int | None:
    """MACs of one image (a symbolic batch counts as 1); None when a shape cannot be inferred."""
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    except Exception:  # noqa: BLE001 - unreadable: the caller reports no MACs rather than guessing
        return None
    shapes = _shapes(model.graph)
    total = 0
    for node in model.graph.node:
        macs = _node_macs(node, shapes)
        if macs is None:
            return None
        total += macs
    return total


def _shapes(graph) -> dict[str, tuple[int, ...]]:
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    for info in (*graph.input, *graph.value_info, *graph.output):
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)
    return shapes


def _node_macs(node, shapes: dict) -> int | None:
    if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        return 0
    needed = [node.input[0], node.input[1], node.output[0]]
    if not all(name in shapes for name in needed):
        return None
    first, weight, out = (shapes[name] for name in needed)
    if node.op_type == "Conv":  # each output element: (C_in / groups) * kh * kw
        return prod(out) * prod(weight[1:])
    if node.op_type == "ConvTranspose":  # each input element scatters into (C_out / groups) * kh * kw
        return prod(first) * prod(weight[1:])
    trans_a = any(a.name == "transA" and a.i for a in node.attribute)
    inner = first[0] if node.op_type == "Gemm" and trans_a else first[-1]
    return prod(out) * inner


def checked_macs(path: Path, claimed) -> int | None:
    """MACs of ``path`` counted from its graph when a manifest claims a value; the claim
    is refused if it disagrees.  No claim: None (a bare ONNX file is counted with
    ``onnx_macs`` directly)."""
    if claimed is None:
        return None
    counted = onnx_macs(path)
    if counted is None:
        log.warning("%s: its manifest claims %s MACs, which cannot be checked; MACs not reported", path, claimed)
        return None
    valid = isinstance(claimed, int) and not isinstance(claimed, bool) and claimed > 0
    if not valid or abs(claimed - counted) > MACS_TOLERANCE * counted:
        raise CompressorError(
            f"{path}: its manifest.json claims {claimed!r} MACs but the ONNX graph has {counted:,}; refusing "
            "a MACs ratio from a manifest that does not match its model (re-export it with compress export)"
        )
    return counted

"""Is a trace that warned still the same program for other inputs?

The TorchScript tracer warns whenever a traced value becomes a Python bool or int.
Some of those branches decide nothing that can change after export: a branch on
the image height of a model exported at a fixed height (Swin's window padding) is
taken the same way for every input the file will ever get.  Others freeze one
branch of something that varies: the batch size, or the input's values.

So a warned trace is traced again on inputs that vary exactly what a deployed file
sees vary -- another batch size, inputs 100x larger and 100x smaller, non-negative
pixel values -- and every
trace must write the same graph (same ops, attributes and constants, in the same
order).  A branch on the batch size or on the values shows up as a different graph
and the export is refused; the same graph everywhere is recorded in the manifest.
It is evidence, not proof: a threshold these inputs do not cross stays unseen, which
is why the parity gate also runs on scaled and real inputs.
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Callable

import onnx
import torch

OTHER_BATCH = 5  # not the export example's 2, and past the small sizes models special-case
SCALES = (100.0, 0.01)


def variations(example: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    other = torch.randn(OTHER_BATCH, *example.shape[1:], generator=generator)
    pixels = torch.rand(example.shape, generator=generator) * 255  # non-negative, like raw images
    return ([(f"batch {OTHER_BATCH}", other)] + [(f"inputs x{s:g}", example * s) for s in SCALES]
            + [("inputs uniform in 0-255", pixels)])


def graph_signature(path: Path) -> str:
    """A digest of the graph's nodes (op, attributes) and constants, names left out."""
    graph = onnx.load(str(path), load_external_data=False).graph
    digest = hashlib.sha256()
    for node in graph.node:
        digest.update(node.op_type.encode())
        for attribute in node.attribute:
            copy = onnx.AttributeProto()
            copy.CopyFrom(attribute)
            digest.update(copy.SerializeToString())
        digest.update(str((len(node.input), len(node.output))).encode())
    for initializer in graph.initializer:
        digest.update(initializer.raw_data or initializer.SerializeToString())
    return digest.hexdigest()


def first_difference(write: Callable, model, example: torch.Tensor, path: Path, opset: int, names) -> str | None:
    """Trace again on each variation of ``example``; the first one whose graph differs from
    the file at ``path``, or None when all agree.  ``write`` is the TorchScript exporter."""
    expected = graph_signature(path)
    with tempfile.TemporaryDirectory(prefix="compress-retrace-") as scratch:
        for label, x in variations(example):
            again = Path(scratch) / "again.onnx"
            write(model, x, again, opset, names)
            if graph_signature(again) != expected:
                return label
    return None

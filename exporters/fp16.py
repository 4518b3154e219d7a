"""An FP16 copy of the ONNX model whose inputs and outputs stay float32.

TensorRT 11 builds strongly typed networks only, so half precision has to be in
the ONNX graph itself; keeping float32 I/O means callers feed and read the same
arrays as for the fp32 model.  onnxconverter-common's converter is used (it keeps
numerically fragile ops, listed in its block list, in float32 and inserts the casts).

Two kinds of model need care.  An output that is not float32 (a class index, a mask of
bools) cannot come back as float32, and the check of an FP16 file is about the error of
scores: such models are refused before converting, naming the outputs.  A graph output
that other nodes also read (a model returning an intermediate it keeps computing with,
typical of nested outputs: ``{"logits": head(f), "aux": (f, ...)}``) makes the converter
write a graph ONNX Runtime cannot load (the output's cast back to float32 feeds the
float16 consumers); each such output is given its own Identity first.
"""
from __future__ import annotations

from pathlib import Path

import onnx

from compressor.errors import CompressorError, one_line
from compressor.export.messages import quiet
from compressor.export.onnx_export import io_signature


def convert_to_fp16(source: Path, target: Path) -> Path:
    """Write the FP16 variant of ``source`` to ``target``; float32 in, float32 out."""
    try:
        from onnxconverter_common import float16
    except ImportError as error:
        raise CompressorError(
            f"--fp16 needs onnxconverter-common ({one_line(error)}): pip install onnxconverter-common"
        ) from error
    model = onnx.load(str(source))
    _check_float_outputs(model)
    _separate_read_outputs(model)
    try:
        with quiet():
            half = float16.convert_float_to_float16(model, keep_io_types=True)
    except Exception as error:  # noqa: BLE001 - report the converter's failure as one line
        raise CompressorError(f"FP16 conversion failed: {one_line(error)}") from error
    _check_float32_io(half)
    onnx.save(half, str(target))
    return target


def _check_float32_io(model: onnx.ModelProto) -> None:
    inputs, outputs = io_signature(model)
    wrong = [v["name"] for v in inputs + outputs if v["dtype"] != "float32"]
    if wrong:
        raise CompressorError(f"FP16 conversion changed the type of {', '.join(wrong)} away from float32")


def _check_float_outputs(model: onnx.ModelProto) -> None:
    """Refuse, naming them, outputs an FP16 copy cannot keep float32 (integer or bool tensors)."""
    inputs, outputs = io_signature(model)
    other = [f"{v['name']} ({v['dtype']})" for v in inputs + outputs if v["dtype"] != "float32"]
    if other:
        raise CompressorError(
            f"--fp16 supports float32 inputs and outputs only, and this model has {', '.join(other)}"
        )


def _separate_read_outputs(model: onnx.ModelProto) -> None:
    """Give every graph output that nodes also read an Identity of its own (see the module
    docstring); the computation is unchanged, only the converter sees a plain output."""
    graph = model.graph
    read = {name for node in graph.node for name in node.input}
    for output in graph.output:
        if output.name not in read:
            continue
        inner = f"{output.name}__computed"
        for node in graph.node:
            node.input[:] = [inner if name == output.name else name for name in node.input]
            node.output[:] = [inner if name == output.name else name for name in node.output]
        graph.node.append(onnx.helper.make_node("Identity", [inner], [output.name]))

"""An FP16 copy of the ONNX model whose inputs and outputs stay float32.

TensorRT 11 builds strongly typed networks only, so half precision has to be in
the ONNX graph itself; keeping float32 I/O means callers feed and read the same
arrays as for the fp32 model.  onnxconverter-common's converter is used (it keeps
numerically fragile ops, listed in its block list, in float32 and inserts the casts).
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

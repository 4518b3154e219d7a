"""A model's output structure, flattened the way the ONNX exporters flatten it.

A model may return one tensor, a tuple/list of tensors or a dict of them (nested
too).  Both exporters write the tensors as graph outputs in pytree order: tuple
and list items in order, dict values in insertion order.  The parity gate flattens
PyTorch's output the same way, so output i of the ONNX file is compared with
tensor i of the model, and every output is checked, not only the first.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from compressor.errors import CompressorError

INPUT_NAME = "input"  # the graph's input; no output may take its name
SINGLE_OUTPUT_NAME = "logits"


def run_model(model, x: torch.Tensor):
    """``model(x)`` without gradients; the model's own exception becomes one line naming the batch."""
    from compressor.errors import one_line

    try:
        with torch.no_grad():
            return model(x)
    except Exception as error:  # noqa: BLE001 - the user's model may raise anything
        raise CompressorError(f"the model failed on a batch of {len(x)} {tuple(x.shape[1:])} inputs: "
                              f"{one_line(error)}") from error


def flatten_outputs(output) -> list[torch.Tensor]:
    """The tensors of ``output`` in export order; anything else is refused (an ONNX
    graph cannot return a Python number, a string or None)."""
    flat: list[torch.Tensor] = []
    _collect(output, "output", flat)
    if not flat:
        raise CompressorError("the model returns no tensor; there is nothing to export")
    return flat


def _collect(value, where: str, flat: list[torch.Tensor]) -> None:
    if isinstance(value, torch.Tensor):
        flat.append(value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _collect(item, f"{where}[{key!r}]", flat)
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        for index, item in enumerate(value):
            _collect(item, f"{where}[{index}]", flat)
    else:
        raise CompressorError(
            f"the model's {where} is a {type(value).__name__}, not a tensor; export supports outputs made of "
            "tensors (one, or a tuple/list/dict of them): wrap the model in a module that returns those"
        )


def output_names(output) -> list[str]:
    """Graph output names: ``logits`` for a single tensor, else the path of each tensor in
    the structure (``boxes``, ``0``, ``aux.1`` ...), so a user can tell the outputs apart."""
    if isinstance(output, torch.Tensor):
        return [SINGLE_OUTPUT_NAME]
    flatten_outputs(output)  # refuses None, numbers and strings in one line (bench exports without the pipeline)
    names: list[str] = []
    _name(output, "", names)
    seen: dict[str, int] = {INPUT_NAME: 1}  # an output called "input" becomes input_1
    for i, name in enumerate(names):  # "a b" and "a_b" both sanitise to a_b; ONNX names must differ
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[i] = f"{name}_{seen[name] - 1}"
    return names


def _name(value, prefix: str, names: list[str]) -> None:
    if isinstance(value, torch.Tensor):
        names.append(prefix or "output")
        return
    items = value.items() if isinstance(value, Mapping) else enumerate(value)
    for key, item in items:
        label = "".join(c if c.isalnum() or c == "_" else "_" for c in str(key))
        _name(item, f"{prefix}.{label}" if prefix else f"output_{label}" if isinstance(key, int) else label, names)

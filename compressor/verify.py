"""Check the invariant on real inputs: the sliced model equals the masked original."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compressor.analysis.graph import ChannelGraph
from compressor.plan import PruningPlan


@dataclass(frozen=True)
class Equivalence:
    max_abs_diff: float
    reference_scale: float  # max |masked output|, to read the diff against
    changed: bool  # the plan changed the function (else the check would be vacuous)

    def ok(self, atol: float = 1e-5, rtol: float = 1e-5) -> bool:
        return self.max_abs_diff <= atol + rtol * self.reference_scale


def _first_tensor(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return _first_tensor(output[0])
    if isinstance(output, dict):
        return _first_tensor(next(iter(output.values())))
    raise TypeError(f"cannot compare model outputs of type {type(output).__name__}")


def compare(dense: nn.Module, masked: nn.Module, pruned: nn.Module, inputs: tuple) -> Equivalence:
    """Run the three models in eval mode on ``inputs`` and compare their outputs."""
    outputs = []
    with torch.no_grad():
        for model in (dense, masked, pruned):
            was_training = model.training
            model.eval()
            outputs.append(_first_tensor(model(*inputs)).float())
            model.train(was_training)
    reference, result = outputs[1], outputs[2]
    return Equivalence(
        max_abs_diff=float((reference - result).abs().max()),
        reference_scale=float(reference.abs().max()),
        changed=not torch.equal(outputs[0], reference),
    )

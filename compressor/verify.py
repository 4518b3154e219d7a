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


def make_informative(model: nn.Module, std: float = 0.02) -> nn.Module:
    """Make a randomly initialised model's output depend on its input, in place.

    torchvision zero-initialises some heads (ViT), and deep nets at random init can
    be "dead" (GoogLeNet's output does not depend on the input).  Either makes an
    equivalence check vacuous.  All-zero weight matrices get small noise, and
    norm layers get random affine parameters and running statistics, which also
    exercises the slicing of those buffers.
    """
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_var is not None:
                size = module.running_var.shape
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
                if getattr(module, "weight", None) is not None:
                    module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
        for param in model.parameters():
            if param.dim() >= 2 and not param.any():
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model


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

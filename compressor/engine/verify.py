"""Check the invariant on real inputs: the sliced model equals the masked original."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from compressor.engine.analysis.graph import ChannelGraph
from compressor.engine.plan import PruningPlan


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


def calibrate_batch_norm(model: nn.Module, inputs: torch.Tensor) -> nn.Module:
    """Set every BatchNorm's running statistics to those of ``inputs``, in place.

    Random running statistics (``make_informative``) do not normalise anything, so
    activations grow block by block: ResNet-110's output reaches ~2e8 and
    Inception-V3's ~2e10, and then rounding alone is 1e3..1e4 in float32 and no
    fixed bound tells a wrong slice from it.  Calibrated statistics keep outputs at
    the scale of the affine parameters.  Only the BN layers run in training mode,
    so dropout and stochastic depth stay off.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return model
    was_training = model.training
    model.eval()
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: one batch sets the statistics exactly
        norm.train()
    with torch.no_grad():
        model(inputs)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return model.train(was_training)


def _first_tensor(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return _first_tensor(output[0])
    if isinstance(output, dict):
        return _first_tensor(next(iter(output.values())))
    raise TypeError(f"cannot compare model outputs of type {type(output).__name__}")


def compare(
    dense: nn.Module, masked: nn.Module, pruned: nn.Module, inputs: tuple, dtype: torch.dtype | None = None
) -> Equivalence:
    """Run the three models in eval mode on ``inputs`` and compare their outputs.

    With ``dtype`` (e.g. float64) copies of the models run in that precision on
    inputs cast to it, so the rounding left in the difference is that precision's;
    the models passed in are not changed.
    """
    outputs = [_output(model, inputs, dtype) for model in (dense, masked, pruned)]
    reference, result = outputs[1], outputs[2]
    return Equivalence(
        max_abs_diff=float((reference - result).abs().max()),
        reference_scale=float(reference.abs().max()),
        changed=not torch.equal(outputs[0], reference),
    )


def _output(model: nn.Module, inputs: tuple, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None:
        model = _in_dtype(model, dtype)
        inputs = tuple(x.to(dtype) if torch.is_floating_point(x) else x for x in inputs)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        output = _first_tensor(model(*inputs))
    model.train(was_training)
    return output if output.dtype == torch.float64 else output.float()


def _in_dtype(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``model`` itself when it already computes in ``dtype``, else a converted copy
    (copying a large model costs as much as running it)."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.dtype == dtype for t in tensors if torch.is_floating_point(t)):
        return model
    return copy.deepcopy(model).to(dtype)

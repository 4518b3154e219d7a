"""Re-estimating BatchNorm statistics: eval-mode outputs true to the weights they follow.

A BatchNorm's running averages trail the weights by about ten steps (momentum 0.1).  That is
harmless on a long, steady run, and wrong in three places this project meets: the first epochs
of a small dataset (11 steps an epoch on the digits, with the averages still half their
initial 0 and 1), the shrink (every step changes what each BatchNorm downstream sees, and a
channel shrunk in front of a BatchNorm gets gradients that grow as it shrinks), and the model
right after a slice.  Re-estimated on a few training batches, the statistics are the plain
average of those batches' statistics; training never reads them, so re-estimating changes no
weight and no later step.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorms that keep running statistics (the ones eval mode reads)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def reestimate(model: nn.Module, inputs: Iterable[Tensor]) -> int:
    """Replace every BatchNorm's running statistics by the plain average over ``inputs``
    (``momentum=None``), running only the BatchNorms in train mode (dropout and the like stay
    off, so the global RNG is not drawn from); every module's mode and momentum is restored.
    Returns the number of batches seen (0: no BatchNorm, nothing run)."""
    norms = batch_norms(model)
    if not norms:
        return 0
    modes = [(m, m.training) for m in model.modules()]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches
    model.eval()
    for norm in norms:
        norm.train()
    seen = 0
    try:
        for batch in inputs:
            model(batch)
            seen += 1
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        for module, training in modes:
            module.training = training
    return seen

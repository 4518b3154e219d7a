"""Size guards: estimate what a forward pass needs before allocating it.

``--input-size 3,100000,100000`` or ``export --max-batch 100000`` used to allocate
tens of GB and get the process OOM-killed.  The estimate runs the model on the
``meta`` device (shapes only, no memory): the input plus every leaf module's
output, an upper bound for an inference pass.  When a model cannot run on ``meta``
the input alone is the estimate, a lower bound that still catches absurd sizes.
"""
from __future__ import annotations

import copy
import logging
import os

import torch
from torch import nn

from compressor.errors import CompressorError

log = logging.getLogger(__name__)


def forward_bytes(model: nn.Module, input_size, batch: int) -> int:
    inputs = batch * _numel(input_size) * 4  # float32
    try:
        return inputs + _activation_bytes(model, input_size, batch)
    except Exception as error:  # noqa: BLE001 - an op without a meta kernel: fall back to the input
        log.debug("meta-device estimate failed (%s); using the input size alone", error)
        return inputs


def _numel(size) -> int:
    total = 1
    for dim in size:
        total *= int(dim)
    return total


def _activation_bytes(model: nn.Module, input_size, batch: int) -> int:
    meta = copy.deepcopy(model).to("meta").eval()
    total = 0

    def count(module, args, output):
        nonlocal total
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        total += sum(t.numel() * t.element_size() for t in outputs if isinstance(t, torch.Tensor))

    for module in meta.modules():
        if not list(module.children()):
            module.register_forward_hook(count)
    with torch.no_grad():
        meta(torch.empty(batch, *input_size, device="meta"))
    return total


def available_bytes() -> int:
    """Memory this machine can still give (MemAvailable), or physical memory where unknown."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(model: nn.Module, input_size, batch: int, what: str) -> None:
    """Refuse, in one line with the estimate, a forward pass larger than the free memory."""
    needed, free = forward_bytes(model, input_size, batch), available_bytes()
    if needed > free:
        shape = "x".join(str(int(d)) for d in (batch, *input_size))
        raise CompressorError(
            f"{what}: a forward pass at {shape} needs about {_gib(needed)} of memory, this machine has "
            f"{_gib(free)} free; refused before allocating (use a smaller size)"
        )


def _gib(count: int) -> str:
    return f"{count / 2**30:,.1f} GiB"

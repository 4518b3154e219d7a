"""Pruning under DistributedDataParallel: every rank applies the same plan, and a DDP wrapper
is released before its model is sliced and rebuilt around the smaller one after."""
from __future__ import annotations

import torch.distributed as dist
from torch import nn

from compressor.engine.plan import PruningPlan


def broadcast_plan(plan: PruningPlan) -> PruningPlan:
    """Every DDP rank applies rank 0's plan, so all ranks keep identical models."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return plan
    payload = [plan.to_dict() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(payload, src=0)
    return PruningPlan.from_dict(payload[0])


def release_ddp(ddp: nn.Module) -> None:
    """Drop a DDP wrapper's reducer: it holds every parameter's autograd accumulator,
    which caches the old shape, so it must be gone before slicing (the wrapper is
    unusable afterwards; ``rewrap_ddp`` makes its successor).  Public: the Lightning
    callback releases its strategy's wrapper the same way before a prune."""
    import gc

    for handle in getattr(ddp, "_accum_grad_hooks", []) or []:
        handle.remove()
    for name in ("reducer", "logger"):
        if name in ddp.__dict__:
            delattr(ddp, name)
    gc.collect()


def rewrap_ddp(old: nn.Module, model: nn.Module) -> nn.Module:
    """A fresh ``DistributedDataParallel`` around the pruned model with ``old``'s settings."""
    import inspect

    ddp_type = type(old)
    accepted = inspect.signature(ddp_type.__init__).parameters
    settings = {
        name: getattr(old, name)
        for name in ("device_ids", "output_device", "dim", "process_group", "find_unused_parameters",
                     "gradient_as_bucket_view")
        if name in accepted and hasattr(old, name)
    }
    sync = "forward_sync_buffers" if "forward_sync_buffers" in accepted else "broadcast_buffers"  # torch >= 2.12
    if sync in accepted and hasattr(old, sync):
        settings[sync] = getattr(old, sync)
    wrapper = ddp_type(model, **settings)
    if getattr(old, "static_graph", False) and hasattr(wrapper, "_set_static_graph"):
        wrapper._set_static_graph()
    return wrapper

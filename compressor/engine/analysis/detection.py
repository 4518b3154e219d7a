"""Channel rules for what detectors do between their backbone and their heads.

* RoIAlign / RoIPool (torchvision's ops, and ``MultiScaleRoIAlign`` built on them) crop
  boxes out of a feature map: every crop keeps the map's channels on dim 1.
* ``result[rows] = crop`` with an unmapped ``result`` of the same channel count: how
  ``MultiScaleRoIAlign`` gathers the crops of every pyramid level into one tensor.  The
  result takes the crop's channels; the crops of further levels are coupled with them
  (they are one channel space already, since the heads above are shared by the levels).

Anything else written by ``__setitem__`` stays opaque (frozen), as before.
"""
from __future__ import annotations

from typing import Any

import torch

from compressor.engine.analysis.records import ChannelMap
from compressor.engine.analysis.tracer import TraceState


def roi_crop(state: TraceState, func, args, kwargs, out) -> None:
    cmap = state.map_of(args[0])
    if cmap is None:
        return
    if cmap.dims != (1,):
        state.freeze_map(cmap, "a RoI crop of a tensor whose channels are not on dim 1")
        return
    state.set_map(out, ChannelMap((1,), cmap.atoms))


def setitem_rows(opaque):
    """``target[rows] = value`` along dim 0 only: channels carried as described above;
    any other assignment goes to ``opaque``."""

    def rule(state: TraceState, func, args, kwargs, out) -> None:
        target, index, value = args[0], args[1], args[2]
        vmap = state.map_of(value) if isinstance(value, torch.Tensor) else None
        tmap = state.map_of(target)
        if vmap is None or not _rows_only(index) or not _same_channels(target, value) or vmap.dims != (1,):
            opaque(state, func, args, kwargs, out)
            return
        if tmap is None:
            state.set_map(target, ChannelMap((1,), vmap.atoms))
        elif tmap.dims == (1,):
            state.table.union(tmap.atoms, vmap.atoms)
        else:
            opaque(state, func, args, kwargs, out)

    return rule


def _rows_only(index: Any) -> bool:
    """An index that selects along dim 0 and leaves every other dim whole."""
    if isinstance(index, tuple):
        return len(index) == 1 and _rows_only(index[0])
    return isinstance(index, (torch.Tensor, slice, int))


def _same_channels(target: torch.Tensor, value: torch.Tensor) -> bool:
    return target.dim() == value.dim() >= 2 and target.shape[1:] == value.shape[1:]


def bind(table: dict[Any, Any], opaque) -> None:
    """Add these rules where torchvision is installed (it is optional for user models)."""
    table[torch.Tensor.__setitem__] = setitem_rows(opaque)
    try:
        import torchvision  # noqa: F401 - registers torch.ops.torchvision
        ops = torch.ops.torchvision
        packets = [getattr(ops, name) for name in ("roi_align", "roi_pool", "ps_roi_align", "ps_roi_pool")
                   if hasattr(ops, name)]
    except (ImportError, RuntimeError, AttributeError):
        return
    for packet in packets:
        table[packet] = roi_crop
        table[packet.default] = roi_crop

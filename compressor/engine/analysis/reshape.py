"""Channel maps through view/reshape/permute.

A reshape groups input and output dims into blocks of equal element count.  Atoms
of tracked dims are broadcast over the untracked dims of their block and reshaped
with it, so ``flatten`` of a (C, 7, 7) feature map gives a 1-D map of C*49 atoms in
which each channel repeats 49 times: exactly the columns a following Linear must
drop.  When a tracked dim is *split* into several varying axes (a channel shuffle's
(groups, C/groups), attention's (heads, head_dim)) the code after pruning will
recompute the inner size from the tensor, so every outer row must keep the same
columns: rows are coupled.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from compressor.engine.analysis.records import ChannelMap


def dim_blocks(in_shape: Sequence[int], out_shape: Sequence[int]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of non-unit input dims with runs of output dims of equal product."""
    in_dims = [d for d, s in enumerate(in_shape) if s != 1]
    out_dims = [d for d, s in enumerate(out_shape) if s != 1]
    blocks: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(in_dims) and j < len(out_dims):
        block_in, block_out = [in_dims[i]], [out_dims[j]]
        p_in, p_out = in_shape[in_dims[i]], out_shape[out_dims[j]]
        i, j = i + 1, j + 1
        while p_in != p_out:
            if p_in < p_out:
                if i >= len(in_dims):
                    return None
                block_in.append(in_dims[i])
                p_in *= in_shape[in_dims[i]]
                i += 1
            else:
                if j >= len(out_dims):
                    return None
                block_out.append(out_dims[j])
                p_out *= out_shape[out_dims[j]]
                j += 1
        blocks.append((block_in, block_out))
    if i != len(in_dims) or j != len(out_dims):
        return None
    return blocks


def reshape_map(
    cmap: ChannelMap, in_shape: Sequence[int], out_shape: Sequence[int]
) -> tuple[ChannelMap | None, list[np.ndarray]]:
    """Map ``cmap`` through a reshape; also return grids whose rows must be coupled.

    Returns ``(None, [])`` when the shapes cannot be paired (the caller freezes).
    """
    blocks = dim_blocks(in_shape, out_shape)
    if blocks is None:
        return None, []
    tracked = set(cmap.dims)
    tracked_blocks = [(bi, bo) for bi, bo in blocks if tracked.intersection(bi)]
    live_in = {d for bi, _ in tracked_blocks for d in bi}
    live_out = [d for _, bo in tracked_blocks for d in bo]
    expanded = cmap.atoms.reshape([in_shape[d] if d in tracked else 1 for d in range(len(in_shape))])
    broadcast = np.broadcast_to(expanded, [in_shape[d] if d in live_in else 1 for d in range(len(in_shape))])
    out_full = broadcast.reshape([out_shape[d] if d in live_out else 1 for d in range(len(out_shape))])
    new_dims = tuple(sorted(live_out))
    atoms = np.ascontiguousarray(out_full.reshape([out_shape[d] for d in new_dims]))
    couplings = [grid for grid in _split_grids(atoms, new_dims, tracked_blocks) if grid is not None]
    return ChannelMap(new_dims, atoms), couplings


def _split_grids(atoms: np.ndarray, dims: tuple[int, ...], blocks) -> list[np.ndarray | None]:
    """For each block that splits channels over several varying axes, its (rows, cols) grid."""
    grids = []
    for _, block_out in blocks:
        axes = [dims.index(d) for d in block_out]
        if len(axes) < 2:
            continue
        # Look at this block alone: fix every other axis at index 0.
        index = tuple(slice(None) if a in axes else 0 for a in range(atoms.ndim))
        sub = atoms[index]
        varying = [k for k in range(sub.ndim) if sub.shape[k] > 1 and np.any(np.diff(sub, axis=k) != 0)]
        if len(varying) < 2:
            continue
        take = tuple(slice(None) if k in varying else 0 for k in range(sub.ndim))
        core = sub[take]
        grids.append(core.reshape(-1, core.shape[-1]))
    return grids


def permute_map(cmap: ChannelMap, perm: Sequence[int]) -> ChannelMap:
    """Map through ``out = x.permute(perm)``."""
    if not cmap.dims:  # its one channel was viewed into no axis of its own (FCOS's centerness): nothing to move
        return cmap
    ndim = len(perm)
    perm = [p % ndim for p in perm]
    new_dims = sorted(perm.index(d) for d in cmap.dims)
    axes = [cmap.dims.index(perm[o]) for o in new_dims]
    return ChannelMap(tuple(new_dims), np.ascontiguousarray(np.transpose(cmap.atoms, axes)))

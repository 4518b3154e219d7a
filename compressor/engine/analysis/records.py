"""Plain records the tracer produces and the planner/slicer consume."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChannelMap:
    """Which dims of a tensor carry prunable channels, and the atom at each position.

    ``dims`` are ascending tensor dims; ``atoms.shape`` equals the tensor's sizes at
    those dims.  A conv output is ``ChannelMap((1,), atoms[C])``; a tensor whose
    channel dim was split into (groups, width) carries a 2-D grid.
    """

    dims: tuple[int, ...]
    atoms: np.ndarray

    def single(self, dim: int) -> np.ndarray | None:
        """The 1-D atoms if this map tracks exactly ``dim`` and nothing else."""
        if self.dims == (dim,):
            return self.atoms
        return None


@dataclass(frozen=True)
class Slot:
    """One dimension of one parameter/buffer whose entries follow channel atoms."""

    module: str
    tensor: str
    dim: int
    atoms: np.ndarray

    @property
    def key(self) -> str:
        return f"{self.module}.{self.tensor}" if self.module else self.tensor


@dataclass(frozen=True)
class MacsTerm:
    """MACs of one counted op, scaling with the kept fraction of each factor's atoms.

    ``macs`` is the dense count (as ``FlopCounterMode`` reports it, divided by two)
    and is an exact multiple of the product of the factor lengths, so the pruned
    count is an exact integer: macs * prod(kept_i) / prod(len_i).
    """

    op: str
    macs: int
    factors: tuple[np.ndarray, ...]

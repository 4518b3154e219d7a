"""MACs reductions are fractions of the *original* (dense) model's MACs, whatever has been
pruned since: the one translation to and from the model as it is now."""
from __future__ import annotations


def reduction(macs: float, dense_macs: float) -> float:
    """The fraction of the dense model's MACs that a model (or plan) of ``macs`` removes."""
    return 1.0 - macs / dense_macs


def relative_reduction(target: float, dense_macs: float, current_macs: float) -> float:
    """The fraction of the *current* model's MACs to remove so that ``target`` of the dense
    model's MACs are gone: what a search on an already pruned model is asked for."""
    return 1.0 - (1.0 - target) * dense_macs / current_macs

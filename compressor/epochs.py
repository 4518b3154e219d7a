"""How epochs are numbered: from 1 wherever a person types or reads one.

Epoch 1 is the first epoch of a run and epoch E the last of an E-epoch run, in every
place a user meets an epoch: the console lines and reasons, ``metrics.jsonl``,
``summary.json`` (``prune_epoch``, ``prune_epochs``, ``prune_shocks``), the checkpoint's
``epoch`` (the last epoch it holds), ``run.png``, the epoch options of ``compress prune``
and the epoch fields of ``PruneConfig``.  Only loop indices count from 0, as Python's
do: the training loop and the hooks of ``OneCyclePruner`` (``for epoch in
range(epochs): pruner.epoch_end(epoch)``).  These two functions are the one place the
two meet, so no module adds or drops the 1 on its own.
"""
from __future__ import annotations


def epoch_number(index: int) -> int:
    """The epoch number a person reads for the loop index ``index`` (0 -> 1)."""
    return index + 1


def epoch_index(number: int) -> int:
    """The loop index of epoch number ``number`` (1 -> 0)."""
    return number - 1
